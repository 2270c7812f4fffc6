"""One self-contained static HTML page from a run directory or a grid directory.

A **run directory** holds TensorBoard event files somewhere below it (each folder with ``events.out.tfevents.*``
is one section: ``tb/``, ``diagnose/tb/``, ...) and may hold ``metrics.json`` and ``config.json``. A **grid
directory** (what :func:`~lightning_inflect.experiments.grid.run_grid` writes) holds ``results.json``,
``results.md`` and run folders ``<regime>/<strategy>/seed<k>/``.

What a run did (its strategy, the blocks it adapted, why) comes from the ``metrics.json`` the harness and the demo
write (:func:`read_run_info`); the curves come from the event files; strategies are named and ordered as in the
registry (:mod:`lightning_inflect.experiments.strategies`).

The report comes with the study extra (``pip install "lightning-inflect[study]"``: matplotlib).

Every plot is drawn by matplotlib's Agg canvas (no pyplot, so no global backend is changed) and embedded as a
base64 PNG data URI; the page loads nothing from anywhere else and has no JavaScript.

Example:
    >>> from lightning_inflect.experiments.report import write_report
    >>> write_report("runs/cpu-small")  # doctest: +SKIP
    PosixPath('runs/cpu-small/report.html')
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightning_inflect.experiments.strategies import STRATEGIES

__all__ = [
    "Injection",
    "RunInfo",
    "RunLogs",
    "Section",
    "accuracy_bars_png",
    "curves_png",
    "find_event_folders",
    "format_pm",
    "grid_sections",
    "heatmap_png",
    "injection_step",
    "params_scatter_png",
    "preferred_strategies",
    "read_injection",
    "read_run",
    "read_run_info",
    "read_scalars",
    "render_page",
    "representative_run",
    "run_sections",
    "scores_png",
    "split_tags",
    "step_edges",
    "strategy_label",
    "to_matrix",
    "write_report",
]

EVENT_GLOB = "events.out.tfevents.*"
METRIC_ORDER = ("attn_entropy", "attn_entropy_normalized", "act_grad_norm", "param_grad_norm", "cka_drift")
SCORE_METRIC = "inflection_score"
METRICS_JSON_KEYS = (
    "strategy",
    "seed",
    "layers",
    "reason",
    "injected_at_step",
    "diagnosis_step",
    "trainable_params",
    "total_params",
    "test_acc",
    "test_acc_dedup",
    "train_seconds",
)
NAN_COLOUR = "#808080"
_DPI = 90
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

Series = dict[int, float]  # step -> value


# ------------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class Injection:
    """The injection text of one TensorBoard folder (markdown, shown as it is) and the step it was logged at."""

    step: int
    text: str


@dataclass(frozen=True)
class RunInfo:
    """What a run folder's ``metrics.json`` says about the run (the harness and the demo write it).

    Attributes:
        strategy: the strategy's name (None for the demo).
        layers: the blocks the run adapted or unfroze (None: the whole model, or unknown).
        reason: why those blocks.
        injected_at_step: the step of the LoRA injection (None: no injection).
    """

    strategy: str | None
    layers: list[int] | None
    reason: str | None
    injected_at_step: int | None


@dataclass(frozen=True)
class RunLogs:
    """What one TensorBoard folder holds.

    Attributes:
        folder: the folder with the event files.
        metrics: per-layer metrics, ``metric -> layer -> step -> value`` (NaN kept).
        scalars: every other scalar tag (per-head tags dropped), ``tag -> step -> value``.
        injection: the ``<prefix>/injection`` text, if one was logged.
    """

    folder: Path
    metrics: dict[str, dict[int, Series]]
    scalars: dict[str, Series]
    injection: Injection | None


def find_event_folders(root: str | Path) -> list[Path]:
    """Folders below ``root`` (itself included) holding TensorBoard event files, sorted by relative path."""
    root = Path(root)
    folders = {p.parent for p in root.rglob(EVENT_GLOB) if p.is_file()}
    return sorted(folders, key=lambda f: f.relative_to(root).parts)


def split_tags(
    scalars: dict[str, Series], log_key_prefix: str = "inflect"
) -> tuple[dict[str, dict[int, Series]], dict[str, Series]]:
    """Split scalar series into per-layer metrics (``<prefix>/<metric>/layer_LL``) and the rest.

    Per-head tags (``.../layer_LL/head_HH``) are dropped.

    Example:
        >>> layered, other = split_tags({
        ...     "inflect/cka_drift/layer_01": {0: 0.5},
        ...     "inflect/attn_entropy/layer_00/head_02": {0: 1.0},
        ...     "inflect/overhead_ms": {0: 3.0},
        ...     "train_loss": {0: 0.7},
        ... })
        >>> layered
        {'cka_drift': {1: {0: 0.5}}}
        >>> sorted(other)
        ['inflect/overhead_ms', 'train_loss']
    """
    pattern = re.compile(rf"^{re.escape(log_key_prefix)}/(?P<metric>[^/]+)/layer_(?P<layer>\d+)(?P<head>/head_\d+)?$")
    layered: dict[str, dict[int, Series]] = {}
    other: dict[str, Series] = {}
    for tag, series in scalars.items():
        match = pattern.match(tag)
        if match is None:
            other[tag] = series
        elif match.group("head") is None:
            layered.setdefault(match.group("metric"), {})[int(match.group("layer"))] = series
    return layered, other


def _accumulator(folder: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def _scalars_of(ea: Any) -> dict[str, Series]:
    # A step logged twice (a resumed run) keeps its last value.
    return {tag: {int(e.step): float(e.value) for e in ea.Scalars(tag)} for tag in ea.Tags().get("scalars", [])}


def _injection_of(ea: Any, log_key_prefix: str) -> Injection | None:
    tag = f"{log_key_prefix}/injection/text_summary"
    if tag not in ea.Tags().get("tensors", []):
        return None
    events = ea.Tensors(tag)
    if not events or not events[0].tensor_proto.string_val:
        return None
    return Injection(step=int(events[0].step), text=events[0].tensor_proto.string_val[0].decode(errors="replace"))


def read_scalars(folder: str | Path, log_key_prefix: str = "inflect") -> dict[str, dict[int, Series]]:
    """Per-layer metrics of one TensorBoard folder: ``metric -> layer -> step -> value``."""
    return split_tags(_scalars_of(_accumulator(Path(folder))), log_key_prefix)[0]


def read_injection(folder: str | Path, log_key_prefix: str = "inflect") -> Injection | None:
    """The injection text of one TensorBoard folder and its step, or None."""
    return _injection_of(_accumulator(Path(folder)), log_key_prefix)


def read_run_info(folder: str | Path) -> RunInfo | None:
    """The run's ``metrics.json`` in ``folder`` as a :class:`RunInfo` (None without a readable one).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "metrics.json").write_text('{"strategy": "cka-lora", "layers": [2, 5], "reason": "CKA"}')
        >>> read_run_info(folder)
        RunInfo(strategy='cka-lora', layers=[2, 5], reason='CKA', injected_at_step=None)
    """
    data, _ = _read_json(Path(folder) / "metrics.json")
    if data is None:
        return None
    layers = data.get("layers")
    step = data.get("injected_at_step")
    return RunInfo(
        strategy=data.get("strategy"),
        layers=[int(x) for x in layers] if isinstance(layers, list) else None,
        reason=data.get("reason"),
        injected_at_step=int(step) if isinstance(step, int) else None,
    )


def read_run(folder: str | Path, log_key_prefix: str = "inflect") -> RunLogs:
    """Everything the report shows from one TensorBoard folder (read once)."""
    ea = _accumulator(Path(folder))
    metrics, scalars = split_tags(_scalars_of(ea), log_key_prefix)
    return RunLogs(Path(folder), metrics, scalars, _injection_of(ea, log_key_prefix))


def injection_step(logs: RunLogs, log_key_prefix: str = "inflect") -> int | None:
    """The step the injection happened at: the injection text's step, else the first ``trainable_params`` step.

    ``InjectionCallback`` logs both at the injection step; the scalar is the fallback for logs without the text.
    """
    if logs.injection is not None:
        return logs.injection.step
    steps = logs.scalars.get(f"{log_key_prefix}/trainable_params")
    return min(steps) if steps else None


def to_matrix(series: dict[int, Series]) -> tuple[list[int], list[int], np.ndarray]:
    """Layers, steps and the ``(layers, steps)`` array of one metric, NaN where a layer has no value at a step.

    Example:
        >>> layers, steps, m = to_matrix({1: {0: 1.0, 5: 2.0}, 0: {5: 3.0}})
        >>> layers, steps
        ([0, 1], [0, 5])
        >>> m.tolist()
        [[nan, 3.0], [1.0, 2.0]]
    """
    layers = sorted(series)
    steps = sorted({s for values in series.values() for s in values})
    matrix = np.array([[series[layer].get(s, math.nan) for s in steps] for layer in layers], dtype=float)
    return layers, steps, matrix.reshape(len(layers), len(steps))


def step_edges(steps: Sequence[int]) -> np.ndarray:
    """Heatmap column edges: the value logged at step ``s`` covers ``[s, next logged step)``.

    So a line at the injection step is the left edge of the first column logged after it.

    Example:
        >>> step_edges([0, 2, 3]).tolist()
        [0.0, 2.0, 3.0, 4.0]
        >>> step_edges([5]).tolist()
        [5.0, 6.0]
    """
    last_gap = steps[-1] - steps[-2] if len(steps) > 1 else 1
    return np.array([*steps, steps[-1] + last_gap], dtype=float)


def format_pm(mean: float, std: float) -> str:
    """An accuracy as a percentage with its standard deviation.

    Example:
        >>> format_pm(0.625, 0.0125)
        '62.50 ± 1.25'
        >>> format_pm(float("nan"), float("nan"))
        'n/a'
    """
    if mean is None or math.isnan(mean):
        return "n/a"
    if std is None or math.isnan(std):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


# ------------------------------------------------------------------------------------------------------ plots
def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, without touching pyplot's global backend
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _mark(ax: Any, step: int | None) -> None:
    if step is not None:
        ax.axvline(step, color="crimson", linestyle="--", linewidth=1.2, label=f"injection (step {step})")


def _integer_steps(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _wants_log(values: np.ndarray) -> bool:
    """A log axis helps when every value is positive and they span at least a decade (zeros would vanish).

    Example:
        >>> _wants_log(np.array([[1e-4, 1e-2], [np.nan, 3e-3]])), _wants_log(np.array([[0.0, 1e-2]]))
        (True, False)
    """
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(finite.min() > 0) and bool(finite.max() >= 10 * finite.min())


def _layer_ticks(ax: Any, layers: Sequence[int]) -> None:
    every = max(1, math.ceil(len(layers) / 16))
    ax.set_yticks(range(0, len(layers), every), [str(layer) for layer in layers[::every]])


def heatmap_png(
    values: np.ndarray, layers: Sequence[int], steps: Sequence[int], title: str, mark_step: int | None = None
) -> bytes:
    """A layer x step heatmap (layer 0 on top, NaN grey, colour bar) as PNG bytes.

    Args:
        values: ``(len(layers), len(steps))`` array.
        layers: block index of each row.
        steps: optimizer step of each column; the column of step ``s`` spans ``[s, next step)`` (see
            :func:`step_edges`), so steps need not be evenly spaced.
        title: plot title.
        mark_step: draw a dashed vertical line at this step (the injection).
    """
    import matplotlib as mpl

    fig = _figure(5.6, 3.4)
    ax = fig.add_subplot()
    cmap = mpl.colormaps["viridis"].with_extremes(bad=NAN_COLOUR)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    mesh = ax.pcolormesh(
        step_edges(steps),
        np.arange(len(layers) + 1) - 0.5,
        np.ma.masked_invalid(values),
        cmap=cmap,
        vmin=lo,
        vmax=hi if hi > lo else lo + 1e-12,
    )
    ax.set_ylim(len(layers) - 0.5, -0.5)
    _layer_ticks(ax, layers)
    fig.colorbar(mesh, ax=ax)
    _mark(ax, mark_step)
    _integer_steps(ax)
    ax.set(xlabel="step", ylabel="layer", title=title)
    return _png(fig)


def curves_png(
    values: np.ndarray,
    layers: Sequence[int],
    steps: Sequence[int],
    title: str,
    mark_step: int | None = None,
    log_y: bool = False,
) -> bytes:
    """One line per layer over steps (legend by layer) as PNG bytes; NaN values leave gaps.

    Args:
        values: ``(len(layers), len(steps))`` array.
        layers: block index of each row.
        steps: optimizer step of each column.
        title: plot title.
        mark_step: draw a dashed vertical line at this step (the injection).
        log_y: logarithmic y axis, where every value is positive and they span at least a decade.
    """
    import matplotlib as mpl

    fig = _figure(5.6, 3.4)
    ax = fig.add_subplot()
    colours = mpl.colormaps["viridis"](np.linspace(0.0, 0.9, max(1, len(layers))))
    marker = "o" if len(steps) <= 40 else None
    for row, layer, colour in zip(values, layers, colours):
        ax.plot(steps, row, color=colour, marker=marker, markersize=3, linewidth=1.2, label=f"layer {layer}")
    if log_y and _wants_log(values):
        ax.set_yscale("log")
        title = f"{title} (log scale)"
    _mark(ax, mark_step)
    _integer_steps(ax)
    ax.set(xlabel="step", title=title)
    ax.legend(fontsize=7, ncol=1 + len(layers) // 12, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png(fig)


def scores_png(scores: dict[int, float], chosen: Iterable[int], title: str = SCORE_METRIC) -> bytes:
    """A bar per block of the selector's scores, the chosen blocks highlighted, as PNG bytes."""
    chosen = set(chosen)
    layers = sorted(scores)
    fig = _figure(5.6, 3.0)
    ax = fig.add_subplot()
    colours = ["crimson" if layer in chosen else "#9bb7d4" for layer in layers]
    heights = [scores[layer] if math.isfinite(scores[layer]) else 0.0 for layer in layers]
    ax.bar([str(layer) for layer in layers], heights, color=colours, edgecolor="black", linewidth=0.5)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set(xlabel="layer", ylabel="score", title=f"{title} (chosen: {sorted(chosen) or 'none'})")
    return _png(fig)


