"""The demo: diagnose -> detect -> inject -> evaluate on the real MiniLM, in a few minutes on a CPU."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_inflect.experiments.data import HUB, is_hub, load_rotten_tomatoes, load_sst2, resolve_data_dir
from lightning_inflect.experiments.synthetic import synthetic_task

__all__ = ["DemoData", "demo_data", "run_demo"]


@dataclass
class DemoData:
    """The demo's source training, target training and target test sentences, and where they came from."""

    source: list[tuple[str, int]]
    target_train: list[tuple[str, int]]
    target_test: list[tuple[str, int]]
    description: str
    real: bool


def demo_data(data_dir: str | Path | None, sizes: tuple[int, int, int] = (640, 480, 400)) -> DemoData:
    """SST-2 -> Rotten Tomatoes subsamples when a data directory is found, else the synthetic film -> restaurant task.

    Example:
        >>> d = demo_data("/nonexistent", sizes=(8, 4, 4))
        >>> d.real, len(d.source), d.description.split(":")[0]
        (False, 8, 'No data directory')
    """
    n_src, n_train, n_test = sizes
    try:
        root = HUB if is_hub(data_dir) else resolve_data_dir(data_dir)  # the hub only when asked for by name
        source = load_sst2(root, "train")
        train = load_rotten_tomatoes(root, "train")
        test = load_rotten_tomatoes(root, "test")
    except (FileNotFoundError, OSError) as err:  # a missing folder or file, or the hub out of reach
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return DemoData(
            synthetic_task("film", n_src, seed=0),
            synthetic_task("restaurant", n_train, seed=1),
            synthetic_task("restaurant", n_test, seed=2),
            f"No data directory: {first} Using the built-in synthetic task (film reviews -> restaurant reviews).",
            False,
        )
    rng = random.Random(0)
    return DemoData(
        rng.sample(source, n_src),
        rng.sample(train, n_train),
        rng.sample(test, n_test),
        f"Data from {'the Hugging Face hub' if root == HUB else root}: SST-2 train -> Rotten Tomatoes (subsampled "
        f"{n_src}/{n_train}/{n_test}).",
        True,
    )


def run_demo(
    data_dir: str | Path | None = None,
    out: str | Path = "runs/demo",
    source_steps: int = 30,
    target_steps: int = 36,
    batch_size: int = 16,
    max_length: int = 40,
    every_n_steps: int = 4,
    seed: int = 0,
    data: DemoData | None = None,
) -> dict[str, Any]:
    """Train a source model briefly, then fine-tune on the target with the monitors and an SKI auto-injection.

    Returns a summary dict (also written to ``<out>/metrics.json``) with the accuracies before and after, the
    injected blocks, the reason, and the paths of the TensorBoard logs and the report.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_inflect import SKI, AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor, InjectionCallback
    from lightning_inflect.experiments.harness import ExperimentConfig, evaluate
    from lightning_inflect.experiments.loaders import make_dataloader
    from lightning_inflect.experiments.minilm import load_minilm
    from lightning_inflect.experiments.module import SequenceClassificationModule

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = data or demo_data(data_dir)
    start = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    model, tokenizer = load_minilm(num_labels=2)
    cfg = ExperimentConfig(max_length=max_length)

    def trainer(steps: int, callbacks: list, logger: Any) -> pl.Trainer:
        return pl.Trainer(
            accelerator="auto", devices=1, max_steps=steps, callbacks=callbacks, logger=logger,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            log_every_n_steps=every_n_steps, default_root_dir=str(out),
        )  # fmt: skip

    src = make_dataloader(data.source, tokenizer, batch_size, max_length, shuffle=True, seed=seed)
    module = SequenceClassificationModule(model, lr=1e-4, num_training_steps=source_steps, warmup_steps=4)
    trainer(source_steps, [], False).fit(module, src)
    before = evaluate(model, tokenizer, data.target_test, cfg)

    injection = InjectionCallback(auto=True, selector=SKI(top_k=2), at_fraction=0.3, r=8, export_dir=out)
    callbacks = [
        AttentionEntropyMonitor(every_n_steps=every_n_steps),
        GradientNormMonitor(every_n_steps=every_n_steps),
        CKADriftMonitor(every_n_steps=every_n_steps, pca_components=16),
        injection,
    ]
    tgt = make_dataloader(data.target_train, tokenizer, batch_size, max_length, shuffle=True, seed=seed)
    module = SequenceClassificationModule(model, lr=2e-4, num_training_steps=target_steps, warmup_steps=4)
    logger = TensorBoardLogger(str(out), name="tb", version="")
    trainer(target_steps, callbacks, logger).fit(module, tgt)
    after = evaluate(model, tokenizer, data.target_test, cfg)
    record = injection.record
    summary = {
        "data": data.description,
        "real_data": data.real,
        "target_acc_before": before,
        "target_acc_after": after,
        "injected_at_step": record.step if record else None,
        "layers": record.layers if record else None,
        "reason": record.reason if record else None,
        "trainable_before": record.trainable_before if record else None,
        "trainable_after": record.trainable_after if record else None,
        "adapters": str(injection.export_path) if injection.export_path else None,
        "tensorboard": str(out / "tb"),
        "seconds": time.perf_counter() - start,
    }
    try:
        from lightning_inflect.experiments.report import write_report

        summary["report"] = str(write_report(out))
    except ImportError:  # the report needs matplotlib
        summary["report"] = None
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary
