"""A checkpoint whose callback state is damaged: one error of ours (a ValueError) that names the checkpoint, the
callback and what was expected, raised before any training step, with nothing of the model changed."""

from __future__ import annotations

import glob

import pytest
import torch
from conftest import ClsModule, loader, tiny_model
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_inflect import CheckpointStateError, CKADriftMonitor, GradientNormMonitor, InjectionCallback


class Steps(Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, *args) -> None:
        self.batches += 1


def _saved(trainer_factory, tmp_path, callbacks) -> str:
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    trainer_factory([*callbacks, ckpt_cb], max_steps=2, enable_checkpointing=True).fit(
        ClsModule(tiny_model("bert")), loader(16)
    )
    return glob.glob(str(tmp_path / "*step=2.ckpt"))[0]


def _damage(path: str, key: str, damage) -> None:
    ckpt = torch.load(path, weights_only=False)
    ckpt["callbacks"][key] = damage(ckpt["callbacks"][key])
    torch.save(ckpt, path)


def _refused(trainer_factory, path: str, callback, expected: str) -> None:
    """Resuming with ``callback`` from the damaged ``path`` raises our error before any step; the model stays as it
    was made (no adapter, the fresh weights: nothing was loaded)."""
    steps, module = Steps(), ClsModule(tiny_model("bert", seed=3))
    fresh = {n: p.detach().clone() for n, p in module.state_dict().items()}
    with pytest.raises(CheckpointStateError) as err:
        trainer_factory([steps, callback], max_steps=4).fit(module, loader(16), ckpt_path=path)
    message = str(err.value)
    assert path in message and callback.state_key in message and type(callback).__name__ in message, message
    assert expected in message, message
    assert steps.batches == 0
    assert module.state_dict().keys() == fresh.keys()
    assert all(torch.equal(fresh[n], t) for n, t in module.state_dict().items())


INJECTION_DAMAGE = {
    "a string": (lambda s: "injected", "expected a dict with the keys"),
    "a list": (lambda s: ["not", "a", "dict"], "expected a dict with the keys"),
    "wrong keys": (lambda s: {"recorded": s["record"]}, "expected a dict with the keys"),
    "a tensor": (lambda s: torch.zeros(3, 2), "tensor of shape (3, 2)"),
    "record of a string": (lambda s: {**s, "record": "blocks 0"}, "expected None or a dict of an InjectionRecord"),
    "record with wrong keys": (lambda s: {**s, "record": {"r": 4}}, "expected an InjectionRecord (TypeError"),
    "record beyond the model": (lambda s: {**s, "record": {**s["record"], "layers": [7]}}, "InjectionRecord"),
    "unknown phase": (lambda s: {**s, "phase": "halfway"}, "expected one of ['waiting'"),
    "phase against record": (lambda s: {**s, "phase": "waiting"}, "exactly when a record is saved"),
    "planned step": (lambda s: {**s, "planned_step": "soon"}, "`planned_step` is 'soon', expected None or an int"),
}


@pytest.mark.parametrize("case", sorted(INJECTION_DAMAGE))
def test_damaged_injection_state_is_refused_before_anything_changes(trainer_factory, tmp_path, case):
    damage, expected = INJECTION_DAMAGE[case]
    path = _saved(trainer_factory, tmp_path, [InjectionCallback(layers=[0], at_step=1)])
    _damage(path, InjectionCallback(layers=[0], at_step=1).state_key, damage)
    _refused(trainer_factory, path, InjectionCallback(layers=[0], at_step=1), expected)


def test_undamaged_injection_state_resumes(trainer_factory, tmp_path):
    path = _saved(trainer_factory, tmp_path, [InjectionCallback(layers=[0], at_step=1)])
    again = InjectionCallback(layers=[0], at_step=1)
    trainer_factory([again], max_steps=4).fit(ClsModule(tiny_model("bert", seed=3)), loader(16), ckpt_path=path)
    assert again.injected and again.record.step == 1


def _rows(s, change):
    return {**s, "history": {m: {**h, "values": [change(r) for r in h["values"]]} for m, h in s["history"].items()}}


