"""The diagnosis of a selective strategy: which blocks its selector picks on the source model, before training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lightning_inflect.experiments.config import ExperimentConfig
from lightning_inflect.experiments.models import load_model, make_trainer
from lightning_inflect.experiments.strategies import Strategy
from lightning_inflect.experiments.study_data import StudyData

__all__ = ["Diagnosis", "diagnose"]


@dataclass(frozen=True)
class Diagnosis:
    """The selector's choice: blocks, its reason, its per-block scores (if any) and the step it was made at."""

    layers: list[int]
    reason: str
    scores: list[float] | None
    step: int


def diagnose(
    cfg: ExperimentConfig, strategy: Strategy, seed: int, source_dir: Path, data: StudyData, run_dir: Path
) -> Diagnosis:
    """Which blocks ``strategy``'s selector picks on the source model over target batches, with no update.

    A short fit (``cfg.diagnose_steps`` steps, TensorBoard logs in ``run_dir/diagnose/tb``) at learning rate 0
    with the monitors and an auto :class:`~lightning_inflect.InjectionCallback`: the diagnostics are those of the
    source model on the target task, the selection is the callback's own (the top ``cfg.k`` blocks by gradient
    norm when the selector finds none).

    Raises:
        ValueError: If ``strategy`` has no selector.
    """
    import lightning.pytorch as pl

    from lightning_inflect import AttentionEntropyMonitor, GradientNormMonitor, InjectionCallback
    from lightning_inflect.experiments.loaders import make_dataloader
    from lightning_inflect.experiments.module import SequenceClassificationModule
    from lightning_inflect.selection import TopK

    if strategy.selector is None:
        raise ValueError(f"Expected a selective strategy (one with a `selector`) but got {strategy.name!r}.")
    pl.seed_everything(seed, verbose=False)
    model, tokenizer = load_model(str(source_dir))
    loader = make_dataloader(data.target_train, tokenizer, cfg.batch_size, cfg.max_length, shuffle=True, seed=seed)
    module = SequenceClassificationModule(model, lr=1e-30)  # AdamW needs lr > 0; 1e-30 changes nothing in fp32
    injection = InjectionCallback(
        auto=True,
        selector=strategy.selector(cfg, seed),
        at_step=cfg.diagnose_steps,
        export=False,
        on_empty="fallback",
        fallback_selector=TopK(k=cfg.k),
    )
    callbacks = [AttentionEntropyMonitor(every_n_steps=1), GradientNormMonitor(every_n_steps=1), injection]
    make_trainer(cfg, run_dir / "diagnose", cfg.diagnose_steps + 1, callbacks, tensorboard=True).fit(module, loader)
    record = injection.record
    if record is None:
        raise RuntimeError(
            f"The diagnosis of {strategy.name!r} ended without a selection: its InjectionCallback did not inject"
            f" by step {cfg.diagnose_steps}. The logs are in {str(run_dir / 'diagnose')!r}."
        )
    return Diagnosis(list(record.layers), record.reason, record.scores, record.step)
