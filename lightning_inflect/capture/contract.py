"""The probe contract: what a consumer asks of the shared probe forward, and the answer it gets back.

Several consumers (the monitors, the injection callback) share one probe forward per logging step. Each declares
what it needs as a typed, hashable request; the probe runner merges all requests, computes each distinct need once
(per-query entropies once per attention call, each pooling once per block), and :meth:`ProbeResult.answer` gives
every consumer exactly the answer to its own request. Answers stay on the model's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

import torch
from torch import Tensor

from lightning_inflect.functional.entropy import EntropySums

__all__ = ["EntropyRequest", "PooledRequest", "ProbeRequest", "ProbeResult", "merge_requests"]

Reduction = Literal["token", "example"]
Pooling = Literal["mean", "first", "last"]
Site = Literal["output", "input"]


def _layers(layers: Sequence[int]) -> tuple[int, ...]:
    out = tuple(layers)
    if not out or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in out):
        raise ValueError(
            f"Expected argument `layers` to be a non-empty sequence of block indices >= 0 but got {out!r}."
        )
    return out


@dataclass(frozen=True)
class EntropyRequest:
    """Attention entropy of ``layers``, reduced with ``reduction``.

    Answer: :class:`~lightning_inflect.functional.EntropySums` whose fields have shape ``(len(layers), heads)``,
    rows in the order of ``layers``.

    Example:
        >>> EntropyRequest((0, 2), "example")
        EntropyRequest(layers=(0, 2), reduction='example')
    """

    layers: tuple[int, ...]
    reduction: Reduction = "token"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", _layers(self.layers))
        if self.reduction not in ("token", "example"):
            raise ValueError(
                f"Expected argument `reduction` to be one of ['token', 'example'] but got {self.reduction!r}."
            )


@dataclass(frozen=True)
class PooledRequest:
    """Block outputs (or inputs) of ``layers`` pooled over real tokens with ``pooling``.

    Answer: one float32 tensor of shape ``(len(layers), n_b, hidden)`` per probe batch, rows in the order of
    ``layers``. ``site="input"`` pools what enters the block (for block 0, the embedding output).

    Example:
        >>> PooledRequest((1,), "first").site
        'output'
    """

    layers: tuple[int, ...]
    pooling: Pooling = "mean"
    site: Site = "output"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", _layers(self.layers))
        if self.pooling not in ("mean", "first", "last"):
            raise ValueError(
                f"Expected argument `pooling` to be one of ['mean', 'first', 'last'] but got {self.pooling!r}."
            )
        if self.site not in ("output", "input"):
            raise ValueError(f"Expected argument `site` to be one of ['output', 'input'] but got {self.site!r}.")


ProbeRequest = EntropyRequest | PooledRequest


def _rows(t: Tensor, have: tuple[int, ...], want: tuple[int, ...]) -> Tensor:
    """Rows ``want`` of ``t`` whose rows are ``have``: views and one stack, no index tensor sent to the device."""
    if want == have:
        return t
    pos = {layer: i for i, layer in enumerate(have)}
    return torch.stack([t[pos[layer]] for layer in want])


@dataclass
class ProbeResult:
    """Everything one probe pass over all probe batches computed, keyed by distinct need.

    Attributes:
        entropy: reduction -> entropy sums stacked over ``entropy_layers`` (fields ``(layers, heads)``).
        entropy_layers: the union of the blocks whose entropy was requested, sorted.
        entropy_source: ``"interface"`` (the model's own attention calls, exact under SDPA), ``"probs"`` (the
            model's own probabilities, eager, for models outside transformers' attention interface) or ``None``.
        missing: requested entropy blocks whose attention was never seen.
        pooled: ``(site, pooling)`` -> one ``(layers, n_b, hidden)`` float32 tensor per probe batch.
        pooled_layers: ``(site, pooling)`` -> the blocks of the rows of ``pooled``.
        forwards: number of model forwards run.
    """

    entropy: dict[str, EntropySums] = field(default_factory=dict)
    entropy_layers: tuple[int, ...] = ()
    entropy_source: str | None = None
    missing: tuple[int, ...] = ()
    pooled: dict[tuple[str, str], list[Tensor]] = field(default_factory=dict)
    pooled_layers: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    forwards: int = 0

    @overload
    def answer(self, request: EntropyRequest) -> EntropySums: ...

    @overload
    def answer(self, request: PooledRequest) -> list[Tensor]: ...

    def answer(self, request: ProbeRequest) -> EntropySums | list[Tensor]:
        """The answer to ``request``, which must be one of the requests the probe was run with (or a subset of
        their blocks).

        Raises:
            KeyError: when the probe was not run with that need, or saw no attention call of those blocks.
        """
        if isinstance(request, EntropyRequest):
            sums = self.entropy.get(request.reduction)
            if (
                sums is None
                or not set(request.layers) <= set(self.entropy_layers)
                or set(request.layers) & set(self.missing)
            ):
                raise KeyError(f"The probe was not run with {request!r} (or saw no attention call of those blocks).")
            return EntropySums(*(_rows(f, self.entropy_layers, request.layers) for f in sums))
        key = (request.site, request.pooling)
        have = self.pooled_layers.get(key)
        if have is None or not set(request.layers) <= set(have):
            raise KeyError(f"The probe was not run with {request!r}.")
        return [_rows(t, have, request.layers) for t in self.pooled[key]]


def merge_requests(
    requests: Sequence[ProbeRequest],
) -> tuple[tuple[int, ...], tuple[str, ...], dict[tuple[str, str], tuple[int, ...]]]:
    """Union of the requests: (entropy blocks, entropy reductions, (site, pooling) -> blocks).

    Example:
        >>> merge_requests([EntropyRequest((1,)), EntropyRequest((0,), "example"), PooledRequest((2,))])
        ((0, 1), ('example', 'token'), {('output', 'mean'): (2,)})
    """
    entropy_layers: set[int] = set()
    reductions: set[str] = set()
    pooled: dict[tuple[str, str], set[int]] = {}
    for r in requests:
        if isinstance(r, EntropyRequest):
            entropy_layers |= set(r.layers)
            reductions.add(r.reduction)
        elif isinstance(r, PooledRequest):
            pooled.setdefault((r.site, r.pooling), set()).update(r.layers)
        else:
            raise TypeError(f"Expected an EntropyRequest or a PooledRequest but got {type(r).__name__}.")
    return (
        tuple(sorted(entropy_layers)),
        tuple(sorted(reductions)),
        {key: tuple(sorted(layers)) for key, layers in pooled.items()},
    )
