"""What the three monitors cost on the steps where they do not log, eager and under ``torch.compile``.

A real all-MiniLM-L6-v2 training step (forward, backward, AdamW) is timed in one process in four configurations:
eager or compiled (``self.model = torch.compile(hf_model)``), with AttentionEntropyMonitor, GradientNormMonitor and
CKADriftMonitor at ``every_n_steps=50`` or with no callback. The eager configurations share one model, the compiled
ones another (same weights; compiled once, before timing). Each round runs every configuration once, in an order
rotated per round, as one short ``Trainer.fit`` of ``--steps`` steps: its step 0 is a logging step (not timed),
every other step is a non-logging one and is timed (from one ``on_train_batch_end`` to the next, so the monitors'
per-batch hooks are inside). Reported per mode: the median step time of each configuration over all rounds, the
extra milliseconds of the monitors (median of the per-round differences of medians) and the ratio. On a shared
2-core machine that difference is noise-bound (rounds differ by more than the goal, 1% of a step), so the time spent
inside the monitors' own per-batch hooks on those steps is clocked too (each hook wrapped with ``perf_counter``):
the sharp upper bound of what they add on a non-logging step (no module hook of theirs is armed on such a step, and
under compile they leave the graphs as they are, which ``tests/test_compile.py`` counts).

The batches are random token ids of a fixed shape (``--batch-size`` x ``--seq-len``, a quarter of the rows padded
to half length): the time of a step does not depend on the text, and a fixed shape keeps the compiled model on one
graph.

Usage, from the repository root::

    python benchmarks/compile_overhead.py                      # 32 x 64, 6 rounds x 8 steps, inductor
    python benchmarks/compile_overhead.py --batch-size 8 --rounds 2 --steps 4 --backend aot_eager   # smoke run

The markdown report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

if importlib.util.find_spec("lightning_inflect") is None:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EVERY_N = 50
# The Lightning hooks a monitor runs on every training batch (each takes the Trainer first).
BATCH_HOOKS = (
    "on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
    "on_before_zero_grad", "on_train_batch_end",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6, help="rounds; each runs every configuration once")
    parser.add_argument("--steps", type=int, default=8, help="steps per fit: 1 logging step + steps-1 timed ones")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (inductor, aot_eager, eager)")
    parser.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--control", action="store_true",
        help="also run each mode's no-callback configuration a second time per round (an A/A control): its "
        "difference to the first is what this machine's noise and the run order alone make of 'extra ms'",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for name in ("batch_size", "seq_len", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"`--{name.replace('_', '-')}` must be a positive integer but got {getattr(args, name)}.")
    if not 2 <= args.steps <= EVERY_N:
        parser.error(f"`--steps` must be in [2, {EVERY_N}] (one logging step per fit) but got {args.steps}.")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in ("eager", "compiled") for m in args.modes):
        parser.error(f"`--modes` must be a comma-separated subset of eager,compiled but got {args.modes!r}.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset
    from transformers.utils import logging as hf_logging

    from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor
    from lightning_inflect.experiments import load_minilm

    hf_logging.set_verbosity_error()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*has no logger to write to.*")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    class Tokens(Dataset):
        def __init__(self, n: int) -> None:
            g = torch.Generator().manual_seed(args.seed)
            self.ids = torch.randint(1000, 30000, (n, args.seq_len), generator=g)
            self.mask = torch.ones_like(self.ids)
            self.mask[: n // 4, args.seq_len // 2 :] = 0
            self.ids = self.ids * self.mask
            self.labels = torch.randint(0, 2, (n,), generator=g)

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}

    class Module(L.LightningModule):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            return self.model(**batch).loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=2e-5)

    class StepTimer(L.Callback):
        """perf_counter() at every on_train_batch_end, keyed by the step that batch ran."""

        def __init__(self) -> None:
            self.ends: list[tuple[int, float]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.ends.append((trainer.global_step - 1, time.perf_counter()))

    class HookClock:
        """Seconds spent inside the wrapped callbacks' per-batch hooks, keyed by the optimizer step of the batch."""

        def __init__(self) -> None:
            self.per_step: dict[int, float] = defaultdict(float)

        def wrap(self, callback: L.Callback) -> L.Callback:
            for name in BATCH_HOOKS:  # Lightning looks hooks up on the instance
                # on_train_batch_end: global_step already counts the step of this batch
                setattr(callback, name, self._timed(getattr(callback, name), name == "on_train_batch_end"))
            return callback

        def _timed(self, hook: Any, after_step: bool) -> Any:
            def timed(trainer: Any, *rest: Any) -> Any:
                started = time.perf_counter()
                try:
                    return hook(trainer, *rest)
                finally:
                    self.per_step[trainer.global_step - after_step] += time.perf_counter() - started

            return timed

    def new_module() -> Any:
        L.seed_everything(args.seed, verbose=False)
        model, _ = load_minilm(num_labels=2)
        model.config.problem_type = "single_label_classification"  # else set on the first call: a recompile
        return model.train()  # from_pretrained returns it in eval mode

    loader = DataLoader(Tokens(args.batch_size * args.steps), batch_size=args.batch_size, drop_last=True)

    def fit(module: Any, monitors: bool) -> tuple[list[float], list[float]]:
        """One fit of --steps steps; the times (ms) of its non-logging steps, and the time (ms) inside the monitors'
        hooks on each of them."""
        callbacks: list[L.Callback] = []
        clock = HookClock()
        if monitors:
            made = [AttentionEntropyMonitor(EVERY_N), GradientNormMonitor(EVERY_N), CKADriftMonitor(EVERY_N)]
            callbacks = [clock.wrap(cb) for cb in made]
        timer = StepTimer()  # last: the monitors' on_train_batch_end work belongs to the step
        with tempfile.TemporaryDirectory(prefix="inflect_compile_") as tmp:
            trainer = L.Trainer(
                accelerator="cpu", devices=1, max_steps=args.steps, logger=False, callbacks=[*callbacks, timer],
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp,
            )  # fmt: skip
            trainer.fit(module, train_dataloaders=loader)
        times, hooks = [], []
        for (_, before), (step, after) in zip(timer.ends, timer.ends[1:]):
            if step % EVERY_N != 0:
                times.append(1000 * (after - before))
                hooks.append(1000 * clock.per_step[step])
        return times, hooks

    kinds = ["none", "monitors", *(["control"] if args.control else [])]
    configs = [(mode, kind) for mode in args.modes for kind in kinds]
    modules: dict[str, Any] = {}
    for mode in args.modes:
        hf = new_module()
        modules[mode] = Module(torch.compile(hf, backend=args.backend) if mode == "compiled" else hf)
    versions = {pkg: importlib.metadata.version(pkg) for pkg in ("torch", "lightning", "transformers")}
    print("# lightning-inflect: the monitors' cost on non-logging steps, eager and torch.compile\n")
    print(f"- command: `{shlex.join([sys.executable, *sys.argv])}`")
    print(f"- versions: python {platform.python_version()}, " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(
        f"- workload: all-MiniLM-L6-v2, batch {args.batch_size} x {args.seq_len}, AdamW; compile backend "
        f"{args.backend!r}; {args.rounds} rounds x {args.steps} steps per configuration (step 0 logs, not timed)"
    )
    if hasattr(os, "getloadavg"):
        print(f"- load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    print(flush=True)

    for mode in args.modes:  # warm-up: compile (and first-touch) outside the timed rounds
        started = time.perf_counter()
        fit(modules[mode], monitors=True)
        fit(modules[mode], monitors=False)
        print(f"[warm-up] {mode}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    times: dict[tuple[str, str], list[list[float]]] = {c: [] for c in configs}
    in_hooks: dict[str, list[float]] = {mode: [] for mode in args.modes}
    for r in range(args.rounds):
        shift = r % len(configs)
        for mode, kind in configs[shift:] + configs[:shift]:
            got, hooks = fit(modules[mode], kind == "monitors")
            times[(mode, kind)].append(got)
            if kind == "monitors":
                in_hooks[mode].extend(hooks)
            name = mode + {"none": "", "monitors": " + monitors", "control": " (A/A control)"}[kind]
            print(f"[round {r + 1}/{args.rounds}] {name}: median {statistics.median(got):.1f} ms", file=sys.stderr)

    head = "| mode | no callback: median ms/step | 3 monitors @50: median ms/step | extra ms/step | ratio "
    print(head + "| inside the monitors' hooks: median (max) ms/step | of a step |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode in args.modes:
        plain, watched = times[(mode, "none")], times[(mode, "monitors")]
        p_all = statistics.median(t for r in plain for t in r)
        w_all = statistics.median(t for r in watched for t in r)
        extra = statistics.median(statistics.median(w) - statistics.median(p) for w, p in zip(watched, plain))
        spread = [statistics.median(w) - statistics.median(p) for w, p in zip(watched, plain)]
        print(
            f"| {mode} | {p_all:.1f} | {w_all:.1f} | {extra:+.1f} (rounds {min(spread):+.1f} to {max(spread):+.1f})"
            f" | {w_all / p_all:.3f} | {statistics.median(in_hooks[mode]):.3f} ({max(in_hooks[mode]):.3f})"
            f" | {statistics.median(in_hooks[mode]) / p_all:.4%} |"
        )
        if args.control:
            again = times[(mode, "control")]
            a_all = statistics.median(t for r in again for t in r)
            diffs = [statistics.median(a) - statistics.median(p) for a, p in zip(again, plain)]
            print(
                f"| {mode}, A/A control (no callback again) | {p_all:.1f} | {a_all:.1f} | "
                f"{statistics.median(diffs):+.1f} (rounds {min(diffs):+.1f} to {max(diffs):+.1f}) | "
                f"{a_all / p_all:.3f} | - | - |"
            )
    print(
        f"\nNon-logging steps only ({args.steps - 1} per fit). Extra ms: median over rounds of (median with monitors -"
        " median without) in that round; ratio: median of all timed steps with monitors / without; inside the"
        " hooks: the monitors' per-batch Lightning hooks on each timed step, summed over the three monitors."
    )
    if "compiled" in args.modes:
        from torch._dynamo.utils import counters

        print(
            f"Dynamo over the whole run: {counters['stats']['unique_graphs']} compiled graph(s), "
            f"{sum(counters['graph_break'].values())} graph break(s)."
        )
    if hasattr(os, "getloadavg"):
        print(f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f}.")


if __name__ == "__main__":
    main()
