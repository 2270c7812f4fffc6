"""The HTML report: a real tiny run (Lightning Trainer, the real callbacks, TensorBoard) and a small grid."""

import base64
import html
import io
import json
import math
import re
import shutil
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import ClsModule, loader, make_trainer, tiny_model
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor, InjectionCallback
from lightning_inflect.experiments import report
from lightning_inflect.experiments.report import (
    NAN_COLOUR,
    RunInfo,
    find_event_folders,
    heatmap_png,
    injection_step,
    read_run,
    read_run_info,
    read_scalars,
    representative_run,
    to_matrix,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRICS = ("attn_entropy", "act_grad_norm", "param_grad_norm", "cka_drift")


class _Page(HTMLParser):
    """Images (src, alt), headings (tag, id, text), links and scripts of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []
        self.headings: list[tuple[str, str, str]] = []
        self.hrefs: list[str] = []
        self.tags: set[str] = set()
        self._heading: list | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append((a["src"], a.get("alt", "")))
        if tag == "a":
            self.hrefs.append(a.get("href", ""))
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = [tag, a.get("id", ""), ""]

    def handle_data(self, data):
        if self._heading is not None:
            self._heading[2] += data

    def handle_endtag(self, tag):
        if self._heading is not None and tag == self._heading[0]:
            self.headings.append(tuple(self._heading))
            self._heading = None

    def alts(self) -> list[str]:
        return [alt for _, alt in self.images]

    def png(self, alt: str) -> bytes:
        (src,) = [src for src, a in self.images if a == alt]
        return base64.b64decode(src.removeprefix("data:image/png;base64,"))


def _image(png: bytes) -> Image.Image:
    assert png.startswith(PNG_SIGNATURE)
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real 4-step fit with the three monitors and a manual injection into block 1 at step 2."""
    tmp = tmp_path_factory.mktemp("report")
    callbacks = [
        AttentionEntropyMonitor(every_n_steps=1),
        GradientNormMonitor(every_n_steps=1),
        CKADriftMonitor(every_n_steps=1),
        InjectionCallback(layers=[1], at_step=2, export=False),
    ]
    logger = TensorBoardLogger(tmp / "run", name="tb", version="")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no gradient reached the outputs of blocks.*")
        make_trainer(tmp, callbacks, logger, max_steps=4).fit(ClsModule(tiny_model()), loader())
    return tmp / "run"


@pytest.fixture(scope="module")
def run_page(tiny_run):
    out = write_report(tiny_run)
    return out, _Page(out.read_text(encoding="utf-8"))


def test_reading_the_real_run(tiny_run):
    (folder,) = find_event_folders(tiny_run)
    assert folder == tiny_run / "tb"
    metrics = read_scalars(folder)
    assert set(metrics) == set(METRICS)  # per-head tags and other scalars are not metrics
    layers, steps, values = to_matrix(metrics["act_grad_norm"])
    assert (layers, steps, values.shape) == ([0, 1, 2], [0, 1, 2, 3], (3, 4))
    # after the injection no gradient reaches block 0's output: NaN survives the reading, the rest is finite
    assert np.isnan(values[0, 2:]).all() and np.isfinite(values[1:]).all() and np.isfinite(values[0, :2]).all()
    logs = read_run(folder)
    assert injection_step(logs) == 2
    assert logs.injection.step == 2 and "blocks [1]" in logs.injection.text
    assert read_run_info(tiny_run) is None  # a plain Trainer run: no metrics.json
    assert logs.scalars["inflect/trainable_params"].keys() == {2}


def test_run_page_has_one_image_per_plot(run_page):
    out, page = run_page
    assert out.name == "report.html"
    expected = [f"{kind} of {m}" for m in METRICS for kind in ("heatmap", "curves")]
    assert sorted(page.alts()) == sorted(expected)  # no inflection_score: a manual injection has no scores
    for src, _ in page.images:
        assert src.startswith("data:image/png;base64,")
    for alt in ("heatmap of act_grad_norm", "curves of cka_drift"):
        img = _image(page.png(alt))
        assert 300 <= img.width <= 1500 and 200 <= img.height <= 1000


def test_run_page_sections_toc_and_injection(run_page):
    out, page = run_page
    text = out.read_text(encoding="utf-8")
    titles = {t: i for _, i, t in page.headings}
    for name in (*METRICS, "tb", "Contents"):
        assert name in titles
    for name in (*METRICS, "tb"):
        assert f"#{titles[name]}" in page.hrefs  # in the table of contents
    assert "Injection at step 2:" in text
    assert "**Injected LoRA at step 2** into blocks [1]" in html.unescape(text)
    assert "kept trainable: [&#x27;classifier&#x27;]" in text  # escaped, not raw
    assert str(out.parent.resolve()) in html.unescape(text)


def test_page_is_self_contained(run_page):
    out, page = run_page
    assert "script" not in page.tags and "link" not in page.tags
    assert all(h.startswith("#") for h in page.hrefs)
    assert not re.search(r"(src|href)=\"(?!data:|#)", out.read_text(encoding="utf-8"))


def test_heatmap_shows_nan_grey():
    grey = tuple(int(NAN_COLOUR[i : i + 2], 16) for i in (1, 3, 5))

    def grey_pixels(values):
        img = np.asarray(_image(heatmap_png(values, [0, 1], [0, 1, 2], "t")).convert("RGB"))
        return int((img == grey).all(axis=-1).sum())

    clean = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    holed = clean.copy()
    holed[0, 1] = math.nan
    assert grey_pixels(holed) > grey_pixels(clean) + 1000  # one cell is a sixth of the plot area


def _synthetic_run(root, writer_cls):
    """A run with two event folders: `diagnose/tb` (scores + injection text) and `tb` (one metric)."""
    with writer_cls(str(root / "diagnose" / "tb")) as w:
        for layer, score in enumerate([0.1, 0.9, 0.2, 0.8]):
            w.add_scalar(f"inflect/inflection_score/layer_{layer:02d}", score, 5)
        for step in range(6):
            w.add_scalar("inflect/act_grad_norm/layer_00", 1.0 + step, step)
            w.add_scalar("inflect/act_grad_norm/layer_00/head_01", 7.0, step)
        w.add_text("inflect/injection", "Injected LoRA into blocks [1, 3]. <b>not bold</b>", 5)  # not read: JSON is
    with writer_cls(str(root / "tb")) as w:
        for step in (0, 10, 20):
            w.add_scalar("inflect/cka_drift/layer_00", 0.1 * step, step)
            w.add_scalar("inflect/cka_drift/layer_01", 0.2 * step, step)
    (root / "config.json").write_text(json.dumps({"note": "<script>alert(1)</script>"}))
    metrics = {"strategy": "cka-lora", "layers": [0, 2], "reason": "CKA importance <top-2>", "injected_at_step": 0}
    (root / "metrics.json").write_text(json.dumps(metrics))


def test_several_folders_scores_and_escaping(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    chosen = []
    real_scores_png = report.scores_png
    monkeypatch.setattr(
        report, "scores_png", lambda scores, c, *a: chosen.append(sorted(c)) or real_scores_png(scores, c)
    )
    _synthetic_run(tmp_path, SummaryWriter)
    out = write_report(tmp_path, out=tmp_path / "elsewhere" / "page.html")
    assert out == tmp_path / "elsewhere" / "page.html" and out.is_file()
    text = out.read_text(encoding="utf-8")
    page = _Page(text)
    titles = [t for _, _, t in page.headings]
    assert titles.index("diagnose/tb") < titles.index("tb")
    assert "inflection_score" in titles
    assert "bars of inflection_score" in page.alts()
    # the chosen blocks come from metrics.json, not from the injection text (which names [1, 3])
    assert read_run_info(tmp_path) == RunInfo("cka-lora", [0, 2], "CKA importance <top-2>", 0)
    assert chosen == [[0, 2]]
    assert "CKA-importance LoRA trained blocks [0, 2], LoRA injected at step 0" in html.unescape(text)
    assert "&lt;top-2&gt;" in text
    assert "&lt;b&gt;not bold&lt;/b&gt;" in text and "<b>" not in text
    assert "&lt;script&gt;" in text and "script" not in page.tags
    plots = [f"{kind} of {m}" for m in ("act_grad_norm", "cka_drift") for kind in ("heatmap", "curves")]
    assert sorted(page.alts()) == sorted([*plots, "bars of inflection_score"])  # the per-head tag is not plotted


SUMMARY = [
    # regime, strategy, acc, std, dedup, dedup std, trainable
    ("under", "full", 0.8125, 0.0125, 0.75, 0.02, 22713986),
    ("under", "inflection-lora", 0.78, 0.0, 0.7333333, 0.011, 25346),
    ("under", "random-lora", 0.7, 0.05, 0.65, 0.05, 25346),
    ("over", "full", 0.6, 0.01, 0.55, 0.0, 22713986),
    ("over", "inflection-lora", 0.64, 0.02, 0.6, 0.03, 25346),
]


def _grid(tmp_path, tiny_run):
    grid = tmp_path / "grid"
    rows = [
        dict(
            regime=r, strategy=s, seeds=2, test_acc_mean=a, test_acc_std=sa, test_acc_dedup_mean=d,
            test_acc_dedup_std=sd, trainable_params=p, train_seconds_mean=12.3, layers=[[1, 2]] if "lora" in s else [],
        )
        for r, s, a, sa, d, sd, p in SUMMARY
    ]  # fmt: skip
    runs = [dict(regime="under", strategy="full", seed=0, test_acc=0.8, test_acc_dedup=0.74, trainable_params=5)]
    grid.mkdir()
    (grid / "results.json").write_text(json.dumps({"runs": runs, "summary": rows, "wall_seconds": 90.0}))
    (grid / "results.md").write_text("| regime | strategy |\n| UNDER | full |\n")
    shutil.copytree(tiny_run, grid / "under" / "inflection-lora" / "seed0")
    metrics = {"strategy": "inflection-lora", "seed": 0, "layers": [1], "test_acc": 0.78, "trainable_params": 1090}
    (grid / "under" / "inflection-lora" / "seed0" / "metrics.json").write_text(json.dumps(metrics))
    return grid


def test_grid_page(tmp_path, tiny_run):
    grid = _grid(tmp_path, tiny_run)
    out = write_report(grid)
    text = out.read_text(encoding="utf-8")
    page = _Page(text)
    rows = re.findall(r"<tr>(.*?)</tr>", text)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    table = {(c[0], c[1]): c for c in cells if len(c) == 8}
    assert set(table) == {(r.upper(), s) for r, s, *_ in SUMMARY}
    assert table[("UNDER", "full")][3:6] == ["81.25 ± 1.25", "75.00 ± 2.00", "22,713,986"]
    assert table[("UNDER", "inflection-lora")][3:6] == ["78.00 ± 0.00", "73.33 ± 1.10", "25,346"]
    assert table[("OVER", "inflection-lora")][7] == "1,2"
    for alt in (
        "bar chart of test accuracy per strategy and regime",
        "scatter of test accuracy vs trainable parameters",
    ):
        assert _image(page.png(alt)).width > 300
    titles = [t for _, _, t in page.headings]
    assert "Regime UNDER: under/inflection-lora/seed0" in titles
    assert "Regime OVER" in titles  # no run folder for it
    assert "under/inflection-lora/seed0/tb" in titles
    assert page.alts().count("heatmap of attn_entropy") == 1  # one representative run only
    assert "78.00 %" in text  # metrics.json of the representative run
    assert "Grid wall time 1.5 min" in text and "Partial" not in text
    strategies = {c[0]: c[1:] for c in cells if len(c) == 4}  # the registry's words for each strategy of the grid
    assert strategies["inflection-lora"] == ["inflection-layer LoRA (SKI)", "LoRA on diagnosed blocks", "SKI"]
    assert strategies["full"] == ["full fine-tuning", "whole model", "-"]
    results = json.loads((grid / "results.json").read_text())
    (grid / "results.json").write_text(json.dumps({**results, "complete": False, "cells_done": 3, "cells_total": 4}))
    assert "Partial: 3 of 4 cells finished" in write_report(grid).read_text(encoding="utf-8")


def test_representative_run_prefers_inflection_lora_seed0(tmp_path):
    def run(*parts, events=True):
        folder = tmp_path.joinpath(*parts, "tb")
        folder.mkdir(parents=True)
        if events:
            (folder / "events.out.tfevents.1.host").write_bytes(b"")
        return tmp_path.joinpath(*parts)

    run("under", "full", "seed10")
    run("under", "full", "seed2")
    run("under", "cka-lora", "seed0")
    run("under", "inflection-lora", "seed0", events=False)
    assert representative_run(tmp_path, "under", ["full", "cka-lora"]) == tmp_path / "under" / "full" / "seed2"
    assert representative_run(tmp_path, "under") == tmp_path / "under" / "cka-lora" / "seed0"
    (tmp_path / "under" / "inflection-lora" / "seed0" / "tb" / "events.out.tfevents.2.host").write_bytes(b"")
    assert representative_run(tmp_path, "under") == tmp_path / "under" / "inflection-lora" / "seed0"  # registry order
    assert representative_run(tmp_path, "under", ["full"]) == tmp_path / "under" / "full" / "seed2"
    assert representative_run(tmp_path, "over") is None
    assert representative_run(tmp_path, "..") is None  # never outside the grid


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*results\.json|results\.json.*does not exist"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"holds neither.*Hint"):
        write_report(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        write_report(tmp_path / "file.txt")
