"""Finish the `paper` preset's full-data grid on one lent GPU: the OVER selective cells missing from docs/results.md.

The H200 run published in docs/results.md (earlier protocol: AdamW 2e-4 for every strategy, 3 seeds) lacks the four
OVER selective strategies. This script trains the OVER source model again (8 epochs of the full SST-2), then, in
one process per seed, the OVER cells in this order: `inflection-lora`, `cka-lora`, `grad-lora`, `random-lora` (the
missing cells), `inflection-band-lora` (SKI by local maxima +-1), then `full`, `shallow`, `uniform-lora` again, so
that every OVER comparison uses one source model. A deadline stops whatever is still running; the tables say which
cells finished (partial tables are marked partial).

No jsonargparse there (the GPU image lacks it): the grid is driven from Python, stdlib only besides the project.

Here (prepares what travels: an fp16 copy of MiniLM, 45 MB, and a link to the data; prints the `run` call):
    .venv/bin/python scripts/gpu-paper-over.py prepare --data-dir ../shared/data

There (the prepared command; about 9 minutes on an H200; copies the tables to $OUT):
    python3 scripts/gpu-paper-over.py run --deadline 540 --results "$OUT"

Smoke test of the script's logic on a CPU (the `tiny` preset; a minute or two):
    .venv/bin/python scripts/gpu-paper-over.py run --smoke --data-dir ../shared/data --out /tmp/g --results /tmp/r
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / "runs" / "gpu-carry"
MISSING = ["inflection-lora", "cka-lora", "grad-lora", "random-lora"]
ORDER = [*MISSING, "inflection-band-lora", "full", "shallow", "uniform-lora"]
SEEDS = [0, 1, 2]


def _prepare(args: argparse.Namespace) -> None:
    from transformers import AutoModel, AutoTokenizer

    from lightning_inflect.experiments.data import resolve_data_dir
    from lightning_inflect.experiments.minilm import minilm_path

    target = CARRY / "minilm-fp16"
    AutoModel.from_pretrained(minilm_path()).half().save_pretrained(target)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(target)
    link = CARRY / "data"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path(resolve_data_dir(args.data_dir)).resolve())  # travels through the link: no copy here
    carry = ["runs/gpu-carry/minilm-fp16", "runs/gpu-carry/data/sst2", "runs/gpu-carry/data/rotten_tomatoes"]
    print(f"Prepared {target} ({sum(f.stat().st_size for f in target.iterdir()) / 2**20:.0f} MiB) and {link}.")  # noqa: T201
    print("The device call:")  # noqa: T201
    print(f'  run(command="python3 scripts/gpu-paper-over.py run --deadline 540 --results $OUT", timeout_s=590,'  # noqa: T201
          f" carry={carry})")  # fmt: skip


def _config(args: argparse.Namespace, **overrides):
    from lightning_inflect.experiments.config import PRESETS, with_overrides

    preset = "tiny" if args.smoke else "paper"
    return with_overrides(PRESETS[preset], model=args.model, data_dir=args.data_dir, **overrides)


def _fp32_model(out: Path) -> str:
    """The fp16 copy turned back into fp32 (training runs in fp32; every weight was rounded to fp16 once)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    target = out / "minilm-fp32"
    if not (target / "config.json").is_file():
        AutoModel.from_pretrained(CARRY / "minilm-fp16", dtype=torch.float32).save_pretrained(target)
        AutoTokenizer.from_pretrained(CARRY / "minilm-fp16").save_pretrained(target)
    return str(target)


def _seeds(args: argparse.Namespace) -> list[int]:
    return SEEDS[:2] if args.smoke else SEEDS  # two small processes on a CPU


def _worker(args: argparse.Namespace) -> None:
    from lightning_inflect.experiments.grid import run_grid
    from lightning_inflect.experiments.quiet import quiet_libraries

    cfg = _config(args, regimes=["over"], seeds=[args.seed], strategies=ORDER)
    with quiet_libraries(False):
        run_grid(cfg, args.out, progress=False)


def _source(args: argparse.Namespace) -> None:
    from lightning_inflect.experiments.quiet import quiet_libraries
    from lightning_inflect.experiments.source import train_source

    with quiet_libraries(False):
        train_source(_config(args), "over", Path(args.out), progress=False)


def _run(args: argparse.Namespace) -> None:
    out, results = Path(args.out), Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    start = time.time()
    log = open(results / "timeline.txt", "a")  # noqa: SIM115 - open for the whole run

    def stamp(what: str) -> None:
        log.write(f"{time.time() - start:.0f} s: {what}\n")
        log.flush()
        print(f"{time.time() - start:.0f} s: {what}", flush=True)  # noqa: T201

    if args.model is None and not args.smoke:
        args.model = _fp32_model(out)
    if args.data_dir is None:
        args.data_dir = str(CARRY / "data")
    base = [sys.executable, __file__, "--out", str(out), "--data-dir", args.data_dir]
    base += ["--model", args.model] if args.model else []
    base += ["--smoke"] if args.smoke else []
    left = lambda: max(1.0, args.deadline - (time.time() - start)) if args.deadline else None  # noqa: E731
    stamp(f"OVER source model: {args.model or 'MiniLM'}")
    try:
        subprocess.run([*base, "source"], check=True, timeout=left(), stdout=log, stderr=subprocess.STDOUT)
        stamp("source finished; cells start, one process per seed")
        workers = [subprocess.Popen([*base, "worker", "--seed", str(s)], stdout=log, stderr=subprocess.STDOUT)
                   for s in _seeds(args)]  # fmt: skip
        for w in workers:
            try:
                w.wait(timeout=left())
            except subprocess.TimeoutExpired:
                stamp(f"deadline: stopping worker {w.pid}")
                w.terminate()
                w.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stamp("deadline reached during the source model")
    stamp("collecting the finished cells")
    _collect(args, out, results)
    stamp("done")


def _collect(args: argparse.Namespace, out: Path, results: Path) -> None:
    from lightning_inflect.experiments.grid import run_grid

    cfg = _config(args, regimes=["over"], seeds=_seeds(args), strategies=ORDER)
    try:
        run_grid(cfg, out, progress=False, collect_only=True)
    except FileNotFoundError as err:
        (results / "results.md").write_text(f"No finished cell: {err}\n")
        return
    for name in ("results.md", "results.json", "results.csv"):
        shutil.copy(out / name, results / name)
    source_metrics = out / "source" / "over" / "metrics.json"
    if source_metrics.is_file():
        shutil.copy(source_metrics, results / "source-over-metrics.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/paper-over", help="the grid folder")
    parser.add_argument("--data-dir", default=None, help="default: runs/gpu-carry/data")
    parser.add_argument("--model", default=None, help="default: the carried fp16 MiniLM, turned into fp32")
    parser.add_argument("--smoke", action="store_true", help="the tiny preset, on any device")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare")
    run = sub.add_parser("run")
    run.add_argument("--deadline", type=float, default=0, help="seconds for everything (0: none)")
    run.add_argument("--results", default=os.environ.get("OUT", "gpu-results"), help="where the tables go")
    sub.add_parser("source")
    worker = sub.add_parser("worker")
    worker.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(ROOT))  # the project travels as a working tree, not installed
    {"prepare": _prepare, "run": _run, "source": _source, "worker": _worker}[args.command](args)


if __name__ == "__main__":
    main()
