"""InjectionCallback under DDP and FSDP2 (two CPU processes, gloo): the injection keeps the logits, trains exactly
the adapters and the head with gradients synchronised over the ranks, and a run resumed from a checkpoint taken
after it (FSDP2: sharded and full) ends with the weights of the uninterrupted run."""

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


def test_the_adapters_gradients_are_those_of_one_process_over_the_union_of_the_ranks_examples(runs):
    _, _, fits = runs
    r0, r1 = fits["straight"]
    record = InjectionRecord.from_dict(r0["record"])
    model = tiny_model("bert", **NO_DROPOUT)
    inject_lora(model, record)
    chosen = f"layer.{record.layers[0]}."
    state = {}  # the weights at the first step after injection; FSDP2's dormant adapters elsewhere (B = 0) dropped
    for key, value in r0["state"].items():
        if chosen not in key and ".lora_" in key:
            continue
        state[key if chosen in key else key.replace(".base_layer.", ".")] = value
    model.load_state_dict(state)
    union = {k: torch.cat([r0["batch"][k], r1["batch"][k]]) for k in r0["batch"]}
    assert not torch.equal(r0["batch"]["input_ids"], r1["batch"]["input_ids"])  # the ranks see other examples
    model(**union).loss.backward()  # the mean over the 8 examples: the mean of the ranks' means
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
