"""Two CPU processes (gloo) with every monitor at every step: python dist_monitors.py STRATEGY OUT_DIR.

STRATEGY is ``ddp``, ``fsdp2`` (Lightning's ModelParallelStrategy, ``fully_shard`` on each block and then on the
model in ``configure_model``) or ``tp`` (tensor parallelism, which the monitors refuse at setup). A tiny BERT, 4
examples per rank and micro-batch, 3 optimizer steps. Each rank saves its monitors' histories, its batches and the
collectives that package code made to OUT_DIR/rank{r}.pt. Lightning re-runs this script for rank 1.
"""

import inspect
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import NO_DROPOUT, ClsModule, loader, tiny_model
from lightning.pytorch.callbacks import Callback

from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor

PACKAGE = str(Path(__file__).resolve().parents[2] / "lightning_inflect")
STEPS, PER_RANK, LR = 3, 4, 0.02
CALLS: dict[str, int] = {}


def count_package_calls(name: str) -> None:
    """Count the calls of ``torch.distributed.<name>`` made directly by package code."""
    original = getattr(dist, name)

    def wrapper(*args, **kwargs):
        caller = inspect.stack()[1].filename
        if caller.startswith(PACKAGE):
            CALLS[name] = CALLS.get(name, 0) + 1
        return original(*args, **kwargs)

    setattr(dist, name, wrapper)


def all_monitors() -> list:
    """The three monitors, logging at every step (the test's one-process reference uses the same)."""
    return [
        AttentionEntropyMonitor(every_n_steps=1, normalized=True),
        GradientNormMonitor(every_n_steps=1),
        CKADriftMonitor(every_n_steps=1),
    ]


def peaked_bert():
    """A tiny BERT with large initial weights, so that attention is far from uniform."""
    return tiny_model("bert", initializer_range=0.5, **NO_DROPOUT)


class Batches(Callback):
    """Keeps every training batch this rank sees (Lightning's DistributedSampler decides which)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append({k: v.clone() for k, v in batch.items()})


class Sharded(ClsModule):
    def configure_model(self):
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for block in self.model.bert.encoder.layer:
            fully_shard(block, mesh=mesh)
        fully_shard(self.model, mesh=mesh)


def main() -> None:
    kind, out = sys.argv[1], Path(sys.argv[2])
    for name in ("all_reduce", "all_gather", "all_gather_object", "broadcast", "all_gather_into_tensor"):
        count_package_calls(name)
    torch.set_num_threads(1)
    pl.seed_everything(0)
    monitors = all_monitors()
    if kind == "ddp":
        strategy, module = "ddp", ClsModule(peaked_bert(), lr=LR)
    else:
        from lightning.pytorch.strategies import ModelParallelStrategy

        tensor_parallel = 2 if kind == "tp" else 1  # "tp": refused at setup
        strategy = ModelParallelStrategy(data_parallel_size=2 // tensor_parallel, tensor_parallel_size=tensor_parallel)
        module = Sharded(peaked_bert(), lr=LR)
    batches = Batches()
    trainer = pl.Trainer(
        strategy=strategy, accelerator="cpu", devices=2, max_steps=STEPS, callbacks=[batches, *monitors], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(out),
    )  # fmt: skip
    trainer.fit(module, loader(2 * PER_RANK * STEPS, batch_size=PER_RANK))
    history = {m: h.rows for mon in monitors for m, h in mon.history.items()}
    logged = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("inflect/")}
    metrics = {k: (v.dtype, v.device.type, v.dim(), v.item()) for k, v in logged.items()}  # what EarlyStopping reads
    state = {"history": history, "calls": dict(CALLS), "batches": batches.seen, "callback_metrics": metrics}
    torch.save(state, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main()