def strategy_label(name: str) -> str:
    """A strategy's display name from the registry (the name itself when it is not registered).

    Example:
        >>> strategy_label("grad-lora"), strategy_label("someone-elses")
        ('gradient-probe LoRA', 'someone-elses')
    """
    spec = STRATEGIES.get(name)
    return spec.display_name if spec is not None else name


def _strategy_colours(strategies: Sequence[str]) -> dict[str, Any]:
    import matplotlib as mpl

    cmap = mpl.colormaps["tab10"]
    return {s: cmap(i % 10) for i, s in enumerate(strategies)}


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def accuracy_bars_png(summary: Sequence[dict[str, Any]]) -> bytes:
    """Grouped bars of test accuracy (%) per strategy for each regime, std error bars, as PNG bytes.

    Two panels: the whole test set (``test_acc``) and the sentences without SST-2 overlap (``test_acc_dedup``).
    The y axis is zoomed to the values (it does not start at 0).
    """
    regimes = _unique(r["regime"] for r in summary)
    strategies = _unique(r["strategy"] for r in summary)
    colours = _strategy_colours(strategies)
    cell = {(r["regime"], r["strategy"]): r for r in summary}
    fig = _figure(max(6.0, 1.2 + 0.45 * len(regimes) * len(strategies)), 3.6)
    axes = fig.subplots(1, 2, sharey=True)
    width = 0.8 / max(1, len(strategies))
    lows = []
    for ax, key, name in zip(axes, ("test_acc", "test_acc_dedup"), ("whole test set", "no SST-2 overlap")):
        for j, strategy in enumerate(strategies):
            rows = [cell.get((regime, strategy), {}) for regime in regimes]
            means = np.array([100 * _nan(r.get(f"{key}_mean")) for r in rows])
            stds = np.nan_to_num(np.array([100 * _nan(r.get(f"{key}_std")) for r in rows]))
            x = np.arange(len(regimes)) + (j - (len(strategies) - 1) / 2) * width
            ax.bar(x, means, width, yerr=stds, capsize=2, color=colours[strategy], label=strategy_label(strategy))
            lows.extend((means - stds)[np.isfinite(means)].tolist())
        ax.set_xticks(range(len(regimes)), [r.upper() for r in regimes])
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", linewidth=0.4, alpha=0.6)
    axes[0].set_ylabel("test accuracy (%)")
    if lows:
        axes[0].set_ylim(bottom=max(0.0, 5 * math.floor((min(lows) - 2) / 5)))
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png(fig)


