"""The monitors under DDP and FSDP2 (two CPU processes, gloo): every logged value equals one process over the union
of the ranks' examples, every rank holds the same history, and each monitor makes one collective per logging step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import ClsModule, tiny_model
from scripts.dist_monitors import LR, all_monitors, peaked_bert

from lightning_inflect.capture.ranks import cat_over_ranks, split_by_placement, sum_over_ranks, world_size
from lightning_inflect.names import DEFAULT_PREFIX, OVERHEAD_MS, layer_key, run_key

SCRIPT = Path(__file__).parent / "scripts" / "dist_monitors.py"


def _launch(kind: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    return subprocess.run([sys.executable, str(SCRIPT), kind, str(out)], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


def _run_two_ranks(kind: str, out: Path) -> list[dict]:
    proc = _launch(kind, out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_tensor_parallelism_is_refused_at_setup(tmp_path):
    proc = _launch("tp", tmp_path)
    assert proc.returncode != 0
    assert "has tensor_parallel_size=2: ranks that share examples would be counted twice" in proc.stderr
    assert not list(tmp_path.glob("rank*.pt"))


def _one_process(batches: list[dict]) -> dict[str, list[list[float]]]:
    """The same model, monitors and optimizer on one process, each step's batch the union of the ranks' batches."""
    torch.set_num_threads(1)
    pl.seed_everything(0)
    monitors = all_monitors()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=len(batches), callbacks=monitors, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer.fit(ClsModule(peaked_bert(), lr=LR), loader)
    return {m: h.rows for mon in monitors for m, h in mon.history.items()}


@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_every_value_equals_one_process_over_the_union_of_the_ranks_examples(kind, tmp_path):
    r0, r1 = _run_two_ranks(kind, tmp_path)
    union = [{k: torch.cat([a[k], b[k]]) for k in a} for a, b in zip(r0["batches"], r1["batches"])]
    assert len(union) == 3 and all(len(b["labels"]) == 8 for b in union)
    assert not torch.equal(r0["batches"][0]["input_ids"], r1["batches"][0]["input_ids"])  # ranks see other examples
    reference = _one_process(union)
    assert sorted(reference) == sorted(r0["history"]) == sorted(r1["history"])
    for metric, rows in reference.items():
        expected = torch.tensor(rows, dtype=torch.float64)
        assert r0["history"][metric] == r1["history"][metric], metric  # every rank holds the same values
        got = torch.tensor(r0["history"][metric], dtype=torch.float64)
        assert expected.shape == got.shape == (3, 3), metric
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7, msg=metric)
    # every rank has each value's latest (the history's last row) in callback_metrics, as `self.log` leaves it
    layers = {k for k in r0["callback_metrics"] if "/layer_" in k}
    assert layers == {layer_key(DEFAULT_PREFIX, m, i) for m in reference for i in range(3)}
    for rank in (r0, r1):
        assert layers | {run_key(DEFAULT_PREFIX, OVERHEAD_MS)} == set(rank["callback_metrics"])
        for metric in reference:
            for i in range(3):
                dtype, device, dim, value = rank["callback_metrics"][layer_key(DEFAULT_PREFIX, metric, i)]
                assert (dtype, device, dim) == (torch.float32, "cpu", 0)
                assert value == pytest.approx(rank["history"][metric][-1][i], rel=1e-6), (metric, i)
    # one collective per monitor and logging step (3 steps, 3 monitors), and one exchange of the probe per fit
    for rank in (r0, r1):
        calls = rank["calls"]
        assert calls.get("all_reduce", 0) + calls.get("all_gather", 0) == 3 * 3, calls
        assert calls.get("all_gather", 0) == 3 and calls.get("all_gather_object", 0) == 1, calls
        assert not calls.get("broadcast") and not calls.get("all_gather_into_tensor"), calls


def test_without_a_process_group_the_rank_functions_are_the_identity():
    values = torch.arange(6.0).reshape(2, 3)
    assert world_size() == 1
    assert sum_over_ranks(values) is values and cat_over_ranks(values, sizes=[2]) is values
    sharded, replicated = split_by_placement([values])
    assert sharded == [] and replicated[0] is values


def test_a_probe_taken_on_other_ranks_resumes_only_with_as_many_ranks():
    from lightning_inflect.architectures import find_layers
    from lightning_inflect.core.session import ProbeSession

    model = tiny_model("bert")
    session = ProbeSession(model, "model", find_layers(model))
    batch = {"input_ids": torch.ones(3, 5, dtype=torch.long)}
    with pytest.raises(RuntimeError, match=r"training batches of 2 ranks, but this run has 1.*`probe=`"):
        session.set_probe({"ranks": [[batch], [batch]]})
    session.set_probe({"ranks": [[batch]]})
    assert session.rank_sizes == [[3]] and session.probe_state() == {"ranks": [[batch]]}
    assert torch.equal(session.probe_batches[0]["input_ids"], batch["input_ids"])


@pytest.mark.parametrize("name", ["DeepSpeedStrategy", "FSDPStrategy"])
def test_deepspeed_and_fsdp1_are_refused_at_setup_with_the_reason_and_the_fix(name):
    from types import SimpleNamespace

    import lightning.pytorch.strategies as strategies

    from lightning_inflect import InjectionCallback

    strategy = object.__new__(getattr(strategies, name))  # neither can be built here (no deepspeed, no CUDA)
    trainer = SimpleNamespace(strategy=strategy)
    module = ClsModule(tiny_model("bert"))
    for monitor in all_monitors():
        with pytest.raises(NotImplementedError, match=rf"does not support {name}: .*gradient.*ModelParallelStrategy"):
            monitor.setup(trainer, module, "fit")
    with pytest.raises(NotImplementedError, match=rf"does not support {name}: .*FSDP2 .*ModelParallelStrategy"):
        InjectionCallback(layers=[0], at_step=1).setup(trainer, module, "fit")


def test_injection_under_fsdp2_refuses_tensor_parallelism_and_a_merged_export():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import ModelParallelStrategy

    from lightning_inflect import InjectionCallback

    strategy = object.__new__(ModelParallelStrategy)
    strategy._tensor_parallel_size = 2
    trainer, module = SimpleNamespace(strategy=strategy), ClsModule(tiny_model("bert"))
    with pytest.raises(NotImplementedError, match=r"tensor_parallel_size=2: use `ModelParallelStrategy\("):
        InjectionCallback(layers=[0], at_step=1).setup(trainer, module, "fit")
    strategy._tensor_parallel_size = 1
    with pytest.raises(ValueError, match=r"`export_merged=True` under FSDP2.*merge_and_unload"):
        InjectionCallback(layers=[0], at_step=1, export_merged=True).setup(trainer, module, "fit")
