"""Diagnostics auto-injection collects itself when no monitor logs them: one probe forward, one step's gradients.

The same requests, engine and definitions as the monitors (:mod:`~lightning_inflect.capture.contract`, run by the
monitors' probe session, :meth:`~lightning_inflect.functional.EntropySums.pooled_mean`,
:class:`~lightning_inflect.capture.ActivationGradCapture`, :func:`~lightning_inflect.functional.grouped_grad_norms`):
no second implementation of a metric. No Lightning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lightning_inflect.architectures import LayerInfo
from lightning_inflect.capture import (
    ActivationGradCapture,
    EntropyRequest,
    PooledRequest,
    ProbeRequest,
    ProbeResult,
    mean_norms,
)
from lightning_inflect.capture.ranks import grad_norm_shares, sum_over_ranks
from lightning_inflect.functional import cka_from_hsic, hsic_terms
from lightning_inflect.history import MetricHistory
from lightning_inflect.names import (
    ACT_GRAD_NORM,
    ATTN_ENTROPY,
    ATTN_ENTROPY_NORMALIZED,
    CKA_IMPORTANCE,
    PARAM_GRAD_NORM,
)

__all__ = ["PROBE_METRICS", "StepGradients", "probe_diagnostics"]

PROBE_METRICS = (ATTN_ENTROPY, ATTN_ENTROPY_NORMALIZED, CKA_IMPORTANCE)
"""The metrics a probe forward gives (the others come from a training step's gradients)."""


def probe_diagnostics(
    run: Callable[[list[ProbeRequest]], ProbeResult],
    info: LayerInfo,
    step: int,
    metrics: Sequence[str],
) -> dict[str, MetricHistory]:
    """The asked ``metrics`` over all blocks, from one probe that ``run`` makes for the requests given to it (the
    InjectionCallback passes the monitors' probe session, :meth:`ProbeSession.run`).

    ``attn_entropy`` and ``attn_entropy_normalized`` are the monitor's values (head-weighted mean, ``"token"``
    reduction); ``cka_importance`` is ``1 - CKA`` between each block's input and output (mean-pooled), Ogawa et al.
    Each metric is a one-row :class:`MetricHistory` at ``step``.
    """
    blocks = tuple(range(info.num_layers))
    entropy, outputs, first_input = EntropyRequest(blocks), PooledRequest(blocks), PooledRequest((0,), site="input")
    result = run([entropy, outputs, first_input])
    out: dict[str, MetricHistory] = {}
    if ATTN_ENTROPY in metrics or ATTN_ENTROPY_NORMALIZED in metrics:
        sums = result.answer(entropy)
        ent, norm = torch.stack([sums.pooled_mean(), sums.pooled_normalized_mean()]).tolist()
        out[ATTN_ENTROPY] = MetricHistory(blocks, [step], [ent])
        out[ATTN_ENTROPY_NORMALIZED] = MetricHistory(blocks, [step], [norm])
    if CKA_IMPORTANCE in metrics:
        reps = torch.cat([result.answer(first_input)[0], result.answer(outputs)[0]])  # (n + 1, examples, hidden)
        unbiased = reps.shape[1] >= 4
        values = 1.0 - cka_from_hsic(hsic_terms(reps[:-1], reps[1:], unbiased))
        out[CKA_IMPORTANCE] = MetricHistory(blocks, [step], [values.tolist()])
    return out


class StepGradients:
    """The activation- and parameter-gradient norms of every block over one optimizer step, for auto-injection.

    ``arm()`` before the step's first micro-batch (``new_micro_batch()`` before each), ``collect()`` in
    ``on_before_optimizer_step``; ``collected`` then maps ``act_grad_norm`` / ``param_grad_norm`` to one value per
    block, as :class:`~lightning_inflect.GradientNormMonitor` defines them.
    """

    def __init__(self, info: LayerInfo) -> None:
        self.info = info
        self._capture: ActivationGradCapture | None = None
        self.collected: dict[str, list[float]] = {}

    @property
    def armed(self) -> bool:
        return self._capture is not None

    def arm(self) -> None:
        """Start capturing activation gradients (idempotent), for the micro-batch about to run."""
        if self._capture is None:
            self._capture = ActivationGradCapture(self.info.blocks, range(self.info.num_layers))
            self._capture.arm()
        self._capture.new_micro_batch()

    def collect(self, parameters: bool) -> None:
        """Read the step's norms (the gradients are accumulated, not yet clipped) and stop capturing."""
        if parameters:
            groups = [
                [p.grad for p in b.parameters() if p.requires_grad and p.grad is not None] for b in self.info.blocks
            ]  # the full gradient's norm under FSDP2 too: shards' squares summed over ranks (every rank collects)
            self.collected[PARAM_GRAD_NORM] = sum_over_ranks(grad_norm_shares(groups)).sqrt().tolist()
        if self._capture is not None:
            self._capture.disarm()
            sums, counts = self._capture.read()
            host = sums.tolist() if sums is not None else [0.0] * len(counts)
            self.collected[ACT_GRAD_NORM] = mean_norms(host, counts)
            self._capture = None

    def disarm(self) -> None:
        """Remove every hook (teardown, exceptions)."""
        if self._capture is not None:
            self._capture.disarm()
            self._capture = None
