"""AttentionEntropyMonitor, the Lightning callback: glue over
:class:`~lightning_inflect.core.entropy.EntropyMonitorCore`."""

from __future__ import annotations

from lightning_inflect.callbacks.base import _InflectMonitor
from lightning_inflect.core.entropy import EntropyMonitorCore

__all__ = ["AttentionEntropyMonitor"]


class AttentionEntropyMonitor(EntropyMonitorCore, _InflectMonitor):
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
