"""The tuned protocol: a rate per strategy chosen on validation, then the evaluation seeds; resumable at any point."""

import csv
import json
from pathlib import Path

import pytest
from _data import real_or_invented_data_dir, write_invented_data

from lightning_inflect.experiments import grid, source, transfer
from lightning_inflect.experiments.config import PRESETS, ExperimentConfig, with_overrides


def test_tuned_presets():
    for name in ("cpu-small-fair", "paper-fair"):
        cfg = PRESETS[name]
        assert cfg.tuned and len(cfg.seeds) >= 5 and cfg.tuning_seed not in cfg.seeds
        assert cfg.lr_grid("inflection-lora") == [1e-4, 3e-4, 1e-3] and cfg.lr_grid("full") == [1e-5, 3e-5, 1e-4]
        assert {"inflection-lora", "inflection-band-lora", "random-lora", "uniform-lora"} <= set(cfg.strategy_list())
        assert cfg.select_on == "val_acc_dedup" and "under" in (cfg.source_steps or {})
    for name in ("cpu-small", "paper"):  # the earlier protocol's grids stay as published
        assert not PRESETS[name].tuned and "inflection-band-lora" not in PRESETS[name].strategy_list()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"lr_grids": {"lora": [1e-4]}, "seeds": [0, 100]}, r"`tuning_seed` to differ from every evaluation seed"),
        ({"lr_grids": {"adapters": [1e-4]}}, r"keys of `lr_grids` to be one of \['lora', 'unfrozen'\]"),
        ({"lr_grids": {"lora": []}}, r"`lr_grids\['lora'\]` to be a non-empty list of rates > 0 but got \[\]"),
        (
            {"lr_grids": {"lora": [1e-4]}, "strategies": ["full"]},
            r"rates for the strategy 'full'.*Hint: add 'unfrozen'",
        ),
        ({"source_steps": {"middle": 5}}, r"keys of `source_steps` to be regimes \['under', 'over'\] but got 'middle'"),
        ({"source_steps": {"under": 0}}, r"`source_steps\['under'\]` to be an int >= 1 but got 0"),
        ({"select_on": "test_acc"}, r"`select_on` to be one of \['val_acc_dedup', 'val_acc'\] but got 'test_acc'"),
    ],
)
def test_bad_settings_are_refused_with_how_to_fix(overrides, match):
    with pytest.raises(ValueError, match=match):
        ExperimentConfig(**{"strategies": ["inflection-lora"], **overrides})


def _fake_training(monkeypatch, calls, val_by_lr, stop_at=None):
    """The grid's bookkeeping alone: source and transfer replaced by functions that write their metrics.json."""

    def fake_source(cfg, regime, out, data=None, **kw):
        folder = source.source_dir(out, regime)
        if not (folder / "metrics.json").is_file():
            calls.append(("source", regime))
            folder.mkdir(parents=True, exist_ok=True)
            acc = {"under": 0.69, "over": 0.83}[regime]
            (folder / "metrics.json").write_text(json.dumps({"regime": regime, "steps": 3, "sst2_dev_acc": acc}))
        return folder / "model"

    def fake_transfer(cfg, strategy, seed, source_dir, run_dir, data=None, *, lr=None, role="eval", **kw):
        calls.append((role, Path(source_dir).parent.name, strategy, seed, lr))
        if stop_at is not None and len(calls) == stop_at:
            (run_dir / "tb").mkdir(parents=True)  # what a killed run leaves: logs, no metrics.json
            raise KeyboardInterrupt
        assert not run_dir.exists()  # a clean folder: no leftovers of a killed attempt
        run_dir.mkdir(parents=True)
        val = val_by_lr[(strategy, lr)] + 0.001 * seed
        tested = role == "eval"
        metrics = {"strategy": strategy, "seed": seed, "role": role, "lr": lr, "layers": [1, 2] if "inflection" in
                   strategy else None, "trainable_params": 7, "train_seconds": 1.0, "val_acc": val,
                   "val_acc_dedup": val - 0.1, "test_acc": val + 0.01 * seed if tested else None,
                   "test_acc_dedup": val - 0.05 if tested else None, "counts": {"target_val_dedup": 280}}  # fmt: skip
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(source, "train_source", fake_source)
    monkeypatch.setattr(transfer, "run_transfer", fake_transfer)


