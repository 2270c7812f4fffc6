"""The Lightning side of the inflect monitors: a :class:`LightningHost` over the ``Trainer`` and the hooks that drive
the framework-free :class:`~lightning_inflect.core.monitor.MonitorCore` (strategy checks and the resume's early state
check are Lightning's own)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from lightning_inflect.callbacks.lightning_internals import callback_state_in_checkpoint, tensor_parallel_size
from lightning_inflect.callbacks.loggers import log_heatmap, log_metrics, takes_images
from lightning_inflect.callbacks.resume import before_weights_load_hooks, remove_hooks
from lightning_inflect.core.host import scaler_scale
from lightning_inflect.core.monitor import MonitorCore
from lightning_inflect.names import OVERHEAD_MS, layer_key

__all__ = ["OVERHEAD_KEY", "LightningHost", "layer_key"]

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


class LightningHost:
    """The :class:`~lightning_inflect.core.host.Host` of a Lightning ``Trainer``: its step, rank, precision plugin,
    loss scaler and loggers (scalars also into ``trainer.callback_metrics``)."""

    def __init__(self, trainer: pl.Trainer) -> None:
        self.trainer = trainer

    @property
    def key(self) -> pl.Trainer:
        return self.trainer

    @property
    def global_step(self) -> int:
        return self.trainer.global_step

    @property
    def is_global_zero(self) -> bool:
        return self.trainer.is_global_zero

    @property
    def checkpoint(self) -> Any:
        return self.trainer.ckpt_path

    @property
    def precision_context(self) -> Callable[[], Any] | None:
        return self.trainer.precision_plugin.forward_context

    @property
    def takes_images(self) -> bool:
        return any(takes_images(lg) for lg in self.trainer.loggers)

    def loss_scale(self) -> torch.Tensor | float:
        return scaler_scale(getattr(self.trainer.precision_plugin, "scaler", None))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        log_metrics(self.trainer, metrics, step)

    def log_heatmap(self, key: str, image: torch.Tensor, step: int) -> None:
        log_heatmap(self.trainer.loggers, key, image, step)

    def write_layout(self, layout: Mapping[str, Mapping[str, list]]) -> None:
        for lg in self.trainer.loggers:
            if isinstance(lg, TensorBoardLogger):
                lg.experiment.add_custom_scalars(dict(layout))

    def warn(self, message: str) -> None:
        rank_zero_warn(message)


class _InflectMonitor(MonitorCore, Callback):
    """Lightning glue of the monitors: each hook hands the :class:`LightningHost` to the core's event.

    Every value a monitor logs (``<prefix>/<metric>/layer_LL``, per-head keys, ``<prefix>/overhead_ms``) also goes
    into ``trainer.callback_metrics`` with its latest value, on every rank, right after the logging step's one host
    transfer (:func:`~lightning_inflect.callbacks.loggers.log_metrics`): ``EarlyStopping`` and ``ModelCheckpoint``
    can monitor any of these keys.
    """

    _load_hooks: tuple[Any, ...] = ()
    _state_checked = False

    def _lightning_host(self, trainer: pl.Trainer) -> LightningHost:
        host = self._host
        return host if isinstance(host, LightningHost) and host.trainer is trainer else LightningHost(trainer)

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
        self.begin_fit(LightningHost(trainer), pl_module)
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

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_started(self._lightning_host(trainer))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._load_hooks = remove_hooks(self._load_hooks)  # every strategy has loaded the checkpoint by now

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self.batch_started(self._lightning_host(trainer), batch)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.before_optimizer_step(self._lightning_host(trainer), optimizer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx):
        self.batch_ended(self._lightning_host(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_ended(self._lightning_host(trainer))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._cleanup(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._cleanup(trainer)

    def _cleanup(self, trainer: pl.Trainer) -> None:
        self._load_hooks = remove_hooks(self._load_hooks)
        self.end_fit(trainer)
