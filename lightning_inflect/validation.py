"""Argument checks shared by every package, with one message shape: "Expected argument `x` to be ... but got ...".

Pure Python, no imports from the rest of the package, so every layer may use it.

Example:
    >>> check_int("every_n_steps", 0, low=1)
    Traceback (most recent call last):
    ...
    ValueError: Expected argument `every_n_steps` to be a positive int but got 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CheckpointStateError",
    "check_bool",
    "check_callable",
    "check_choice",
    "check_int",
    "check_number",
    "check_str",
    "check_str_list",
    "check_writable_dir",
    "checkpoint_state_error",
]


def _got(value: Any) -> str:
    return repr(value)


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None, optional: bool = False) -> None:
    """An ``int`` (not a ``bool``) in ``[low, high]``; ``None`` too when ``optional``.

    Example:
        >>> check_int("k", True, low=1)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `k` to be a positive int but got True.
    """
    if optional and value is None:
        return
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        if low is not None and high is not None:
            kind = f"an int in [{low}, {high}]"
        elif low is not None:
            kind = {0: "a non-negative int", 1: "a positive int"}.get(low, f"an int >= {low}")
        else:
            kind = "an int" if high is None else f"an int <= {high}"
        none = " or None" if optional else ""
        raise ValueError(f"Expected argument `{name}` to be {kind}{none} but got {_got(value)}.")


def check_number(
    name: str, value: Any, low: float | None = None, high: float | None = None, open_low: bool = False,
    open_high: bool = False,
) -> None:  # fmt: skip
    """A real number (``int`` or ``float``, not ``bool``) within the bounds (open or closed).

    Example:
        >>> check_number("at_fraction", 1.0, 0.0, 1.0, open_low=True, open_high=True)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `at_fraction` to be a number in (0.0, 1.0) but got 1.0.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if not ok:
        left, right = "(" if open_low else "[", ")" if open_high else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"Expected argument `{name}` to be a number in {left}{lo}, {hi}{right} but got {_got(value)}.")


def check_bool(name: str, value: Any) -> None:
    """Exactly ``True`` or ``False`` (a string such as ``"no"`` is refused, not read as true).

    Example:
        >>> check_bool("freeze_backbone", "no")
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `freeze_backbone` to be a bool (True or False) but got 'no'.
    """
    if not isinstance(value, bool):
        raise ValueError(f"Expected argument `{name}` to be a bool (True or False) but got {_got(value)}.")


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    """One of ``allowed``.

    Example:
        >>> check_choice("reduction", "max", ["token", "example"])
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `reduction` to be one of ['token', 'example'] but got 'max'.
    """
    if isinstance(value, (list, dict, set)) or value not in allowed:
        raise ValueError(f"Expected argument `{name}` to be one of {list(allowed)} but got {value!r}.")


def check_str(name: str, value: Any, optional: bool = False, hint: str = "") -> None:
    """A non-empty string without a trailing ``/``; ``None`` too when ``optional``.

    Example:
        >>> check_str("model_attr", 5, optional=True)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `model_attr` to be a non-empty string or None but got 5.
    """
    if optional and value is None:
        return
    if not isinstance(value, str) or not value or value.endswith("/"):
        none = " or None" if optional else ""
        raise ValueError(
            f"Expected argument `{name}` to be a non-empty string{none} but got {_got(value)}."
            + (f" {hint}" if hint else "")
        )


def check_str_list(name: str, value: Any, allow_empty: bool = True, optional: bool = False) -> None:
    """A list or tuple of non-empty strings (a bare string is refused: it would be read letter by letter).

    Example:
        >>> check_str_list("keep_trainable", "pooler")
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `keep_trainable` to be a list of module names but got 'pooler'.
    """
    if optional and value is None:
        return
    ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value)
    if not ok or (not allow_empty and not value):
        kind = "a non-empty list" if not allow_empty else "a list"
        raise ValueError(f"Expected argument `{name}` to be {kind} of module names but got {_got(value)}.")


def check_callable(name: str, value: Any, optional: bool = True) -> None:
    """A callable; ``None`` too when ``optional``."""
    if (optional and value is None) or callable(value):
        return
    raise ValueError(f"Expected argument `{name}` to be callable but got {_got(value)}.")


def check_writable_dir(name: str, path: str | Path, hint: str = "") -> None:
    """A folder (existing or not yet) that can be written: not a file, and its nearest existing parent writable.

    Example:
        >>> check_writable_dir("export_dir", __file__)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `export_dir` to be a folder but '...validation.py' is a file.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(
            f"Expected argument `{name}` to be a folder but {str(p)!r} is a file." + (f" {hint}" if hint else "")
        )
    existing = next(q for q in (p, *p.parents) if q.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"Expected argument `{name}` to be writable but {str(existing)!r} is not." + (f" {hint}" if hint else "")
        )


class CheckpointStateError(ValueError):
    """A callback's state in a checkpoint that cannot be read back: of the wrong type, with missing or unknown
    entries, or with tensors of the wrong shape. Raised when a resume reads the state, before it changes anything."""


def checkpoint_state_error(checkpoint: Any, owner: str, what: str, expected: str, got: Any) -> CheckpointStateError:
    """The :class:`CheckpointStateError` for entry ``what`` of callback ``owner``'s state (its class and
    ``state_key``) in ``checkpoint`` (a path, or None when not known), which should be ``expected``.

    Example:
        >>> checkpoint_state_error("last.ckpt", "CKADriftMonitor (state key 'X')", "history", "a dict", "oops")
        CheckpointStateError("CKADriftMonitor (state key 'X') cannot resume from 'last.ckpt': its `history` is 'oops', \
expected a dict. The checkpoint's callback state is damaged or was written by other code; resume from another \
checkpoint, or start without `ckpt_path` (the checkpoint was not changed).")
    """
    where = repr(str(checkpoint)) if checkpoint is not None else "the checkpoint"
    shown = f"a tensor of shape {tuple(got.shape)}" if hasattr(got, "shape") and hasattr(got, "dtype") else _short(got)
    return CheckpointStateError(
        f"{owner} cannot resume from {where}: its `{what}` is {shown}, expected {expected}. The checkpoint's "
        "callback state is damaged or was written by other code; resume from another checkpoint, or start without "
        "`ckpt_path` (the checkpoint was not changed)."
    )


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({type(value).__name__})"
