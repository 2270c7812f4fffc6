"""Loggers other than TensorBoard: W&B (offline) and CSV with the real Trainer, read back from disk; the dispatch."""

import csv
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ClsModule, loader, tiny_model
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_inflect import AttentionEntropyMonitor, GradientNormMonitor, InjectionCallback
from lightning_inflect.callbacks.base import LightningHost
from lightning_inflect.callbacks.injection import LightningInjectionHost
from lightning_inflect.callbacks.loggers import TEXT_COLUMN, log_heatmap, log_text, takes_images, takes_text
from lightning_inflect.core.injection import report_injection
from lightning_inflect.functional import heatmap_image
from lightning_inflect.injection import InjectionRecord


def _callbacks(export_dir: Path) -> tuple[AttentionEntropyMonitor, GradientNormMonitor, InjectionCallback]:
    """Entropy (heatmap every 2 logs), parameter-gradient norms (heatmap at the end only), LoRA into blocks 0, 2."""
    return (
        AttentionEntropyMonitor(every_n_steps=1, heatmap_every_n_logs=2),
        GradientNormMonitor(every_n_steps=1, norms=["parameter"]),
        InjectionCallback(layers=[0, 2], at_step=2, r=2, export_dir=export_dir),
    )


def _expected_heatmap(hist, n_logs: int) -> np.ndarray:
    """The image of the first ``n_logs`` rows of a history, ``(H, W, 3)`` uint8, as ``heatmap_image`` renders it."""
    values = torch.tensor(hist.rows[:n_logs], dtype=torch.float32).T  # (layers, logs)
    return heatmap_image(values).permute(1, 2, 0).numpy()


def _wandb_step(path: Path) -> int:
    """W&B's own step in a heatmap file's name, ``<metric>_<step>_<hash>.png``."""
    return int(re.fullmatch(r".*_(\d+)_[0-9a-f]+\.png", path.name).group(1))


