"""The command line and the experiment harness end to end on tiny settings (real MiniLM, real data where found)."""

import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from _data import real_data_dir, real_or_invented_data_dir, write_invented_data

from lightning_inflect.cli import main
from lightning_inflect.experiments import grid, source, transfer
from lightning_inflect.experiments.config import PRESETS
from lightning_inflect.experiments.study_data import load_study_data


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("demo", ["--data_dir", "--out", "--seed", "--verbose"]),
        ("source", ["--regime", "--preset", "--model", "--verbose"]),
        ("transfer", ["--strategy", "--source_ckpt", "--dedup_target", "--verbose"]),
        ("grid", ["--preset", "--seeds", "--strategies", "--regimes", "--dedup_target", "--collect_only", "--verbose"]),
        ("report", ["--out"]),
    ],
)
def test_every_subcommand_has_help_and_config(command, options, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for opt in [*options, "--config", "--print_config"]:
        assert opt in text, opt


def test_study_data_counts_and_overlap():
    cfg = replace(PRESETS["cpu-small"], data_dir=str(real_data_dir()), source_train_size=100, target_train_size=None)
    raw = load_study_data(cfg)
    assert raw.counts["target_test"] == 1066 and raw.counts["target_test_overlap"] == 761  # 71% occur in SST-2 train
    assert raw.counts["target_train"] == 8530
    assert (raw.counts["target_val"], raw.counts["target_val_dedup"]) == (1066, 280)  # rates are chosen on the 280
    dedup = load_study_data(replace(cfg, dedup_target=True))
    assert dedup.counts["target_train_removed_as_overlap"] == 4090  # 48% of RT train occurs in SST-2 train
    assert dedup.counts["target_train"] == 8530 - 4090


def test_grid_via_cli_writes_tables_resumes_and_reruns_from_saved_config(tmp_path, capsys):
    data = real_or_invented_data_dir(tmp_path / "data")
    out = tmp_path / "grid"
    args = ["grid", "--preset", "tiny", "--out", str(out), "--data-dir", str(data)]
    main(args)
    printed = capsys.readouterr().out
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert [(r["regime"], r["strategy"]) for r in summary] == [("under", "full"), ("under", "inflection-lora")]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["strategy"] for r in rows] == ["full", "inflection-lora"]
    assert "| UNDER | inflection-lora |" in printed and (out / "results.md").read_text() in printed
    runs = json.loads((out / "results.json").read_text())["runs"]
    lora, full = (
        next(r for r in runs if r["strategy"] == "inflection-lora"),
        next(r for r in runs if r["strategy"] == "full"),
    )
    assert lora["trainable_params"] < full["trainable_params"] / 100
    assert len(lora["layers"]) == 2 and lora["reason"].startswith("SKI")
    assert (lora["injected_at_step"], lora["diagnosis_step"]) == (0, PRESETS["tiny"].diagnose_steps)
    assert (full["injected_at_step"], full["diagnosis_step"]) == (None, None)
    assert full["source"] == lora["source"] == "../../../source/under/model"  # relative to the run folder
    assert 0.0 <= lora["test_acc"] <= 1.0 and 0.0 <= lora["test_acc_dedup"] <= 1.0
    for run_dir in (out / "under" / "full" / "seed0", out / "under" / "inflection-lora" / "seed0"):
        assert (run_dir / "config.json").is_file() and list((run_dir / "tb").glob("events.out.tfevents.*"))
    _saved_weights_reproduce_the_runs(out, full, lora, data)
    # a re-run skips finished cells
    stamp = (out / "under" / "full" / "seed0" / "metrics.json").stat().st_mtime_ns
    start = time.perf_counter()
    main(args)
    assert time.perf_counter() - start < 30
    assert (out / "under" / "full" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    # the resolved config can be saved and re-run
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code == 0
    saved = tmp_path / "grid.yaml"
    saved.write_text(capsys.readouterr().out)
    assert "preset: tiny" in saved.read_text()
    main(["grid", "--config", str(saved)])
    assert (out / "results.md").is_file()


def _saved_weights_reproduce_the_runs(out: Path, full: dict, lora: dict, data: Path) -> None:
    """Each run's saved weights, loaded back the way a user would, give its recorded test accuracy."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lightning_inflect.experiments.models import evaluate

    cfg = replace(PRESETS["tiny"], data_dir=str(data))
    test = load_study_data(cfg).target_test
    source_dir = out / "source" / "under" / "model"
    full_dir = out / "under" / "full" / "seed0" / full["weights"]
    lora_dir = out / "under" / "inflection-lora" / "seed0" / lora["weights"]
    assert (full["weights"], lora["weights"]) == ("model", "inflect_adapters")
    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    source = AutoModelForSequenceClassification.from_pretrained(source_dir).eval()
    tuned = AutoModelForSequenceClassification.from_pretrained(full_dir).eval()
    adapted = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(source_dir), lora_dir)
    adapted.eval()
    assert evaluate(tuned, tokenizer, test, cfg) == full["test_acc"]
    assert evaluate(adapted, tokenizer, test, cfg) == lora["test_acc"]
    batch = tokenizer([t for t, _ in test[:8]], padding=True, return_tensors="pt")
    with torch.no_grad():
        before, after_full, after_lora = (m(**batch).logits for m in (source, tuned, adapted))
    assert not torch.allclose(before, after_full) and not torch.allclose(before, after_lora)  # the training is in them


def test_bad_cli_values_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["grid", "--preset", "huge"])
    assert "huge" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["transfer", "--strategy", "magic-lora", "--source_ckpt", "x"])
    assert "magic-lora" in capsys.readouterr().err


def test_demo_on_the_synthetic_task(tmp_path):
    from lightning_inflect.experiments.demo import demo_data, run_demo

    data = demo_data(tmp_path / "no-data-here", sizes=(48, 48, 32))
    assert not data.real and data.description.startswith("No data directory")
    summary = run_demo(out=tmp_path / "demo", source_steps=3, target_steps=6, every_n_steps=1, data=data)
    assert summary["injected_at_step"] == 2 and len(summary["layers"]) == 2
    assert summary["trainable_after"] < summary["trainable_before"] / 100
    assert 0.0 <= summary["target_acc_before"] <= 1.0 and 0.0 <= summary["target_acc_after"] <= 1.0
    assert Path(summary["adapters"], "adapter_model.safetensors").is_file()
    assert list(Path(summary["tensorboard"]).glob("events.out.tfevents.*"))
    written = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert written["layers"] == summary["layers"]
    assert (written["tensorboard"], written["adapters"], written["report"]) == ("tb", "inflect_adapters", "report.html")


def test_demo_metrics_name_no_machine_path(tmp_path):
    from lightning_inflect.experiments.demo import DemoData, _portable

    (tmp_path / "data").mkdir()
    data = DemoData([], [], [], f"Data from {tmp_path / 'data'}: SST-2 train", True, str(tmp_path / "data"))
    summary = {"adapters": None, "tensorboard": str(tmp_path / "out" / "tb"), "report": None, "data": data.description}
    (tmp_path / "out" / "tb").mkdir(parents=True)
    assert _portable(summary, data, tmp_path / "out") == {
        "adapters": None, "tensorboard": "tb", "report": None, "data": "Data from ../data: SST-2 train"
    }  # fmt: skip


def test_interrupted_grid_leaves_a_partial_table_and_resumes(tmp_path, monkeypatch):
    """The grid's bookkeeping alone: the training functions are replaced by ones that write a metrics.json."""
    data_dir = write_invented_data(tmp_path / "data")  # the training is faked: the sentences play no part
    cfg = replace(PRESETS["tiny"], data_dir=str(data_dir), strategies=["full", "shallow", "uniform-lora"])
    calls = []

    def fake_transfer(cfg, strategy, seed, source_dir, run_dir, data=None, **kw):
        calls.append(strategy)
        if strategy == "shallow" and len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the grid during its second cell
        metrics = {"strategy": strategy, "seed": seed, "layers": None, "trainable_params": 10 * len(calls),
                   "train_seconds": 1.0, "test_acc": 0.5 + 0.1 * len(calls), "test_acc_dedup": 0.5,
                   "counts": data.counts}  # fmt: skip
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(source, "train_source", lambda cfg, regime, out, data=None, **kw: out / "source")
    monkeypatch.setattr(transfer, "run_transfer", fake_transfer)
    out = tmp_path / "grid"
    with pytest.raises(KeyboardInterrupt):
        grid.run_grid(cfg, out, progress=False)
    partial = json.loads((out / "results.json").read_text())
    assert (partial["complete"], partial["cells_done"], partial["cells_total"]) == (False, 1, 3)
    assert [r["strategy"] for r in partial["runs"]] == ["full"]
    assert (out / "results.md").read_text().startswith("**Partial: 1 of 3 cells finished.**")
    grid.run_grid(cfg, out, progress=False)  # resumes: the finished cell is read back, not re-run
    assert calls == ["full", "shallow", "shallow", "uniform-lora"]
    final = json.loads((out / "results.json").read_text())
    assert (final["complete"], final["cells_done"]) == (True, 3)
    assert [r["test_acc"] for r in final["runs"]] == pytest.approx([0.6, 0.8, 0.9])
    assert "Partial" not in (out / "results.md").read_text()


def test_collect_only_builds_the_table_from_finished_cells_and_trains_nothing(tmp_path, monkeypatch, capsys):
    def must_not_run(*args, **kwargs):
        raise AssertionError("collect_only trained something")

    monkeypatch.setattr(transfer, "run_transfer", must_not_run)
    monkeypatch.setattr(source, "train_source", must_not_run)
    out = tmp_path / "grid"
    args = ["grid", "--preset", "tiny", "--out", str(out), "--collect-only", "--seeds", "[0, 1]"]
    with pytest.raises(FileNotFoundError, match="No finished cell"):
        main(args)
    accs = {("full", 0): 0.5, ("full", 1): 0.7, ("inflection-lora", 1): 0.9}  # one cell of four missing
    for (strategy, seed), acc in accs.items():
        run = out / "under" / strategy / f"seed{seed}"
        run.mkdir(parents=True)
        metrics = {"strategy": strategy, "seed": seed, "layers": [1], "trainable_params": 7, "train_seconds": 60.0,
                   "test_acc": acc, "test_acc_dedup": acc / 2, "counts": {}}  # fmt: skip
        (run / "metrics.json").write_text(json.dumps(metrics))
    main(args)
    summary = json.loads((out / "results.json").read_text())
    assert (summary["complete"], summary["cells_done"], summary["cells_total"]) == (False, 3, 4)
    full = next(r for r in summary["summary"] if r["strategy"] == "full")
    assert full["test_acc_mean"] == pytest.approx(0.6) and full["test_acc_std"] == pytest.approx(0.1414, abs=1e-4)
    text = (out / "results.md").read_text()
    assert text.startswith("**Partial: 3 of 4 cells finished.**") and "Summed run time 3.0 min" in text
    assert text in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (["--dedup-target"], "true"),
        (["--dedup-target", "false"], "false"),
        (["--dedup-target=true"], "true"),
        ([], "false"),
    ],
)
def test_boolean_options_work_as_bare_flags(flag, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["grid", "--preset", "tiny", *flag, "--print_config"])
    assert exit_info.value.code == 0
    assert f"dedup_target: {expected}" in capsys.readouterr().out