def test_tuning_then_evaluation_at_the_chosen_rate_killed_and_resumed(tmp_path, monkeypatch):
    data_dir = write_invented_data(tmp_path / "data")  # the training is faked: the sentences play no part
    cfg = with_overrides(
        PRESETS["tiny"], data_dir=str(data_dir), regimes=["under", "over"], strategies=["full", "inflection-lora"],
        lr_grids={"lora": [1e-4, 1e-3], "unfrozen": [1e-5]}, seeds=[0, 1], tuning_seed=7,
    )  # fmt: skip
    val = {("full", 1e-5): 0.8, ("inflection-lora", 1e-4): 0.7, ("inflection-lora", 1e-3): 0.75}
    calls: list = []
    out = tmp_path / "grid"
    _fake_training(monkeypatch, calls, val, stop_at=11)  # killed in the third evaluation run
    with pytest.raises(KeyboardInterrupt):
        grid.run_grid(cfg, out, progress=False)
    partial = json.loads((out / "results.json").read_text())
    assert (partial["complete"], partial["tuning_done"], partial["tuning_total"], partial["cells_done"]) == (
        False, 6, 6, 2
    )  # fmt: skip
    assert (out / "results.md").read_text().startswith("**Partial: tuning 6 of 6 runs and evaluation 2 of 8 runs")
    assert (out / "over" / "full" / "seed0" / "tb").is_dir()  # the killed run's leftovers, cleaned on resume
    _fake_training(monkeypatch, calls, val)
    grid.run_grid(cfg, out, progress=False)
    # sources first, every tuning run on the tuning seed, then the evaluation seeds seed by seed at the chosen rates
    assert calls[:2] == [("source", "under"), ("source", "over")]
    tuning = [c[1:] for c in calls if c[0] == "tune"]
    rates = [("full", 1e-5), ("inflection-lora", 1e-4), ("inflection-lora", 1e-3)]
    assert tuning == [(r, s, 7, lr) for r in ("under", "over") for s, lr in rates]  # on the tuning seed only
    evals = [c[1:4] for c in calls if c[0] == "eval"]
    cells = [(r, s, seed) for seed in (0, 1) for r in ("under", "over") for s in ("full", "inflection-lora")]
    assert evals[2] == evals[3] and evals[:2] + evals[3:] == cells  # the killed run ran again, then the rest
    assert {(c[2], c[4]) for c in calls if c[0] == "eval"} == {("full", 1e-5), ("inflection-lora", 1e-3)}
    final = json.loads((out / "results.json").read_text())
    assert (final["complete"], final["cells_done"], final["tuning_done"]) == (True, 8, 6)
    choice = {(c["regime"], c["strategy"]): c["chosen_lr"] for c in final["lr_choice"]}
    assert choice == {(r, s): lr for r in ("under", "over") for s, lr in (("full", 1e-5), ("inflection-lora", 1e-3))}
    assert [s["sst2_dev_acc"] for s in final["sources"]] == [0.69, 0.83] and final["source_gap"]["ok"]
    assert {(b["seed"], tuple(b["layers"])) for b in final["blocks"]} == {(7, (1, 2)), (0, (1, 2)), (1, (1, 2))}
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert len(rows) == 14 and {r["role"] for r in rows} == {"tune", "eval"}
    assert all(r["test_acc"] == "" for r in rows if r["role"] == "tune")  # the test set plays no part in tuning
    text = (out / "results.md").read_text()
    assert (
        "Partial" not in text
        and "| UNDER | inflection-lora | 0.0001: 60.7 / 70.7; 0.001: 65.7 / 75.7 | 0.001 |" in text
    )
    # a finished grid re-runs nothing and leaves the same tables
    calls.clear()
    grid.run_grid(cfg, out, progress=False)
    assert calls == [] and json.loads((out / "results.json").read_text())["runs"] == final["runs"]


def test_a_folder_run_with_other_settings_is_refused(tmp_path, tmp_path_factory, monkeypatch):
    data_dir = write_invented_data(tmp_path_factory.mktemp("data"))  # faked training; outside the grid folder
    cfg = with_overrides(PRESETS["tiny"], data_dir=str(data_dir), lr_grids={"lora": [1e-4], "unfrozen": [1e-5]})
    _fake_training(monkeypatch, [], {("full", 1e-5): 0.8, ("inflection-lora", 1e-4): 0.7})
    grid.run_grid(cfg, tmp_path, progress=False)
    other = with_overrides(cfg, lr_grids={"lora": [3e-4], "unfrozen": [1e-5]})
    with pytest.raises(ValueError, match=r"same settings but `lr_grids` \(.*0\.0001.*there, .*0\.0003.* now\) differ"):
        grid.run_grid(other, tmp_path, progress=False)
    grid.run_grid(with_overrides(cfg, seeds=[0, 1]), tmp_path, progress=False)  # more seeds: the same protocol