def params_scatter_png(summary: Sequence[dict[str, Any]]) -> bytes:
    """Test accuracy (%, whole test set, std error bars) against trainable parameters (log x), as PNG bytes.

    Colour is the strategy, marker the regime.
    """
    from matplotlib.lines import Line2D

    regimes = _unique(r["regime"] for r in summary)
    strategies = _unique(r["strategy"] for r in summary)
    colours = _strategy_colours(strategies)
    markers = {regime: _MARKERS[i % len(_MARKERS)] for i, regime in enumerate(regimes)}
    fig = _figure(6.4, 3.8)
    ax = fig.add_subplot()
    for r in summary:
        params, acc = _nan(r.get("trainable_params")), 100 * _nan(r.get("test_acc_mean"))
        if not (params > 0 and math.isfinite(acc)):
            continue
        std = 100 * _nan(r.get("test_acc_std"))
        ax.errorbar(
            params,
            acc,
            yerr=std if math.isfinite(std) else None,
            fmt=markers[r["regime"]],
            color=colours[r["strategy"]],
            markersize=7,
            capsize=2,
            markeredgecolor="black",
        )
    ax.set_xscale("log")
    ax.set(xlabel="trainable parameters (log scale)", ylabel="test accuracy (%)", title="accuracy vs parameters")
    ax.grid(linewidth=0.4, alpha=0.6)
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[s], label=strategy_label(s)) for s in strategies]
    handles += [Line2D([], [], marker=markers[g], linestyle="", color="grey", label=g.upper()) for g in regimes]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png(fig)


