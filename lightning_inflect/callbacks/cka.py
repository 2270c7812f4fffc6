"""CKADriftMonitor: per-layer representation drift from the start of fit, 1 - linear CKA on a shared PCA basis."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_inflect.callbacks.base import _check_choice, _check_positive_int, _InflectMonitor
from lightning_inflect.callbacks.session import ProbeSession
from lightning_inflect.functional import pca_basis, shared_pca_cka

__all__ = ["CKADriftMonitor"]


class CKADriftMonitor(_InflectMonitor):
    r"""Logs how far each block's representation of the probe has moved since the reference point.

    .. math::

        \text{cka\_drift}_l = 1 - \operatorname{CKA}\big(P(R^{\text{ref}}_l), P(R^{\text{now}}_l)\big)

    where :math:`R_l` are the per-example pooled outputs of block ``l`` on the probe batches, :math:`P` projects them
    on a shared PCA basis with ``pca_components`` components, and CKA is linear CKA with HSIC terms summed over probe
    batches in float64 (minibatch CKA). The reference is the first probe of the fit (step 0 unless
    ``probe_batches > 1``); it is saved in checkpoints, so a resumed run keeps measuring against the same point.
    Call :meth:`reset_reference` to take a new one at the next logging step. This is the paper's Delta-CKA.

    Logged keys (``inflect`` is ``log_key_prefix``, ``LL`` the block):

    * ``inflect/cka_drift/layer_LL``: 0 means unchanged; with the unbiased estimator values slightly outside
      ``[0, 1]`` can occur on tiny probes.
    * ``inflect/overhead_ms``, the custom-scalars layout and the image ``inflect/heatmap/cka_drift`` as for
      :class:`~lightning_inflect.AttentionEntropyMonitor`.

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

    uses_probe = True
    metrics = ("cka_drift",)

    def __init__(
        self,
        every_n_steps: int = 50,
        layers: Sequence[int] | None = None,
        pca_components: int = 32,
        basis: Literal["reference", "joint"] = "reference",
        pooling: Literal["mean", "first", "last"] = "mean",
        unbiased: bool = True,
        model_attr: str | None = None,
        layers_path: str | None = None,
        log_key_prefix: str = "inflect",
        heatmap_every_n_logs: int = 5,
        probe: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        probe_batches: int = 1,
        probe_inputs: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> None:
        _check_positive_int("pca_components", pca_components)
        _check_choice("basis", basis, ["reference", "joint"])
        _check_choice("pooling", pooling, ["mean", "first", "last"])
        if not isinstance(unbiased, bool):
            raise ValueError(f"Expected argument `unbiased` to be a bool but got {unbiased!r}.")
        super().__init__(
            every_n_steps, layers, model_attr, layers_path, log_key_prefix, heatmap_every_n_logs, probe,
            probe_batches, probe_inputs,
        )  # fmt: skip
        self.pca_components = pca_components
        self.basis = basis
        self.pooling = pooling
        self.unbiased = unbiased
        self.reference: dict[int, list[Tensor]] = {}
        self.reference_step: int | None = None
        self._basis_cache: dict[int, tuple[Tensor, Tensor]] = {}

    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "pca_components": self.pca_components, "basis": self.basis}

    def same_probe(self, other: _InflectMonitor) -> bool:
        return super().same_probe(other) and getattr(other, "pooling", self.pooling) == self.pooling

    def probe_needs(self) -> tuple[Sequence[int], Sequence[int]]:
        return (), self.layers

    def reset_reference(self) -> None:
        """Take a new reference at the next logging step (for instance right after an injection)."""
        self.reference = {}
        self.reference_step = None
        self._basis_cache = {}

    def on_probe(self, trainer: pl.Trainer, session: ProbeSession, step: int) -> None:
        result = session.probe(step, trainer)
        if not self.reference:
            self.reference = {layer: result.pooled[layer] for layer in self.layers}
            self.reference_step = step
            self._basis_cache = {}
        values = []
        for layer in self.layers:
            ref, now = self.reference[layer], result.pooled[layer]
            n = min(r.shape[0] for r in ref)
            unbiased = self.unbiased and n >= 4
            if self.unbiased and not unbiased:
                self._warn_once("small_probe", "A probe batch has fewer than 4 examples; using the biased HSIC.")
            basis = None
            if self.basis == "reference":
                if layer not in self._basis_cache:
                    self._basis_cache[layer] = pca_basis(torch.cat(ref), self.pca_components)
                basis = self._basis_cache[layer]
            cka = shared_pca_cka(ref, now, self.pca_components, self.basis, unbiased, reference_basis=basis)
            values.append(1.0 - cka)
        self._log(trainer, self._record(trainer, "cka_drift", step, torch.stack(values).tolist()), step)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["reference"] = {layer: [t.clone() for t in ts] for layer, ts in self.reference.items()}
        state["reference_step"] = self.reference_step
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.reference = {int(k): list(v) for k, v in state_dict.get("reference", {}).items()}
        self.reference_step = state_dict.get("reference_step")
        self._basis_cache = {}
