"""Run by tests/test_hf_trainer.py in a process of its own (accelerate's distributed state is per process): a
one-process 'distributed' Trainer with `fsdp=` set; the inflect callbacks must refuse it before anything trains."""

import sys

import torch
from conftest import NO_DROPOUT, TokenData, tiny_model
from transformers import Trainer, TrainingArguments

from lightning_inflect.integrations import transformers as hf


def main() -> None:
    out, which = sys.argv[1], sys.argv[2]
    callback = hf.GradientNormMonitor(2) if which == "monitor" else hf.InjectionCallback(layers=[0], at_step=1)
    args = TrainingArguments(out, fsdp=True, use_cpu=True, max_steps=2, report_to=[], per_device_train_batch_size=4)
    model = tiny_model("bert", **NO_DROPOUT)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = hf.watch(Trainer(model=model, args=args, train_dataset=TokenData(16), callbacks=[callback]))
    try:
        trainer.train()
    except NotImplementedError as err:
        untouched = all(torch.equal(p, before[n]) for n, p in model.named_parameters())
        sys.stdout.write(f"REFUSED untouched={untouched} steps={trainer.state.global_step}\n{err}\n")


if __name__ == "__main__":
    main()