def test_tiny_tuned_grid_end_to_end(tmp_path, tmp_path_factory):
    """Real MiniLM, real data (invented rows without them): UNDER by a step budget, two rates tried on the tuning
    seed, two evaluation seeds."""
    data_dir = real_or_invented_data_dir(tmp_path_factory.mktemp("data"))  # outside the grid folder
    cfg = with_overrides(
        PRESETS["tiny"], data_dir=str(data_dir), strategies=["uniform-lora", "inflection-band-lora"],
        lr_grids={"lora": [1e-4, 1e-3]}, seeds=[0, 1], source_steps={"under": 3}, monitor_every=0,
        save_weights=False,
    )  # fmt: skip
    runs = grid.run_grid(cfg, tmp_path, progress=False)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] and len(runs) == 4 and len(results["tuning"]) == 4
    (src,) = results["sources"]
    assert (src["budget"], src["steps"], src["epochs"]) == ("steps", 3, 0.75) and 0 < src["sst2_dev_acc"] < 1
    for tune in results["tuning"]:
        assert tune["role"] == "tune" and tune["test_acc"] is None and 0 <= tune["val_acc_dedup"] <= 1
    for choice in results["lr_choice"]:
        best = max(choice["rates"], key=lambda lr: (choice["val"][str(lr)], -lr))
        assert choice["chosen_lr"] == best
        assert {m["lr"] for m in runs if m["strategy"] == choice["strategy"]} == {best}
    band = [m for m in runs if m["strategy"] == "inflection-band-lora"]
    assert all(m["reason"].startswith("SKI") and "local maxima" in m["reason"] for m in band)
    verdicts = {(r["claim"], r["metric"]): r["verdict"] for r in results["verdicts"]}
    assert len(verdicts) == 3 * 2 and verdicts[("OVER benefits", "test_acc_dedup")] == "not tested"  # no OVER runs
    text = (tmp_path / "results.md").read_text()
    assert "### Paired differences" in text and "| UNDER | inflection-band-lora | " in text


def test_evaluation_in_length_order_equals_one_sentence_at_a_time(tmp_path):
    """The batched evaluation (sentences sorted by length, padded) against the naive one: each sentence alone."""
    import torch

    from lightning_inflect.experiments.data import load_rotten_tomatoes
    from lightning_inflect.experiments.minilm import load_minilm
    from lightning_inflect.experiments.models import predictions_correct

    rows = load_rotten_tomatoes(real_or_invented_data_dir(tmp_path / "data"), "validation")
    pairs = rows[::27] if len(rows) > 1000 else rows  # 40 real sentences (or 80 invented), both labels, lengths mixed
    torch.manual_seed(0)
    model, tokenizer = load_minilm(num_labels=2)
    cfg = with_overrides(PRESETS["tiny"], max_length=64)
    model.eval()
    with torch.no_grad():
        naive = [
            bool(model(**tokenizer(text, truncation=True, max_length=64, return_tensors="pt")).logits.argmax(-1) == y)
            for text, y in pairs
        ]
    assert predictions_correct(model, tokenizer, pairs, cfg) == naive
    assert 0 < sum(naive) < len(naive)  # both outcomes occur: the order of the answers is checked


def test_grid_processes_sharing_a_folder_never_train_a_run_twice(tmp_path):
    """A run locked by another process is put off and then read; a run whose holder died is trained here."""
    trained = []

    def job(seed):
        run_dir = grid.cell_dir(tmp_path, "under", "full", seed)

        def fit():
            trained.append(seed)
            return {"seed": seed}

        return (f"seed {seed}", run_dir, "under", fit)

    bar = grid._Progress(3, enabled=False)
    first, second, third = job(0), job(1), job(2)
    with grid._locked(first[1], wait=True):  # another process trains seed 0 ...
        assert grid._run_one(first, bar, wait=False) is False
        grid._run_all([second], bar)
        first[1].mkdir(parents=True)
        (first[1] / "metrics.json").write_text(json.dumps({"seed": 0, "by": "the other process"}))
    grid._run_all([first], bar)  # ... and finished it: read back, not trained again
    assert trained == [1]
    with grid._locked(third[1], wait=True):
        pass  # another process took seed 2 and died without metrics.json: its lock went with it
    grid._run_all([third], bar)
    assert trained == [1, 2] and bar.i == 3
