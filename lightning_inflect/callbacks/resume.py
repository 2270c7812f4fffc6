"""Glue for a resume: run a callback's check of its saved state before Lightning loads the model's weights.

Lightning restores the LightningModule's weights (``restore_model``) before it hands the callbacks their state
(``Callback.load_state_dict``), and it names the checkpoint only after ``setup``. A callback that must refuse a damaged
state before anything of the model changes, or re-apply a change of the model's structure the weights need (the
injected adapters), does it in a pre-hook of the weights load registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["before_weights_load_hooks", "remove_hooks"]


def before_weights_load_hooks(pl_module: nn.Module, hook: Callable[..., None]) -> tuple[Any, ...]:
    """``hook`` as a pre-hook of ``pl_module``'s ``load_state_dict``, and of its first module that owns parameters:
    FSDP2's full-checkpoint load fills each such module on its own, never through the LightningModule.

    The hook may fire more than once in one load (once per hooked module); the caller runs its work only the first
    time. Remove the handles with :func:`remove_hooks` once the checkpoint is loaded (``on_train_start`` at the
    latest: FSDP2 loads it after ``on_fit_start``).
    """
    owners = [m for m in pl_module.modules() if next(m.parameters(recurse=False), None) is not None]
    return tuple(m.register_load_state_dict_pre_hook(hook) for m in [pl_module, *owners[:1]])


def remove_hooks(handles: tuple[Any, ...]) -> tuple[Any, ...]:
    """Remove the hooks of ``handles``; returns the empty tuple to keep in their place."""
    for handle in handles:
        handle.remove()
    return ()
