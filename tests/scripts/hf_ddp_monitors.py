"""Two CPU processes (gloo) of the Hugging Face Trainer with every monitor at every step, launched by
``python -m torch.distributed.run --nproc_per_node 2 hf_ddp_monitors.py OUT_DIR``.

A tiny BERT, 4 examples per rank and step (the Trainer's sequential sampler, sharded by accelerate), 3 optimizer steps.
Each rank saves its monitors' histories, the batches its model saw and the collectives package code made to
OUT_DIR/rank{r}.pt; the test compares them with one process over the union of the ranks' examples.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import TokenData
from scripts.dist_monitors import CALLS, LR, PER_RANK, STEPS, count_package_calls, peaked_bert
from transformers import Trainer, TrainingArguments

from lightning_inflect.integrations import transformers as hf

EXAMPLE_KEYS = ("input_ids", "attention_mask", "labels")


def hf_monitors() -> list:
    """The three monitors of the HF Trainer, logging at every step (the test's one-process reference uses the same)."""
    return [
        hf.AttentionEntropyMonitor(every_n_steps=1, normalized=True),
        hf.GradientNormMonitor(every_n_steps=1),
        hf.CKADriftMonitor(every_n_steps=1),
    ]


def hf_args(out: Path, per_device: int, backend: str | None = "gloo") -> TrainingArguments:
    """``average_tokens_across_devices=False``: by default the Trainer multiplies the loss by the number of processes
    whenever the model accepts loss kwargs (BERT does), for losses summed over ``num_items_in_batch``; BERT's
    classification loss is a mean, so its DDP gradients would be twice one process's (the monitors would report
    them as they are). Off, the two runs minimise the same loss."""
    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=per_device, max_steps=STEPS, learning_rate=LR,
        lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0, train_sampling_strategy="sequential",
        report_to=[], save_strategy="no", use_cpu=True, ddp_backend=backend, seed=0, disable_tqdm=True,
        dataloader_num_workers=0, average_tokens_across_devices=False,
    )  # fmt: skip


def main() -> None:
    out = Path(sys.argv[1])
    for name in ("all_reduce", "all_gather", "all_gather_object", "broadcast", "all_gather_into_tensor"):
        count_package_calls(name)
    torch.set_num_threads(1)
    monitors = hf_monitors()
    model = peaked_bert()
    seen: list[dict[str, torch.Tensor]] = []
    model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append({k: kwargs[k].clone() for k in EXAMPLE_KEYS}) if m.training else None,
        with_kwargs=True,
    )
    data = TokenData(2 * PER_RANK * STEPS, seed=1)
    trainer = hf.watch(Trainer(model=model, args=hf_args(out, PER_RANK), train_dataset=data, callbacks=monitors))
    trainer.train()
    history = {m: h.rows for mon in monitors for m, h in mon.history.items()}
    rank = dist.get_rank()
    torch.save({"history": history, "calls": dict(CALLS), "batches": seen}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
