"""Estimate a grid's wall time on this machine: time a few real runs, count the grid's runs, multiply.

Trains the UNDER source model (kept in OUT, so a second call reuses it), then one run per (strategy, role) given,
and prints each run's seconds and the grid's estimate: source models (the OVER budget scaled from the UNDER one by
steps) + tuning runs x the mean tuning time + evaluation runs x the mean evaluation time, per kind of strategy
(whole model / fixed blocks / diagnosed blocks). Run it on an otherwise idle machine.

Usage:
    .venv/bin/python scripts/estimate-grid.py --preset cpu-small-fair --data-dir ../shared/data --out runs/estimate \
        --runs full:eval inflection-lora:eval cka-lora:tune
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from transformers import AutoTokenizer

from lightning_inflect.experiments.config import PRESETS, with_overrides
from lightning_inflect.experiments.loaders import make_dataloader
from lightning_inflect.experiments.quiet import quiet_libraries
from lightning_inflect.experiments.source import train_source
from lightning_inflect.experiments.strategies import get_strategy
from lightning_inflect.experiments.study_data import load_study_data
from lightning_inflect.experiments.transfer import run_transfer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-small-fair", choices=sorted(PRESETS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/estimate")
    parser.add_argument("--runs", nargs="+", default=["full:eval", "inflection-lora:eval", "cka-lora:tune"])
    args = parser.parse_args()
    cfg = with_overrides(PRESETS[args.preset], data_dir=args.data_dir)
    data = load_study_data(cfg)
    out = Path(args.out)
    start = time.perf_counter()
    with quiet_libraries(False):
        model_dir = train_source(cfg, "under", out, data)
    info = json.loads((model_dir.parent / "metrics.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    per_epoch = len(make_dataloader(data.source_train, tokenizer, cfg.batch_size, cfg.max_length))
    over_steps = cfg.source_budget("over", per_epoch)
    seconds_per_source_step = info["seconds"] / info["steps"]
    print(f"UNDER source: {info['steps']} steps, {info['seconds']:.0f} s ({time.perf_counter() - start:.0f} s with the"  # noqa: T201
          f" dev evaluation), SST-2 dev {100 * info['sst2_dev_acc']:.1f}%")  # fmt: skip
    timed: dict[tuple[str, str], float] = {}
    for spec in args.runs:
        strategy, role = spec.split(":")
        run_dir = out / "timing" / role / strategy
        t0 = time.perf_counter()
        with quiet_libraries(False):
            metrics = run_transfer(cfg, strategy, cfg.seeds[0], model_dir, run_dir, data, role=role,  # type: ignore[arg-type]
                                   lr=cfg.lr_grid(strategy)[0])  # fmt: skip
        timed[(get_strategy(strategy).kind, role)] = time.perf_counter() - t0
        print(f"{strategy} ({role}): {timed[(get_strategy(strategy).kind, role)]:.0f} s wall,"  # noqa: T201
              f" {metrics['train_seconds']:.0f} s in training and diagnosis, val {metrics['val_acc']:.3f}")  # fmt: skip
    total = info["seconds"] + over_steps * seconds_per_source_step
    lines = [f"sources: {info['steps']} + {over_steps} steps, about {total / 60:.1f} min"]
    for role, per in (("tune", None), ("eval", len(cfg.seeds))):
        for regime_count in (len(cfg.regimes),):
            for strategy in cfg.strategy_list():
                kind = get_strategy(strategy).kind
                seconds = timed.get((kind, role)) or timed.get((kind, "eval")) or max(timed.values())
                count = regime_count * (len(cfg.lr_grid(strategy)) if per is None else per)
                total += count * seconds
                lines.append(f"{role} {strategy}: {count} runs x {seconds:.0f} s")
    print("\n".join(lines))  # noqa: T201
    print(f"Estimated grid wall time: {total / 60:.0f} min ({total / 3600:.2f} h)")  # noqa: T201


if __name__ == "__main__":
    main()