def test_source_then_transfer_commands(tmp_path, capsys):
    """`source` saves a model, `transfer` fine-tunes it with one strategy; both show a progress bar."""
    import torch
    from transformers import AutoModelForSequenceClassification

    data = real_or_invented_data_dir(tmp_path / "data")
    study, run = tmp_path / "study", tmp_path / "run"
    main(["source", "--regime", "under", "--preset", "tiny", "--out", str(study), "--data-dir", str(data)])
    captured = capsys.readouterr()
    model_dir = study / "source" / "under" / "model"
    assert f"Source model (under): {model_dir}" in captured.out and "Epoch 0: 100%" in captured.out
    info = json.loads((model_dir.parent / "metrics.json").read_text())
    config = json.loads((model_dir.parent / "config.json").read_text())
    assert (config["regime"], config["source_train_size"]) == ("under", 64)
    assert not Path(config["data_dir"]).is_absolute()  # no machine path: relative to the run folder
    assert (model_dir.parent / config["data_dir"]).resolve() == data.resolve()
    losses = _tb_scalars(model_dir.parent / "tb", "train_loss")
    assert len(losses) == 4 // PRESETS["tiny"].monitor_every and all(0 < v < 5 for v in losses)
    assert (info["epochs"], info["steps"]) == (1, 4)  # 64 sentences in batches of 16
    assert 0.0 <= info["sst2_dev_acc"] <= 1.0
    args = ["transfer", "--strategy", "shallow", "--source-ckpt", str(model_dir), "--preset", "tiny"]
    main([*args, "--out", str(run), "--data-dir", str(data), "--dedup-target"])
    captured = capsys.readouterr()
    bar, printed = captured.out.rsplit("\n{\n", 1)
    assert "Epoch 0: 100%" in bar
    metrics = json.loads("{\n" + printed)
    assert metrics == {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k != "scores"}
    assert metrics["counts"]["target_train_removed_as_overlap"] > 0 and metrics["counts"]["target_train"] == 32
    source = AutoModelForSequenceClassification.from_pretrained(model_dir)
    shallow = ("bert.encoder.layer.4.", "bert.encoder.layer.5.", "classifier.")  # tiny preset: k = 2 of 6 blocks
    expected = sum(p.numel() for n, p in source.named_parameters() if n.startswith(shallow))
    assert metrics["trainable_params"] == expected and metrics["layers"] == [4, 5]
    tuned = AutoModelForSequenceClassification.from_pretrained(run / "model")
    for (name, before), after in zip(source.state_dict().items(), tuned.state_dict().values()):
        assert torch.equal(before, after) != name.startswith(shallow), name  # only the shallow part changed


def test_report_takes_its_folder_as_a_bare_word(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="holds neither"):  # parsed as --path: the report looked there
        main(["report", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path), "extra"])
    assert "extra" in capsys.readouterr().err


def _tb_scalars(folder: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = folder.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]
