"""The monitors in the Hugging Face Trainer under DDP (two CPU processes, gloo, launched with torchrun): every logged
value equals the HF Trainer in one process over the union of the ranks' examples, every rank holds the same history,
and each monitor makes one collective per logging step, as in Lightning (tests/test_distributed_monitors.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from scripts.dist_monitors import PER_RANK, STEPS, peaked_bert
from scripts.hf_ddp_monitors import hf_args, hf_monitors
from transformers import Trainer

from lightning_inflect.integrations import transformers as hf

SCRIPT = Path(__file__).parent / "scripts" / "hf_ddp_monitors.py"


def test_hf_ddp_values_equal_one_process_over_the_union_of_the_ranks_examples(tmp_path):
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):
        env.pop(name, None)
    port = str(29600 + os.getpid() % 300)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port, str(SCRIPT),
         str(tmp_path)], capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert len(r0["batches"]) == len(r1["batches"]) == STEPS
    assert not torch.equal(r0["batches"][0]["input_ids"], r1["batches"][0]["input_ids"])  # ranks see other examples
    union = [{k: torch.cat([a[k], b[k]]) for k in a} for a, b in zip(r0["batches"], r1["batches"])]
    examples = [{k: v[i] for k, v in batch.items()} for batch in union for i in range(2 * PER_RANK)]
    torch.set_num_threads(1)
    monitors = hf_monitors()
    args = hf_args(tmp_path / "one", 2 * PER_RANK, backend=None)
    one = hf.watch(Trainer(model=peaked_bert(), args=args, train_dataset=examples, callbacks=monitors))
    one.train()
    reference = {m: h.rows for mon in monitors for m, h in mon.history.items()}
    assert sorted(reference) == sorted(r0["history"]) == sorted(r1["history"])
    for metric, rows in reference.items():
        assert r0["history"][metric] == r1["history"][metric], metric  # every rank holds the same values
        got = torch.tensor(r0["history"][metric], dtype=torch.float64)
        want = torch.tensor(rows, dtype=torch.float64)
        assert got.shape == want.shape == (STEPS, 3), metric
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7, msg=metric)
    # one collective per monitor per logging step (entropy and gradients all_reduce, CKA all_gather), plus the one
    # all_gather_object of the probe batches per fit; nothing else
    for rank in (r0, r1):
        assert rank["calls"].get("all_reduce", 0) == 2 * STEPS, rank["calls"]
        assert rank["calls"].get("all_gather", 0) + rank["calls"].get("all_gather_into_tensor", 0) == STEPS
