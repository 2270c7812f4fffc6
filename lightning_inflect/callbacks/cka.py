"""CKADriftMonitor: the Lightning callback (glue over :class:`~lightning_inflect.core.cka.CKADriftCore`)."""

from __future__ import annotations

from lightning_inflect.callbacks.base import _InflectMonitor
from lightning_inflect.core.cka import CKADriftCore

__all__ = ["CKADriftMonitor"]


class CKADriftMonitor(CKADriftCore, _InflectMonitor):
    r"""Logs how far each block's representation of the probe has moved since the reference point.

    .. math::

        \text{cka\_drift}_l = 1 - \operatorname{CKA}\big(P(R^{\text{ref}}_l), P(R^{\text{now}}_l)\big)

    where :math:`R_l` are the per-example pooled outputs of block ``l`` on the probe batches, :math:`P` projects them
    on a shared PCA basis with ``pca_components`` components, and CKA is linear CKA with HSIC terms summed over probe
    batches in float64 (minibatch CKA). The reference is the first probe of each fit (step 0 unless
    ``probe_batches > 1``); it is saved in checkpoints, so a resumed run keeps measuring against the same point.
    Call :meth:`reset_reference` to take a new one at the next logging step. This is the paper's Delta-CKA.

    All blocks are computed at once on the model's device (one batched SVD for the basis, batched HSIC terms); the
    values reach the host in the session's one transfer per logging step. On CUDA the SVD synchronises once when a
    basis is fitted: at the reference step with ``basis="reference"``, at every logging step with ``"joint"``.

    Logged keys (``inflect`` is ``log_key_prefix``, ``LL`` the block):

    * ``inflect/cka_drift/layer_LL``: 0 means unchanged; with the unbiased estimator values slightly outside
      ``[0, 1]`` can occur on tiny probes.
    * ``inflect/overhead_ms``, the custom-scalars layout and the image ``inflect/heatmap/cka_drift`` as for
      :class:`~lightning_inflect.AttentionEntropyMonitor`.

    The scalar keys are also in ``trainer.callback_metrics`` (latest value), as for
    :class:`~lightning_inflect.AttentionEntropyMonitor`: ``EarlyStopping(monitor="inflect/cka_drift/layer_01",
    mode="max", min_delta=..., check_on_train_epoch_end=True)`` stops when the drift stops growing (plateaus).

    Args:
        every_n_steps: log every N optimizer steps.
        layers: block indices to monitor; None for all.
        pca_components: ``k``, capped at the rank the probe supports (``n_examples - 1``, hidden size).
        basis: ``"reference"`` fits the PCA on the reference representations (a fixed frame); ``"joint"`` on
            reference and current stacked, so directions that only appear later are kept.
        pooling: how a block output is pooled over real tokens: ``"mean"``, ``"first"`` (CLS) or ``"last"``.
        unbiased: unbiased HSIC estimator (needs 4 or more examples per probe batch) or the biased one.
        model_attr, layers_path, log_key_prefix, heatmap_every_n_logs, probe, probe_batches, probe_inputs:
            as for :class:`~lightning_inflect.AttentionEntropyMonitor`.

    Example:
        >>> CKADriftMonitor(every_n_steps=10, pca_components=16).pca_components
        16
    """
