"""One strategy registry, read by the harness, the command line and the report."""

import json
import re
from typing import get_args

import pytest

from lightning_inflect.cli import _commands, main
from lightning_inflect.experiments.config import PRESETS, ExperimentConfig, with_overrides
from lightning_inflect.experiments.strategies import (
    STRATEGIES,
    Strategy,
    get_strategy,
    register_strategy,
    strategy_names,
)

BUILT_IN = {
    # name: (lora, selective, what trains, selector class)
    "full": (False, False, "whole model", None),
    "shallow": (False, False, "unfrozen fixed blocks", None),
    "uniform-lora": (True, False, "LoRA on fixed blocks", None),
    "inflection-lora": (True, True, "LoRA on diagnosed blocks", "SKI"),
    "inflection-band-lora": (True, True, "LoRA on diagnosed blocks", "SKI"),
    "cka-lora": (True, True, "LoRA on diagnosed blocks", "CKAImportance"),
    "grad-lora": (True, True, "LoRA on diagnosed blocks", "GradientProbe"),
    "random-lora": (True, True, "LoRA on diagnosed blocks", "RandomK"),
}
NEW = Strategy("first-block-lora", "LoRA on the first block", lora=True, blocks=lambda cfg, n: ([0], "the first block"))


@pytest.fixture
def new_strategy(monkeypatch):
    """A strategy registered for one test (the registry is restored afterwards)."""
    monkeypatch.setitem(STRATEGIES, NEW.name, NEW)
    return NEW


def test_built_in_strategies():
    assert strategy_names() == list(BUILT_IN)
    cfg = ExperimentConfig()
    for name, (lora, selective, kind, selector) in BUILT_IN.items():
        spec = get_strategy(name)
        assert (spec.lora, spec.selective, spec.kind, spec.selector_name(cfg)) == (lora, selective, kind, selector)
    assert ExperimentConfig().strategy_list() == list(BUILT_IN)  # the default grid: every registered strategy


def test_ski_variants_select_by_top_k_and_by_local_maxima_with_a_band():
    """The two SKI strategies read the same diagnosis and choose differently when the scores have one peak."""
    cfg = ExperimentConfig(k=2, diagnose_steps=1)
    history = {
        "attn_entropy": {"steps": [3], "values": [[2.0, 1.0, 1.5, 2.0, 2.0, 2.0]]},
        "act_grad_norm": {"steps": [3], "values": [[1.0, 0.1, 0.5, 1.0, 1.0, 1.0]]},
    }
    top_k = get_strategy("inflection-lora").selector(cfg, 0).select(history, num_layers=6)
    band = get_strategy("inflection-band-lora").selector(cfg, 0).select(history, num_layers=6)
    assert top_k.layers == (1, 2) and "top-2" in top_k.reason
    assert band.layers == (0, 1, 2) and "local maxima at blocks 1" in band.reason and "band +-1" in band.reason


def test_cli_choices_are_the_registry():
    commands = _commands()
    assert get_args(commands["transfer"].__annotations__["strategy"]) == tuple(strategy_names())
    strategies_type = commands["grid"].__annotations__["strategies"]
    assert get_args(get_args(strategies_type)[0])[0].__args__ == tuple(strategy_names())  # list[Literal[...]] | None


def test_a_new_strategy_shows_up_everywhere(new_strategy, tmp_path, capsys):
    # the command line: a choice of `transfer --strategy` and of `grid --strategies`
    with pytest.raises(SystemExit):
        main(["transfer", "--help"])
    assert "first-block-lora" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["grid", "--preset", "tiny", "--strategies", "[full, first-block-lora]", "--print_config"])
    assert exit_info.value.code == 0 and "- first-block-lora" in capsys.readouterr().out
    # the harness: the default grid runs it, a run trains what it says
    assert ExperimentConfig().strategy_list()[-1] == "first-block-lora"
    metrics = _tiny_transfer("first-block-lora", tmp_path / "run")
    assert (metrics["layers"], metrics["reason"], metrics["injected_at_step"]) == ([0], "the first block", 0)
    lora_and_head = 2 * 384 * 8 * 2 + 384 * 2 + 2  # r=8 on query and value of one MiniLM block, and the head
    assert metrics["trainable_params"] == lora_and_head
    # the report: its name, what trains, ordered and labelled as registered
    from lightning_inflect.experiments.report import strategy_label, write_report

    assert strategy_label("first-block-lora") == "LoRA on the first block"
    grid = tmp_path / "grid"
    grid.mkdir()
    summary = [{"regime": "under", "strategy": "first-block-lora", "seeds": 1, "test_acc_mean": 0.5}]
    (grid / "results.json").write_text(json.dumps({"runs": [], "summary": summary}))
    page = write_report(grid).read_text(encoding="utf-8")
    assert re.search(r"<td>first-block-lora</td><td>LoRA on the first block</td><td>LoRA on fixed blocks</td>", page)


def _tiny_transfer(strategy: str, run_dir):
    """A two-step transfer run of the real MiniLM on a few synthetic sentences, no monitors, nothing saved."""
    from lightning_inflect.experiments import minilm_path
    from lightning_inflect.experiments.study_data import StudyData
    from lightning_inflect.experiments.synthetic import synthetic_task
    from lightning_inflect.experiments.transfer import run_transfer

    train, test = synthetic_task("restaurant", 32, seed=1), synthetic_task("restaurant", 8, seed=2)
    data = StudyData(synthetic_task("film", 8), train, test, test, {"target_train": 32})
    cfg = with_overrides(PRESETS["tiny"], monitor_every=0, save_weights=False, accelerator="cpu")
    return run_transfer(cfg, strategy, 0, minilm_path(), run_dir, data)


def test_an_unknown_strategy_is_refused_with_the_registered_ones(tmp_path, capsys):
    listed = re.escape(str(strategy_names()))
    with pytest.raises(ValueError, match=rf"one of the registered strategies {listed} but got 'magic-lora'"):
        get_strategy("magic-lora")
    with pytest.raises(ValueError, match=rf"{listed} but got 'magic-lora'"):
        ExperimentConfig(strategies=["full", "magic-lora"])
    with pytest.raises(ValueError, match=rf"{listed} but got 'magic-lora'"):
        _tiny_transfer("magic-lora", tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(SystemExit):
        main(["transfer", "--strategy", "magic-lora", "--source_ckpt", "x"])
    err = capsys.readouterr().err
    assert "magic-lora" in err and all(name in err for name in strategy_names())


def test_strategy_definitions_are_checked(new_strategy):
    with pytest.raises(ValueError, match="lower case words joined by '-'"):
        Strategy("My_LoRA", "x", lora=True, blocks=lambda cfg, n: ([0], ""))
    with pytest.raises(ValueError, match="`selector` or a `blocks` rule but got both"):
        Strategy("both", "x", selector=lambda cfg, seed: None, blocks=lambda cfg, n: ([0], ""))
    with pytest.raises(ValueError, match="LoRA strategy 'nothing' to have a `selector` or a `blocks` rule"):
        Strategy("nothing", "x", lora=True)
    with pytest.raises(ValueError, match="`display_name` to be a non-empty str"):
        Strategy("no-label", "")
    with pytest.raises(ValueError, match="'first-block-lora' is registered already"):
        register_strategy(NEW)
    with pytest.raises(TypeError, match="`strategy` to be a `Strategy` but got str"):
        register_strategy("full")
    assert register_strategy(NEW, replace=True) is NEW
