"""Quiet output for the study's commands: library messages a user cannot act on are hidden for one block.

Inside :func:`quiet_libraries`, and only there:

- Lightning's informational lines (``GPU available: ...``, ``TPU available: ...``, the ``💡 Tip: ...`` lines,
  ```Trainer.fit` stopped: ...``) are not shown: its ``rank_zero`` loggers are raised to ``WARNING``;
- known warnings that say nothing the user can act on are ignored (:data:`NOISE_WARNINGS`: the harness trains
  without a validation loader on purpose, a small dataset has few batches, a frozen backbone gets no gradient, ...);
- transformers' and the hub's progress bars (``Loading weights``, ``Writing model shards``) are off;
- transformers' ``LOAD REPORT`` of a freshly initialised task head is left out by
  :func:`~lightning_inflect.experiments.models.load_classifier`, which still warns when anything but the head is new.

Everything is restored when the block ends, errors included: logger levels, warning filters, progress bars.

Example:
    >>> import logging
    >>> rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    >>> before = rank_zero.level
    >>> with quiet_libraries():
    ...     is_quiet(), rank_zero.level == logging.WARNING
    (True, True)
    >>> is_quiet(), rank_zero.level == before
    (False, True)
    >>> with quiet_libraries(verbose=True):
    ...     is_quiet()
    False
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

__all__ = ["NOISE_LOGGERS", "NOISE_WARNINGS", "is_quiet", "quiet_libraries"]

NOISE_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
"""Loggers of Lightning's informational lines, raised to ``WARNING`` in a quiet block."""

NOISE_WARNINGS = (
    r"You defined a `validation_step` but have no `val_dataloader`",  # the harness trains without validation
    r".*does not have many workers",  # in-memory token lists: workers would only add start-up time
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's use of a torch API
    r".*no gradient reached the outputs of blocks",  # LoRA runs freeze the backbone on purpose: NaN is logged there
)
"""Messages (regular expressions matched at the start) of warnings ignored in a quiet block."""

_QUIET: ContextVar[bool] = ContextVar("lightning_inflect_quiet", default=False)


def is_quiet() -> bool:
    """Whether the caller runs inside :func:`quiet_libraries` (not verbose)."""
    return _QUIET.get()


@contextmanager
def _logger_levels(names: tuple[str, ...], level: int) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, old in zip(loggers, saved):
            logger.setLevel(old)


@contextmanager
def _progress_bars_off() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    if enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@contextmanager
def quiet_libraries(verbose: bool = False) -> Iterator[None]:
    """Hide, for the duration of the block, the library messages listed in this module's docstring.

    Args:
        verbose: show everything: the block changes nothing.
    """
    if verbose:
        yield
        return
    with ExitStack() as stack:
        stack.enter_context(_logger_levels(NOISE_LOGGERS, logging.WARNING))
        stack.enter_context(warnings.catch_warnings())
        for message in NOISE_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        stack.enter_context(_progress_bars_off())
        token = _QUIET.set(True)
        stack.callback(_QUIET.reset, token)
        yield
