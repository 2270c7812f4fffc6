"""InjectionCallback under DDP: two CPU processes (gloo), injection mid-training, ranks stay identical."""

import os
import subprocess
import sys
from pathlib import Path

import torch


def test_ddp_injection_mid_training(tmp_path):
    script = Path(__file__).parent / "scripts" / "ddp_inject.py"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    # every rank injected the same blocks: rank 0's choice, broadcast
    assert r0["layers"] == r1["layers"] == r0["local_layers"]
    assert len(r0["layers"]) == 1
    # the DDP wrapper was rebuilt around the new trainable set
    assert r0["wrapped_trainable"] == r1["wrapped_trainable"]
    assert any("lora_A" in n for n in r0["wrapped_trainable"])
    assert all("lora_" in n or "classifier" in n for n in r0["wrapped_trainable"])
    # all ranks hold identical weights, and the adapters learned
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    lora_b = [v for k, v in r0["state"].items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    # exported once, by rank zero
    assert r0["export"] is not None and r1["export"] is None
