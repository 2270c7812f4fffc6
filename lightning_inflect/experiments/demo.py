"""The demo: diagnose -> detect -> inject -> evaluate on the real MiniLM, in a few minutes on a CPU."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_inflect.experiments.data import HUB, is_hub, load_rotten_tomatoes, load_sst2, resolve_data_dir
from lightning_inflect.experiments.synthetic import synthetic_task

__all__ = ["DemoData", "demo_data", "run_demo"]


@dataclass
class DemoData:
    """The demo's source training, target training and target test sentences, and where they came from.

    Attributes:
        description: one line saying which data these are (printed first by the demo).
        real: SST-2 and Rotten Tomatoes (else the synthetic task).
        data_dir: the data folder named in ``description`` (None for the hub and the synthetic task).
    """

    source: list[tuple[str, int]]
    target_train: list[tuple[str, int]]
    target_test: list[tuple[str, int]]
    description: str
    real: bool
    data_dir: str | None = None


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
        None if root == HUB else str(root),
    )


def _trainer(steps: int, callbacks: list, logger: Any, every_n_steps: int, out: Path) -> Any:
    import lightning.pytorch as pl

    return pl.Trainer(
        accelerator="auto", devices=1, max_steps=steps, callbacks=callbacks, logger=logger,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=every_n_steps, default_root_dir=str(out),
    )  # fmt: skip


def _summary(data: DemoData, before: float, after: float, injection: Any, out: Path, start: float) -> dict[str, Any]:
    record = injection.record
    return {
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


def _write_report(out: Path) -> str | None:
    try:
        from lightning_inflect.experiments.report import write_report

        return str(write_report(out))
    except ImportError:  # the report needs matplotlib: the [study] extra
        return None


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
    progress: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Train a source model briefly, then fine-tune on the target with the monitors and an SKI auto-injection.

    Args:
        data_dir: where the data are (see :func:`demo_data`); ignored when ``data`` is given.
        out: output folder.
        source_steps, target_steps: optimizer steps of the source training and of the target fine-tuning.
        batch_size, max_length: batches and tokens per sentence.
        every_n_steps: the monitors' logging interval.
        seed: random seed.
        data: the sentences (default: :func:`demo_data` of ``data_dir``).
        progress: called with a line before each phase (the CLI prints it).

    Returns:
        A summary dict with the accuracies before and after, the injected blocks, the reason, and the paths of the
        TensorBoard logs, the adapters and the report; also written to ``<out>/metrics.json``, its paths relative
        to ``out``.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_inflect import SKI, AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor, InjectionCallback
    from lightning_inflect.experiments.config import ExperimentConfig
    from lightning_inflect.experiments.loaders import make_dataloader
    from lightning_inflect.experiments.minilm import load_minilm
    from lightning_inflect.experiments.models import evaluate
    from lightning_inflect.experiments.module import SequenceClassificationModule

    say = progress or (lambda line: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = data or demo_data(data_dir)
    start = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    model, tokenizer = load_minilm(num_labels=2)
    cfg = ExperimentConfig(max_length=max_length)
    say(f"Training the source model: MiniLM on the source sentences, {source_steps} steps.")
    src = make_dataloader(data.source, tokenizer, batch_size, max_length, shuffle=True, seed=seed)
    module = SequenceClassificationModule(model, lr=1e-4, num_training_steps=source_steps, warmup_steps=4)
    _trainer(source_steps, [], False, every_n_steps, out).fit(module, src)
    before = evaluate(model, tokenizer, data.target_test, cfg)
    say(f"Fine-tuning on the target: {target_steps} steps, monitors every {every_n_steps}, SKI injection at 30%.")
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
    _trainer(target_steps, callbacks, logger, every_n_steps, out).fit(module, tgt)
    summary = _summary(data, before, evaluate(model, tokenizer, data.target_test, cfg), injection, out, start)
    say("Writing the report.")
    summary["report"] = _write_report(out)
    (out / "metrics.json").write_text(json.dumps(_portable(summary, data, out), indent=2))
    return summary


def _portable(summary: dict[str, Any], data: DemoData, out: Path) -> dict[str, Any]:
    """The summary with its paths relative to ``out`` (no machine path in a file one may publish)."""
    from lightning_inflect.experiments.config import portable_path

    portable = {k: portable_path(summary[k], out) for k in ("adapters", "tensorboard", "report")}
    if data.data_dir is not None:
        portable["data"] = data.description.replace(data.data_dir, str(portable_path(data.data_dir, out)))
    return {**summary, **portable}
