"""One run of the injection resume test, in its own process: python inject_resume.py MAX_STEPS OUT [CKPT] [SAVE_AT].

Trains a tiny BERT (no dropout) with AdamW and a linear warm-up schedule on batches that all hold the same
examples, with an InjectionCallback at step 3; writes the per-step losses and the final weights to OUT.
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import NO_DROPOUT, ClsModule, loader, make_trainer, tiny_model

from lightning_inflect.callbacks.injection import InjectionCallback


class Module(ClsModule):
    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        opt = torch.optim.AdamW(self.parameters(), lr=1e-2)
        sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=20)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Losses(Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step - 1] = outputs["loss"].item()


def main() -> None:
    max_steps, out = int(sys.argv[1]), Path(sys.argv[2])
    ckpt = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "-" else None
    save_at = int(sys.argv[4]) if len(sys.argv) > 4 else None
    pl.seed_everything(0)
    same = torch.utils.data.Subset(loader(8).dataset, range(8))
    data = torch.utils.data.DataLoader(torch.utils.data.ConcatDataset([same] * 20), batch_size=8)
    losses = Losses()
    inj = InjectionCallback(layers=[0, 2], at_step=3, r=4, export=False)
    cbs = [losses, inj]
    if save_at is not None:
        cbs.append(ModelCheckpoint(dirpath=out.parent / "ckpt", every_n_train_steps=save_at, save_top_k=-1))
    trainer = make_trainer(out.parent, cbs, max_steps=max_steps, enable_checkpointing=save_at is not None)
    module = Module(tiny_model("bert", **NO_DROPOUT))
    trainer.fit(module, data, ckpt_path=ckpt)
    lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
    torch.save({"losses": losses.losses, "state": module.state_dict(), "lrs": lrs, "record": inj.record}, out)


if __name__ == "__main__":
    main()
