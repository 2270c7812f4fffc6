"""GradientNormMonitor: per-layer activation- and parameter-gradient norms from the real training step."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.optim import Optimizer

from lightning_inflect.callbacks.base import _InflectMonitor
from lightning_inflect.callbacks.session import ProbeSession
from lightning_inflect.capture import ActivationGradCapture, mean_norms
from lightning_inflect.capture.ranks import grad_norm_shares, sum_over_ranks, world_size
from lightning_inflect.names import ACT_GRAD_NORM, DEFAULT_PREFIX, PARAM_GRAD_NORM

__all__ = ["GradientNormMonitor"]

Norm = Literal["activation", "parameter"]


class GradientNormMonitor(_InflectMonitor):
    r"""Logs, per transformer block, the gradient norms of the real training step, every ``every_n_steps`` steps.

    * Activation gradient: :math:`\lVert \partial L / \partial h_l \rVert_F` of block ``l``'s output, per example
      (tokens x hidden, padding positions included), mean over all examples of the optimizer step. ``L`` is the loss
      the optimizer step minimises: under gradient accumulation Lightning divides each micro-batch loss by
      ``accumulate_grad_batches``, so the value is the same as one big batch would give with a mean loss. Under a
      loss scaler the value is unscaled. Hooks are armed only for the micro-batches of logging steps.
    * Parameter gradient: :math:`\sqrt{\sum \lVert \nabla_p L \rVert^2}` over block ``l``'s trainable parameters
      (LoRA ones included once injected), read in ``on_before_optimizer_step``: accumulated, unscaled, not clipped.

    All norms of a step stay on the device and reach the host in the session's one transfer per logging step.
    Non-finite values are logged as they are, with one warning.

    Logged keys (``inflect`` is ``log_key_prefix``, ``LL`` the block):

    * ``inflect/act_grad_norm/layer_LL`` and ``inflect/param_grad_norm/layer_LL``.
    * ``inflect/overhead_ms``, the custom-scalars layout and the images ``inflect/heatmap/act_grad_norm`` and
      ``inflect/heatmap/param_grad_norm``, as for :class:`~lightning_inflect.AttentionEntropyMonitor`.

    The scalar keys are also in ``trainer.callback_metrics`` (latest value), for ``EarlyStopping`` and
    ``ModelCheckpoint``, as for :class:`~lightning_inflect.AttentionEntropyMonitor`.

    Args:
        every_n_steps: log every N optimizer steps (``trainer.global_step``).
        layers: block indices to monitor; None for all.
        norms: which norms to log, any of ``"activation"`` and ``"parameter"``.
        model_attr, layers_path, log_key_prefix, heatmap_every_n_logs: as for
            :class:`~lightning_inflect.AttentionEntropyMonitor`.

    Example:
        >>> GradientNormMonitor(every_n_steps=10, norms=["parameter"]).metrics
        ('param_grad_norm',)
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        *,
        layers: Sequence[int] | None = None,
        norms: Sequence[Norm] = ("activation", "parameter"),
        model_attr: str | None = None,
        layers_path: str | None = None,
        log_key_prefix: str = DEFAULT_PREFIX,
        heatmap_every_n_logs: int = 5,
    ) -> None:
        allowed = ["activation", "parameter"]
        if isinstance(norms, str) or not norms or any(n not in allowed for n in norms):
            raise ValueError(f"Expected argument `norms` to be a non-empty list of {allowed} but got {norms!r}.")
        self.norms = tuple(n for n in allowed if n in norms)
        self.metrics = tuple({"activation": ACT_GRAD_NORM, "parameter": PARAM_GRAD_NORM}[n] for n in self.norms)
        super().__init__(
            every_n_steps=every_n_steps, layers=layers, model_attr=model_attr, layers_path=layers_path,
            log_key_prefix=log_key_prefix, heatmap_every_n_logs=heatmap_every_n_logs,
        )  # fmt: skip
        self._capture: ActivationGradCapture | None = None
        self._capture_step: int | None = None

    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "norms": list(self.norms)}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and "activation" in self.norms:
            self._capture = ActivationGradCapture(self._require_session().info.blocks, self.layers)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        step = trainer.global_step
        if self._capture is None or not self.due(step):
            return
        if self._capture_step != step:  # first micro-batch of a logging step
            self._capture.disarm()
            self._capture.reset()
            self._capture.arm()
            self._capture_step = step
        self._capture.new_micro_batch()

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer):
        step = trainer.global_step
        if not self.due(step):
            return
        session = self._require_session()
        with session.timed(step):
            n, world = len(self.layers), world_size()
            parts: list[torch.Tensor] = []
            if "activation" in self.norms:
                sums, counts = None, [0] * n
                if self._capture is not None and self._capture_step == step:
                    self._capture.disarm()
                    session.add_overhead(step, self._capture.seconds)
                    sums, counts = self._capture.read()
                # each rank differentiates its own loss; the step minimises their mean: 1 / world of each gradient
                scale = self._loss_scale(trainer) * world
                parts.append(sums.float() / scale if sums is not None else torch.zeros(n, device=session.device))
                parts.append(torch.tensor(counts, dtype=torch.float32, device=parts[0].device))
            if "parameter" in self.norms:
                parts.append(self._param_squares(trainer, session, optimizer))
            values = sum_over_ranks(torch.cat(parts))  # the one collective of this monitor, with several ranks
            self._emit(trainer, step, values, lambda host: self._record_host(trainer, step, host))

    def _param_squares(self, trainer: pl.Trainer, session: ProbeSession, optimizer: Optimizer) -> torch.Tensor:
        """This rank's share of each block's squared parameter-gradient norm: shards count once, whole gradients
        (every rank holds them, synchronised) ``1 / world`` each, so that the sum over ranks is the full one."""
        blocks = session.info.blocks
        grads = [
            [p.grad for p in blocks[i].parameters() if p.requires_grad and p.grad is not None] for i in self.layers
        ]
        squares = grad_norm_shares(grads, device=session.device)
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            squares = squares / self._loss_scale(trainer) ** 2  # fused optimizers unscale inside step()
        return squares

    def _record_host(self, trainer: pl.Trainer, step: int, host: list[float]) -> dict[str, float]:
        n = len(self.layers)
        metrics: dict[str, float] = {}
        if "activation" in self.norms:
            sums, counts, host = host[:n], [round(c) for c in host[n : 2 * n]], host[2 * n :]
            act = mean_norms(sums, counts) if any(counts) else [math.nan] * n
            unmeasured = [layer for layer, c in zip(self.layers, counts) if c == 0]
            if unmeasured:
                self._warn_once(
                    "no_act_grad",
                    f"GradientNormMonitor: no gradient reached the outputs of blocks {unmeasured} at step {step}: "
                    "nothing at or below them is trainable (for instance after freezing the backbone), so "
                    "autograd never computes it. `act_grad_norm` is logged as NaN there.",
                )
            metrics.update(self._record(trainer, ACT_GRAD_NORM, step, act, unmeasured))
        if "parameter" in self.norms:
            metrics.update(self._record(trainer, PARAM_GRAD_NORM, step, [math.sqrt(max(v, 0.0)) for v in host[:n]]))
        return metrics

    @staticmethod
    def _loss_scale(trainer: pl.Trainer) -> torch.Tensor | float:
        """The loss scaler's current scale, as the scaler's own on-device tensor (reading it as a float would
        synchronise), or 1.0 without a scaler."""
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is None or not getattr(scaler, "is_enabled", lambda: False)():
            return 1.0
        scale = getattr(scaler, "_scale", None)
        return scale if isinstance(scale, torch.Tensor) else float(scaler.get_scale())

    def _cleanup(self, trainer: pl.Trainer) -> None:
        if self._capture is not None:
            self._capture.disarm()
            self._capture.reset()
        self._capture_step = None
        super()._cleanup(trainer)
