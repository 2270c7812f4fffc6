"""InjectionCallback fails early and clearly: at construction, at setup, or on the first batch, never after training."""

from __future__ import annotations

import pytest
import torch
from conftest import ClsModule, loader, tiny_model
from lightning.pytorch.callbacks import Callback
from peft import LoraConfig

from lightning_inflect import AttentionEntropyMonitor, InjectionCallback
from lightning_inflect.selection import SKI, CKAImportance, Manual, RandomK, TopK


class Steps(Callback):
    """Counts the optimizer steps that ran before an error."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, *args) -> None:
        self.batches += 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"freeze_backbone": "no"}, r"`freeze_backbone` to be a bool \(True or False\) but got 'no'"),
        ({"export": 1}, r"`export` to be a bool"),
        ({"include_mlp": None}, r"`include_mlp` to be a bool"),
        ({"log_key_prefix": ""}, r"`log_key_prefix` to be a non-empty string but got ''"),
        ({"model_attr": 5}, r"`model_attr` to be a non-empty string or None but got 5\. For example"),
        ({"layers_path": ""}, r"`layers_path` to be a non-empty string or None"),
        ({"adapter_name": ""}, r"`adapter_name` to be a non-empty string"),
        ({"keep_trainable": "pooler"}, r"`keep_trainable` to be a list of module names but got 'pooler'"),
        ({"probe_inputs": "input_ids"}, r"`probe_inputs` to be callable"),
        ({"export_dir": 3}, r"`export_dir` to be None, a str or a Path"),
        ({"r": 0}, r"`r` to be a positive int but got 0"),
        ({"lora_alpha": 0}, r"`lora_alpha` to be a number in \(0\.0, inf\]"),
        ({"target_modules": "query"}, r"`target_modules` to be a non-empty list of module names but got .query."),
        ({"lora_config": {"r": 4}}, r"`lora_config` to be a peft LoraConfig or None but got \{'r': 4\}"),
        ({"lora_config": LoraConfig(), "r": 4}, r"either `lora_config=` or the shorthands \['r'\] but got both"),
        ({"lora_config": LoraConfig(layers_to_transform=[0])}, r"`lora_config.layers_to_transform` to be unset"),
        ({"lora_config": LoraConfig(modules_to_save=["classifier"])}, r"modules_to_save.*`keep_trainable=`"),
        ({"lora_config": LoraConfig(target_modules=".*query")}, r"names inside a block but got the regular"),
        ({"lora_config": LoraConfig(init_lora_weights=False)}, r"init_lora_weights` in \(True, 'gaussian'\)"),
        ({"lora_config": LoraConfig(bias="all")}, r"bias='none'` but got True and 'all'"),
    ],
)
def test_option_types_are_checked_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InjectionCallback(layers=[0], at_step=1, **kwargs)


@pytest.mark.parametrize(
    ("selector", "match"),
    [
        (TopK(k=5), r"asks for k=5 blocks but the model has only 3"),
        (RandomK(k=4), r"asks for k=4 blocks but the model has only 3"),
        (CKAImportance(k=9), r"asks for k=9 blocks"),
        (SKI(top_k=4), r"asks for top_k=4 blocks"),
        (Manual([0, 7]), r"names blocks \[7\], outside \[-3, 3\)"),
    ],
)
def test_selectors_that_cannot_fit_the_model_fail_at_setup(trainer_factory, selector, match):
    steps = Steps()
    with pytest.raises(ValueError, match=match):
        trainer_factory([steps, InjectionCallback(auto=True, selector=selector, at_step=3)], max_steps=5).fit(
            ClsModule(tiny_model("bert")), loader(48)
        )
    assert steps.batches == 0


class TupleData(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.inner = loader(32).dataset

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i):
        row = self.inner[i]
        return row["input_ids"], row["attention_mask"], row["labels"]


class TupleModule(ClsModule):
    def training_step(self, batch, batch_idx):
        ids, mask, labels = batch
        return self.model(input_ids=ids, attention_mask=mask, labels=labels).loss


def test_auto_injection_on_tuple_batches_fails_on_the_first_batch_and_probe_inputs_fixes_it(trainer_factory):
    data = torch.utils.data.DataLoader(TupleData(), batch_size=8)
    steps = Steps()
    inj = InjectionCallback(auto=True, at_step=2)  # SKI needs entropy: no monitor logs it, the callback probes
    with pytest.raises(TypeError, match=r"training batch is a list: pass `probe_inputs=` to the InjectionCallback"):
        trainer_factory([steps, inj], max_steps=3).fit(TupleModule(tiny_model("bert")), data)
    assert steps.batches == 0
    fixed = InjectionCallback(auto=True, at_step=2, probe_inputs=lambda b: {"input_ids": b[0], "attention_mask": b[1]})
    trainer_factory([fixed], max_steps=3).fit(TupleModule(tiny_model("bert")), data)
    assert fixed.injected and fixed.record.step == 2
    # with a monitor that logs the entropy (from its own probe_inputs), the callback reads no batch itself
    monitored = InjectionCallback(auto=True, at_step=2)
    entropy = AttentionEntropyMonitor(
        every_n_steps=1, probe_inputs=lambda b: {"input_ids": b[0], "attention_mask": b[1]}
    )
    trainer_factory([entropy, monitored], max_steps=3).fit(TupleModule(tiny_model("bert")), data)
    assert monitored.injected


def test_export_dir_that_is_a_file_fails_at_setup(trainer_factory, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    steps = Steps()
    with pytest.raises(ValueError, match=r"`export_dir` to be a folder but .*taken' is a file.*`export=False`"):
        trainer_factory([steps, InjectionCallback(layers=[0], at_step=1, export_dir=target)], max_steps=3).fit(
            ClsModule(tiny_model("bert")), loader(32)
        )
    assert steps.batches == 0 and target.read_text() == "not a folder"


def test_no_injection_within_max_epochs_warns_at_fit_start(trainer_factory):
    inj = InjectionCallback(layers=[1], at_epoch=5)
    with pytest.warns(UserWarning, match=r"epoch 5, but training stops after max_epochs=2.*No injection"):
        trainer_factory([inj], max_steps=-1, max_epochs=2).fit(ClsModule(tiny_model("bert")), loader(16))
    assert not inj.injected
    late = InjectionCallback(layers=[1], at_step=7)
    with pytest.warns(UserWarning, match=r"this fit plans 4 optimizer steps\..*No injection will happen"):
        trainer_factory([late], max_steps=-1, max_epochs=2).fit(ClsModule(tiny_model("bert")), loader(16))