MONITOR_DAMAGE = {
    "a string": (lambda s: "history", "expected a dict with 'history'"),
    "a list": (lambda s: [s["history"]], "expected a dict with 'history'"),
    "wrong keys": (lambda s: {"histories": s["history"]}, "expected a dict with 'history'"),
    "a tensor": (lambda s: torch.zeros(3, 2), "tensor of shape (3, 2)"),
    "history of a string": (lambda s: {**s, "history": "?"}, "expected a dict from each of ['cka_drift']"),
    "unknown metric": (lambda s: {**s, "history": {"drift": s["history"]["cka_drift"]}}, "from each of ['cka_drift']"),
    "rows too short": (lambda s: _rows(s, lambda r: r[:-1]), "one list of 3 numbers per step"),
    "rows of strings": (lambda s: _rows(s, lambda r: ["?"] * len(r)), "one list of 3 numbers per step"),
    "other blocks": (
        lambda s: {**s, "history": {"cka_drift": {**s["history"]["cka_drift"], "blocks": [0, 1, 5]}}},
        "'blocks' equal to the monitored blocks [0, 1, 2]",
    ),
    "probe step": (lambda s: {**s, "last_probe_step": "2"}, "`last_probe_step` is '2', expected None or an int"),
    "probe of a string": (lambda s: {**s, "probe": "batch"}, "expected a list of batches"),
    "reference of a dict": (lambda s: {**s, "reference": "x"}, "`reference` is 'x', expected a list of tensors"),
    "reference of a wrong shape": (lambda s: {**s, "reference": [torch.zeros(3, 2)]}, "a tensor of shape (3 blocks"),
}


def _cka():
    return CKADriftMonitor(every_n_steps=1)


@pytest.mark.parametrize("case", sorted(MONITOR_DAMAGE))
def test_damaged_monitor_state_is_refused_before_anything_changes(trainer_factory, tmp_path, case):
    damage, expected = MONITOR_DAMAGE[case]
    path = _saved(trainer_factory, tmp_path, [_cka()])
    _damage(path, _cka().state_key, damage)
    _refused(trainer_factory, path, _cka(), expected)


def test_damaged_gradient_monitor_state_is_refused(trainer_factory, tmp_path):
    monitor = GradientNormMonitor(every_n_steps=1)
    path = _saved(trainer_factory, tmp_path, [monitor])
    _damage(path, monitor.state_key, lambda s: {**s, "history": {"cka_drift": s["history"]["act_grad_norm"]}})
    _refused(trainer_factory, path, GradientNormMonitor(every_n_steps=1), "['act_grad_norm', 'param_grad_norm']")


def test_undamaged_monitor_state_resumes_its_history(trainer_factory, tmp_path):
    saved = _cka()
    path = _saved(trainer_factory, tmp_path, [saved])
    again = _cka()
    trainer_factory([again], max_steps=4).fit(ClsModule(tiny_model("bert", seed=3)), loader(16), ckpt_path=path)
    history = again.history["cka_drift"]
    assert history.steps == [0, 1, 2, 3]
    assert history.rows[:2] == saved.history["cka_drift"].rows


def test_adapter_weights_without_the_callbacks_state_are_refused(trainer_factory, tmp_path):
    path = _saved(trainer_factory, tmp_path, [InjectionCallback(layers=[0], at_step=1)])  # injected at step 1
    other = InjectionCallback(layers=[0], at_step=3)  # another state key: the checkpoint holds no state of it
    _refused_weights(trainer_factory, path, other, "holds LoRA weights of adapter 'inflect' but no state of")


def test_a_state_that_contradicts_the_weights_is_refused(trainer_factory, tmp_path):
    path = _saved(trainer_factory, tmp_path, [InjectionCallback(layers=[0], at_step=1)])
    _damage(path, InjectionCallback(layers=[0], at_step=1).state_key,
            lambda s: {"phase": "waiting", "record": None, "planned_step": 1})  # fmt: skip
    _refused_weights(trainer_factory, path, InjectionCallback(layers=[0], at_step=1),
                     "its state says 'waiting' but the model's weights hold adapter 'inflect'")  # fmt: skip


def _refused_weights(trainer_factory, path: str, callback, expected: str) -> None:
    steps = Steps()
    with pytest.raises(CheckpointStateError) as err:
        trainer_factory([steps, callback], max_steps=4).fit(ClsModule(tiny_model("bert", seed=3)), loader(16),
                                                            ckpt_path=path)  # fmt: skip
    assert path in str(err.value) and expected in str(err.value), str(err.value)
    assert steps.batches == 0
