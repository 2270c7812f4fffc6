"""A user's own PeftModel (peft's real ``get_peft_model``) through an injection: every adapter that was active stays
active (LoRA layers and the ``modules_to_save`` wrapper of the task head), logits do not move, the user's adapter,
their head copy and ours all train, and a resume after the injection restores the same active set, bit-exact."""

from __future__ import annotations

import glob

import lightning.pytorch as pl
import pytest
import torch
from conftest import NO_DROPOUT, VOCAB, ClsModule, loader, tiny_model
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from peft import LoraConfig, get_peft_model

from lightning_inflect import InjectionCallback
from lightning_inflect.injection import active_adapters


class LmModule(ClsModule):
    """A causal LM: next-token loss on the batch's own tokens."""

    def training_step(self, batch, batch_idx):
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["input_ids"]).loss  # fmt: skip


def _seq_cls():
    return get_peft_model(tiny_model("bert", **NO_DROPOUT), LoraConfig(task_type="SEQ_CLS", r=4,
                          target_modules=["query", "value"], init_lora_weights=False))  # fmt: skip


def _by_hand():
    config = LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"], init_lora_weights=False)
    return get_peft_model(tiny_model("bert", **NO_DROPOUT), config)


def _causal_lm():
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    sizes = dict(n_embd=32, n_layer=3, n_head=4, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    cfg = AutoConfig.for_model("gpt2", **sizes, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    config = LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["c_attn"], init_lora_weights=False)
    return get_peft_model(AutoModelForCausalLM.from_config(cfg), config)


CASES = {
    "seq_cls": (_seq_cls, ClsModule, ["query", "value"]),
    "modules_to_save": (_by_hand, ClsModule, ["query", "value"]),
    "causal_lm": (_causal_lm, LmModule, ["c_attn"]),
}


def _trained_head(peft_model) -> None:
    """The user trained their head copy: it differs from the original (else the bug would not show in the logits)."""
    for name, module in peft_model.named_modules():
        if name.endswith("modules_to_save.default"):
            with torch.no_grad():
                for p in module.parameters():
                    p.add_(torch.randn_like(p) * 0.5)


def _batch():
    ds = loader(8).dataset
    return {"input_ids": ds.ids[:6], "attention_mask": ds.mask[:6]}


class Watch(Callback):
    """At the start of optimizer step ``step``: eval logits, active adapters, and a copy of every parameter."""

    def __init__(self, step: int) -> None:
        self.step, self.logits, self.active, self.params = step, None, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and self.logits is None:
            pl_module.eval()
            with torch.no_grad():
                self.logits = pl_module.model(**_batch()).logits.clone()
            pl_module.train()
            self.active = active_adapters(pl_module.model)
            self.params = {n: p.detach().clone() for n, p in pl_module.named_parameters()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_users_active_adapters_stay_active_logits_keep_and_everything_trains(trainer_factory, case):
    make, module_cls, user_targets = CASES[case]
    model = make()
    _trained_head(model)
    before, after = Watch(1), Watch(1)
    inj = InjectionCallback(layers=[1], at_step=1, r=8)
    module = module_cls(model, lr=0.05)
    trainer = trainer_factory([before, inj, after], max_steps=4)
    trainer.fit(module, loader(48))
    assert (before.logits - after.logits).abs().max() <= 1e-6
    chosen = set(inj.record.target_modules)
    assert chosen  # the injected modules, by their name in the Hugging Face model
    for name, names in before.active.items():
        ours = ["inflect"] if any(name.endswith(f".{t}") for t in chosen) else []
        assert sorted(after.active[name]) == sorted([*names, *ours]), name
    heads = [n for n in before.active if not any(n.endswith(f".{t}") for t in user_targets)]
    assert (case == "causal_lm") == (not heads)  # the two classifiers carry a modules_to_save wrapper
    assert all(after.active[h] == ["default"] for h in heads)
    # what trained after the injection: our adapter, the user's LoRA, their head copy; not the backbone, not the
    # original head the wrapper hides
    final = dict(module.named_parameters())
    moved = {n for n, p in final.items() if not torch.equal(after.params[n], p)}
    assert any(".lora_B.inflect." in n for n in moved) and any(".lora_A.default." in n for n in moved)
    if heads:
        assert any(".modules_to_save.default." in n for n in moved)
    assert not any(".original_module." in n or (".lora_" not in n and ".modules_to_save." not in n) for n in moved)
    trained = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert {n for n, p in final.items() if p.requires_grad} == {n for n, p in final.items() if id(p) in trained}


@pytest.mark.parametrize("case", ["seq_cls", "causal_lm"])
def test_resume_after_injection_restores_the_active_set_bit_exact(trainer_factory, tmp_path, case):
    make, module_cls, _ = CASES[case]

    def run(max_steps, ckpt_path=None, save=False):
        pl.seed_everything(1)
        model = make()
        _trained_head(model)
        inj = InjectionCallback(layers=[0, 2], at_step=1)
        extra = [ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)] if save else []
        module = module_cls(model, lr=0.05)
        trainer = trainer_factory([inj, *extra], max_steps=max_steps, enable_checkpointing=save)
        same = torch.utils.data.Subset(loader(8).dataset, range(8))
        data = torch.utils.data.DataLoader(torch.utils.data.ConcatDataset([same] * 5), batch_size=8)
        trainer.fit(module, data, ckpt_path=ckpt_path)
        return module, inj

    full, _ = run(4)
    run(2, save=True)
    resumed, inj = run(4, ckpt_path=glob.glob(str(tmp_path / "*step=2.ckpt"))[0])
    assert inj.lifecycle.phase.value == "exported" and inj.record.layers == [0, 2]
    assert active_adapters(resumed.model) == active_adapters(full.model)
    assert any("inflect" in names for names in active_adapters(resumed.model).values())
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
