"""GradientNormMonitor: the Lightning callback (glue over :class:`~lightning_inflect.core.grads.GradientNormCore`)."""

from __future__ import annotations

from lightning_inflect.callbacks.base import _InflectMonitor
from lightning_inflect.core.grads import GradientNormCore

__all__ = ["GradientNormMonitor"]


class GradientNormMonitor(GradientNormCore, _InflectMonitor):
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
