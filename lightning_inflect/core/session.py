"""What the monitors attached to one training run share: the model discovery, the probe, the host transfer, the clock.

Several monitors on one trainer must cost one probe forward per logging step, not one each, and one
device-to-host transfer, not one each. The first monitor set up on a trainer creates a :class:`ProbeSession`; the
others join it. A session is keyed by the training loop's own object (the Lightning ``Trainer``, the Hugging Face
``Trainer``'s state, ...): no training framework is imported here.

* **Probe.** Each monitor declares its needs as typed requests (:meth:`InflectMonitor.probe_requests
  <lightning_inflect.monitor.InflectMonitor.probe_requests>`, see
  :mod:`lightning_inflect.capture.contract`). On a logging step the first monitor that needs the probe runs it
  for the merged requests of every monitor due at that step; each monitor then reads the answer to its own request.
* **Transfer.** Monitors hand their on-device values to :meth:`ProbeSession.defer`; when the optimizer step is over
  the session moves everything of that step to the host in one ``tolist()`` and gives each monitor its slice
  (:meth:`ProbeSession.flush`). Readers of ``.history`` that cannot wait (checkpointing, the injection callback)
  call :func:`flush_monitors` first.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lightning_inflect.architectures import LayerInfo, find_attention_modules, find_hf_model, find_layers
from lightning_inflect.capture import (
    EntropyRequest,
    ProbeRequest,
    ProbeResult,
    default_model_inputs,
    run_probe,
    to_device,
)
from lightning_inflect.capture.ranks import cat_over_ranks, sum_over_ranks, world_size

if TYPE_CHECKING:
    from lightning_inflect.monitor import InflectMonitor

__all__ = ["ProbeSession", "flush_monitors"]


def _rows(batch: Mapping[str, Any]) -> int:
    """The number of examples of a batch of model inputs (the first dimension of its first tensor)."""
    return next(int(v.shape[0]) for v in batch.values() if isinstance(v, Tensor))


_SESSIONS: weakref.WeakKeyDictionary[Any, ProbeSession] = weakref.WeakKeyDictionary()


def _detach_clone(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, Mapping):
        return {k: _detach_clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detach_clone(v) for v in obj)
    return obj


class ProbeSession:
    """Shared state of the inflect monitors of one trainer (one per trainer, created by the first monitor)."""

    def __init__(self, hf_model: nn.Module, model_attr: str, info: LayerInfo) -> None:
        self.hf_model = hf_model
        self.model_attr = model_attr
        self.info = info
        self._attention: list[nn.Module] | None = None
        self.members: list[InflectMonitor] = []
        self.probe_owner: InflectMonitor | None = None
        self.probe_batches: list[dict[str, Any]] = []  # on the model's device
        self.probe_complete = False
        self.rank_sizes: list[list[int]] | None = None  # with several ranks and a rank-local probe: its batch sizes
        self._rank_probes: list[list[dict[str, Any]]] | None = None  # every rank's probe batches, on the CPU
        self._result_step: int | None = None
        self._result: ProbeResult | None = None
        self.entropy_source = "auto"
        self.forwards = 0
        self.transfers = 0
        self.overhead: dict[int, float] = {}
        self._pending: list[tuple[int, Tensor, Callable[[list[float]], None]]] = []

    # ----------------------------------------------------------------------------------------------- discovery
    @classmethod
    def attach(cls, trainer: Any, root: nn.Module, monitor: InflectMonitor) -> ProbeSession:
        """The session of ``trainer`` (any hashable key of one run) that ``monitor`` joins, created by the first
        monitor; ``root`` is the module that holds the Hugging Face model (a LightningModule, or the model itself)."""
        session = _SESSIONS.get(trainer)
        if session is None or session.hf_model not in set(root.modules()):
            attr, hf_model = find_hf_model(root, monitor.model_attr)
            info = find_layers(hf_model, monitor.layers_path)
            session = cls(hf_model, attr, info)
            _SESSIONS[trainer] = session
        else:
            if monitor.model_attr is not None and monitor.model_attr != session.model_attr:
                raise ValueError(
                    f"{type(monitor).__name__} was given `model_attr={monitor.model_attr!r}` but another inflect "
                    f"monitor on this trainer monitors `{session.model_attr}`. Give all monitors the same model_attr."
                )
            if monitor.layers_path is not None and monitor.layers_path != session.info.path:
                raise ValueError(
                    f"{type(monitor).__name__} was given `layers_path={monitor.layers_path!r}` but another inflect "
                    f"monitor uses {session.info.path!r}. Give all monitors the same layers_path."
                )
        for other in session.members:
            clash = set(other.metrics) & set(monitor.metrics)
            if other is not monitor and other.log_key_prefix == monitor.log_key_prefix and clash:
                raise ValueError(
                    f"{type(monitor).__name__} and {type(other).__name__} on this trainer would both log "
                    f"`{monitor.log_key_prefix}/{sorted(clash)[0]}/...`. Give one of them another `log_key_prefix`."
                )
        if monitor not in session.members:
            session.members.append(monitor)
        if monitor.uses_probe:
            if session.probe_owner is None:
                session.probe_owner = monitor
            elif not session.probe_owner.same_probe(monitor):
                owner = session.probe_owner
                raise ValueError(
                    f"{type(monitor).__name__} and {type(owner).__name__} share one probe forward, so their probe "
                    f"options must match: got probe_batches={monitor.probe_batches} vs {owner.probe_batches}, "
                    f"probe given: {monitor.probe is not None} vs {owner.probe is not None}. "
                    "Give both monitors the same `probe`, `probe_batches` and `probe_inputs`."
                )
        return session

    @staticmethod
    def detach(trainer: Any, monitor: InflectMonitor) -> None:
        session = _SESSIONS.get(trainer)
        if session is None:
            return
        if monitor in session.members:
            session.members.remove(monitor)
        if session.probe_owner is monitor:
            session.probe_owner = next((m for m in session.members if m.uses_probe), None)
        if not session.members:
            _SESSIONS.pop(trainer, None)

    @property
    def attention_modules(self) -> list[nn.Module]:
        if self._attention is None:
            self._attention = find_attention_modules(self.info)
        return self._attention

    @property
    def device(self) -> torch.device:
        p = next(self.hf_model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    # --------------------------------------------------------------------------------------------------- probe
    def set_probe(self, batches: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        """Use ``batches`` as the probe: the same on every rank (a ``probe=``), or, as :meth:`probe_state` saves a
        probe taken from several ranks' own batches, ``{"ranks": [batches of rank 0, ...]}``."""
        self.rank_sizes = self._rank_probes = None
        if isinstance(batches, Mapping):
            self._rank_probes = [list(probe) for probe in batches["ranks"]]
            self.rank_sizes = [[_rows(b) for b in probe] for probe in self._rank_probes]
            batches = self._own_share(self._rank_probes)
        self.probe_batches = [to_device(dict(b), self.device) for b in batches]
        self.probe_complete = True
        self._result_step = None

    @staticmethod
    def _own_share(ranks: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        world = world_size()
        if len(ranks) != world:
            raise RuntimeError(
                f"The checkpoint's probe was taken from the training batches of {len(ranks)} ranks, but this run has "
                f"{world}: the logged values would mix other examples. Resume with {len(ranks)} ranks, or give the "
                "monitors a fixed `probe=` batch (the same on every rank)."
            )
        return ranks[dist.get_rank() if world > 1 else 0]

    def _exchange_probe(self) -> None:
        """With several ranks, every rank learns every rank's probe (one gather, once per fit): the sizes for
        :meth:`union_over_ranks`, the batches for the checkpoint (which rank 0 writes)."""
        if world_size() == 1:
            return
        ranks: list[Any] = [None] * world_size()
        dist.all_gather_object(ranks, [to_device(b, "cpu") for b in self.probe_batches])
        self._rank_probes = ranks
        self.rank_sizes = [[_rows(b) for b in probe] for probe in ranks]

    def observe_batch(self, batch: Any, inputs_fn: Callable[[Any], Mapping[str, Any]] | None, wanted: int) -> None:
        """Keep the first ``wanted`` training batches (as model inputs) as the probe."""
        if self.probe_complete:
            return
        inputs = inputs_fn(batch) if inputs_fn is not None else default_model_inputs(self.hf_model, batch)
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"`probe_inputs` must return a dict of model keyword inputs but returned {type(inputs).__name__}."
            )
        self.probe_batches.append(_detach_clone(dict(inputs)))
        self.probe_complete = len(self.probe_batches) >= wanted
        if self.probe_complete:
            self._exchange_probe()

    def probe_state(self) -> list[dict[str, Any]] | dict[str, Any]:
        if not self.probe_complete:
            return []
        if self._rank_probes is not None:
            return {"ranks": self._rank_probes}
        return [to_device(b, "cpu") for b in self.probe_batches]

    # --------------------------------------------------------------------------------------------- across ranks
    @property
    def rank_local(self) -> bool:
        """Whether each rank probes its own examples (several ranks, a probe taken from the training batches)."""
        return self.rank_sizes is not None

    def sum_over_ranks(self, values: Tensor) -> Tensor:
        """Sums of a rank-local probe, summed over the ranks (one collective); as they are otherwise."""
        return sum_over_ranks(values) if self.rank_local else values

    def union_over_ranks(self, per_batch: Sequence[Tensor]) -> list[Tensor]:
        """Per probe batch ``(..., n_b, d)`` values of a rank-local probe, as the union of that batch over the
        ranks, rank 0's examples first (one collective for all batches); as they are otherwise."""
        if self.rank_sizes is None:
            return list(per_batch)
        totals = [sum(sizes) for sizes in self.rank_sizes]
        gathered = cat_over_ranks(torch.cat(list(per_batch), -2), totals, dim=-2)
        chunks = [c.split(sizes, -2) for c, sizes in zip(gathered.split(totals, -2), self.rank_sizes)]
        return [torch.cat([chunk[b] for chunk in chunks], -2) for b in range(len(per_batch))]

    def probe(self, step: int, precision_context: Callable[[], Any] | None = None) -> ProbeResult:
        """The probe result of ``step``: one forward per probe batch for the merged requests of the monitors due
        at ``step``, run on first request and cached for the others; under ``precision_context`` (the training
        loop's autocast, a context-manager factory) when given."""
        if self._result_step == step and self._result is not None:
            return self._result
        due = [m for m in self.members if m.uses_probe and m.due(step)]
        requests: list[ProbeRequest] = [r for m in due for r in m.probe_requests()]
        result = self.run(self.probe_batches, requests, precision_context)
        self._result_step, self._result = step, result
        return result

    def run(
        self,
        batches: Sequence[Mapping[str, Any]],
        requests: Sequence[ProbeRequest],
        precision_context: Callable[[], Any] | None = None,
    ) -> ProbeResult:
        """One probe of ``batches`` (model inputs on :attr:`device`) for ``requests``, with what the session has
        learned about the model (its attention modules, the entropy source that works); the monitors' probe and
        the InjectionCallback's own diagnostics both run here."""
        try:
            result = run_probe(
                self.hf_model,
                batches,
                self.info.blocks,
                requests,
                attention_modules=self.attention_modules
                if any(isinstance(r, EntropyRequest) for r in requests)
                else None,
                precision_context=precision_context,
                entropy_source=self.entropy_source,  # type: ignore[arg-type]
            )
        except Exception as err:
            keys = sorted(batches[0]) if batches else []
            raise ValueError(
                f"The probe batch could not be run through {type(self.hf_model).__name__} (keys {keys}): "
                f"{type(err).__name__}: {err}. Pass `probe_inputs=` to map your training batch to the model's "
                "keyword inputs, or `probe=` with a batch the model accepts."
            ) from err
        if result.entropy_source is not None and not result.missing:
            self.entropy_source = result.entropy_source  # later probes skip the first attempt
        self.forwards += result.forwards
        return result

    @classmethod
    def of(cls, trainer: Any, hf_model: nn.Module, info: LayerInfo) -> ProbeSession:
        """The session of the monitors on ``trainer`` when they watch ``hf_model``, else one of its own (not shared:
        it carries no monitors)."""
        session = _SESSIONS.get(trainer)
        if session is not None and session.hf_model is hf_model:
            return session
        return cls(hf_model, "", info)

    # ------------------------------------------------------------------------------------------------ transfer
    def defer(self, step: int, values: Tensor, then: Callable[[list[float]], None]) -> None:
        """Queue the 1-D ``values`` of ``step`` for the step's one device-to-host transfer; ``then`` gets them as
        Python floats."""
        self._pending.append((step, values.detach().reshape(-1), then))

    def flush(self, before_step: int | None = None) -> None:
        """Move the queued values (of the steps lower than ``before_step``, or all) to the host in one transfer and
        hand each consumer its slice."""
        due = [p for p in self._pending if before_step is None or p[0] < before_step]
        if not due:
            return
        self._pending = [p for p in self._pending if not (before_step is None or p[0] < before_step)]
        start = time.perf_counter()
        flat = torch.cat([v.to(torch.float64) for _, v, _ in due]).tolist()  # the one device-to-host transfer
        self.transfers += 1
        offset = 0
        for _, values, then in due:
            then(flat[offset : offset + values.numel()])
            offset += values.numel()
        self.add_overhead(max(step for step, _, _ in due), time.perf_counter() - start)

    # ------------------------------------------------------------------------------------------------ overhead
    @contextmanager
    def timed(self, step: int) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add_overhead(step, time.perf_counter() - start)

    def add_overhead(self, step: int, seconds: float) -> None:
        self.overhead[step] = self.overhead.get(step, 0.0) + seconds

    def pop_overhead(self, before_step: int) -> dict[int, float]:
        """Overhead (seconds) of the steps that are finished, i.e. lower than ``before_step``."""
        done = {s: v for s, v in self.overhead.items() if s < before_step}
        for s in done:
            del self.overhead[s]
        return done


def flush_monitors(trainer: Any) -> None:
    """Bring every inflect monitor's ``.history`` on ``trainer`` up to date (one transfer for all of them)."""
    session = _SESSIONS.get(trainer)
    if session is not None:
        session.flush()
