"""The InjectionCallback's FSDP2 glue: dormant adapters before sharding, resharding, the record of a checkpoint.

FSDP2 (Lightning's ``ModelParallelStrategy``, ``fully_shard`` in ``configure_model``) takes a block's parameters
when it shards it, after the callbacks' ``setup``, and takes no new ones later; and it loads a checkpoint after
``on_fit_start`` (:func:`~lightning_inflect.callbacks.lightning_internals.callback_state_in_checkpoint` reads the
callback's state from it then). These functions are what the callback does differently there.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import ModelParallelStrategy, Strategy

from lightning_inflect.callbacks.lightning_internals import tensor_parallel_size
from lightning_inflect.injection import InjectionRecord, adapter_state, attach_dormant_lora

__all__ = ["attach_dormant", "check_sharded", "gather_adapters", "reshard", "sharded"]


def sharded(trainer: pl.Trainer) -> bool:
    """Whether the fit shards parameters with FSDP2 (Lightning's ``ModelParallelStrategy``)."""
    return isinstance(trainer.strategy, ModelParallelStrategy)


def check_sharded(strategy: Strategy, merged: bool) -> None:
    """What the InjectionCallback cannot do under FSDP2: tensor parallelism, a merged export (``merged``)."""
    tensor_parallel = tensor_parallel_size(strategy)
    if tensor_parallel != 1:
        raise NotImplementedError(
            f"InjectionCallback supports ModelParallelStrategy with data parallelism only, but got "
            f"tensor_parallel_size={tensor_parallel!r}: use `ModelParallelStrategy(data_parallel_size=N, "
            "tensor_parallel_size=1)`."
        )
    if merged:
        raise ValueError(
            "InjectionCallback cannot write `export_merged=True` under FSDP2 (the merge needs the whole model on "
            "one process): pass `export_merged=False` and merge the saved adapters afterwards with peft, "
            "`PeftModel.from_pretrained(base_model, path).merge_and_unload()`."
        )


def attach_dormant(trainer: pl.Trainer, model: torch.nn.Module, candidates: InjectionRecord) -> None:
    """Attach the adapter of ``candidates`` (every block the injection may choose) dormant
    (:func:`~lightning_inflect.injection.attach_dormant_lora`), before ``configure_model`` shards the blocks; LoRA
    ``A`` comes from one seed broadcast by rank 0, so every rank holds the same, and the user's RNG stream is left
    as it was."""
    if any(hasattr(p, "placements") for p in model.parameters()):
        raise RuntimeError(
            "InjectionCallback under FSDP2 attaches its adapters before the model is sharded, but the model's "
            "parameters are DTensors already: call `fully_shard` in the LightningModule's `configure_model`, "
            "not in `__init__`."
        )
    seed = trainer.strategy.broadcast(int(torch.randint(2**31 - 1, ()).item()), src=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        attach_dormant_lora(model, candidates)


def reshard(module: torch.nn.Module) -> None:
    """Every sharded module back in its sharded state, so that ``parameters()`` are the sharded parameters the
    optimizer holds. A forward outside a training step (a probe) leaves the root module's parameters gathered until
    the next backward, and flags set on those would not reach the sharded ones."""
    from torch.distributed.fsdp import FSDPModule

    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def gather_adapters(pl_module: pl.LightningModule, model: torch.nn.Module, record: InjectionRecord) -> dict[str, Any]:
    """The export's tensors, whole (:func:`~lightning_inflect.injection.adapter_state`); every rank must call this,
    since gathering the shards is collective."""
    reshard(pl_module)
    return adapter_state(model, record)
