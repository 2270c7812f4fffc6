"""Run a region eagerly even when the model (or the LightningModule) is under ``torch.compile``.

Why the captures need it (torch 2.13, checked in source and by ``tests/test_compile.py``): dynamo does not guard
on ``nn.Module`` hooks (``torch._dynamo.config.skip_nnmodule_hook_guards`` is True by default). A forward hook that
exists while dynamo first traces the model is baked into the compiled code, and keeps running on every later step
after the hook was removed (with graph breaks around it); a hook added after the first trace is silently not run.
Hooks armed only on logging steps therefore either slow down and break the graph of every non-logging step, or
measure nothing. Forcing eager (``torch.compiler.set_stance("force_eager")``) while the hooks are armed keeps
dynamo away from them: the hooks run in eager PyTorch, and the compiled cache is never consulted nor extended, so
non-logging steps run exactly the graphs they run without the monitors.

The probe forward runs the same way (a model compiled in place with ``model.compile()`` would otherwise be traced
again in eval mode under ``no_grad`` with the patched attention function, a new variant per probe).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["EagerStance", "force_eager"]


class _Depth:
    """Nesting count of :class:`EagerStance` holders (several captures may be armed at once, released in any
    order): the stance is set by the first and restored by the last."""

    count = 0
    saved: Any = None


class EagerStance:
    """A re-entrant hold on dynamo's ``"force_eager"`` stance: :meth:`hold` and :meth:`release` in pairs, from any
    number of holders, in any order; the stance the user had is back once the last holder releases.

    Without ``torch.compiler.set_stance`` (torch < 2.6) it does nothing.

    Example:
        >>> a, b = EagerStance(), EagerStance()
        >>> a.hold(); b.hold(); a.release(); b.release(); a.release()  # a second release is a no-op
        >>> a.held, _Depth.count
        (False, 0)
    """

    def __init__(self) -> None:
        self.held = False

    def hold(self) -> None:
        if self.held:
            return
        self.held = True
        set_stance = getattr(torch.compiler, "set_stance", None)
        if _Depth.count == 0 and set_stance is not None:
            _Depth.saved = set_stance("force_eager")  # sets it now; its __exit__ restores the previous stance
        _Depth.count += 1

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        _Depth.count -= 1
        if _Depth.count == 0 and _Depth.saved is not None:
            saved, _Depth.saved = _Depth.saved, None
            saved.__exit__(None, None, None)


@contextmanager
def force_eager() -> Iterator[None]:
    """Run the block eagerly, whatever ``torch.compile`` wrapped (see the module docstring).

    Example:
        >>> f = torch.compile(lambda x: x + 1, backend="eager")
        >>> with force_eager():
        ...     f(torch.zeros(1)).tolist()
        [1.0]
    """
    stance = EagerStance()
    stance.hold()
    try:
        yield
    finally:
        stance.release()
