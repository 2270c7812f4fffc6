"""AttentionEntropyMonitor's logic, framework-free: per-block attention entropy of the probe, exact under SDPA.

The Lightning callback (:class:`~lightning_inflect.AttentionEntropyMonitor`) and any other loop's glue share it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch

from lightning_inflect.capture import EntropyRequest, ProbeRequest
from lightning_inflect.core.host import Host
from lightning_inflect.core.monitor import MonitorCore
from lightning_inflect.core.session import ProbeSession
from lightning_inflect.functional import EntropySums
from lightning_inflect.names import ATTN_ENTROPY, ATTN_ENTROPY_NORMALIZED, DEFAULT_PREFIX, layer_key
from lightning_inflect.validation import check_bool, check_choice

__all__ = ["EntropyMonitorCore"]


class EntropyMonitorCore(MonitorCore):
    """The logic of :class:`~lightning_inflect.AttentionEntropyMonitor`; see its documentation."""

    uses_probe = True

    def __init__(
        self,
        every_n_steps: int = 50,
        *,
        layers: Sequence[int] | None = None,
        normalized: bool = False,
        per_head: bool = False,
        reduction: Literal["token", "example"] = "token",
        model_attr: str | None = None,
        layers_path: str | None = None,
        log_key_prefix: str = DEFAULT_PREFIX,
        heatmap_every_n_logs: int = 5,
        probe: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        probe_batches: int = 1,
        probe_inputs: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> None:
        check_choice("reduction", reduction, ["token", "example"])
        check_bool("normalized", normalized)
        check_bool("per_head", per_head)
        self.metrics = (ATTN_ENTROPY, ATTN_ENTROPY_NORMALIZED) if normalized else (ATTN_ENTROPY,)
        super().__init__(
            every_n_steps=every_n_steps, layers=layers, model_attr=model_attr, layers_path=layers_path,
            log_key_prefix=log_key_prefix, heatmap_every_n_logs=heatmap_every_n_logs, probe=probe,
            probe_batches=probe_batches, probe_inputs=probe_inputs,
        )  # fmt: skip
        self.normalized = normalized
        self.per_head = per_head
        self.reduction = reduction

    def _identity(self) -> dict[str, Any]:
        identity = super()._identity()
        if self.reduction != "token":  # the default key stays as in version 0.1
            identity["reduction"] = self.reduction
        return identity

    def _request(self) -> EntropyRequest:
        return EntropyRequest(tuple(self.layers), self.reduction)

    def probe_requests(self) -> list[ProbeRequest]:
        return [self._request()]

    def on_probe(self, host: Host, session: ProbeSession, step: int) -> None:
        result = session.probe(step, host.precision_context)
        missing = [layer for layer in self.layers if layer in result.missing]
        if missing:
            impl = getattr(session.hf_model.config, "_attn_implementation", None)
            raise RuntimeError(
                f"No attention of blocks {missing} was seen during the probe forward of "
                f"{type(session.hf_model).__name__} (attn_implementation={impl!r}), neither through transformers' "
                "AttentionInterface nor as probabilities with `output_attentions=True`, so its attention entropy "
                "cannot be measured. Remove AttentionEntropyMonitor for this model, restrict it with `layers=`, or "
                "pass `layers_path=` if the blocks found are not the transformer blocks."
            )
        sums = EntropySums(*session.sum_over_ranks(torch.stack(result.answer(self._request()))))  # 1 collective
        count = sums.count  # (layers, heads)
        rows = [sums.pooled_mean()]
        if self.normalized:
            rows.append(sums.pooled_normalized_mean())
        if self.per_head:
            rows.append(sums.mean().flatten())
        heads = count.shape[1]
        self._emit(host, step, torch.cat(rows), lambda values: self._record_host(host, step, values, heads))

    def _record_host(self, host: Host, step: int, values: list[float], heads: int) -> dict[str, float]:
        n = len(self.layers)
        metrics = self._record(host, ATTN_ENTROPY, step, values[:n])
        if self.normalized:
            metrics.update(self._record(host, ATTN_ENTROPY_NORMALIZED, step, values[n : 2 * n]))
        if self.per_head:
            flat = values[-n * heads :]
            for i, layer in enumerate(self.layers):
                for h in range(heads):
                    metrics[layer_key(self.log_key_prefix, ATTN_ENTROPY, layer, h)] = flat[i * heads + h]
        return metrics
