"""DDP run for the injection test: python ddp_inject.py OUT_DIR. Lightning re-runs this script for rank 1.

Two CPU processes (gloo), a tiny BERT, SKI(top_k=1) fed by rank-local diagnostics (each rank sees other batches),
injection at step 3. Each rank saves what it chose and its final weights to OUT_DIR/rank{r}.pt.
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import ClsModule, loader, tiny_model

from lightning_inflect import SKI, AttentionEntropyMonitor, GradientNormMonitor, InjectionCallback


def main() -> None:
    out = Path(sys.argv[1])
    pl.seed_everything(0)
    torch.set_num_threads(1)
    inj = InjectionCallback(auto=True, selector=SKI(top_k=1, window=1), at_step=3, r=4, export_dir=out)
    cbs = [AttentionEntropyMonitor(every_n_steps=1), GradientNormMonitor(every_n_steps=1), inj]
    trainer = pl.Trainer(
        strategy="ddp", accelerator="cpu", devices=2, max_steps=6, callbacks=cbs, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(out),
    )  # fmt: skip
    module = ClsModule(tiny_model("bert"), lr=0.5)
    start = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer.fit(module, loader(96))
    torch.save(
        {
            "rank": trainer.global_rank,
            "layers": inj.record.layers,
            "local_layers": list(inj.selection.layers),
            "state": {k: v.detach().clone() for k, v in module.state_dict().items()},
            "start": start,
            "wrapped_trainable": sorted(n for n, p in trainer.strategy.model.named_parameters() if p.requires_grad),
            "export": str(inj.export_path) if inj.export_path else None,
        },
        out / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main()
