"""InjectionCallback under DDP and FSDP2 (two CPU processes, gloo): the block it picks by its own measure of the
full gradient, the injection keeps the logits, trains exactly the adapters and the head with gradients synchronised
over the ranks, and a run resumed from a checkpoint taken after it (FSDP2: sharded and full) ends with the weights
and the monitors' histories of the uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import NO_DROPOUT, tiny_model
from safetensors.torch import load_file

from lightning_inflect.injection import InjectionRecord, inject_lora

SCRIPT = Path(__file__).parent / "scripts" / "dist_inject.py"


@pytest.fixture(scope="module", params=["ddp", "fsdp2"])
def runs(request, tmp_path_factory) -> tuple[str, Path, dict[str, list[dict]]]:
    out = tmp_path_factory.mktemp(request.param)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), request.param, str(out)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    fits = {
        n: [torch.load(out / f"{n}_rank{r}.pt", weights_only=False) for r in (0, 1)]
        for n in ("straight", "sharded", "full")
    }
    return request.param, out, fits


def test_the_injection_keeps_the_logits_and_trains_exactly_the_adapters_and_the_head(runs):
    kind, _, fits = runs
    r0, r1 = fits["straight"]
    assert r0["record"] == r1["record"] and len(r0["record"]["layers"]) == 1  # rank 0's choice on every rank
    block = r0["record"]["layers"][0]
    torch.testing.assert_close(r0["after"], r0["before"], rtol=0, atol=1e-6)  # unchanged at the injection step
    for rank in (r0, r1):
        trainable = rank["trainable"]
        assert rank["optimizer"] == trainable  # the optimizer holds exactly the trainable set
        assert all(f"layer.{block}.attention.self." in n and ".lora_" in n for n in trainable if "classifier" not in n)
        assert sum("lora_" in n for n in trainable) == 4 and sum("classifier" in n for n in trainable) == 2
    if kind == "fsdp2":
        assert r0["lora_sharded"] and r1["lora_sharded"]  # FSDP2 owns the adapters: sharded with their block
    for key, value in r0["final"].items():  # every rank holds the same (whole) weights, adapters included
        assert torch.equal(value, r1["final"][key]), key
    lora_b = {k: v for k, v in r0["final"].items() if "lora_B" in k}
    assert all((v.abs().sum() > 0) == (f"layer.{block}." in k) for k, v in lora_b.items())  # dormant ones stay 0


def _one_process(record: dict | None, state: dict, batches: list[dict]) -> torch.nn.Module:
    """The model with ``state`` (FSDP2's dormant adapters outside the ``record``'s block dropped: their B is 0) after
    a backward of the mean loss over the union of the ranks' ``batches``, in one process."""
    model = tiny_model("bert", **NO_DROPOUT)
    chosen = "no block"
    if record is not None:
        inject_lora(model, InjectionRecord.from_dict(record))
        chosen = f"layer.{record['layers'][0]}."
    kept = {}
    for key, value in state.items():
        if chosen not in key and ".lora_" in key:
            continue
        kept[key if chosen in key else key.replace(".base_layer.", ".")] = value
    model.load_state_dict(kept)
    assert not torch.equal(batches[0]["input_ids"], batches[1]["input_ids"])  # the ranks see other examples
    model(**{k: torch.cat([b[k] for b in batches]) for k in batches[0]}).loss.backward()  # mean of the ranks' means
    return model


def test_the_callback_picks_the_block_by_the_full_gradient_norm(runs):
    _, _, fits = runs
    r0, r1 = fits["straight"]
    model = _one_process(None, r0["state_before"], [r0["batch_before"], r1["batch_before"]])
    expected = [
        torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in block.parameters()])).item()
        for block in model.bert.encoder.layer
    ]
    torch.testing.assert_close(torch.tensor(r0["record"]["scores"]), torch.tensor(expected), rtol=1e-4, atol=1e-8)
    assert r0["record"]["layers"] == [max(range(3), key=expected.__getitem__)]


def test_the_adapters_gradients_are_those_of_one_process_over_the_union_of_the_ranks_examples(runs):
    _, _, fits = runs
    r0, r1 = fits["straight"]
    model = _one_process(r0["record"], r0["state"], [r0["batch"], r1["batch"]])  # the first step after injection
    expected = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(expected) == sorted(r0["grads"]) == sorted(r1["grads"])  # frozen parameters keep no gradient
    for name, grad in expected.items():
        torch.testing.assert_close(r0["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=name)
        assert torch.equal(r0["grads"][name], r1["grads"][name]), name


def test_a_run_resumed_after_the_injection_ends_as_the_uninterrupted_one(runs):
    kind, out, fits = runs
    straight = fits["straight"][0]
    if kind == "fsdp2":  # the first resume read a sharded checkpoint, the second a full one
        assert (out / "straight" / "step=4.ckpt").is_dir() and (out / "sharded" / "step=5.ckpt").is_file()
    for name in ("sharded", "full"):
        for rank in fits[name]:
            assert rank["restored"] and rank["record"] == straight["record"], name
            assert rank["optimizer"] == rank["trainable"] == straight["trainable"], name
            assert rank["final"].keys() == straight["final"].keys()
            assert rank["history"].keys() == straight["history"].keys()
            for metric, (steps, rows) in rank["history"].items():  # restored, then continued, as if never stopped
                assert steps == straight["history"][metric][0] == list(range(6)), (name, metric)
                torch.testing.assert_close(torch.tensor(rows), torch.tensor(straight["history"][metric][1]),
                                           rtol=1e-5, atol=1e-7, equal_nan=True, msg=f"{name} {metric}")  # fmt: skip
            for key, value in rank["final"].items():
                torch.testing.assert_close(value, straight["final"][key], rtol=1e-5, atol=1e-7, msg=f"{name} {key}")


def test_rank_zero_exports_the_chosen_adapters_whole(runs):
    _, _, fits = runs
    r0, r1 = fits["straight"]
    assert r0["export"] and r1["export"] is None
    saved = load_file(str(Path(r0["export"]) / "adapter_model.safetensors"))
    block = r0["record"]["layers"][0]
    expected = {
        f"base_model.model.{k.replace('.inflect.', '.')}": v
        for k, v in r0["final"].items()
        if (f"layer.{block}." in k and ".lora_" in k) or k.startswith("classifier.")
    }
    assert sorted(saved) == sorted(expected)  # the chosen block's adapters and the head; no dormant adapter
    for key, value in expected.items():
        assert torch.equal(saved[key], value), key
