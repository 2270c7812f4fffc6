"""AttentionEntropyMonitor: per-layer attention entropy of a fixed probe batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch

from lightning_inflect.callbacks.base import _InflectMonitor
from lightning_inflect.callbacks.session import ProbeSession
from lightning_inflect.capture import EntropyRequest, ProbeRequest
from lightning_inflect.functional import EntropySums
from lightning_inflect.names import ATTN_ENTROPY, ATTN_ENTROPY_NORMALIZED, DEFAULT_PREFIX, layer_key
from lightning_inflect.validation import check_bool, check_choice

__all__ = ["AttentionEntropyMonitor"]


class AttentionEntropyMonitor(_InflectMonitor):
    r"""Logs the attention entropy of every transformer block, every ``every_n_steps`` optimizer steps.

    On a logging step the probe batch runs once through the model in eval mode under ``no_grad`` (shared with the
    other inflect monitors); each block's self-attention entropy is computed exactly from the queries, keys, mask and
    scaling the model itself uses, also under SDPA, without ``output_attentions`` and without switching to eager
    attention. Formula: :mod:`lightning_inflect.functional.entropy`; mean over valid (not padding) queries, heads and
    examples, in nats.

    Logged keys (``inflect`` is ``log_key_prefix``; ``LL`` the two-digit block index, ``HH`` the head):

    * ``inflect/attn_entropy/layer_LL``: mean entropy in nats, in ``[0, log T]``.
    * ``inflect/attn_entropy_normalized/layer_LL``: with ``normalized=True``, each query's entropy divided by
      ``log(n_valid_keys)``, in ``[0, 1]``.
    * ``inflect/attn_entropy/layer_LL/head_HH``: with ``per_head=True``.
    * ``inflect/overhead_ms``: all inflect monitors' own time on the logging step (written once per step).
    * The image ``inflect/heatmap/attn_entropy`` (layers x logging steps, one column per log), refreshed every
      ``heatmap_every_n_logs`` logs and at the end of training, to the loggers that take images (TensorBoard, W&B,
      any logger with Lightning's ``log_image``; not CSV): :mod:`lightning_inflect.callbacks.loggers`.
    * TensorBoard only: a custom-scalars layout (one chart, one curve per layer).

    Every scalar key above is also in ``trainer.callback_metrics`` with its latest value (a 0-dim CPU float tensor,
    on every rank), from the end of the optimizer step it was measured at: ``EarlyStopping`` and ``ModelCheckpoint``
    can monitor it, for instance ``ModelCheckpoint(monitor="inflect/attn_entropy/layer_00", mode="max",
    every_n_train_steps=1)`` (checked every step, written on a new best, right after the step measured).

    Args:
        every_n_steps: log every N optimizer steps (``trainer.global_step``), not batches.
        layers: block indices to monitor (negative from the end); None for all.
        normalized: also log entropy normalised by ``log(n_valid_keys)``.
        per_head: also log one value per head.
        reduction: ``"token"`` weighs every valid (example, query) pair equally; ``"example"`` averages each
            example's queries first.
        model_attr: attribute path of the Hugging Face model in the LightningModule; found automatically when there
            is exactly one.
        layers_path: dotted path of the block ``nn.ModuleList`` in the model, to override the model table.
        log_key_prefix: first part of every key.
        heatmap_every_n_logs: refresh the heatmap image every N logs of this metric, and once more at the end
            of training; 0 disables it.
        probe: a dict of model keyword inputs (or a list of them) to use as the probe; default: the first
            ``probe_batches`` training batches.
        probe_batches: how many training batches form the probe when ``probe`` is not given. The first probe (and
            the CKA reference) is taken at the first logging step after that many batches were seen.
        probe_inputs: maps a training batch to the model's keyword inputs; default keeps the keys of a dict batch
            that the model's ``forward`` accepts, minus ``labels``.

    Example:
        >>> AttentionEntropyMonitor(every_n_steps=50).state_key
        "AttentionEntropyMonitor{'every_n_steps': 50, 'layers': None}"
    """

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

    def on_probe(self, trainer: pl.Trainer, session: ProbeSession, step: int) -> None:
        result = session.probe(step, trainer)
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
        self._emit(trainer, step, torch.cat(rows), lambda host: self._record_host(trainer, step, host, heads))

    def _record_host(self, trainer: pl.Trainer, step: int, host: list[float], heads: int) -> dict[str, float]:
        n = len(self.layers)
        metrics = self._record(trainer, ATTN_ENTROPY, step, host[:n])
        if self.normalized:
            metrics.update(self._record(trainer, ATTN_ENTROPY_NORMALIZED, step, host[n : 2 * n]))
        if self.per_head:
            flat = host[-n * heads :]
            for i, layer in enumerate(self.layers):
                for h in range(heads):
                    metrics[layer_key(self.log_key_prefix, ATTN_ENTROPY, layer, h)] = flat[i * heads + h]
        return metrics
