"""The source models: the model fine-tuned on SST-2 for a step budget or for one epoch (UNDER), or eight (OVER)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from lightning_inflect.experiments.config import ExperimentConfig, config_json, write_json
from lightning_inflect.experiments.data import load_sst2
from lightning_inflect.experiments.models import evaluate, load_model, make_trainer
from lightning_inflect.experiments.study_data import StudyData, load_study_data

__all__ = ["source_dir", "train_source"]


def source_dir(out_dir: Path, regime: str) -> Path:
    """The run folder of a regime's source model: ``OUT/source/REGIME``.

    Example:
        >>> source_dir(Path("runs/study"), "over").as_posix()
        'runs/study/source/over'
    """
    return Path(out_dir) / "source" / regime


def _saved(run_dir: Path) -> bool:
    # source.json: what earlier versions wrote instead of metrics.json
    finished = any((run_dir / f).is_file() for f in ("metrics.json", "source.json"))
    return finished and (run_dir / "model" / "config.json").is_file()


def train_source(
    cfg: ExperimentConfig, regime: str, out_dir: Path, data: StudyData | None = None, progress: bool = False
) -> Path:
    """Fine-tune the model on SST-2 for the regime's budget; save it; skip if already saved.

    The budget is ``cfg.source_steps[regime]`` optimizer steps when given, else the regime's epochs (UNDER 1,
    OVER 8). ``OUT/source/REGIME/`` gets ``config.json``, TensorBoard logs (``tb/``: the training loss), the model
    (``model/``) and, written last, ``metrics.json`` (steps, epochs, time, SST-2 dev accuracy): a folder without it
    is trained again from the start. ``progress`` shows Lightning's progress bar over the training steps.

    Returns:
        The model folder ``OUT/source/REGIME/model``.
    """
    import lightning.pytorch as pl

    from lightning_inflect.experiments.loaders import make_dataloader
    from lightning_inflect.experiments.module import SequenceClassificationModule

    run_dir = source_dir(out_dir, regime)
    model_dir = run_dir / "model"
    if _saved(run_dir):
        return model_dir
    for stale in (run_dir / "tb", model_dir):  # what a killed earlier attempt left
        shutil.rmtree(stale, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config_json(cfg, run_dir, regime=regime), indent=2))
    data = data or load_study_data(cfg)
    pl.seed_everything(0, verbose=False)
    model, tokenizer = load_model(cfg.model)
    loader = make_dataloader(data.source_train, tokenizer, cfg.batch_size, cfg.max_length, shuffle=True, seed=0)
    steps = cfg.source_budget(regime, len(loader))
    module = SequenceClassificationModule(
        model, lr=cfg.source_lr, num_training_steps=steps, warmup_steps=int(cfg.warmup_ratio * steps)
    )
    start = time.perf_counter()
    make_trainer(cfg, run_dir, steps, [], tensorboard=True, progress=progress).fit(module, loader)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    info = {
        "regime": regime,
        "budget": "steps" if regime in (cfg.source_steps or {}) else "epochs",
        "steps": steps,
        "epochs": round(steps / len(loader), 4),
        "seconds": time.perf_counter() - start,
        "sst2_dev_acc": evaluate(model, tokenizer, load_sst2(cfg.data_dir, "dev"), cfg),
    }
    write_json(run_dir / "metrics.json", info)
    return model_dir
