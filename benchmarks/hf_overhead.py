"""What the three monitors cost in the Hugging Face ``Trainer`` on the steps where they do not log.

A real all-MiniLM-L6-v2 training step (forward, backward, clipping, AdamW, the linear schedule) in the real
``transformers.Trainer`` is timed in one process in three configurations: with AttentionEntropyMonitor,
GradientNormMonitor and CKADriftMonitor of :mod:`lightning_inflect.integrations.transformers` at
``every_n_steps=50``, and with no inflect callback, twice (an A/A control: the machine's own noise). All share one
model. Each round runs the three, in an order rotated per round, each as one short ``trainer.train()`` of
``--steps`` steps: step 0 is a logging step (not timed), every other step is timed from one ``on_step_end`` to the
next. Reported: the median step time of each configuration, the extra milliseconds against the first
no-callback configuration (median of the per-round differences of medians) and the ratio; and, as the sharp bound
on a shared machine whose rounds differ by more than 1% of a step, the time spent inside the integration's own code
on those steps (the micro-batch hook, the gradients-complete hook and every event of the inflect callbacks, each
clocked with ``perf_counter``).

Usage, from the repository root::

    python benchmarks/hf_overhead.py                                       # 32 x 64, 6 rounds x 8 steps
    python benchmarks/hf_overhead.py --batch-size 4 --rounds 2 --steps 3   # smoke run

The markdown report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if importlib.util.find_spec("lightning_inflect") is None:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from lightning_inflect.experiments import minilm_path
from lightning_inflect.integrations import transformers as hf

EVERY_N = 50
EVENTS = ("on_step_begin", "on_substep_end", "on_pre_optimizer_step", "on_optimizer_step", "on_step_end", "on_log")
log = logging.getLogger("hf_overhead")


class StepClock(TrainerCallback):
    """Wall time between consecutive ``on_step_end``\\ s, from the end of step 0 (a logging step) on."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.steps: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self.last is not None:
            self.steps.append(now - self.last)
        self.last = now


class HookClock:
    """Seconds spent inside the integration's own code on non-logging steps (wrapped callables)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.counting = False

    def wrap(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.counting:
                    self.seconds += time.perf_counter() - start

        return timed


class Gate(TrainerCallback):
    """Counts the hook time only after step 0 (the logging step) is done."""

    def __init__(self, clock: HookClock) -> None:
        self.clock = clock

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.counting = state.global_step >= 1


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int, seq: int, vocab: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1000, vocab, (n, seq), generator=g)
        self.mask = torch.ones(n, seq, dtype=torch.long)
        self.mask[: n // 4, seq // 2 :] = 0  # a quarter of the rows padded to half length
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def run(model: torch.nn.Module, data: Tokens, args: argparse.Namespace, monitors: bool, out: str) -> tuple:
    step_clock, hook_clock = StepClock(), HookClock()
    callbacks: list[TrainerCallback] = [step_clock, Gate(hook_clock)]
    if monitors:
        inflect = [
            hf.AttentionEntropyMonitor(every_n_steps=EVERY_N),
            hf.GradientNormMonitor(every_n_steps=EVERY_N),
            hf.CKADriftMonitor(every_n_steps=EVERY_N),
        ]
        for cb in inflect:
            for event in EVENTS:
                setattr(cb, event, hook_clock.wrap(getattr(cb, event)))
        callbacks += inflect
    training = TrainingArguments(
        output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch_size, learning_rate=2e-5,
        report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=True, seed=0, logging_steps=10_000,
        dataloader_num_workers=0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=training, train_dataset=data, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # the report alone on stdout
    if monitors:
        wiring = hf._WIRINGS[trainer]
        wiring._pre_forward = hook_clock.wrap(wiring._pre_forward)  # type: ignore[method-assign]
        wiring._complete = hook_clock.wrap(wiring._complete)  # type: ignore[method-assign]
    trainer.train()
    return step_clock.steps, hook_clock.seconds / max(1, len(step_clock.steps))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (step 0 logs, is not timed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    data = Tokens(args.batch_size * args.steps, args.seq_len, model.config.vocab_size)
    configs = ("none", "monitors", "none again")  # the third is an A/A control: the machine's own noise
    medians: dict[str, list[float]] = {c: [] for c in configs}
    inside: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for config in configs[r % 3 :] + configs[: r % 3]:  # the order rotates per round
                steps, hook_seconds = run(model, data, args, config == "monitors", tmp)
                medians[config].append(statistics.median(steps))
                if config == "monitors":
                    inside.append(hook_seconds)
                log.info("round %d, %s: median %.1f ms", r, config, 1000 * medians[config][-1])

    def extra(config: str) -> tuple[float, list[float]]:
        diffs = [1000 * (m - b) for m, b in zip(medians[config], medians["none"])]
        return statistics.median(diffs), diffs

    base = statistics.median(medians["none"])
    print(f"# Hugging Face Trainer: the monitors on non-logging steps (every_n_steps={EVERY_N})\n")
    command = shlex.join(["python", "benchmarks/hf_overhead.py", *(argv if argv is not None else sys.argv[1:])])
    setup = f"MiniLM, batch {args.batch_size} x {args.seq_len}, {args.rounds} rounds x {args.steps - 1} timed steps"
    machine = f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(f"`{command}` on {machine}, {setup}\n")
    print("| configuration | median step (ms) | extra vs none (ms, median of rounds) | ratio | per round (ms) |")
    print("| --- | --- | --- | --- | --- |")
    for config in configs:
        m = statistics.median(medians[config])
        if config == "none":
            print(f"| no inflect callback | {1000 * m:.1f} | | | |")
            continue
        mid, diffs = extra(config)
        name = "three monitors" if config == "monitors" else "no inflect callback again (A/A control)"
        print(f"| {name} | {1000 * m:.1f} | {mid:+.1f} | {m / base:.4f} | {', '.join(f'{d:+.1f}' for d in diffs)} |")
    share = statistics.median(inside) / base
    print(f"\nInside the integration's own hooks and events: {1000 * statistics.median(inside):.3f} ms per step "
          f"({100 * share:.3f}% of a step).")  # fmt: skip


if __name__ == "__main__":
    main()
