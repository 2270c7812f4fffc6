"""GradientNormMonitor's logic, framework-free: per-block activation- and parameter-gradient norms of the real step.

The Lightning callback (:class:`~lightning_inflect.GradientNormMonitor`) and any other loop's glue share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch.optim import Optimizer

from lightning_inflect.capture import ActivationGradCapture, mean_norms
from lightning_inflect.capture.ranks import grad_norm_shares, sum_over_ranks, world_size
from lightning_inflect.core.host import Host
from lightning_inflect.core.monitor import MonitorCore
from lightning_inflect.core.session import ProbeSession
from lightning_inflect.names import ACT_GRAD_NORM, DEFAULT_PREFIX, PARAM_GRAD_NORM

__all__ = ["GradientNormCore"]

Norm = Literal["activation", "parameter"]


class GradientNormCore(MonitorCore):
    """The logic of :class:`~lightning_inflect.GradientNormMonitor`; see its documentation."""

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

    def begin_fit(self, host: Host, root: torch.nn.Module) -> None:
        super().begin_fit(host, root)
        if "activation" in self.norms:
            self._capture = ActivationGradCapture(self._require_session().info.blocks, self.layers)

    def batch_started(self, host: Host, batch: Any) -> None:
        """Arm the activation-gradient hooks for each micro-batch of a logging step (reset on its first)."""
        super().batch_started(host, batch)
        step = host.global_step
        if self._capture is None or not self.due(step):
            return
        if self._capture_step != step:  # first micro-batch of a logging step
            self._capture.disarm()
            self._capture.reset()
            self._capture.arm()
            self._capture_step = step
        self._capture.new_micro_batch()

    def before_optimizer_step(self, host: Host, optimizer: Optimizer) -> None:
        step = host.global_step
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
                scale = host.loss_scale() * world
                parts.append(sums.float() / scale if sums is not None else torch.zeros(n, device=session.device))
                parts.append(torch.tensor(counts, dtype=torch.float32, device=parts[0].device))
            if "parameter" in self.norms:
                parts.append(self._param_squares(host, session, optimizer))
            values = sum_over_ranks(torch.cat(parts))  # the one collective of this monitor, with several ranks
            self._emit(host, step, values, lambda values: self._record_host(host, step, values))

    def _param_squares(self, host: Host, session: ProbeSession, optimizer: Optimizer) -> torch.Tensor:
        """This rank's share of each block's squared parameter-gradient norm: shards count once, whole gradients
        (every rank holds them, synchronised) ``1 / world`` each, so that the sum over ranks is the full one."""
        blocks = session.info.blocks
        grads = [
            [p.grad for p in blocks[i].parameters() if p.requires_grad and p.grad is not None] for i in self.layers
        ]
        squares = grad_norm_shares(grads, device=session.device)
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            squares = squares / host.loss_scale() ** 2  # fused optimizers unscale inside step()
        return squares

    def _record_host(self, host: Host, step: int, values: list[float]) -> dict[str, float]:
        n = len(self.layers)
        metrics: dict[str, float] = {}
        if "activation" in self.norms:
            sums, counts, values = values[:n], [round(c) for c in values[n : 2 * n]], values[2 * n :]
            act = mean_norms(sums, counts) if any(counts) else [math.nan] * n
            unmeasured = [layer for layer, c in zip(self.layers, counts) if c == 0]
            if unmeasured:
                self._warn_once(
                    "no_act_grad",
                    f"GradientNormMonitor: no gradient reached the outputs of blocks {unmeasured} at step {step}: "
                    "nothing at or below them is trainable (for instance after freezing the backbone), so "
                    "autograd never computes it. `act_grad_norm` is logged as NaN there.",
                )
            metrics.update(self._record(host, ACT_GRAD_NORM, step, act, unmeasured))
        if "parameter" in self.norms:
            metrics.update(self._record(host, PARAM_GRAD_NORM, step, [math.sqrt(max(v, 0.0)) for v in values[:n]]))
        return metrics

    def end_fit(self, key: Any) -> None:
        if self._capture is not None:
            self._capture.disarm()
            self._capture.reset()
        self._capture_step = None
        super().end_fit(key)
