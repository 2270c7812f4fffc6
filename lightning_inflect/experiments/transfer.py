"""One transfer run: a source model fine-tuned on Rotten Tomatoes with one registered strategy and one seed.

The run folder gets ``config.json`` (the settings; paths relative to the folder), TensorBoard logs (``tb/``, and
``diagnose/tb/`` for a selective strategy), what the run trained (``inflect_adapters/`` or ``model/``) and, written
last, ``metrics.json``: the strategy, its ``role`` (``"eval"``, or ``"tune"`` for a run that only measures a
learning rate on validation), the learning rate (``lr``), the blocks (``layers``), why (``reason``), the selector's
``scores``, the step of the injection (``injected_at_step``) and of the diagnosis (``diagnosis_step``), parameter
counts, time, the two validation accuracies, the two test accuracies (None in a tuning run: the test set is not
looked at) and the data sizes. The source model's path in it is relative to the run folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from lightning_inflect.experiments.config import ExperimentConfig, config_json, portable_path, write_json
from lightning_inflect.experiments.diagnosis import Diagnosis, diagnose
from lightning_inflect.experiments.models import accuracies_on_test, accuracies_on_validation, load_model, make_trainer
from lightning_inflect.experiments.strategies import Strategy, get_strategy
from lightning_inflect.experiments.study_data import StudyData, load_study_data

__all__ = ["Role", "plan_blocks", "run_transfer"]

Role = Literal["eval", "tune"]


def plan_blocks(
    strategy: Strategy, cfg: ExperimentConfig, num_blocks: int, diagnosis: Diagnosis | None = None
) -> tuple[list[int] | None, str]:
    """The blocks a run of ``strategy`` trains and why: the diagnosis' choice, the fixed rule's, or None (all).

    Example:
        >>> from lightning_inflect.experiments.strategies import get_strategy
        >>> cfg = ExperimentConfig(k=2)
        >>> plan_blocks(get_strategy("shallow"), cfg, 6)
        ([4, 5], 'shallow: last 2 blocks [4, 5] and the head')
        >>> plan_blocks(get_strategy("full"), cfg, 6)
        (None, 'full')
        >>> plan_blocks(get_strategy("cka-lora"), cfg, 6, Diagnosis([1, 3], "CKA importance", None, 3))
        ([1, 3], 'CKA importance')
    """
    if strategy.selective:
        if diagnosis is None:
            raise ValueError(f"Expected a diagnosis for the selective strategy {strategy.name!r} but got None.")
        return list(diagnosis.layers), diagnosis.reason
    if strategy.blocks is not None:
        return strategy.blocks(cfg, num_blocks)
    return None, strategy.name


def _unfreeze_only(model: Any, layers: list[int]) -> None:
    """Train only ``layers`` and the task head of ``model``; every other parameter is frozen."""
    from lightning_inflect.architectures import find_layers
    from lightning_inflect.injection import head_module_names

    path = find_layers(model).path
    keep = tuple(f"{path}.{i}." for i in layers) + tuple(f"{h}." for h in head_module_names(model))
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(keep))


def _callbacks(
    strategy: Strategy, cfg: ExperimentConfig, model: Any, layers: list[int] | None, run_dir: Path
) -> tuple[list, Any]:
    """The run's callbacks (monitors, and the LoRA injection at step 0 of a LoRA strategy) and the injection."""
    from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor, InjectionCallback

    injection = None
    if strategy.lora:
        injection = InjectionCallback(
            layers=layers, at_step=0, r=cfg.r, lora_alpha=cfg.lora_alpha, export=cfg.save_weights, export_dir=run_dir
        )
    elif layers is not None:
        _unfreeze_only(model, layers)
    callbacks = [] if injection is None else [injection]
    if cfg.monitor_every:
        every = cfg.monitor_every
        monitors = [
            AttentionEntropyMonitor(every_n_steps=every),
            GradientNormMonitor(every_n_steps=every),
            CKADriftMonitor(every_n_steps=every, pca_components=16),
        ]
        callbacks = [*monitors, *callbacks]
    return callbacks, injection


