"""The shared probe through the real Trainer: every monitor reads exactly its own answer; per-fit lifecycle."""

from __future__ import annotations

import pytest
import torch
from conftest import NO_DROPOUT, ClsModule, loader, tiny_model, tiny_no_interface
from lightning.pytorch.callbacks import Callback

from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor
from lightning_inflect.architectures import find_attention_modules, find_layers
from lightning_inflect.capture import EntropyRequest, run_probe


class Snapshot(Callback):
    """At the given steps, before the monitors run, records the probe batch's eager attentions and hidden states."""

    def __init__(self, steps) -> None:
        self.steps = set(steps)
        self.out: dict[int, object] = {}
        self.batch = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.batch is None:
            self.batch = {k: v.clone() for k, v in batch.items() if k != "labels"}
        if trainer.global_step in self.steps:
            model = pl_module.model
            eager = tiny_model("bert", attn="eager", **NO_DROPOUT)
            eager.load_state_dict(model.state_dict())
            eager.eval()
            with torch.no_grad():
                self.out[trainer.global_step] = eager(**self.batch, output_attentions=True, output_hidden_states=True)


def _entropy_reference(attn, mask, reduction):
    """Mean entropy of eager probabilities by explicit loops over examples and real queries."""
    per_example, terms = [], []
    for i in range(attn.shape[0]):
        n = int(mask[i].sum())
        p = attn[i, :, :n, :n].double()
        h = -(p * p.clamp_min(1e-300).log()).sum(-1)  # (heads, queries)
        terms.append(h.flatten())
        per_example.append(h.mean(1))
    if reduction == "token":  # every (example, query) pair equally, then heads equally (equal counts per head)
        return torch.cat(terms).mean().item()
    return torch.stack(per_example).mean().item()


def test_two_entropy_monitors_with_different_reductions_each_log_their_own(trainer_factory):
    snap = Snapshot([0])
    token = AttentionEntropyMonitor(every_n_steps=10)
    example = AttentionEntropyMonitor(every_n_steps=10, reduction="example", log_key_prefix="by_example")
    trainer = trainer_factory([snap, token, example], max_steps=1)
    trainer.fit(ClsModule(tiny_model("bert", **NO_DROPOUT)), loader(16))
    mask = snap.batch["attention_mask"]
    for layer in range(3):
        attn = snap.out[0].attentions[layer]
        assert token.history["attn_entropy"].rows[0][layer] == pytest.approx(
            _entropy_reference(attn, mask, "token"), abs=1e-4
        )
        assert example.history["attn_entropy"].rows[0][layer] == pytest.approx(
            _entropy_reference(attn, mask, "example"), abs=1e-4
        )
    assert token.history["attn_entropy"].rows != example.history["attn_entropy"].rows


def _pool(h, mask, pooling):
    rows = []
    for i in range(h.shape[0]):
        n = int(mask[i].sum())
        rows.append({"mean": h[i, :n].mean(0), "first": h[i, 0], "last": h[i, n - 1]}[pooling])
    return torch.stack(rows).double()


def _naive_unbiased_hsic(k, lk):
    """Song et al. (2012) unbiased HSIC, written out term by term."""
    n = k.shape[0]
    kt, lt = k.clone(), lk.clone()
    kt.fill_diagonal_(0)
    lt.fill_diagonal_(0)
    one = torch.ones(n, 1, dtype=k.dtype)
    value = torch.trace(kt @ lt) + (one.T @ kt @ one) * (one.T @ lt @ one) / ((n - 1) * (n - 2))
    value = value - 2.0 / (n - 2) * (one.T @ kt @ lt @ one)
    return value.item() / (n * (n - 3))


def _naive_drift(ref, now, k):
    """1 - CKA on the top-k PCA basis of the reference (numpy-free, by explicit SVD and kernels)."""
    mean = ref.mean(0)
    _, _, vh = torch.linalg.svd(ref - mean, full_matrices=False)
    basis = vh[: min(k, ref.shape[0] - 1)].T
    x, y = (ref - mean) @ basis, (now - mean) @ basis
    x, y = x - x.mean(0), y - y.mean(0)
    kx, ky = x @ x.T, y @ y.T
    xy, xx, yy = _naive_unbiased_hsic(kx, ky), _naive_unbiased_hsic(kx, kx), _naive_unbiased_hsic(ky, ky)
    return 1.0 - xy / (xx * yy) ** 0.5


