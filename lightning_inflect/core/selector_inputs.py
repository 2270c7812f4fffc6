"""What auto-injection's selectors and trigger read: the monitors' histories, else the callback's own diagnostics."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from lightning_inflect.architectures import LayerInfo
from lightning_inflect.capture import default_model_inputs, to_device
from lightning_inflect.core.session import ProbeSession, flush_monitors
from lightning_inflect.history import MetricHistory
from lightning_inflect.injection import PROBE_METRICS, StepGradients, probe_diagnostics
from lightning_inflect.monitor import InflectMonitor
from lightning_inflect.names import ACT_GRAD_NORM
from lightning_inflect.selection import GradientSuppressionTrigger, Selector

__all__ = ["SelectorInputs"]


class SelectorInputs:
    """The per-block metrics of one fit for the selectors: from the attached monitors when they log them, else
    collected by the InjectionCallback itself (one step's gradients, one probe forward).

    Framework-free: the training loop is ``key`` (the object its monitors share their session by) and two
    functions of it.

    Args:
        key: the running trainer (Lightning's ``Trainer``, the Hugging Face ``Trainer``, any loop object).
        model: the Hugging Face model.
        info: where its blocks are.
        selectors: the selectors that will read the metrics (their ``requires``).
        probe_inputs: maps a training batch to model inputs for the own probe (default: a dict batch's keys).
        callbacks: returns the loop's callbacks, among them the monitors (default: ``key.callbacks``).
        precision_context: the loop's forward context factory (autocast) for the own probe, or None.
    """

    def __init__(
        self,
        key: Any,
        model: nn.Module,
        info: LayerInfo,
        selectors: Sequence[Selector],
        probe_inputs: Callable[[Any], Mapping[str, Any]] | None = None,
        *,
        callbacks: Callable[[], Sequence[Any]] | None = None,
        precision_context: Callable[[], Any] | None = None,
    ) -> None:
        self.key, self.model, self.info = key, model, info
        self._callbacks = callbacks or (lambda: list(getattr(key, "callbacks", [])))
        self.precision_context = precision_context
        self.needed = sorted({m for s in selectors for m in s.requires})
        self.probe_inputs = probe_inputs
        self.grads = StepGradients(info)
        self.trigger_rows = 0

    def _monitors(self) -> list[InflectMonitor]:
        """The trainer's callbacks that are inflect monitors (any object that satisfies the protocol)."""
        return [cb for cb in self._callbacks() if isinstance(cb, InflectMonitor)]

    def monitor_history(self, metric: str) -> MetricHistory | None:
        """The first attached monitor's history of ``metric``, over all blocks (NaN where it does not monitor)."""
        flush_monitors(self.key)  # values the monitors still hold on the device
        for cb in self._monitors():
            if metric in cb.history and len(cb.history[metric]):
                return cb.history[metric].over(self.info.num_layers)
        return None

    def needs_own(self, metric: str) -> bool:
        """Whether a selector needs ``metric`` and no monitor has logged it."""
        return metric in self.needed and self.monitor_history(metric) is None

    def own_probe_metrics(self) -> list[str]:
        """Metrics the selectors need from a probe forward that no attached monitor logs."""
        logged = {m for cb in self._monitors() for m in cb.metrics}
        return sorted((set(self.needed) & set(PROBE_METRICS)) - logged)

    def model_inputs(self, batch: Any) -> dict[str, Any]:
        """The model's keyword inputs from a training batch, for the own probe."""
        if self.probe_inputs is None:
            try:
                return default_model_inputs(self.model, batch)
            except TypeError as err:
                raise TypeError(
                    f"InjectionCallback(auto=True) probes the model itself for {self.own_probe_metrics()}, but the "
                    f"training batch is a {type(batch).__name__}: pass `probe_inputs=` to the InjectionCallback (a "
                    "function from your batch to a dict such as {'input_ids': ..., 'attention_mask': ...}), or "
                    "attach the monitors that log these metrics."
                ) from err
        inputs = self.probe_inputs(batch)
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"InjectionCallback's `probe_inputs` must return a dict of model keyword inputs but returned "
                f"{type(inputs).__name__}."
            )
        return dict(inputs)

    def history(self, batch: Any, step: int) -> dict[str, MetricHistory]:
        """Every needed metric: a monitor's history, else the own gradients of step ``step - 1``, else a probe of
        ``batch``."""
        history: dict[str, MetricHistory] = {}
        probe_metrics = []
        for metric in self.needed:
            hist = self.monitor_history(metric)
            if hist is not None:
                history[metric] = hist
            elif metric in self.grads.collected:
                blocks = tuple(range(self.info.num_layers))
                history[metric] = MetricHistory(blocks, [step - 1], [self.grads.collected[metric]])
            elif metric in PROBE_METRICS:
                probe_metrics.append(metric)
        if probe_metrics:
            session = ProbeSession.of(self.key, self.model, self.info)
            inputs = [to_device(self.model_inputs(batch), session.device)]
            run = lambda requests: session.run(inputs, requests, self.precision_context)  # noqa: E731
            history.update(probe_diagnostics(run, self.info, step, probe_metrics))
        return history

    def trigger_fired(self, trigger: GradientSuppressionTrigger) -> bool:
        """Feed ``trigger`` the activation-gradient rows logged since the last call; True if it fired."""
        logged = max((len(cb.history[ACT_GRAD_NORM]) for cb in self._monitors() if ACT_GRAD_NORM in cb.history),
                     default=0)  # fmt: skip
        if logged <= self.trigger_rows:  # nothing new: stay off the per-batch path
            return False
        hist = self.monitor_history(ACT_GRAD_NORM)
        rows = hist.rows if hist else []
        fired = False
        for row in rows[self.trigger_rows :]:
            fired = trigger.update(row) or fired
        self.trigger_rows = len(rows)
        return fired