# ------------------------------------------------------------------------------------------ W&B, offline, end to end
def test_wandb_offline_gets_heatmaps_and_injection_text(trainer_factory, tmp_path, monkeypatch):
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    for var, value in {
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB_DISABLE_CODE": "true",
        "WANDB_DIR": str(tmp_path), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
    }.items():  # fmt: skip
        monkeypatch.setenv(var, value)
    ent, grads, inj = _callbacks(tmp_path / "adapters")
    wb = WandbLogger(save_dir=str(tmp_path), offline=True, project="inflect-test")
    tb = TensorBoardLogger(tmp_path, name="tb")
    try:
        trainer_factory([ent, grads, inj], [wb, tb], max_steps=4).fit(ClsModule(tiny_model("bert")), loader(64))
        files = Path(wb.experiment.dir)
    finally:
        wandb.finish()
    assert inj.injected and ent.history["attn_entropy"].steps == [0, 1, 2, 3]

    # heatmaps: one PNG per write, named after the key; each is heatmap_image of the history so far, pixel for pixel
    media = files / "media" / "images"
    for metric, hist, n_logs in (
        ("attn_entropy", ent.history["attn_entropy"], [2, 4]),  # every 2 logs: at the 2nd and the 4th
        ("param_grad_norm", grads.history["param_grad_norm"], [4]),  # default every 5: once, at the end of training
    ):
        key = f"inflect/heatmap/{metric}"
        pngs = sorted(media.glob(f"{key}_*.png"), key=_wandb_step)
        assert len(pngs) == len(n_logs)  # the glob is the key: media/images/inflect/heatmap/<metric>_<n>_<hash>.png
        for png, n in zip(pngs, n_logs):
            got = np.asarray(Image.open(png).convert("RGB"))
            want = _expected_heatmap(hist, n)
            assert got.shape == want.shape == (3 * 8, n * 8, 3)
            assert np.array_equal(got, want)
    assert sorted(p.relative_to(media).as_posix().rsplit("_", 2)[0] for p in media.rglob("*.png")) == [
        "inflect/heatmap/attn_entropy",
        "inflect/heatmap/attn_entropy",
        "inflect/heatmap/param_grad_norm",
    ]

    # the injection report: a one-cell table under the key, the same text TensorBoard got
    tables = list((files / "media" / "table").glob("inflect/injection_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == [TEXT_COLUMN] and len(table["data"]) == 1
    text = table["data"][0][0]
    assert f"blocks {list(inj.record.layers)}" in text and "blocks [0, 2]" in text and "query" in text
    ea = EventAccumulator(tb.log_dir, size_guidance={"tensors": 0, "images": 0})
    ea.Reload()
    assert ea.Tensors("inflect/injection/text_summary")[0].tensor_proto.string_val[0].decode() == text
    assert [i.step for i in ea.Images("inflect/heatmap/attn_entropy")] == [1, 3]  # TensorBoard keeps add_image


# ------------------------------------------------------------------------------------------ CSV: scalars only
def test_csv_logger_gets_scalars_only(trainer_factory, tmp_path):
    ent, grads, inj = _callbacks(tmp_path / "adapters")
    csv_logger = CSVLogger(tmp_path, name="csv")
    trainer_factory([ent, grads, inj], [csv_logger], max_steps=4).fit(ClsModule(tiny_model("bert")), loader(64))
    assert inj.injected

    log_dir = Path(csv_logger.log_dir)
    names = {p.name for p in log_dir.iterdir()}
    assert "metrics.csv" in names and names <= {"metrics.csv", "hparams.yaml"}  # no images, no text
    assert not list(tmp_path.rglob("*.png"))
    with open(log_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for monitor, metric in ((ent, "attn_entropy"), (grads, "param_grad_norm")):
        hist = monitor.history[metric]
        for layer in range(3):
            column = f"inflect/{metric}/layer_{layer:02d}"
            got = [(int(r["step"]), float(r[column])) for r in rows if r.get(column)]
            assert [s for s, _ in got] == hist.steps
            want = [row[layer] for row in hist.rows]
            assert all(
                (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w, rel=1e-6) for (_, g), w in zip(got, want)
            )
    trainable = [float(r["inflect/trainable_params"]) for r in rows if r.get("inflect/trainable_params")]
    assert trainable == [inj.record.trainable_after]


# ------------------------------------------------------------------------------------------ the dispatch, unit
class Recorder(Logger):
    """A Lightning logger with Lightning's ``log_image`` / ``log_text`` keyword signatures that records the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None) -> None:
        self.calls.append(("metrics", dict(metrics), step))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_image(self, key, images, step=None, **kwargs) -> None:
        self.calls.append(("image", key, images, step))

    def log_text(self, key, columns=None, data=None, dataframe=None, step=None) -> None:
        self.calls.append(("text", key, columns, data, step))


class OtherSignature(Recorder):
    """Methods of the same names that take something else: must not be called."""

    def log_image(self, path) -> None:  # type: ignore[override]
        raise AssertionError("called")

    def log_text(self, text) -> None:  # type: ignore[override]
        raise AssertionError("called")


class Plain(Recorder):
    """No image or text methods at all."""

    log_image = None  # type: ignore[assignment]
    log_text = None  # type: ignore[assignment]


def test_dispatch_sends_each_logger_what_it_takes(tmp_path):
    image = heatmap_image(torch.tensor([[0.0, 1.0, 2.0], [float("nan"), 0.5, 1.0]]))
    rec, other, plain = Recorder(), OtherSignature(), Plain()
    csv_logger, tb = CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")
    loggers = [rec, other, plain, csv_logger, tb]
    assert [takes_images(lg) for lg in loggers] == [True, False, False, False, True]
    assert [takes_text(lg) for lg in loggers] == [True, False, False, False, True]

    assert log_heatmap(loggers, "inflect/heatmap/x", image, step=7) == 2
    ((kind, key, images, step),) = rec.calls
    assert (kind, key, step, len(images)) == ("image", "inflect/heatmap/x", 7, 1)
    assert isinstance(images[0], np.ndarray) and images[0].dtype == np.uint8 and images[0].shape == (16, 24, 3)
    assert np.array_equal(images[0], image.permute(1, 2, 0).numpy())

    rec.calls.clear()
    assert log_text(loggers, "inflect/injection", "**x** y", step=3) == 2
    assert rec.calls == [("text", "inflect/injection", [TEXT_COLUMN], [["**x** y"]], 3)]
    tb.experiment.flush()
    ea = EventAccumulator(tb.log_dir, size_guidance={"tensors": 0, "images": 0})
    ea.Reload()
    assert [i.step for i in ea.Images("inflect/heatmap/x")] == [7]
    assert ea.Tensors("inflect/injection/text_summary")[0].tensor_proto.string_val[0].decode() == "**x** y"
    assert not list(tmp_path.glob("csv/**/*.*"))  # the CSV logger was sent nothing (it writes on save)


def test_dispatch_rejects_what_is_not_a_heatmap_or_text():
    with pytest.raises(ValueError, match=r"\(3, H, W\) uint8 tensor.*got shape \(2, 2\).*heatmap_image"):
        log_heatmap([Recorder()], "k", torch.zeros(2, 2, dtype=torch.uint8), step=0)
    with pytest.raises(TypeError, match="`markdown` to be a str but got bytes"):
        log_text([Recorder()], "k", b"text", step=0)  # type: ignore[arg-type]


def test_only_rank_zero_writes_images_and_text():
    lora = {"r": 2, "lora_alpha": 4.0, "lora_dropout": 0.0}
    record = InjectionRecord(
        layers=[1], target_modules=["query"], lora=lora, keep_trainable=[], step=2, trainable_after=4, reason="manual"
    )
    for rank_zero in (True, False):
        rec = Recorder()
        trainer = SimpleNamespace(loggers=[rec], is_global_zero=rank_zero)
        report_injection(LightningInjectionHost(trainer), record, "inflect", lora_numel=4)  # type: ignore[arg-type]
        mon = AttentionEntropyMonitor(every_n_steps=1, heatmap_every_n_logs=1)
        mon.layers = [0, 1]
        mon._reset_fit_state()
        mon._record(LightningHost(trainer), "attn_entropy", 0, [1.0, 2.0])  # type: ignore[arg-type]
        kinds = [c[0] for c in rec.calls]
        assert kinds == (["metrics", "text", "image"] if rank_zero else ["metrics"])


def test_the_injection_report_reaches_every_logger_and_callback_metrics(tmp_path):
    import lightning.pytorch as pl

    lora = {"r": 2, "lora_alpha": 4.0, "lora_dropout": 0.0}
    record = InjectionRecord(
        layers=[1], target_modules=["query"], lora=lora, keep_trainable=[], step=2, trainable_after=4, reason="SKI",
        scores=[0.25, 1.0, 0.5],
    )  # fmt: skip
    rec = Recorder()
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.loggers = [rec]  # type: ignore[list-item]
    report_injection(LightningInjectionHost(trainer), record, "inflect", lora_numel=4)
    expected = {"inflect/trainable_params": 4.0, **{f"inflect/inflection_score/layer_{i:02d}": s for i, s in
                                                     enumerate([0.25, 1.0, 0.5])}}  # fmt: skip
    assert ("metrics", expected, 2) in rec.calls
    got = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("inflect/")}
    assert {k: v.item() for k, v in got.items()} == expected  # EarlyStopping / ModelCheckpoint can monitor them
    assert all(v.dtype == torch.float32 and v.dim() == 0 and v.device.type == "cpu" for v in got.values())