@pytest.mark.parametrize("pooling", ["mean", "first", "last"])
def test_cka_drift_uses_its_own_pooling(trainer_factory, pooling):
    snap = Snapshot([0, 2])
    cka = CKADriftMonitor(every_n_steps=2, pca_components=4, pooling=pooling)
    other = CKADriftMonitor(every_n_steps=2, pca_components=4, pooling="first" if pooling != "first" else "last",
                            log_key_prefix="other")  # fmt: skip
    trainer = trainer_factory([snap, cka, other], max_steps=3)
    trainer.fit(ClsModule(tiny_model("bert", **NO_DROPOUT), lr=0.5), loader(24))
    mask = snap.batch["attention_mask"]
    for layer in range(3):
        ref = _pool(snap.out[0].hidden_states[layer + 1], mask, pooling)
        now = _pool(snap.out[2].hidden_states[layer + 1], mask, pooling)
        expected = _naive_drift(ref, now, 4)
        assert cka.history["cka_drift"].rows[1][layer] == pytest.approx(expected, abs=1e-5), layer
        assert abs(expected) > 1e-4  # the weights moved: a real value, not 0
    assert cka.history["cka_drift"].rows[1] != other.history["cka_drift"].rows[1]


def test_monitors_reused_for_a_second_fit_start_afresh(trainer_factory):
    entropy = AttentionEntropyMonitor(every_n_steps=2)
    cka = CKADriftMonitor(every_n_steps=2, pca_components=4)
    trainer_factory([entropy, cka], max_steps=3).fit(ClsModule(tiny_model("bert")), loader(24, batch_size=8))
    first_reference = cka.reference[0].clone()
    # a second fit with another probe batch size: step 0 is logged again, against a new reference
    trainer_factory([entropy, cka], max_steps=3).fit(ClsModule(tiny_model("bert", seed=1)), loader(24, batch_size=6))
    assert entropy.history["attn_entropy"].steps == [0, 2]
    assert cka.history["cka_drift"].steps == [0, 2]
    assert cka.reference_step == 0 and cka.reference[0].shape[1] == 6 != first_reference.shape[1]
    assert cka.history["cka_drift"].rows[0] == pytest.approx([0.0] * 3, abs=1e-9)  # the reference itself


def test_monitors_that_would_log_the_same_keys_fail_at_setup(trainer_factory):
    a, b = AttentionEntropyMonitor(every_n_steps=2), AttentionEntropyMonitor(every_n_steps=2, reduction="example")
    with pytest.raises(ValueError, match=r"would both log `inflect/attn_entropy/\.\.\.`.*`log_key_prefix`"):
        trainer_factory([a, b], max_steps=1).fit(ClsModule(tiny_model("bert")), loader(8))


OUTSIDE_INTERFACE = ["deberta-v2", "mpnet", "gpt_neo", "bloom", "falcon"]


@pytest.mark.parametrize("model_type", OUTSIDE_INTERFACE)
def test_entropy_falls_back_to_the_models_own_probabilities(model_type):
    """Models outside transformers' attention interface: the probe sees no attention call, runs again with the
    model's own probabilities (eager, output_attentions for that pass only) and matches eager attentions."""
    model = tiny_no_interface(model_type, head="base")
    impl = model.config._attn_implementation
    info = find_layers(model)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    batch = {"input_ids": torch.randint(3, 60, (3, 9), generator=torch.Generator().manual_seed(0)) * mask + 1 - mask,
             "attention_mask": mask}  # fmt: skip
    request = EntropyRequest((0, 1, 2))
    result = run_probe(model, [batch], info.blocks, [request], find_attention_modules(info))
    assert result.entropy_source == "probs" and result.forwards == 2 and result.missing == ()
    assert model.config._attn_implementation == impl
    eager = tiny_no_interface(model_type, head="base")
    eager.load_state_dict(model.state_dict())
    eager.config._attn_implementation_internal = "eager"
    eager.eval()
    with torch.no_grad():
        attns = eager(**batch, output_attentions=True).attentions
    means = result.answer(request).entropy.sum(1) / result.answer(request).count.sum(1)
    for layer in range(3):
        assert means[layer].item() == pytest.approx(_entropy_reference(attns[layer], mask, "token"), abs=1e-4)
    # known to be the probabilities path from now on: one forward
    again = run_probe(model, [batch], info.blocks, [request], find_attention_modules(info), entropy_source="probs")
    assert again.forwards == 1 and torch.equal(again.answer(request).entropy, result.answer(request).entropy)


def test_entropy_monitor_on_a_model_outside_the_interface_end_to_end(trainer_factory):
    class Counter(Callback):
        eval_forwards = 0

        def on_fit_start(self, trainer, pl_module):
            def count(mod, *_):
                if not mod.training:
                    Counter.eval_forwards += 1

            pl_module.model.register_forward_pre_hook(count)

    monitor = AttentionEntropyMonitor(every_n_steps=1, normalized=True)
    trainer = trainer_factory([Counter(), monitor], max_steps=3)
    trainer.fit(ClsModule(tiny_no_interface("gpt_neo", pad_token_id=0)), loader(24))
    assert monitor.history["attn_entropy"].steps == [0, 1, 2]
    values = [v for row in monitor.history["attn_entropy_normalized"].rows for v in row]
    assert all(0.0 < v <= 1.0 for v in values)
    assert Counter.eval_forwards == 4  # 2 at the first probe (interface tried, then probabilities), then 1 each