def _save_weights(strategy: Strategy, model: Any, tokenizer: Any, run_dir: Path) -> str:
    """Save what a non-LoRA run trained (``model/``); a LoRA run's callback exported its adapters at fit end."""
    if strategy.lora:
        return "inflect_adapters"
    model.save_pretrained(str(run_dir / "model"))
    tokenizer.save_pretrained(str(run_dir / "model"))
    return "model"


def run_transfer(
    cfg: ExperimentConfig,
    strategy: str,
    seed: int,
    source_dir: Path,
    run_dir: Path,
    data: StudyData | None = None,
    progress: bool = False,
    *,
    lr: float | None = None,
    role: Role = "eval",
) -> dict[str, Any]:
    """Fine-tune the source model on Rotten Tomatoes with one strategy and seed; write and return ``metrics.json``.

    Args:
        cfg: the study's settings.
        strategy: a registered strategy's name (:data:`~lightning_inflect.experiments.strategies.STRATEGIES`).
        seed: the run's seed (data order, head, selector).
        source_dir: the source model's folder.
        run_dir: the run folder.
        data: the study's data (loaded from ``cfg`` when None).
        progress: show Lightning's progress bar over the training steps.
        lr: the AdamW learning rate (default ``cfg.lr``).
        role: ``"eval"`` measures the test set too and saves what ``cfg`` asks; ``"tune"`` measures the validation
            split only, with no monitors and nothing saved (the run only rates a learning rate).

    Raises:
        ValueError: If ``strategy`` is not registered (the message lists the registered ones), or ``lr`` or
            ``role`` is not allowed.
    """
    import lightning.pytorch as pl

    from lightning_inflect.architectures import find_layers
    from lightning_inflect.experiments.loaders import make_dataloader
    from lightning_inflect.experiments.module import SequenceClassificationModule

    spec = get_strategy(strategy)
    lr = cfg.lr if lr is None else lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"Expected argument `lr` to be a positive float (or None for `cfg.lr`) but got {lr!r}.")
    if role not in ("eval", "tune"):
        raise ValueError(f"Expected argument `role` to be one of ['eval', 'tune'] but got {role!r}.")
    if role == "tune":
        cfg = replace(cfg, monitor_every=0, save_weights=False)
    source_dir, run_dir = Path(source_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    source = portable_path(source_dir, run_dir)
    (run_dir / "config.json").write_text(
        json.dumps(config_json(cfg, run_dir, strategy=spec.name, seed=seed, source=source, lr=lr, role=role), indent=2)
    )
    data = data or load_study_data(cfg)
    start = time.perf_counter()
    diagnosis = diagnose(cfg, spec, seed, source_dir, data, run_dir) if spec.selective else None
    pl.seed_everything(seed, verbose=False)
    model, tokenizer = load_model(str(source_dir))
    layers, reason = plan_blocks(spec, cfg, find_layers(model).num_layers, diagnosis)
    callbacks, injection = _callbacks(spec, cfg, model, layers, run_dir)
    loader = make_dataloader(data.target_train, tokenizer, cfg.batch_size, cfg.max_length, shuffle=True, seed=seed)
    steps = cfg.target_epochs * len(loader)
    module = SequenceClassificationModule(
        model, lr=lr, num_training_steps=steps, warmup_steps=int(cfg.warmup_ratio * steps)
    )
    make_trainer(cfg, run_dir, steps, callbacks, tensorboard=bool(cfg.monitor_every), progress=progress).fit(
        module, loader
    )
    train_seconds = time.perf_counter() - start
    record = injection.record if injection is not None else None
    metrics = {
        "strategy": spec.name,
        "seed": seed,
        "role": role,
        "lr": lr,
        "source": source,
        "layers": layers,
        "reason": reason,
        "scores": diagnosis.scores if diagnosis is not None else None,
        "injected_at_step": record.step if record is not None else None,
        "diagnosis_step": diagnosis.step if diagnosis is not None else None,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "train_seconds": train_seconds,
        "weights": _save_weights(spec, model, tokenizer, run_dir) if cfg.save_weights else None,
        **accuracies_on_validation(model, tokenizer, data, cfg),
        **(
            accuracies_on_test(model, tokenizer, data, cfg)
            if role == "eval"
            else {"test_acc": None, "test_acc_dedup": None}
        ),
        "counts": data.counts,
    }
    write_json(run_dir / "metrics.json", metrics)
    return metrics
