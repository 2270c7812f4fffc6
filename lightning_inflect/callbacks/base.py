"""Shared glue of the inflect monitors: validation, gating on optimizer steps, logging, history, layouts."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from lightning_inflect.architectures import check_layer_indices
from lightning_inflect.callbacks.lightning_internals import callback_state_in_checkpoint, tensor_parallel_size
from lightning_inflect.callbacks.loggers import log_heatmap, log_metrics, takes_images
from lightning_inflect.callbacks.resume import before_weights_load_hooks, remove_hooks
from lightning_inflect.callbacks.session import ProbeSession
from lightning_inflect.capture import ProbeRequest
from lightning_inflect.checkpoint_state import check_monitor_state
from lightning_inflect.functional import heatmap_image
from lightning_inflect.history import MetricHistory
from lightning_inflect.monitor import InflectMonitor
from lightning_inflect.names import DEFAULT_PREFIX, HEATMAP, OVERHEAD_MS, layer_key, run_key
from lightning_inflect.validation import check_callable, check_int, check_str

__all__ = ["OVERHEAD_KEY", "layer_key"]

OVERHEAD_KEY = OVERHEAD_MS
"""Kept for compatibility: :data:`lightning_inflect.names.OVERHEAD_MS` (``layer_key`` lives there too)."""


_UNSUPPORTED_STRATEGIES = {
    "DeepSpeedStrategy": "ZeRO keeps gradients in partitioned buffers of its own (a parameter's `.grad` is not its "
    "gradient), so the parameter-gradient norms cannot be read.",
    "FSDPStrategy": "FSDP1 leaves each rank a plain tensor holding its part of a gradient (or of a flat parameter), "
    "indistinguishable from a whole gradient, so the parameter-gradient norms would be wrong; FSDP2 shards each "
    "parameter as a DTensor, which says it is a shard.",
}
"""Strategies the monitors refuse at setup, and why."""


def _is_a(strategy: Any, name: str) -> bool:
    """Whether ``strategy`` is Lightning's strategy class ``name`` or a subclass of it."""
    import lightning.pytorch.strategies as strategies

    cls = getattr(strategies, name, None)
    return cls is not None and isinstance(strategy, cls)


