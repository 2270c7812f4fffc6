"""The monitors' shared logic, framework-free: options, gating on optimizer steps, history, logging, state.

:class:`MonitorCore` is everything an inflect monitor does that does not depend on the training loop. It reads the
loop through a :class:`~lightning_inflect.core.host.Host` and is driven by a few events, which each loop's adapter
calls from its own hooks:

* :meth:`~MonitorCore.begin_fit` once the model is known (Lightning: ``setup``), :meth:`~MonitorCore.fit_started`
  before the first step (``on_fit_start``);
* :meth:`~MonitorCore.batch_started` with each training micro-batch (``on_train_batch_start``),
  :meth:`~MonitorCore.before_optimizer_step` (``on_before_optimizer_step``), :meth:`~MonitorCore.batch_ended` after
  each micro-batch (``on_train_batch_end``: the values of a finished optimizer step reach the host there);
* :meth:`~MonitorCore.train_ended` and :meth:`~MonitorCore.end_fit` (``on_train_end``, ``teardown``).

Its ``state_dict``/``load_state_dict`` are the checkpoint state, checked whole on load
(:func:`~lightning_inflect.checkpoint_state.check_monitor_state`). No Lightning, no Hugging Face ``Trainer`` here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from lightning_inflect.architectures import check_layer_indices
from lightning_inflect.capture import ProbeRequest
from lightning_inflect.checkpoint_state import check_monitor_state
from lightning_inflect.core.host import Host
from lightning_inflect.core.session import ProbeSession
from lightning_inflect.functional import heatmap_image
from lightning_inflect.history import MetricHistory
from lightning_inflect.monitor import InflectMonitor
from lightning_inflect.names import DEFAULT_PREFIX, HEATMAP, OVERHEAD_MS, layer_key, run_key
from lightning_inflect.validation import check_callable, check_int, check_str

__all__ = ["MonitorCore"]


class MonitorCore:
    """Base of the monitors' logic. Subclasses set ``metrics`` and implement the events they need.

    Every monitor satisfies the public contract :class:`~lightning_inflect.monitor.InflectMonitor`; code outside
    the monitors reads them through it, never through this class.
    """

    metrics: tuple[str, ...] = ()
    uses_probe = False

    def __init__(
        self,
        every_n_steps: int = 50,
        *,
        layers: Sequence[int] | None = None,
        model_attr: str | None = None,
        layers_path: str | None = None,
        log_key_prefix: str = DEFAULT_PREFIX,
        heatmap_every_n_logs: int = 5,
        probe: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        probe_batches: int = 1,
        probe_inputs: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> None:
        check_int("every_n_steps", every_n_steps, low=1)
        check_int("heatmap_every_n_logs", heatmap_every_n_logs, low=0)
        check_int("probe_batches", probe_batches, low=1)
        check_str("model_attr", model_attr, optional=True, hint="For example `model_attr='model'`.")
        check_str("layers_path", layers_path, optional=True, hint="For example `layers_path='encoder.layer'`.")
        check_str("log_key_prefix", log_key_prefix, hint="The default is 'inflect'.")
        check_callable("probe_inputs", probe_inputs)
        if layers is not None and (isinstance(layers, (str, bytes)) or len(layers) == 0):
            raise ValueError(
                f"Expected argument `layers` to be None (all blocks) or a non-empty sequence of block indices "
                f"but got {layers!r}."
            )
        probe_list: list[Mapping[str, Any]] | None = None
        if probe is not None:
            probe_list = [probe] if isinstance(probe, Mapping) else list(probe)
            if not probe_list or not all(isinstance(b, Mapping) for b in probe_list):
                raise ValueError(
                    "Expected argument `probe` to be a dict of model keyword inputs (or a non-empty list of them) "
                    f"but got {type(probe).__name__}."
                )
        self.every_n_steps = every_n_steps
        self.layers_arg = None if layers is None else list(layers)
        self.model_attr = model_attr
        self.layers_path = layers_path
        self.log_key_prefix = log_key_prefix
        self.heatmap_every_n_logs = heatmap_every_n_logs
        self.probe = probe_list
        self.probe_batches = len(probe_list) if probe_list is not None else probe_batches
        self.probe_inputs = probe_inputs
        self.layers: list[int] = []
        self._session: ProbeSession | None = None
        self._host: Host | None = None
        self._checkpoint: Any = None  # the checkpoint being resumed from, for the errors
        self._warned: set[str] = set()
        self._reset_fit_state()

    def _reset_fit_state(self) -> None:
        """Forget everything of a previous fit (called in ``begin_fit``; a resumed fit then loads its state)."""
        self.history: dict[str, MetricHistory] = {m: MetricHistory(tuple(self.layers)) for m in self.metrics}
        self._last_probe_step: int | None = None
        self._heatmap_at: dict[str, int] = {}  # metric -> number of logs when its heatmap was last written

    # ---------------------------------------------------------------------------------------------- identity
    def _identity(self) -> dict[str, Any]:
        identity: dict[str, Any] = {"every_n_steps": self.every_n_steps, "layers": self.layers_arg}
        if self.log_key_prefix != DEFAULT_PREFIX:  # the default key stays as in version 0.1
            identity["log_key_prefix"] = self.log_key_prefix
        return identity

    @property
    def state_key(self) -> str:
        """The key of this monitor's state in a checkpoint: its class and identifying options (Lightning's format)."""
        return f"{type(self).__qualname__}{self._identity()!r}"

    def same_probe(self, other: InflectMonitor) -> bool:
        return (
            self.probe_batches == other.probe_batches
            and (self.probe is None) == (other.probe is None)
            and self.probe_inputs is other.probe_inputs
        )

    def due(self, step: int) -> bool:
        return step % self.every_n_steps == 0

    def probe_requests(self) -> list[ProbeRequest]:
        """What this monitor needs from the shared probe forward on its logging steps (its own answer is read with
        ``result.answer(request)``). Valid after ``begin_fit``."""
        return []

    # ------------------------------------------------------------------------------------------------ events
    def begin_fit(self, host: Host, root: torch.nn.Module) -> None:
        """Find the model in ``root``, join the run's session and start a fresh history."""
        self._host = host
        self._session = ProbeSession.attach(host.key, root, self)
        self.layers = check_layer_indices(self.layers_arg, self._session.info.num_layers)
        self._reset_fit_state()

    def fit_started(self, host: Host) -> None:
        """Before the first step: a fixed probe is tried (a clear error now if the model cannot take it), and the
        first monitor writes the run's TensorBoard layout."""
        session = self._require_session()
        if self.uses_probe and session.probe_owner is self and self.probe is not None and not session.probe_complete:
            session.set_probe(self.probe)
            session.probe(-1, host.precision_context)  # fails now, with a clear error, if the model cannot take it
        if session.members and session.members[0] is self and host.is_global_zero:
            self._write_layout(host, session)

    def batch_started(self, host: Host, batch: Any) -> None:
        """Each training micro-batch, before its forward: the probe takes its batches, a logging step probes."""
        session = self._require_session()
        if self.uses_probe and session.probe_owner is self and not session.probe_complete:
            with session.timed(host.global_step):
                session.observe_batch(batch, self.probe_inputs, self.probe_batches)
        step = host.global_step
        if self.uses_probe and session.probe_complete and self.due(step) and self._last_probe_step != step:
            self._last_probe_step = step
            with session.timed(step):
                self.on_probe(host, session, step)

    def before_optimizer_step(self, host: Host, optimizer: torch.optim.Optimizer) -> None:
        """The step's gradients are complete (accumulated, unscaled, not clipped)."""

    def batch_ended(self, host: Host, steps_done: int | None = None) -> None:
        """After each micro-batch: the first monitor moves the values of the finished optimizer steps to the host in
        one transfer and logs the run's overhead. ``steps_done`` is the number of optimizer steps finished (default
        ``host.global_step``; a loop that calls this after the optimizer step but before it counts it passes one
        more)."""
        session = self._require_session()
        done = host.global_step if steps_done is None else steps_done
        if session.members and session.members[0] is self:
            session.flush(before_step=done)  # the optimizer step is done: one transfer for its values
            for step, seconds in sorted(session.pop_overhead(done).items()):
                self._log(host, {run_key(self.log_key_prefix, OVERHEAD_MS): seconds * 1000.0}, step)

    def train_ended(self, host: Host) -> None:
        if self._session is not None:
            self._session.flush()
        # Always leave a heatmap of the whole run, whatever heatmap_every_n_logs and the run length were.
        if not self.heatmap_every_n_logs or not host.is_global_zero:
            return
        for metric, hist in self.history.items():
            if hist.steps and self._heatmap_at.get(metric) != len(hist):
                self._write_heatmap(host, metric, hist.steps[-1])

    def on_probe(self, host: Host, session: ProbeSession, step: int) -> None:
        """Called once per logging step when the probe is available (monitors that use it)."""

    def end_fit(self, key: Any) -> None:
        """The fit is over (or failed): leave the session of the run ``key`` (the host's ``key``)."""
        ProbeSession.detach(key, self)
        self._session = None
        self._host = None

    def _require_session(self) -> ProbeSession:
        if self._session is None:
            raise RuntimeError(f"{type(self).__name__} was used before its fit began; attach it to a trainer.")
        return self._session

    # ------------------------------------------------------------------------------------------------- output
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            if self._host is not None:
                self._host.warn(message)
            else:
                warnings.warn(message, stacklevel=2)

    def _log(self, host: Host, metrics: Mapping[str, float], step: int) -> None:
        """Host values, after the step's one transfer, to wherever the loop reports."""
        host.log_metrics(metrics, step)

    def _record(
        self, host: Host, metric: str, step: int, values: Sequence[float], unmeasured: Sequence[int] = ()
    ) -> dict[str, float]:
        """Append one per-layer vector to the history, refresh the heatmap every few logs; return the keys to log.

        ``unmeasured`` blocks are NaN on purpose (nothing to measure there) and do not count as non-finite.
        """
        values = [float(v) for v in values]
        bad = [layer for layer, v in zip(self.layers, values) if not math.isfinite(v) and layer not in unmeasured]
        if bad:
            self._warn_once(
                f"nonfinite_{metric}",
                f"{type(self).__name__}: non-finite `{metric}` at step {step} in blocks {bad}; logged as nan/inf. "
                "This warning is shown once; the values keep being logged as they are.",
            )
        hist = self.history[metric]
        hist.append(step, values)
        n = len(hist)
        if self.heatmap_every_n_logs and n % self.heatmap_every_n_logs == 0 and host.is_global_zero:
            self._write_heatmap(host, metric, step)
        return {layer_key(self.log_key_prefix, metric, i): v for i, v in zip(self.layers, values)}

    def _write_heatmap(self, host: Host, metric: str, step: int) -> None:
        """Render ``metric``'s whole history as one image for the loggers that take images; nothing without one."""
        if not host.takes_images:
            return
        self._heatmap_at[metric] = len(self.history[metric])
        values = self.history[metric].full().float().T  # (layers, logs)
        host.log_heatmap(run_key(self.log_key_prefix, HEATMAP, metric), heatmap_image(values), step)

    @staticmethod
    def _charts(monitor: InflectMonitor) -> dict[str, list]:
        p = monitor.log_key_prefix
        return {m: ["Multiline", [rf"^{p}/{m}/layer_\d+$"]] for m in monitor.metrics}

    def _write_layout(self, host: Host, session: ProbeSession) -> None:
        layout: dict[str, dict[str, list]] = {}
        for m in session.members:
            layout.setdefault(m.log_key_prefix, {}).update(self._charts(m))
        layout.setdefault(self.log_key_prefix, {})[OVERHEAD_MS] = [
            "Multiline",
            [rf"^{run_key(self.log_key_prefix, OVERHEAD_MS)}$"],
        ]
        host.write_layout(layout)

    # -------------------------------------------------------------------------------------------------- state
    def _emit(
        self, host: Host, step: int, values: torch.Tensor, record: Callable[[list[float]], dict[str, float]]
    ) -> None:
        """Queue on-device ``values`` for the step's one host transfer; ``record`` turns them into logged keys."""

        def then(host_values: list[float]) -> None:
            self._log(host, record(host_values), step)

        self._require_session().defer(step, values, then)

    def _check_state(self, state: Any) -> None:
        """Refuse a saved ``state`` that is not what this monitor saves (:func:`check_monitor_state`)."""
        check_monitor_state(
            state,
            owner=f"{type(self).__name__} (state key {self.state_key!r})",
            metrics=self.metrics,
            layers=self.layers,
            checkpoint=self._checkpoint,
        )

    def state_dict(self) -> dict[str, Any]:
        if self._session is not None:
            self._session.flush()  # values still on the device belong in the checkpoint's history
        history = {metric: hist.state() for metric, hist in self.history.items()}
        state: dict[str, Any] = {"history": history, "last_probe_step": self._last_probe_step}
        if self.uses_probe and self._session is not None:
            state["probe"] = self._session.probe_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._check_state(state_dict)  # already checked before the weights loaded, when a resume reads it early
        for metric, hist in state_dict.get("history", {}).items():
            if metric in self.history:
                self.history[metric] = MetricHistory.from_state(hist, blocks=self.layers)
        self._last_probe_step = state_dict.get("last_probe_step")
        probe = state_dict.get("probe")
        if probe and self._session is not None and not self._session.probe_complete:
            self._session.set_probe(probe)
