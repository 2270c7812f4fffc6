"""The monitors' core needs no Lightning: a plain PyTorch training loop, with a Host of a few lines, drives the same
logic the Lightning callbacks drive and gets the same histories, with one host transfer per logging step (what a
Hugging Face Trainer front end will build on)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from conftest import NO_DROPOUT, ClsModule, loader, make_trainer, tiny_model

from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor
from lightning_inflect.core import CKADriftCore, EntropyMonitorCore, GradientNormCore
from lightning_inflect.names import OVERHEAD_MS, run_key

STEPS, LR = 4, 0.05


class PlainHost:
    """A Host of a hand-written loop: it counts the steps and keeps what is logged."""

    def __init__(self) -> None:
        self.global_step = 0
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.images: list[str] = []
        self.warnings: list[str] = []
        self.layouts: list[Mapping] = []

    key = property(lambda self: self)
    is_global_zero = True
    checkpoint = None
    precision_context = None
    takes_images = True

    def loss_scale(self) -> float:
        return 1.0

    def log_metrics(self, metrics, step) -> None:
        self.logged.append((step, dict(metrics)))

    def log_heatmap(self, key, image, step) -> None:
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        self.images.append(key)

    def write_layout(self, layout) -> None:
        self.layouts.append(layout)

    def warn(self, message) -> None:
        self.warnings.append(message)


def _plain_loop(cores) -> PlainHost:
    model, host = tiny_model("bert", **NO_DROPOUT).train(), PlainHost()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for core in cores:
        core.begin_fit(host, model)
    for core in cores:
        core.fit_started(host)
    for batch in loader(8 * STEPS):
        for core in cores:
            core.batch_started(host, batch)
        optimizer.zero_grad()
        model(**batch).loss.backward()
        for core in cores:
            core.before_optimizer_step(host, optimizer)
        optimizer.step()
        host.global_step += 1
        for core in cores:
            core.batch_ended(host)
    for core in cores:
        core.train_ended(host)
    session = cores[0]._require_session()
    host.transfers = session.transfers
    for core in cores:
        core.end_fit(host.key)
    return host


def test_a_plain_loop_gets_the_lightning_callbacks_values_with_one_transfer_per_logging_step(tmp_path):
    cores = [EntropyMonitorCore(1), GradientNormCore(1), CKADriftCore(1)]
    host = _plain_loop(cores)
    monitors = [AttentionEntropyMonitor(1), GradientNormMonitor(1), CKADriftMonitor(1)]
    make_trainer(tmp_path, monitors, max_steps=STEPS).fit(ClsModule(tiny_model("bert", **NO_DROPOUT), lr=LR),
                                                         loader(8 * STEPS))  # fmt: skip
    for core, monitor in zip(cores, monitors):
        assert core.state_key.replace(type(core).__name__, "") == monitor.state_key.replace(type(monitor).__name__, "")
        assert core.history.keys() == monitor.history.keys()
        for metric, hist in monitor.history.items():
            assert core.history[metric].steps == hist.steps == list(range(STEPS)), metric
            torch.testing.assert_close(core.history[metric].full(), hist.full(), rtol=1e-6, atol=1e-8, msg=metric)
    assert host.transfers == STEPS  # every value of a logging step, of the three cores together, in one transfer
    overhead = [step for step, metrics in host.logged if run_key("inflect", OVERHEAD_MS) in metrics]
    assert overhead == list(range(STEPS))
    last = {k: v for step, metrics in host.logged if step == STEPS - 1 for k, v in metrics.items()}
    assert last["inflect/cka_drift/layer_02"] == cores[2].history["cka_drift"].rows[-1][2]
    assert len(host.layouts) == 1 and set(host.layouts[0]["inflect"]) >= {"attn_entropy", "cka_drift", OVERHEAD_MS}
    assert set(host.images) == {f"inflect/heatmap/{m}" for core in cores for m in core.metrics}  # at train end
    assert not host.warnings
