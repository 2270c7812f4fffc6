"""CKADriftMonitor's logic, framework-free: per-block drift of the probe's representations, 1 - linear CKA.

The Lightning callback (:class:`~lightning_inflect.CKADriftMonitor`) and any other loop's glue share it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_inflect.capture import PooledRequest, ProbeRequest
from lightning_inflect.core.host import Host
from lightning_inflect.core.monitor import MonitorCore
from lightning_inflect.core.session import ProbeSession
from lightning_inflect.functional import pca_basis, shared_pca_cka
from lightning_inflect.names import CKA_DRIFT, DEFAULT_PREFIX
from lightning_inflect.validation import check_bool, check_choice, check_int

__all__ = ["CKADriftCore"]


class CKADriftCore(MonitorCore):
    """The logic of :class:`~lightning_inflect.CKADriftMonitor`; see its documentation."""

    uses_probe = True
    metrics = (CKA_DRIFT,)

    def __init__(
        self,
        every_n_steps: int = 50,
        *,
        layers: Sequence[int] | None = None,
        pca_components: int = 32,
        basis: Literal["reference", "joint"] = "reference",
        pooling: Literal["mean", "first", "last"] = "mean",
        unbiased: bool = True,
        model_attr: str | None = None,
        layers_path: str | None = None,
        log_key_prefix: str = DEFAULT_PREFIX,
        heatmap_every_n_logs: int = 5,
        probe: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        probe_batches: int = 1,
        probe_inputs: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> None:
        check_int("pca_components", pca_components, low=1)
        check_choice("basis", basis, ["reference", "joint"])
        check_choice("pooling", pooling, ["mean", "first", "last"])
        check_bool("unbiased", unbiased)
        super().__init__(
            every_n_steps=every_n_steps, layers=layers, model_attr=model_attr, layers_path=layers_path,
            log_key_prefix=log_key_prefix, heatmap_every_n_logs=heatmap_every_n_logs, probe=probe,
            probe_batches=probe_batches, probe_inputs=probe_inputs,
        )  # fmt: skip
        self.pca_components = pca_components
        self.basis = basis
        self.pooling = pooling
        self.unbiased = unbiased
        self.reference: list[Tensor] = []  # per probe batch: (layers, n_b, hidden), on the model's device
        self.reference_step: int | None = None
        self._basis: tuple[Tensor, Tensor] | None = None

    def _identity(self) -> dict[str, Any]:
        identity = {**super()._identity(), "pca_components": self.pca_components, "basis": self.basis}
        if self.pooling != "mean":  # the default key stays as in version 0.1
            identity["pooling"] = self.pooling
        return identity

    def _request(self) -> PooledRequest:
        return PooledRequest(tuple(self.layers), self.pooling)

    def probe_requests(self) -> list[ProbeRequest]:
        return [self._request()]

    def reset_reference(self) -> None:
        """Take a new reference at the next logging step (for instance right after an injection)."""
        self.reference = []
        self.reference_step = None
        self._basis = None

    def _reset_fit_state(self) -> None:
        super()._reset_fit_state()
        self.reset_reference()

    def on_probe(self, host: Host, session: ProbeSession, step: int) -> None:
        now = session.probe(step, host.precision_context).answer(self._request())  # per batch: (layers, n_b, hidden)
        now = session.union_over_ranks(now)  # every rank's examples (one collective with several ranks)
        if not self.reference:
            self.reference = now
            self.reference_step = step
        elif self.reference[0].device != now[0].device:  # restored from a checkpoint (CPU)
            self.reference = [r.to(now[0].device) for r in self.reference]
            self._basis = None
        unbiased = self.unbiased and min(r.shape[-2] for r in self.reference) >= 4
        if self.unbiased and not unbiased:
            self._warn_once("small_probe", "A probe batch has fewer than 4 examples; using the biased HSIC.")
        if self.basis == "reference" and self._basis is None:
            self._basis = pca_basis(torch.cat(self.reference, -2), self.pca_components)  # all blocks at once
        cka = shared_pca_cka(self.reference, now, self.pca_components, self.basis, unbiased, self._basis)
        self._emit(host, step, 1.0 - cka, lambda values: self._record(host, CKA_DRIFT, step, values))

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["reference"] = [t.detach().cpu() for t in self.reference]
        state["reference_step"] = self.reference_step
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        ref = state_dict.get("reference", [])
        if not isinstance(ref, list):  # a checkpoint of version 0.1 (block -> CPU tensors): take a new reference
            self._warn_once(
                "old_reference",
                "CKADriftMonitor: the checkpoint holds a reference in the format of version 0.1; a new reference is "
                "taken at the next logging step.",
            )
            self.reset_reference()
            return
        self.reference = list(ref)
        self.reference_step = state_dict.get("reference_step")
        self._basis = None