class _InflectMonitor(Callback):
    """Base of the monitors. Subclasses set ``metrics`` and implement the hooks they need.

    Every monitor satisfies the public contract :class:`~lightning_inflect.monitor.InflectMonitor`; code outside
    this module reads monitors through it, never through this class.

    Every value a monitor logs (``<prefix>/<metric>/layer_LL``, per-head keys, ``<prefix>/overhead_ms``) also goes
    into ``trainer.callback_metrics`` with its latest value, on every rank, right after the logging step's one host
    transfer (:func:`~lightning_inflect.callbacks.loggers.log_metrics`): ``EarlyStopping`` and ``ModelCheckpoint``
    can monitor any of these keys.
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
        self._load_hooks: tuple[Any, ...] = ()
        self._state_checked = False
        self._checkpoint: Any = None  # the checkpoint being resumed from, for the errors
        self._warned: set[str] = set()
        self._reset_fit_state()

    def _reset_fit_state(self) -> None:
        """Forget everything of a previous fit (called in ``setup``; a resumed fit then loads its state)."""
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
        return self._generate_state_key(**self._identity())

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
        ``result.answer(request)``). Valid after ``setup``."""
        return []

    # ---------------------------------------------------------------------------------------------- lifecycle
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        strategy = next((n for n in _UNSUPPORTED_STRATEGIES if _is_a(trainer.strategy, n)), None)
        if strategy is not None:
            raise NotImplementedError(
                f"{type(self).__name__} does not support {strategy}: {_UNSUPPORTED_STRATEGIES[strategy]} Supported "
                "are the single-device strategy, DDP and FSDP2 (`ModelParallelStrategy(data_parallel_size=N, "
                "tensor_parallel_size=1)` with `fully_shard` in `configure_model`)."
            )
        tensor_parallel = tensor_parallel_size(trainer.strategy)
        if tensor_parallel != 1:
            raise ValueError(
                f"{type(self).__name__} combines its values over data-parallel ranks, but the strategy has "
                f"tensor_parallel_size={tensor_parallel!r}: ranks that share examples would be counted twice. Use "
                "`ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1)`, or remove the monitor."
            )
        self._session = ProbeSession.attach(trainer, pl_module, self)
        self.layers = check_layer_indices(self.layers_arg, self._session.info.num_layers)
        self._reset_fit_state()
        # A resume checks the saved state whole before Lightning loads the weights (it hands the callbacks their
        # state only after): a damaged state is refused before anything of the model or the optimizer changes.
        self._state_checked = False
        self._load_hooks = before_weights_load_hooks(pl_module, lambda *args: self._before_weights_load(trainer))
        if not trainer.loggers:
            self._warn_once(
                "no_logger",
                f"{type(self).__name__} has no logger to write to (the Trainer has `logger=False`): its values are "
                "kept in `.history` and `trainer.callback_metrics` only. Attach a logger, for example "
                "`TensorBoardLogger('runs')`.",
            )

    def _before_weights_load(self, trainer: pl.Trainer) -> None:
        if self._state_checked:
            return
        self._state_checked = True
        self._checkpoint = trainer.ckpt_path
        found, state = callback_state_in_checkpoint(trainer, self.state_key)
        if found:
            self._check_state(state)

    def _check_state(self, state: Any) -> None:
        """Refuse a saved ``state`` that is not what this monitor saves (:func:`check_monitor_state`)."""
        check_monitor_state(
            state,
            owner=f"{type(self).__name__} (state key {self.state_key!r})",
            metrics=self.metrics,
            layers=self.layers,
            checkpoint=self._checkpoint,
        )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        session = self._require_session()
        if self.uses_probe and session.probe_owner is self and self.probe is not None and not session.probe_complete:
            session.set_probe(self.probe)
            session.probe(-1, trainer)  # fails now, with a clear error, if the model cannot take the probe
        if session.members and session.members[0] is self and trainer.is_global_zero:
            self._write_layout(trainer, session)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._load_hooks = remove_hooks(self._load_hooks)  # every strategy has loaded the checkpoint by now

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        session = self._require_session()
        if self.uses_probe and session.probe_owner is self and not session.probe_complete:
            with session.timed(trainer.global_step):
                session.observe_batch(batch, self.probe_inputs, self.probe_batches)
        step = trainer.global_step
        if self.uses_probe and session.probe_complete and self.due(step) and self._last_probe_step != step:
            self._last_probe_step = step
            with session.timed(step):
                self.on_probe(trainer, session, step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx):
        session = self._require_session()
        if session.members and session.members[0] is self:
            session.flush(before_step=trainer.global_step)  # the optimizer step is done: one transfer for its values
            for step, seconds in sorted(session.pop_overhead(trainer.global_step).items()):
                self._log(trainer, {run_key(self.log_key_prefix, OVERHEAD_MS): seconds * 1000.0}, step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._session is not None:
            self._session.flush()
        # Always leave a heatmap of the whole run, whatever heatmap_every_n_logs and the run length were.
        if not self.heatmap_every_n_logs or not trainer.is_global_zero:
            return
        for metric, hist in self.history.items():
            if hist.steps and self._heatmap_at.get(metric) != len(hist):
                self._write_heatmap(trainer, metric, hist.steps[-1])

    def on_probe(self, trainer: pl.Trainer, session: ProbeSession, step: int) -> None:
        """Called once per logging step when the probe is available (monitors that use it)."""

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._cleanup(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._cleanup(trainer)

    def _cleanup(self, trainer: pl.Trainer) -> None:
        self._load_hooks = remove_hooks(self._load_hooks)
        ProbeSession.detach(trainer, self)
        self._session = None

    def _require_session(self) -> ProbeSession:
        if self._session is None:
            raise RuntimeError(f"{type(self).__name__} was used before `setup(stage='fit')`; attach it to a Trainer.")
        return self._session

    # ------------------------------------------------------------------------------------------------- output
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def _log(self, trainer: pl.Trainer, metrics: Mapping[str, float], step: int) -> None:
        """To every logger and into ``trainer.callback_metrics`` (host values, after the step's one transfer)."""
        log_metrics(trainer, metrics, step)

    def _record(
        self, trainer: pl.Trainer, metric: str, step: int, values: Sequence[float], unmeasured: Sequence[int] = ()
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
        if self.heatmap_every_n_logs and n % self.heatmap_every_n_logs == 0 and trainer.is_global_zero:
            self._write_heatmap(trainer, metric, step)
        return {layer_key(self.log_key_prefix, metric, i): v for i, v in zip(self.layers, values)}

    def _tensorboard(self, trainer: pl.Trainer) -> list[Any]:
        return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    def _write_heatmap(self, trainer: pl.Trainer, metric: str, step: int) -> None:
        """Render ``metric``'s whole history as one image and send it to the loggers that take images
        (:func:`~lightning_inflect.callbacks.loggers.log_heatmap`: TensorBoard, W&B, ...); nothing without one."""
        if not any(takes_images(lg) for lg in trainer.loggers):
            return
        self._heatmap_at[metric] = len(self.history[metric])
        values = self.history[metric].full().float().T  # (layers, logs)
        log_heatmap(trainer.loggers, run_key(self.log_key_prefix, HEATMAP, metric), heatmap_image(values), step)

    @staticmethod
    def _charts(monitor: InflectMonitor) -> dict[str, list]:
        p = monitor.log_key_prefix
        return {m: ["Multiline", [rf"^{p}/{m}/layer_\d+$"]] for m in monitor.metrics}

    def _write_layout(self, trainer: pl.Trainer, session: ProbeSession) -> None:
        writers = self._tensorboard(trainer)
        if not writers:
            return
        layout: dict[str, dict[str, list]] = {}
        for m in session.members:
            layout.setdefault(m.log_key_prefix, {}).update(self._charts(m))
        layout.setdefault(self.log_key_prefix, {})[OVERHEAD_MS] = [
            "Multiline",
            [rf"^{run_key(self.log_key_prefix, OVERHEAD_MS)}$"],
        ]
        for w in writers:
            w.add_custom_scalars(layout)

    # -------------------------------------------------------------------------------------------------- state
    def _emit(
        self, trainer: pl.Trainer, step: int, values: torch.Tensor, record: Callable[[list[float]], dict[str, float]]
    ) -> None:
        """Queue on-device ``values`` for the step's one host transfer; ``record`` turns them into logged keys."""

        def then(host: list[float]) -> None:
            self._log(trainer, record(host), step)

        self._require_session().defer(step, values, then)

    def state_dict(self) -> dict[str, Any]:
        if self._session is not None:
            self._session.flush()  # values still on the device belong in the checkpoint's history
        history = {metric: hist.state() for metric, hist in self.history.items()}
        state: dict[str, Any] = {"history": history, "last_probe_step": self._last_probe_step}
        if self.uses_probe and self._session is not None:
            state["probe"] = self._session.probe_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._check_state(state_dict)  # already checked before the weights loaded, when Lightning resumes a fit
        for metric, hist in state_dict.get("history", {}).items():
            if metric in self.history:
                self.history[metric] = MetricHistory.from_state(hist, blocks=self.layers)
        self._last_probe_step = state_dict.get("last_probe_step")
        probe = state_dict.get("probe")
        if probe and self._session is not None and not self._session.probe_complete:
            self._session.set_probe(probe)
