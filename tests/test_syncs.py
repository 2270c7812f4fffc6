"""Host synchronisations of a logging step, counted (not timed): at most two per step, whatever the depth.

A ``TorchFunctionMode`` sees every call that forces a device-to-host transfer on a GPU (``item``, ``tolist``,
``cpu``, ``numpy``, ``float(t)``, ``bool(t)``, ``int(t)``, ``.to("cpu")``), on the CPU too. We count the calls made
directly by this package's code (the calling frame is in ``lightning_inflect/``) during a real ``fit`` with all
three monitors, a TensorBoard logger and gradient accumulation, and attribute each to the optimizer step it
happened in. The model's own forward (transformers' mask checks) and Lightning's own logging are not ours.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import NO_DROPOUT, ClsModule, loader, tiny_model
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.overrides import TorchFunctionMode

import lightning_inflect
from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor

PACKAGE = str(Path(lightning_inflect.__file__).parent)
SYNCING = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.cpu,
    torch.Tensor.numpy,
    torch.Tensor.__float__,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
}


def _to_cpu(args, kwargs) -> bool:
    targets = [*args[1:], kwargs.get("device")]
    return any(t == "cpu" or (isinstance(t, torch.device) and t.type == "cpu") for t in targets)


class SyncCounter(TorchFunctionMode):
    """Records (step, function, file:line) for every sync-forcing call made from this package's code."""

    def __init__(self) -> None:
        super().__init__()
        self.step = -1
        self.calls: list[tuple[int, str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNCING or (func is torch.Tensor.to and _to_cpu(args, kwargs)):
            frame = sys._getframe(1)
            if frame.f_code.co_filename.startswith(PACKAGE):
                where = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"
                self.calls.append((self.step, func.__name__, where))
        return func(*args, **kwargs)


class StepTracker(Callback):
    """Tells the counter which optimizer step is running (set before the monitors' hooks run)."""

    def __init__(self, counter: SyncCounter) -> None:
        self.counter = counter

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.counter.step = trainer.global_step


def _fit(tmp_path, layers: int, every: int = 2, max_steps: int = 6, accumulate: int = 2):
    counter = SyncCounter()
    monitors = [
        AttentionEntropyMonitor(every_n_steps=every, normalized=True, per_head=True),
        GradientNormMonitor(every_n_steps=every),
        CKADriftMonitor(every_n_steps=every, pca_components=4),
        AttentionEntropyMonitor(every_n_steps=every, reduction="example", log_key_prefix="by_example"),
    ]
    trainer = pytest.importorskip("lightning.pytorch").Trainer(
        callbacks=[StepTracker(counter), *monitors],
        logger=TensorBoardLogger(str(tmp_path)),
        max_steps=max_steps,
        accumulate_grad_batches=accumulate,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    model = ClsModule(tiny_model("bert", num_hidden_layers=layers, **NO_DROPOUT))
    with counter:
        trainer.fit(model, loader(8 * max_steps * accumulate))
    return counter, monitors


def test_at_most_two_host_transfers_per_logging_step_whatever_the_depth(tmp_path):
    counts = []
    for layers in (2, 6):
        counter, monitors = _fit(tmp_path / str(layers), layers)
        logging_steps = [0, 2, 4]
        for m in monitors:  # every value of every logging step arrived
            assert all(h["steps"] == logging_steps for h in m.history.values())
        per_step = {s: [c for c in counter.calls if c[0] == s] for s in range(-1, 6)}
        for step, calls in per_step.items():
            assert len(calls) <= (2 if step in logging_steps else 0), (layers, step, calls)
        # the counter is not blind: it sees our own transfer, exactly one tolist per logging step
        assert [len(per_step[s]) for s in logging_steps] == [1, 1, 1], counter.calls
        assert all(name == "tolist" for _, name, _ in counter.calls)
        counts.append(len(counter.calls))
    assert counts[0] == counts[1]  # 2 blocks or 6: the same number of transfers
