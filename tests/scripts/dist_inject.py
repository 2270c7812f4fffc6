"""Two-process runs for the injection test: python dist_inject.py STRATEGY OUT_DIR. Lightning re-runs this script
for rank 1.

Two CPU processes (gloo). STRATEGY is ``ddp`` or ``fsdp2`` (Lightning's ModelParallelStrategy with ``fully_shard``
on each block and then on the model in ``configure_model``). A tiny BERT (no dropout), 8 examples: each rank sees
its own 4 at every step (one step per epoch), so a resumed run sees what the uninterrupted one saw. AdamW (state to
restore), the three monitors at every step, automatic injection at step 2 of the block with the largest
parameter-gradient norm (GradientProbe; no monitor logs that norm, so the callback measures it itself). Three fits:

* ``straight``: 6 steps, a checkpoint after every step (FSDP2: distributed, sharded);
* ``sharded``: resumed from the straight run's checkpoint at step 4 (after the injection) to step 6, writing
  checkpoints (FSDP2: full, one file);
* ``full``: resumed from the ``sharded`` fit's checkpoint at step 5 to step 6.

Each rank saves to OUT_DIR/<fit>_rank{r}.pt what the test compares: the logits just before and just after the
injection, the whole weights and the batches of the steps just before and after it, the gradients of the step after,
the trainable and optimizer parameter names, the monitors' histories, the final whole weights and where the adapters
were exported.
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.strategies import ModelParallelStrategy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import NO_DROPOUT, ClsModule, loader, tiny_model
from scripts.dist_monitors import Sharded, all_monitors

from lightning_inflect import GradientNormMonitor, InjectionCallback
from lightning_inflect.selection import GradientProbe

AT, STEPS, PER_RANK, LR = 2, 6, 4, 0.01
PROBE = {"input_ids": torch.arange(1, 17).reshape(2, 8) % 50, "attention_mask": torch.ones(2, 8, dtype=torch.long)}


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor (a collective), else the tensor itself; detached, on the CPU."""
    full = getattr(tensor, "full_tensor", None)
    return (full() if full is not None else tensor).detach().cpu().clone()


def whole_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: whole(p) for name, p in module.state_dict().items()}


class Module(ClsModule):
    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


class ShardedModule(Sharded):
    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


class Logits(Callback):
    """The model's logits on a fixed input at the injection step's start (every rank: the forward is collective)."""

    def __init__(self) -> None:
        self.logits: torch.Tensor | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == AT and self.logits is None:
            with torch.no_grad():
                self.logits = pl_module.model(**PROBE).logits.detach().clone()


class BeforeInjection(Callback):
    """The whole weights at the start of the step before the injection, and its batch."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}
        self.batch: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == AT - 1 and not self.state:
            self.state = whole_state(pl_module.model)
            self.batch = {k: v.clone() for k, v in batch.items()}


class AfterInjection(Logits):
    """Also the whole weights at the start of the first step after the injection, its batch and LoRA gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, torch.Tensor] = {}
        self.batch: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == AT and not self.state:
            self.state = whole_state(pl_module.model)
            self.batch = {k: v.clone() for k, v in batch.items()}
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == AT:
            self.grads = {n: whole(p.grad) for n, p in pl_module.model.named_parameters() if p.grad is not None}


def fit(kind: str, out: Path, name: str, ckpt: Path | None, distributed_checkpoint: bool) -> None:
    pl.seed_everything(0)
    before, after, earlier = Logits(), AfterInjection(), BeforeInjection()
    monitors = [m for m in all_monitors() if not isinstance(m, GradientNormMonitor)]
    monitors.append(GradientNormMonitor(every_n_steps=1, norms=("activation",)))
    selector = GradientProbe(k=1, window=1)
    inj = InjectionCallback(auto=True, selector=selector, at_step=AT, r=4, export_dir=out / name)
    saver = ModelCheckpoint(dirpath=out / name, every_n_train_steps=1, save_top_k=-1, filename="{step}")
    strategy = (
        ModelParallelStrategy(2, 1, save_distributed_checkpoint=distributed_checkpoint) if kind == "fsdp2" else "ddp"
    )
    trainer = pl.Trainer(
        strategy=strategy, accelerator="cpu", devices=2, max_steps=STEPS, logger=False,
        callbacks=[earlier, before, *monitors, inj, after, saver], enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(out / name),
    )  # fmt: skip
    module = (ShardedModule if kind == "fsdp2" else Module)(tiny_model("bert", **NO_DROPOUT), lr=LR)
    trainer.fit(module, loader(2 * PER_RANK, batch_size=PER_RANK), ckpt_path=ckpt)
    ids = {id(p): n for n, p in module.named_parameters()}
    lora = [p for n, p in module.model.named_parameters() if ".lora_" in n]
    torch.save(
        {
            "record": inj.record.to_dict(),
            "restored": inj._resumed,
            "before": before.logits,
            "after": after.logits,
            "state": after.state,
            "state_before": earlier.state,
            "batch_before": earlier.batch,
            "history": {m: (h.steps, h.rows) for mon in monitors for m, h in mon.history.items()},
            "batch": after.batch,
            "grads": after.grads,
            "lora_sharded": bool(lora) and all(hasattr(p, "placements") for p in lora),
            "trainable": sorted(n for n, p in module.named_parameters() if p.requires_grad),
            "optimizer": sorted(ids[id(p)] for g in trainer.optimizers[0].param_groups for p in g["params"]),
            "final": whole_state(module.model),
            "export": str(inj.export_path) if inj.export_path else None,
        },
        out / f"{name}_rank{trainer.global_rank}.pt",
    )


def main() -> None:
    kind, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    fit(kind, out, "straight", None, distributed_checkpoint=True)
    fit(kind, out, "sharded", out / "straight" / "step=4.ckpt", distributed_checkpoint=False)
    fit(kind, out, "full", out / "sharded" / "step=5.ckpt", distributed_checkpoint=True)


if __name__ == "__main__":
    main()
