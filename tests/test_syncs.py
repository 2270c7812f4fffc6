"""Host synchronisations of a logging step, counted (not timed): at most two per step, whatever the depth.

A ``TorchFunctionMode`` sees every call that forces a device-to-host transfer on a GPU (``item``, ``tolist``,
``cpu``, ``numpy``, ``float(t)``, ``bool(t)``, ``int(t)``, ``.to("cpu")``), on the CPU too. We count the calls made
directly by this package's code (the calling frame is in ``lightning_inflect/``) during a real ``fit`` with all
three monitors, a TensorBoard logger and gradient accumulation, and attribute each to the optimizer step it
happened in. The model's own forward (transformers' mask checks) and Lightning's own logging are not ours.
"""

from __future__ import annotations

import pytest
from conftest import NO_DROPOUT, ClsModule, SyncCounter, loader, tiny_model
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor


class StepTracker(Callback):
    """Tells the counter which optimizer step is running (set before the monitors' hooks run)."""

    def __init__(self, counter: SyncCounter) -> None:
        self.counter = counter

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.counter.step = trainer.global_step


def _fit(tmp_path, layers: int, every: int = 2, max_steps: int = 6, accumulate: int = 2):
    counter = SyncCounter(package_only=True)
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
            assert all(h.steps == logging_steps for h in m.history.values())
        calls = list(zip(counter.steps, counter.calls, counter.where))
        per_step = {s: [c for c in calls if c[0] == s] for s in range(-1, 6)}
        for step, at_step in per_step.items():
            assert len(at_step) <= (2 if step in logging_steps else 0), (layers, step, at_step)
        # the counter is not blind: it sees our own transfer, exactly one tolist per logging step
        assert [len(per_step[s]) for s in logging_steps] == [1, 1, 1], calls
        assert set(counter.calls) == {"tolist"}
        counts.append(len(counter.calls))
    assert counts[0] == counts[1]  # 2 blocks or 6: the same number of transfers
