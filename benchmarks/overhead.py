"""Training-time overhead of the lightning-inflect monitors on the real MiniLM with Rotten Tomatoes batches.

Each configuration runs in a fresh subprocess (so peak memory is per configuration): ``baseline`` (no callbacks) and
``monitors@N`` (AttentionEntropyMonitor, GradientNormMonitor and CKADriftMonitor with ``every_n_steps=N``). Every
worker trains MiniLM with the same seed, the same batches in the same order and a TensorBoardLogger in a temporary
folder, runs ``--warmup`` steps, then times ``--steps`` optimizer steps: time per step is the wall time of the timed
steps over their number (a mean, not a median, since at ``every_n_steps=50`` the cost sits in 1 step of 50).
Configurations are interleaved in each round, in an order rotated per round, and ratios to the baseline are taken
per round, then the median over rounds.

Usage, from the repository root::

    python benchmarks/overhead.py --data-dir ../shared/data            # 3 rounds x 4 configurations
    python benchmarks/overhead.py --data-dir ../shared/data --quick    # smoke run: 1 round, 3 steps

The markdown report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if importlib.util.find_spec("lightning_inflect") is None:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_inflect.experiments.data import resolve_data_dir

OVERHEAD_KEY = "overhead_ms"  # the monitors log `inflect/overhead_ms` (any key ending with this is counted)


# ----------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure the training-time overhead of the lightning-inflect monitors on MiniLM.",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with rotten_tomatoes/*.tsv (default: the LIGHTNING_INFLECT_DATA environment variable)",
    )
    parser.add_argument("--every-n", default="1,10,50", help="comma-separated every_n_steps values of the monitors")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every configuration once")
    parser.add_argument("--steps", type=int, default=50, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps before the timed ones")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per sentence (truncation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument(
        "--log-every-n-steps", type=int, default=50, help="Trainer's log_every_n_steps (the same in all configurations)"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads in each worker (default: torch's default)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 3 timed steps, 1 warmup step")
    parser.add_argument("--no-monitors", action="store_true", help="run the baseline configuration only")
    parser.add_argument("--json", default=None, help="also write every worker's result to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 3, 1
    if args.threads is not None and args.threads < 1:
        parser.error(f"`--threads` must be a positive integer but got {args.threads}.")
    for name in ("rounds", "steps", "warmup", "batch_size", "max_length", "log_every_n_steps"):
        if getattr(args, name) < 1:
            parser.error(f"`--{name.replace('_', '-')}` must be a positive integer but got {getattr(args, name)}.")
    try:
        args.every_n = [int(value) for value in args.every_n.split(",") if value.strip()]
    except ValueError:
        parser.error(
            f"`--every-n` must be comma-separated positive integers, such as 1,10,50, but got {args.every_n!r}."
        )
    if not args.every_n or min(args.every_n) < 1:
        parser.error(f"`--every-n` must be comma-separated positive integers, such as 1,10,50, but got {args.every_n}.")
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        args.data_dir = resolve_data_dir(args.data_dir).resolve()
    except FileNotFoundError as err:
        parser.error(str(err))
    if args.worker and args.config is None:
        parser.error("`--worker` needs `--config baseline` or `--config monitors@N`.")
    return args


def parse_config(config: str) -> int | None:
    """``"baseline"`` -> ``None``, ``"monitors@10"`` -> ``10``."""
    if config == "baseline":
        return None
    name, _, every_n = config.partition("@")
    if name != "monitors" or not every_n.isdigit() or int(every_n) < 1:
        raise ValueError(f"Expected `--config` to be 'baseline' or 'monitors@N' with N >= 1 but got {config!r}.")
    return int(every_n)


# -------------------------------------------------------------------------------------------------------- worker
def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    import lightning as L
    import torch
    from lightning.pytorch.loggers import TensorBoardLogger
    from transformers.utils import logging as hf_logging

    from lightning_inflect.experiments import (
        SequenceClassificationModule,
        load_minilm,
        load_rotten_tomatoes,
        make_dataloader,
    )

    every_n = parse_config(args.config)
    hf_logging.set_verbosity_error()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cuda = args.device == "cuda"
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    class StepTimer(L.Callback):
        """Record perf_counter() at the end of every training batch (one batch = one optimizer step here)."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    class RecordingTensorBoardLogger(TensorBoardLogger):
        """A TensorBoardLogger that also keeps the monitors' self-reported overhead, with the time it arrived."""

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.overhead: list[tuple[float, int | None, str, float]] = []

        def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
            now = time.perf_counter()
            for key, value in metrics.items():
                if key.endswith(OVERHEAD_KEY):
                    self.overhead.append((now, step, key, float(value)))
            super().log_metrics(metrics, step)

    L.seed_everything(args.seed, verbose=False)
    total_steps = args.warmup + args.steps
    pairs = load_rotten_tomatoes(args.data_dir, "train")
    # RT lists all positive rows then all negative ones: a seeded sample gives every configuration the same batches.
    pairs = random.Random(args.seed).sample(pairs, k=min(total_steps * args.batch_size, len(pairs)))
    model, tokenizer = load_minilm(num_labels=2)
    loader = make_dataloader(pairs, tokenizer, args.batch_size, max_length=args.max_length, drop_last=True)
    module = SequenceClassificationModule(model, lr=args.lr)

    callbacks: list[L.Callback] = []
    if every_n is not None:
        from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor

        callbacks = [
            AttentionEntropyMonitor(every_n_steps=every_n),
            GradientNormMonitor(every_n_steps=every_n),
            CKADriftMonitor(every_n_steps=every_n),
        ]
    timer = StepTimer()  # last, so that the monitors' on_train_batch_end work falls inside the step it belongs to

    with tempfile.TemporaryDirectory(prefix="inflect_overhead_") as tmp:
        logger = RecordingTensorBoardLogger(save_dir=tmp, name="")
        trainer = L.Trainer(
            accelerator="gpu" if cuda else "cpu",
            devices=1,
            max_steps=total_steps,
            max_epochs=-1,
            logger=logger,
            callbacks=[*callbacks, timer],
            log_every_n_steps=args.log_every_n_steps,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.fit(module, train_dataloaders=loader)
        logger.finalize("success")

    if trainer.global_step != total_steps or len(timer.times) != total_steps:
        raise RuntimeError(
            f"Expected {total_steps} optimizer steps and batches but got {trainer.global_step} steps and"
            f" {len(timer.times)} batches: is the dataset too small for --warmup + --steps at this --batch-size?"
        )
    t_start, t_end = timer.times[args.warmup - 1], timer.times[total_steps - 1]
    wall_s = t_end - t_start
    # The monitors log the overhead of step s (`trainer.global_step` when batch s starts) with `step=s`, possibly a
    # batch later: the timed batches are steps warmup .. warmup + steps - 1. Values logged without a step are placed
    # by arrival time.
    in_window = [
        (key, value)
        for t, step, key, value in logger.overhead
        if (args.warmup <= step < total_steps if step is not None else t_start < t <= t_end)
    ]
    by_key: dict[str, float] = {}
    for key, value in in_window:
        by_key[key] = by_key.get(key, 0.0) + value
    return {
        "config": args.config,
        "every_n": every_n,
        "device": args.device,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "timed_wall_s": wall_s,
        "step_ms": 1000 * wall_s / args.steps,
        "step_times_ms": [
            round(1000 * (b - a), 2)
            for a, b in zip(timer.times[args.warmup - 1 : -1], timer.times[args.warmup :], strict=True)
        ],
        "self_overhead_ms": sum(by_key.values()),
        "self_overhead_events": len(in_window),
        "self_overhead_events_all": len(logger.overhead),
        "self_overhead_by_key": by_key,
        "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "torch_threads": torch.get_num_threads(),
    }


# -------------------------------------------------------------------------------------------------- orchestrator
def worker_command(args: argparse.Namespace, config: str) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        f"--config={config}",
        f"--data-dir={args.data_dir}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--batch-size={args.batch_size}",
        f"--max-length={args.max_length}",
        f"--seed={args.seed}",
        f"--lr={args.lr}",
        f"--log-every-n-steps={args.log_every_n_steps}",
        f"--device={args.device}",
        *([f"--threads={args.threads}"] if args.threads is not None else []),
    ]


