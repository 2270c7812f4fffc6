"""The monitors' public contract: every monitor satisfies ``InflectMonitor``, and code that reads monitors through it
(the probe session, the InjectionCallback's selector inputs) takes any object that does, Lightning or not."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_model

from lightning_inflect import SKI, AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor, InflectMonitor
from lightning_inflect.architectures import find_layers
from lightning_inflect.core.selector_inputs import SelectorInputs
from lightning_inflect.core.session import ProbeSession
from lightning_inflect.history import MetricHistory
from lightning_inflect.names import ACT_GRAD_NORM, ATTN_ENTROPY, CKA_DRIFT, layer_key
from lightning_inflect.selection import GradientSuppressionTrigger


class Recorded:
    """A monitor of another training loop: plain attributes and the three methods, no Lightning, no base class."""

    uses_probe, model_attr, layers_path = False, None, None
    probe, probe_batches, probe_inputs = None, 1, None

    def __init__(self, history: dict[str, MetricHistory], prefix: str = "inflect", every: int = 10) -> None:
        self.history = history
        self.metrics = tuple(history)
        self.layers = sorted({b for h in history.values() for b in h.blocks})
        self.log_key_prefix, self.every_n_steps = prefix, every

    def due(self, step: int) -> bool:
        return step % self.every_n_steps == 0

    def probe_requests(self) -> list:
        return []

    def same_probe(self, other: InflectMonitor) -> bool:
        return True


class Loop:
    """Stands in for a trainer: what SelectorInputs and ProbeSession read of one (its callbacks)."""

    def __init__(self, callbacks: list) -> None:
        self.callbacks = callbacks


@pytest.mark.parametrize(
    "monitor",
    [
        AttentionEntropyMonitor(every_n_steps=5, normalized=True),
        GradientNormMonitor(every_n_steps=5),
        CKADriftMonitor(every_n_steps=5),
        Recorded({CKA_DRIFT: MetricHistory((0,))}),
    ],
    ids=lambda m: type(m).__name__,
)
def test_every_monitor_satisfies_the_protocol(monitor):
    assert isinstance(monitor, InflectMonitor)
    assert set(monitor.history) == set(monitor.metrics)  # the contract: one history per metric logged
    assert monitor.due(0) and monitor.due(monitor.every_n_steps) and not monitor.due(1)


def test_what_lacks_a_member_is_not_a_monitor():
    plain = Recorded({CKA_DRIFT: MetricHistory((0,))})
    del plain.history
    assert not isinstance(plain, InflectMonitor)
    assert not isinstance(object(), InflectMonitor)


def test_selector_inputs_read_a_non_lightning_monitor_history():
    model = tiny_model("bert")  # 3 blocks
    info = find_layers(model)
    entropy = MetricHistory((0, 2), [10, 20], [[2.0, 1.0], [1.5, 0.5]])  # block 1 not monitored
    grads = MetricHistory((0, 1, 2), [10, 20], [[1.0, 0.1, 1.0], [4.0, 1.0, 1.0]])
    other = Recorded({ATTN_ENTROPY: entropy, ACT_GRAD_NORM: grads})
    loop = Loop([object(), other])  # a callback that is no monitor is skipped
    inputs = SelectorInputs(loop, model, info, [SKI()])  # type: ignore[arg-type]

    assert inputs.needed == [ACT_GRAD_NORM, ATTN_ENTROPY]
    assert inputs.own_probe_metrics() == []  # the monitor logs what SKI needs: no probe of its own
    history = inputs.history(batch=None, step=21)
    assert history[ACT_GRAD_NORM].rows == grads.rows
    got = history[ATTN_ENTROPY]  # over all 3 blocks, NaN where the monitor does not measure
    assert got.steps == [10, 20] and [r[0] for r in got.rows] == [2.0, 1.5] and [r[2] for r in got.rows] == [1.0, 0.5]
    assert all(math.isnan(r[1]) for r in got.rows)
    # the trigger reads the same monitor's activation-gradient rows: the first has a drop of log(10) between blocks
    trigger = GradientSuppressionTrigger(threshold=math.log(2), patience=1)
    assert inputs.trigger_fired(trigger) is True and inputs.trigger_rows == 2
    assert inputs.trigger_fired(trigger) is False  # no new rows: nothing read


def test_the_probe_session_takes_protocol_monitors_and_checks_their_keys():
    module = torch.nn.Module()
    module.model = tiny_model("bert")
    loop = Loop([])
    first = Recorded({CKA_DRIFT: MetricHistory((0,))})
    session = ProbeSession.attach(loop, module, first)  # type: ignore[arg-type]
    assert session.members == [first] and session.probe_owner is None  # it does not use the probe
    ProbeSession.attach(loop, module, Recorded({CKA_DRIFT: MetricHistory((0,))}, prefix="other"))
    clash = Recorded({CKA_DRIFT: MetricHistory((0,))})
    with pytest.raises(ValueError, match=r"both log `inflect/cka_drift/\.\.\.`.*another `log_key_prefix`"):
        ProbeSession.attach(loop, module, clash)  # type: ignore[arg-type]
    assert layer_key(first.log_key_prefix, CKA_DRIFT, 0) == "inflect/cka_drift/layer_00"