# ------------------------------------------------------------------------------------------------------ html
@dataclass(frozen=True)
class Section:
    """One heading of the page (``level`` 2 to 4) and its body, HTML already escaped."""

    title: str
    body: str
    level: int = 2


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1250px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; margin-top: 2em; } h3 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots { display: flex; flex-wrap: wrap; gap: 0.8em; align-items: flex-start; }
.plots img, img.plot { max-width: 100%; border: 1px solid #eee; }
.tables { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
pre.text { background: #f7f7f7; border: 1px solid #e2e2e2; padding: 0.6em; white-space: pre-wrap; }
.meta, .note { color: #666; font-size: 0.9em; } nav ul { margin: 0.2em 0; }
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" src="data:image/png;base64,{data}" alt="{_esc(alt)}">'


def _td(value: Any, numeric: bool) -> str:
    cls = ' class="num"' if numeric else ""
    return f"<td{cls}>{_esc(value)}</td>"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None) -> str:
    numeric = numeric or [False] * len(header)
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_td(v, n) for v, n in zip(row, numeric)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(value: float) -> str:
    """A number for a table: large whole numbers with thousands separators, others with 4 significant digits.

    Example:
        >>> _num(25346.0), _num(0.69171), _num(float("nan"))
        ('25,346', '0.6917', 'nan')
    """
    if math.isfinite(value) and float(value).is_integer() and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if key.startswith("test_acc") and math.isfinite(value):
            return f"{100 * value:.2f} %"
        return _num(value)
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def render_page(title: str, meta: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole HTML document: title, escaped meta lines, a table of contents and the sections."""
    ids: list[str] = []
    seen: dict[str, int] = {}
    for section in sections:
        slug = _slug(section.title)
        seen[slug] = seen.get(slug, 0) + 1
        ids.append(slug if seen[slug] == 1 else f"{slug}-{seen[slug]}")
    toc = []
    for section, anchor in zip(sections, ids):
        indent = f' style="margin-left: {1.4 * (section.level - 2):.1f}em"'
        toc.append(f'<li{indent}><a href="#{anchor}">{_esc(section.title)}</a></li>')
    body = "\n".join(
        f'<h{s.level} id="{anchor}">{_esc(s.title)}</h{s.level}>\n{s.body}' for s, anchor in zip(sections, ids)
    )
    meta_html = "".join(f'<p class="meta">{_esc(line)}</p>' for line in meta)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<h1>{_esc(title)}</h1>\n"
        f'{meta_html}\n<nav><h2 id="contents">Contents</h2>\n<ul style="list-style: none; padding-left: 0">\n'
        + "\n".join(toc)
        + f"\n</ul></nav>\n{body}\n</body>\n</html>\n"
    )


# ------------------------------------------------------------------------------------------------------ sections
def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return None, f"{path.name} could not be read: {err}"
    return (data, None) if isinstance(data, dict) else (None, f"{path.name} is not a JSON object")


def _json_table(data: dict[str, Any], first: Sequence[str] = ()) -> str:
    keys = [k for k in first if k in data] + [k for k in data if k not in first]
    return _table(["key", "value"], [(k, _fmt(k, data[k])) for k in keys])


def _run_files_html(folder: Path) -> str:
    """``metrics.json`` and ``config.json`` of a run folder as small tables, side by side ("" if neither)."""
    parts = []
    for name, first in (("metrics.json", METRICS_JSON_KEYS), ("config.json", ())):
        data, error = _read_json(folder / name)
        if error:
            parts.append(f'<div><h4>{_esc(name)}</h4><p class="note">{_esc(error)}</p></div>')
        elif data is not None:
            parts.append(f"<div><h4>{_esc(name)}</h4>{_json_table(data, first)}</div>")
    return f'<div class="tables">{"".join(parts)}</div>' if parts else ""


def _other_scalars_html(scalars: dict[str, Series]) -> str:
    if not scalars:
        return ""
    rows = []
    for tag in sorted(scalars):
        steps = sorted(scalars[tag])
        values = np.array([scalars[tag][s] for s in steps], dtype=float)
        finite = values[np.isfinite(values)]
        mean = _num(float(finite.mean())) if finite.size else "n/a"
        rows.append((tag, len(steps), f"{steps[0]}..{steps[-1]}", _num(float(values[-1])), mean))
    header = ["tag", "points", "steps", "last", "mean"]
    table = _table(header, rows, [False, True, False, True, True])
    return f"<details><summary>Other scalars ({len(rows)})</summary>{table}</details>"


def _ordered_metrics(metrics: Iterable[str]) -> list[str]:
    present = set(metrics) - {SCORE_METRIC}
    return [m for m in METRIC_ORDER if m in present] + sorted(present - set(METRIC_ORDER))


def _metric_section(name: str, series: dict[int, Series], mark: int | None, level: int) -> Section:
    layers, steps, values = to_matrix(series)
    heat = heatmap_png(values, layers, steps, f"{name}: layer x step", mark)
    curves = curves_png(values, layers, steps, name, mark, log_y=name.endswith("grad_norm"))
    body = f'<div class="plots">{_img(heat, f"heatmap of {name}")}{_img(curves, f"curves of {name}")}</div>'
    return Section(name, body, level)


def _score_section(series: dict[int, Series], chosen: list[int], level: int) -> Section:
    scores = {layer: values[max(values)] for layer, values in series.items() if values}
    step = max((max(values) for values in series.values() if values), default=None)
    body = f'<p class="note">Logged at step {_esc(step)}; chosen blocks in red.</p>'
    return Section(SCORE_METRIC, body + _img(scores_png(scores, chosen), f"bars of {SCORE_METRIC}"), level)


def _run_info_html(info: RunInfo | None) -> str:
    """What the run's ``metrics.json`` says it trained, in one line ("" without one)."""
    if info is None or (info.strategy is None and info.layers is None):
        return ""
    what = strategy_label(info.strategy) if info.strategy else "this run"
    blocks = f"blocks {info.layers}" if info.layers is not None else "the whole model"
    step = f", LoRA injected at step {info.injected_at_step}" if info.injected_at_step is not None else ""
    reason = f": {_esc(info.reason)}" if info.reason and info.reason != info.strategy else ""
    return f"<p>{_esc(what)} trained {_esc(blocks)}{_esc(step)} (from <code>metrics.json</code>){reason}</p>"


def run_sections(
    logs: RunLogs, title: str, level: int = 2, log_key_prefix: str = "inflect", info: RunInfo | None = None
) -> list[Section]:
    """The sections of one TensorBoard folder: what the run trained, the injection text, one section per metric,
    the scores (the blocks of ``info`` in red), other scalars.

    Args:
        logs: the folder's logs (:func:`read_run`).
        title: the first section's title.
        level: its heading level (the metrics get one more).
        log_key_prefix: the monitors' ``log_key_prefix``.
        info: the run's ``metrics.json`` (:func:`read_run_info`): the blocks it trained and why.
    """
    mark = injection_step(logs, log_key_prefix)
    intro = [f'<p class="meta">Folder: <code>{_esc(logs.folder)}</code></p>', _run_info_html(info)]
    if logs.injection is not None:
        intro.append(
            f'<p>Injection at step {logs.injection.step}:</p><pre class="text">{_esc(logs.injection.text)}</pre>'
        )
    elif mark is not None:
        intro.append(f"<p>Injection at step {mark} (from <code>trainable_params</code>; no injection text).</p>")
    if not logs.metrics:
        intro.append('<p class="note">No per-layer metrics in this folder.</p>')
    intro.append(_other_scalars_html(logs.scalars))
    sections = [Section(title, "\n".join(intro), level)]
    sections += [_metric_section(m, logs.metrics[m], mark, level + 1) for m in _ordered_metrics(logs.metrics)]
    if SCORE_METRIC in logs.metrics:
        chosen = (info.layers if info is not None else None) or []
        sections.append(_score_section(logs.metrics[SCORE_METRIC], chosen, level + 1))
    return sections


def _run_dir_sections(root: Path, run: Path, level: int, log_key_prefix: str) -> list[Section]:
    sections = []
    files = _run_files_html(run)
    if files:
        sections.append(
            Section(f"{_rel(run, root)}: metrics and config" if run != root else "Metrics and config", files, level)
        )
    info = read_run_info(run)
    for folder in find_event_folders(run):
        logs = read_run(folder, log_key_prefix)
        sections += run_sections(logs, _rel(folder, root), level, log_key_prefix, info)
    return sections


def _rel(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return path.name if rel in ("", ".") else rel


def preferred_strategies() -> list[str]:
    """The registered strategies, selective ones first (their diagnosis shows the most), in registry order.

    Example:
        >>> preferred_strategies()[:2], preferred_strategies()[-1]
        (['inflection-lora', 'inflection-band-lora'], 'uniform-lora')
    """
    specs = list(STRATEGIES.values())
    return [s.name for s in specs if s.selective] + [s.name for s in specs if not s.selective]


def representative_run(root: str | Path, regime: str, strategies: Sequence[str] | None = None) -> Path | None:
    """The run folder shown for a regime: the first run folder with event files, strategies in the given order
    (default :func:`preferred_strategies`), then the other folders by name; seeds in numeric order."""
    base = Path(root) / regime
    if not base.is_dir() or Path(root).resolve() not in base.resolve().parents:
        return None
    seed_key = lambda p: (int(re.sub(r"\D", "", p.name) or 0), p.name)  # noqa: E731
    first = preferred_strategies() if strategies is None else list(strategies)
    order = _unique([*first, *sorted(p.name for p in base.iterdir() if p.is_dir())])
    candidates = [seed for s in order if (base / s).is_dir() for seed in sorted((base / s).glob("seed*"), key=seed_key)]
    return next((c for c in candidates if c.is_dir() and any(c.rglob(EVENT_GLOB))), None)


def _results_table(summary: Sequence[dict[str, Any]]) -> str:
    header = ["regime", "strategy", "seeds", "test acc, whole test (%)", "test acc, no SST-2 overlap (%)"]
    header += ["trainable params", "train s (mean)", "blocks"]
    rows = []
    for r in summary:
        params = _nan(r.get("trainable_params"))
        blocks = "; ".join(",".join(map(str, t)) for t in r.get("layers") or []) or "-"
        rows.append(
            (
                str(r.get("regime", "")).upper(),
                r.get("strategy", ""),
                r.get("seeds", ""),
                format_pm(_nan(r.get("test_acc_mean")), _nan(r.get("test_acc_std"))),
                format_pm(_nan(r.get("test_acc_dedup_mean")), _nan(r.get("test_acc_dedup_std"))),
                f"{round(params):,}" if math.isfinite(params) else "n/a",
                f"{_nan(r.get('train_seconds_mean')):.0f}",
                blocks,
            )
        )
    return _table(header, rows, [False, False, True, True, True, True, True, False])


def _runs_table(runs: Sequence[dict[str, Any]]) -> str:
    header = ["regime", "strategy", "seed", "test acc (%)", "no overlap (%)", "trainable params", "blocks"]
    rows = [
        (
            str(m.get("regime", "")).upper(),
            m.get("strategy", ""),
            m.get("seed", ""),
            format_pm(_nan(m.get("test_acc")), math.nan),
            format_pm(_nan(m.get("test_acc_dedup")), math.nan),
            _fmt("trainable_params", m.get("trainable_params")),
            ",".join(map(str, m.get("layers") or [])) or "-",
        )
        for m in runs
    ]
    return _table(header, rows, [False, False, True, True, True, True, False])


def _strategies_table(names: Sequence[str]) -> str:
    """Each strategy of the grid as the registry describes it (unregistered ones say so)."""
    from lightning_inflect.experiments.config import ExperimentConfig

    cfg, rows = ExperimentConfig(), []
    for name in names:
        spec = STRATEGIES.get(name)
        if spec is None:
            rows.append((name, name, "not registered here", "-"))
        else:
            rows.append((name, spec.display_name, spec.kind, spec.selector_name(cfg) or "-"))
    return _table(["strategy", "name", "what trains", "selector"], rows)


def grid_sections(root: Path, results: dict[str, Any], log_key_prefix: str = "inflect") -> list[Section]:
    """Results table, accuracy bars, accuracy vs parameters, the strategies, one representative run per regime."""
    summary = results.get("summary") or []
    runs = results.get("runs") or []
    body = [_results_table(summary) if summary else '<p class="note">results.json has no summary rows.</p>']
    if runs:
        body.append(f"<details><summary>Every run ({len(runs)})</summary>{_runs_table(runs)}</details>")
    if (root / "results.md").is_file():
        text = _esc((root / "results.md").read_text())
        body.append(f'<details><summary>results.md</summary><pre class="text">{text}</pre></details>')
    sections = [Section("Results", "\n".join(body))]
    if summary:
        bars = _img(accuracy_bars_png(summary), "bar chart of test accuracy per strategy and regime")
        note = '<p class="note">Mean over seeds, error bars one standard deviation; the y axis does not start at 0.</p>'
        sections.append(Section("Test accuracy by strategy", note + bars))
        scatter = _img(params_scatter_png(summary), "scatter of test accuracy vs trainable parameters")
        sections.append(Section("Accuracy vs trainable parameters", scatter))
    strategies = _unique(str(r.get("strategy")) for r in [*summary, *runs])
    if strategies:
        sections.append(Section("Strategies", _strategies_table(strategies)))
    for regime in _unique(str(r.get("regime")) for r in summary):
        run = representative_run(root, regime)
        if run is None:
            sections.append(Section(f"Regime {regime.upper()}", '<p class="note">No run folder with event files.</p>'))
            continue
        note = f'<p class="note">One representative run: <code>{_esc(_rel(run, root))}</code>.</p>'
        sections.append(Section(f"Regime {regime.upper()}: {_rel(run, root)}", note))
        sections += _run_dir_sections(root, run, 3, log_key_prefix)
    return sections


# ------------------------------------------------------------------------------------------------------ entry
def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ModuleNotFoundError(
            "The HTML report needs matplotlib, which comes with the study extra:"
            ' pip install "lightning-inflect[study]".'
        ) from err


def _expected(path: Path, what: str) -> str:
    return (
        f"Expected `path` to be a run directory (TensorBoard event files `{EVENT_GLOB}` somewhere below it) or a "
        f"grid directory (with `results.json`), but {str(path)!r} {what}. Hint: pass the folder given to "
        "`run_grid`, a run folder `<regime>/<strategy>/seed<k>`, or a TensorBoard log directory."
    )


def write_report(path: str | Path, out: str | Path | None = None, *, log_key_prefix: str = "inflect") -> Path:
    """Write one self-contained HTML page for a run directory or a grid directory and return its path.

    Args:
        path: a grid directory (holding ``results.json``) or a run directory (TensorBoard event files below it).
        out: where to write the page; default ``<path>/report.html``.
        log_key_prefix: the monitors' ``log_key_prefix``.

    Returns:
        The path of the written page.

    Raises:
        FileNotFoundError: ``path`` does not exist, is not a directory, or holds neither event files nor
            ``results.json``.
        ModuleNotFoundError: matplotlib is missing (the message says how to install the ``[study]`` extra).
    """
    _require_matplotlib()
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(_expected(root, "does not exist"))
    if not root.is_dir():
        raise FileNotFoundError(_expected(root, "is not a directory"))
    meta = [
        f"Path: {root.resolve()}",
        f"Generated {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
    ]
    if (root / "results.json").is_file():
        results = json.loads((root / "results.json").read_text())
        if isinstance(results.get("wall_seconds"), (int, float)):
            meta.append(f"Grid wall time {results['wall_seconds'] / 60:.1f} min")
        if results.get("complete") is False:
            meta.append(
                f"Partial: {results.get('cells_done', '?')} of {results.get('cells_total', '?')} cells finished"
            )
        title, sections = "lightning-inflect grid report", grid_sections(root, results, log_key_prefix)
    elif any(root.rglob(EVENT_GLOB)):
        title, sections = "lightning-inflect run report", _run_dir_sections(root, root, 2, log_key_prefix)
    else:
        raise FileNotFoundError(_expected(root, "holds neither"))
    target = Path(out) if out is not None else root / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_page(title, meta, sections), encoding="utf-8")
    return target