def run_in_subprocess(args: argparse.Namespace, config: str) -> dict[str, Any]:
    proc = subprocess.run(worker_command(args, config), capture_output=True, text=True)
    results = []  # the worker prints its result as one JSON line; anything else on stdout is ignored
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(result, dict) and result.get("config") == config:
                results.append(result)
    if proc.returncode != 0 or len(results) != 1:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(
            f"Worker for config {config!r} failed (exit code {proc.returncode}). Its output ended:\n{tail}"
        )
    return results[0]


def machine_description(device: str) -> str:
    import torch

    if device == "cuda":
        return f"cuda: {torch.cuda.get_device_name()}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {cpu}"


def torch_default_threads() -> int:
    import torch

    return torch.get_num_threads()


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report(args: argparse.Namespace, configs: list[str], runs: dict[str, list[dict[str, Any]]]) -> None:
    baseline = runs["baseline"]
    mem_key = "peak_cuda_mb" if args.device == "cuda" else "peak_rss_mb"
    mem_name = "peak CUDA allocated" if args.device == "cuda" else "peak RSS"
    print(
        f"| config | step time ms (median of rounds) | min-max ms | time ratio to baseline | {mem_name} MB"
        " | memory ratio | self-reported overhead | logged overhead events |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for config in configs:
        results = runs[config]
        step_ms = [r["step_ms"] for r in results]
        time_ratio = statistics.median(r["step_ms"] / b["step_ms"] for r, b in zip(results, baseline, strict=True))
        mem = statistics.median(r[mem_key] for r in results)
        mem_ratio = statistics.median(r[mem_key] / b[mem_key] for r, b in zip(results, baseline, strict=True))
        if config == "baseline":
            self_overhead, events = None, "-"
        else:
            self_overhead = statistics.median(r["self_overhead_ms"] / (1000 * r["timed_wall_s"]) for r in results)
            events = "/".join(str(r["self_overhead_events"]) for r in results)
        print(
            f"| {config} | {statistics.median(step_ms):.1f} | {min(step_ms):.1f}-{max(step_ms):.1f}"
            f" | {time_ratio:.3f} | {mem:.0f} | {mem_ratio:.3f} | {fmt(self_overhead, '.1%')} | {events} |"
        )
    print()
    print(
        "Step time: timed wall time / timed steps in each run, median over rounds. Ratios: per round (configurations"
        " interleaved), median over rounds. Self-reported overhead: sum of the logged `inflect/overhead_ms` values in"
        " the timed window / timed wall time, median over rounds; events: overhead values logged in the timed window,"
        " per round."
    )
    missing = [c for c in configs if c != "baseline" and all(r["self_overhead_events_all"] == 0 for r in runs[c])]
    if missing:
        print(f"\nNote: no `*{OVERHEAD_KEY}` metric reached the logger in {missing}.")


def orchestrate(args: argparse.Namespace) -> None:
    configs = ["baseline"] + ([] if args.no_monitors else [f"monitors@{n}" for n in args.every_n])
    versions = {pkg: importlib.metadata.version(pkg) for pkg in ("torch", "lightning", "transformers")}
    print("# lightning-inflect monitor overhead\n")
    print(f"- command: `{shlex.join([sys.executable, *sys.argv])}`")
    print(f"- versions: python {platform.python_version()}, " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    threads = args.threads if args.threads is not None else torch_default_threads()
    print(
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, {machine_description(args.device)},"
        f" torch threads per worker {threads}"
    )
    print(
        f"- workload: all-MiniLM-L6-v2 (6 blocks), Rotten Tomatoes train, batch {args.batch_size} x up to"
        f" {args.max_length} tokens, AdamW lr {args.lr}, seed {args.seed}; {args.warmup} warmup + {args.steps} timed"
        f" steps per run, {args.rounds} round(s) of {configs}, a fresh process per run"
    )
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"- load average (1 min) at start: {fmt(load_start, '.2f')}")
    print(flush=True)
    if load_start is not None and load_start > 0.5:
        print(
            f"Warning: load average {load_start:.2f}: other processes compete for the CPUs, timings will be noisy.",
            file=sys.stderr,
        )

    runs: dict[str, list[dict[str, Any]]] = {config: [] for config in configs}
    for round_index in range(args.rounds):
        shift = round_index % len(configs)
        for config in configs[shift:] + configs[:shift]:
            started = time.perf_counter()
            result = run_in_subprocess(args, config)
            result["round"] = round_index
            runs[config].append(result)
            print(
                f"[round {round_index + 1}/{args.rounds}] {config}: {result['step_ms']:.1f} ms/step,"
                f" peak RSS {result['peak_rss_mb']:.0f} MB, self-reported {result['self_overhead_ms']:.1f} ms"
                f" ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    report(args, configs, runs)
    if load_start is not None:
        print(f"\nLoad average (1 min) at the end: {os.getloadavg()[0]:.2f}.")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": sys.argv[1:], "runs": runs}, indent=2))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        result = run_worker(args)
        print(json.dumps(result), flush=True)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
