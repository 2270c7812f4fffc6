"""The only places where lightning-inflect reads Lightning's private attributes, each for a public API it lacks.

Each function says what it reads and which public API would replace it; each falls back to a safe answer when a
Lightning version no longer has the attribute, so that an upgrade degrades to a clear error, not to wrong values.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["callback_state_in_checkpoint", "tensor_parallel_size"]


def _loaded_checkpoint(trainer: Any) -> Mapping[str, Any] | None:
    """The checkpoint Lightning is restoring, as it loaded it.

    Missing public API: a callback hook that sees the checkpoint *before* the model's weights load. A callback that
    changes the module's structure (adds adapters) must re-apply that change first, but ``Callback.on_load_checkpoint``
    and ``Callback.load_state_dict`` run after ``restore_model``. Reads ``trainer._checkpoint_connector.
    _loaded_checkpoint`` (set by ``resume_start``, kept until ``resume_end``).
    """
    connector = getattr(trainer, "_checkpoint_connector", None)
    loaded = getattr(connector, "_loaded_checkpoint", None)
    return loaded if isinstance(loaded, Mapping) and loaded else None


def _metadata_file(folder: Path) -> Path:
    """The file of a distributed (sharded) checkpoint folder that holds its non-tensor state.

    Missing public API: the file's name, ``lightning.fabric.utilities.load._METADATA_FILENAME``.
    """
    try:
        from lightning.fabric.utilities.load import _METADATA_FILENAME as name
    except ImportError:  # pragma: no cover - a Lightning version that renamed it
        name = "meta.pt"
    return folder / name


def callback_state_in_checkpoint(trainer: Any, state_key: str) -> tuple[bool, Any]:
    """``(found, state)``: the state callback ``state_key`` saved in the checkpoint ``trainer`` is resuming from, read
    before Lightning hands it to the callback. Lightning's loaded checkpoint when it has one (no second read), else
    ``trainer.ckpt_path`` read here (a file, or the metadata file of a sharded checkpoint folder: FSDP2 loads the
    checkpoint after ``on_fit_start``, without going through the loaded one).

    The state is returned as it is, unchecked; ``found`` is False when the checkpoint holds none for ``state_key``.
    """
    loaded = _loaded_checkpoint(trainer)
    if loaded is None:
        path = getattr(trainer, "ckpt_path", None)
        if path is None:
            return False, None
        path = Path(path)
        file = _metadata_file(path) if path.is_dir() else path
        loaded = torch.load(file, map_location="cpu", mmap=not path.is_dir(), weights_only=True)
    callbacks = loaded.get("callbacks") if isinstance(loaded, Mapping) else None
    if not isinstance(callbacks, Mapping) or state_key not in callbacks:
        return False, None
    return True, callbacks[state_key]


def tensor_parallel_size(strategy: Any) -> int | str:
    """The tensor-parallel degree of ``strategy``: 1 for every strategy but a ``ModelParallelStrategy`` with tensor
    parallelism, whose ``"auto"`` (all processes, resolved at setup) is returned as it is.

    Missing public API: ``ModelParallelStrategy`` keeps its ``tensor_parallel_size`` argument as the private
    ``_tensor_parallel_size`` (its device mesh is only built at setup, after the callbacks' checks want it).
    """
    return getattr(strategy, "_tensor_parallel_size", 1)
