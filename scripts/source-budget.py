"""How the UNDER source's step budget of a preset was chosen: SST-2 dev accuracy after each of a few step budgets.

Each budget is a separate source training (its own linear warm-up and decay over that many steps, as the grid would
run it), saved under OUT/steps-N/source/under and reused on a re-run. Prints one markdown row per budget and, with
the preset's OVER dev accuracy when given (``--over-acc``, from a finished grid's source/over/metrics.json), the gap.

Usage:
    .venv/bin/python scripts/source-budget.py --preset cpu-small-fair --data-dir ../shared/data --out runs/budget \
        --steps 15 30 63
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lightning_inflect.experiments.config import PRESETS, with_overrides
from lightning_inflect.experiments.quiet import quiet_libraries
from lightning_inflect.experiments.source import train_source
from lightning_inflect.experiments.study_data import load_study_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-small-fair", choices=sorted(PRESETS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default="runs/source-budget")
    parser.add_argument("--steps", type=int, nargs="+", required=True, help="UNDER step budgets to try")
    parser.add_argument("--over-acc", type=float, default=None, help="the OVER source's SST-2 dev accuracy")
    args = parser.parse_args()
    base = with_overrides(PRESETS[args.preset], data_dir=args.data_dir, model=args.model)
    data = load_study_data(base)
    print("| UNDER budget (steps) | epochs | SST-2 dev acc | gap to OVER | seconds |")  # noqa: T201
    print("| ---: | ---: | ---: | ---: | ---: |")  # noqa: T201
    for steps in args.steps:
        cfg = with_overrides(base, source_steps={"under": steps})
        out = Path(args.out) / f"steps-{steps}"
        start = time.perf_counter()
        with quiet_libraries(False):
            model_dir = train_source(cfg, "under", out, data)
        info = json.loads((model_dir.parent / "metrics.json").read_text())
        gap = "" if args.over_acc is None else f"{100 * (args.over_acc - info['sst2_dev_acc']):.1f}"
        print(  # noqa: T201
            f"| {steps} | {info['epochs']:.2f} | {100 * info['sst2_dev_acc']:.1f} | {gap} |"
            f" {time.perf_counter() - start:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
