"""A model that already carries the user's own peft LoRA keeps it: our adapter is added beside it, never over it."""

from __future__ import annotations

import glob

import lightning.pytorch as pl
import pytest
import torch
from conftest import NO_DROPOUT, ClsModule, loader, tiny_model
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from lightning_inflect import InjectionCallback
from lightning_inflect.injection import InjectionRecord, inject_lora


def _user_model(seed: int = 0):
    """What a user brings: BERT with their own trained-looking LoRA (non-zero B) on query and value, r=4."""
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False)
    return get_peft_model(tiny_model("bert", **NO_DROPOUT), config)


def _batch():
    ds = loader(8).dataset
    return {"input_ids": ds.ids[:6], "attention_mask": ds.mask[:6]}


def _user_state(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if ".lora_" in n and ".default." in n}


class At(Callback):
    """Eval logits and the user's adapter tensors at the start of one optimizer step."""

    def __init__(self, step: int) -> None:
        self.step, self.logits, self.user = step, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and self.logits is None:
            pl_module.eval()
            with torch.no_grad():
                self.logits = pl_module.model(**_batch()).logits.clone()
            pl_module.train()
            self.user = _user_state(pl_module)


def test_users_adapter_frozen_on_request_is_kept_bit_identical_and_logits_unchanged(trainer_factory):
    before, after = At(1), At(1)
    inj = InjectionCallback(layers=[1], at_step=1, r=8, train_user_adapters=False)
    module = ClsModule(_user_model())
    trainer = trainer_factory([before, inj, after], max_steps=4)
    trainer.fit(module, loader(48))
    assert torch.equal(before.logits, after.logits)  # both adapters active: the model computes what it did
    assert before.user.keys() == after.user.keys() and len(before.user) == 12  # 3 blocks x (q, v) x (A, B)
    assert all(torch.equal(before.user[n], after.user[n]) for n in before.user)
    # frozen with the backbone, the user's adapter is still bit-identical after 3 more steps
    assert all(torch.equal(before.user[n], p) for n, p in _user_state(module).items())
    query = module.model.base_model.model.bert.encoder.layer[1].attention.self.query
    assert isinstance(query, LoraLayer) and query.r == {"default": 4, "inflect": 8}
    assert sorted(query.active_adapters) == ["default", "inflect"]
    other = module.model.base_model.model.bert.encoder.layer[0].attention.self.query
    assert other.active_adapters == ["default"] and "inflect" not in other.lora_A
    # the optimizer trains our adapter and the head, nothing of the user's
    trained = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    names = {n for n, p in module.named_parameters() if id(p) in trained}
    assert names and all(".inflect." in n or ".classifier." in n for n in names)
    assert any(".lora_B.inflect." in n for n in names)


def test_export_holds_our_adapter_only_and_loads_beside_theirs(trainer_factory, tmp_path):
    inj = InjectionCallback(layers=[1, 2], at_step=1, export_dir=tmp_path)
    module = ClsModule(_user_model(), lr=0.05)
    trainer_factory([inj], max_steps=3).fit(module, loader(24))
    tensors = load_file(str(inj.export_path / "adapter_model.safetensors"))
    lora = [k for k in tensors if ".lora_" in k]
    assert len(lora) == 2 * 2 * 2  # 2 blocks x (query, value) x (A, B): none of the user's 12
    assert all(".layer.1." in k or ".layer.2." in k for k in lora)
    # the user's adapter (saved by peft) and ours (loaded beside it) rebuild the trained model
    user_dir = tmp_path / "user"
    module.model.save_pretrained(str(user_dir), selected_adapters=["default"])
    rebuilt = PeftModel.from_pretrained(tiny_model("bert", **NO_DROPOUT), str(user_dir))
    rebuilt.load_adapter(str(inj.export_path), adapter_name="inflect")
    rebuilt.base_model.set_adapter(["default", "inflect"])
    rebuilt.eval()
    module.eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(**_batch()).logits, module.model(**_batch()).logits, atol=1e-5)


def test_resume_after_injection_keeps_both_adapters(trainer_factory, tmp_path):
    def run(max_steps, ckpt_path=None, save=False):
        pl.seed_everything(1)
        inj = InjectionCallback(layers=[0], at_step=1)
        extra = [ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)] if save else []
        module = ClsModule(_user_model())
        trainer = trainer_factory([inj, *extra], max_steps=max_steps, enable_checkpointing=save)
        same = torch.utils.data.Subset(loader(8).dataset, range(8))
        trainer.fit(module, torch.utils.data.DataLoader(torch.utils.data.ConcatDataset([same] * 5), batch_size=8),
                    ckpt_path=ckpt_path)  # fmt: skip
        return module

    full = run(4)
    run(2, save=True)
    resumed = run(4, ckpt_path=glob.glob(str(tmp_path / "*step=2.ckpt"))[0])
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_an_adapter_of_our_name_is_refused():
    model = tiny_model("bert")
    name = "bert.encoder.layer.0.attention.self.query"
    record = InjectionRecord(layers=[0], target_modules=[name], lora={"r": 2, "target_modules": [name]},
                             keep_trainable=[])  # fmt: skip
    inject_lora(model, record)
    with pytest.raises(ValueError, match=r"already carries a LoRA adapter named 'inflect'.*`adapter_name=`"):
        inject_lora(model, record)


def test_merged_export_folds_their_adapter_and_ours_into_a_plain_model(trainer_factory, tmp_path):
    from transformers import AutoModelForSequenceClassification

    inj = InjectionCallback(layers=[1], at_step=1, export_dir=tmp_path, export_merged=True)
    module = ClsModule(_user_model(), lr=0.05)
    trainer_factory([inj], max_steps=3).fit(module, loader(24))
    module.eval()
    merged = AutoModelForSequenceClassification.from_pretrained(str(inj.export_path / "merged")).eval()
    assert not any(".lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**_batch()).logits, module.model(**_batch()).logits, atol=1e-5, rtol=0)
    # the live model still carries both adapters, unmerged: the export worked on a copy
    query = module.model.base_model.model.bert.encoder.layer[1].attention.self.query
    assert sorted(query.active_adapters) == ["default", "inflect"] and not query.merged
