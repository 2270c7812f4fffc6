"""Checks of the monitors' saved state, whole, before a resume changes anything (pure Python and torch).

A monitor's state (its ``state_dict``) is small and plain: per metric a history (``blocks``, ``steps``, ``values``),
the last probed step, the probe batches, and for CKA the reference representations. :func:`check_monitor_state`
reads one back against what the monitor expects and raises a
:class:`~lightning_inflect.validation.CheckpointStateError` that names the checkpoint, the monitor (class and state
key) and what was expected, for a state of the wrong type, with missing or unknown entries, or with tensors of the
wrong shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from lightning_inflect.validation import checkpoint_state_error

__all__ = ["check_monitor_state"]

_KEYS = {"history", "last_probe_step", "probe", "reference", "reference_step"}


def _is_step(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def check_monitor_state(
    state: Any,
    *,
    owner: str,
    metrics: Sequence[str],
    layers: Sequence[int],
    checkpoint: Any = None,
) -> None:
    """Check a monitor's saved ``state`` whole.

    Args:
        state: what the checkpoint holds for the monitor.
        owner: the monitor, for the message: its class and ``state_key``.
        metrics: the metrics the monitor logs (the history's keys).
        layers: the blocks it monitors (every history's ``blocks``; the first dimension of a CKA reference).
        checkpoint: the checkpoint's path, for the message.

    Raises:
        CheckpointStateError: for the first entry that is not what the monitor saves.

    Example:
        >>> good = {"history": {"cka_drift": {"blocks": [0, 1], "steps": [0], "values": [[0.0, 0.1]]}}}
        >>> check_monitor_state(good, owner="CKADriftMonitor", metrics=["cka_drift"], layers=[0, 1])
        >>> check_monitor_state({"history": "?"}, owner="CKADriftMonitor", metrics=["cka_drift"], layers=[0, 1])
        Traceback (most recent call last):
        ...
        lightning_inflect.validation.CheckpointStateError: CKADriftMonitor cannot resume from the checkpoint: its \
`history` is '?', expected a dict from each of ['cka_drift'] to its history. The checkpoint's callback state is \
damaged or was written by other code; resume from another checkpoint, or start without `ckpt_path` (the checkpoint \
was not changed).
    """

    def bad(what: str, expected: str, got: Any) -> Exception:
        return checkpoint_state_error(checkpoint, owner, what, expected, got)

    if not isinstance(state, Mapping) or "history" not in state or set(map(str, state)) - _KEYS:
        got = dict(state) if isinstance(state, Mapping) else state
        raise bad("state", f"a dict with 'history' and at most the keys {sorted(_KEYS)}", got)
    history = state["history"]
    if not isinstance(history, Mapping) or set(history) - set(metrics):
        raise bad("history", f"a dict from each of {list(metrics)} to its history", history)
    for metric, hist in history.items():
        _check_history(hist, list(layers), lambda e, g, m=metric: bad(f"history.{m}", e, g))
    for key in ("last_probe_step", "reference_step"):
        if not _is_step(state.get(key)):
            raise bad(key, "None or an int", state.get(key))
    sizes = _check_probe(state.get("probe"), bad)
    ref = state.get("reference")
    if ref is None:
        return
    if not isinstance(ref, list) and isinstance(ref, Mapping):
        return  # a reference in the format of version 0.1: the CKA monitor takes a new one
    if not isinstance(ref, list) or not all(isinstance(t, Tensor) for t in ref):
        raise bad("reference", "a list of tensors, one per probe batch", ref)
    for i, t in enumerate(ref):
        n = sizes[i] if sizes is not None and i < len(sizes) else None
        if t.dim() != 3 or t.shape[0] != len(layers) or (n is not None and t.shape[1] != n):
            want = f"({len(layers)} blocks, {n if n is not None else 'examples'}, hidden)"
            raise bad(f"reference[{i}]", f"a tensor of shape {want}", t)
    if sizes is not None and ref and len(ref) != len(sizes):
        raise bad("reference", f"one tensor per probe batch ({len(sizes)})", f"{len(ref)} tensors")


def _check_history(hist: Any, layers: list[int], bad: Any) -> None:
    if not isinstance(hist, Mapping) or set(hist) - {"blocks", "steps", "values"}:
        raise bad("a dict with 'blocks', 'steps' and 'values'", hist)
    blocks, steps, values = hist.get("blocks", layers), hist.get("steps", []), hist.get("values", [])
    if not isinstance(blocks, list) or list(blocks) != layers:
        raise bad(f"'blocks' equal to the monitored blocks {layers}", blocks)
    if not isinstance(steps, list) or not all(_is_step(s) and s is not None for s in steps):
        raise bad("'steps' a list of ints", steps)

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    rows_ok = isinstance(values, list) and all(
        isinstance(r, list) and len(r) == len(layers) and all(map(number, r)) for r in values
    )
    if not rows_ok or len(values) != len(steps):
        raise bad(f"'values' one list of {len(layers)} numbers per step ({len(steps)} steps)", values)


def _check_probe(probe: Any, bad: Any) -> list[int] | None:
    """The probe batches' sizes (rank 0's, the first batch dimension), or None when the state holds no probe."""
    if probe is None or (isinstance(probe, list) and not probe):
        return None
    ranks = probe.get("ranks") if isinstance(probe, Mapping) else [probe]
    if not isinstance(ranks, list) or not ranks:
        raise bad("probe", "a list of batches (dicts of tensors), or {'ranks': [one such list per rank]}", probe)
    sizes: list[int] | None = None  # per batch, summed over the ranks (a reference holds their union)
    for batches in ranks:
        if not isinstance(batches, list) or (sizes is not None and len(batches) != len(sizes)):
            raise bad("probe", "a list of batches (dicts of tensors), as many on every rank", batches)
        own = []
        for b in batches:
            tensors = [v for v in b.values() if isinstance(v, Tensor)] if isinstance(b, Mapping) else []
            if not tensors or any(t.dim() == 0 or t.shape[0] != tensors[0].shape[0] for t in tensors):
                raise bad("probe", "batches of model inputs: dicts of tensors with one first (batch) dimension", b)
            own.append(int(tensors[0].shape[0]))
        sizes = own if sizes is None else [a + b for a, b in zip(sizes, own)]
    return sizes
