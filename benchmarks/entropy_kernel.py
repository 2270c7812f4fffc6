"""Cost of exact per-query attention entropy for one layer, against one attention call.

For each sequence length T, random queries ``(batch, heads, T, head_dim)`` and keys/values
``(batch, kv_heads, T, head_dim)`` (grouped-query attention, causal by default) are timed through:

- ``sdpa``: ``F.scaled_dot_product_attention(q, k, v, is_causal=..., enable_gqa=True)`` in the input dtype, the
  attention call the model makes anyway (the unit of the ratios);
- ``fused``: ``entropy_from_qk(..., method="fused")`` (one fused kernel returning the log-sum-exp, float32);
- ``exact``: ``entropy_from_qk(..., method="exact")`` (explicit scores in query chunks sized from the memory budget);
- ``v0 chunked``: the first version of ``entropy_from_qk`` (keys repeated per head, 256-query chunks);
- ``naive``: the eager anchor, full ``softmax(q k^T)`` then ``-(p log p).sum()``.

Each is run ``--warmup`` times, then timed ``--repeats`` times (CUDA synchronised around each call); the table gives
the median. Memory: on CUDA the peak allocated during the call above what was allocated before; on CPU the
theoretical size of the largest score block the method holds (``batch * heads * rows * T`` elements of float32),
since CPU peak memory is not tracked per call. ``err`` is the largest absolute difference (nats) from a float64
reference computed by the exact path in float64.

Usage, from the repository root::

    python benchmarks/entropy_kernel.py                              # CPU, float32, T = 512, 2048
    python benchmarks/entropy_kernel.py --device cuda --dtype bfloat16 --seq-lens 2048,8192
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

if importlib.util.find_spec("lightning_inflect") is None:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_inflect.functional.entropy import _EXACT_BLOCKS, DEFAULT_MEMORY_BUDGET, entropy_from_qk

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time exact attention entropy against one SDPA call, per layer.")
    parser.add_argument("--seq-lens", default="512,2048", help="comma-separated sequence lengths T")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=14)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--no-causal", action="store_true", help="full (bidirectional) attention")
    parser.add_argument("--memory-budget", type=int, default=DEFAULT_MEMORY_BUDGET, help="bytes, exact path")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's")
    parser.add_argument("--skip-naive-above", type=int, default=8192, help="skip the naive anchor beyond this T")
    return parser.parse_args(argv)


def v0_entropy_from_qk(query, key, scaling, is_causal, query_chunk=256):
    """The first version's algorithm: repeated keys, fixed query chunks, logsumexp - sum p s per chunk."""
    _, h, q_len, _ = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    if kv_heads != h:
        key = key.repeat_interleave(h // kv_heads, dim=1)
    k_t = key.float().transpose(-1, -2)
    ents = []
    for start in range(0, q_len, query_chunk):
        stop = min(start + query_chunk, q_len)
        s = torch.matmul(query[:, :, start:stop].float(), k_t) * scaling
        keep = torch.ones_like(s, dtype=torch.bool)
        if is_causal:
            keep = keep & (torch.arange(start, stop, device=s.device)[:, None] >= torch.arange(k_len, device=s.device))
        s = s.masked_fill(~keep, float("-inf"))
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        p = torch.exp(s - lse)
        ents.append(lse.squeeze(-1) - (p * s.masked_fill(~keep, 0.0)).sum(-1))
    return torch.cat(ents, dim=-1)


def naive_entropy(query, key, scaling, is_causal):
    """Eager anchor: the full probability matrix, then -(p log p).sum()."""
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    s = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling
    if is_causal:
        t_q, t_k = s.shape[-2], s.shape[-1]
        s = s.masked_fill(torch.ones(t_q, t_k, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    p = torch.softmax(s, dim=-1)
    return -torch.special.xlogy(p, p).sum(-1)


def measure(
    fn: Callable[[], torch.Tensor], device: torch.device, warmup: int, repeats: int
) -> tuple[float, int | None]:
    """Median milliseconds and (CUDA) peak bytes allocated during one call above the bytes allocated before."""
    for _ in range(warmup):
        fn()
    cuda = device.type == "cuda"
    times = []
    peak = None
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
            peak = max(peak or 0, torch.cuda.max_memory_allocated(device) - base)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), peak


def cases(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float, causal: bool, budget: int, include_naive: bool
) -> list[tuple[str, Callable[[], torch.Tensor], int | None]]:
    """``(name, call, theoretical score-block bytes)`` for each method."""
    b, h, t, _ = q.shape
    block = b * h * t * 4  # one float32 score row across batch and heads
    exact_rows = max(1, min(t, budget // (b * h * t * (_EXACT_BLOCKS * 4 + 1))))
    sdpa = functools.partial(F.scaled_dot_product_attention, q, k, v, is_causal=causal, enable_gqa=True)
    fused = functools.partial(entropy_from_qk, q, k, scaling, None, causal, method="fused")
    exact = functools.partial(entropy_from_qk, q, k, scaling, None, causal, memory_budget=budget, method="exact")
    out: list[tuple[str, Callable[[], torch.Tensor], int | None]] = [
        ("sdpa", sdpa, None),
        ("fused", lambda: fused()[0], 0),
        ("exact", lambda: exact()[0], exact_rows * block),
        ("v0 chunked", functools.partial(v0_entropy_from_qk, q, k, scaling, causal), min(t, 256) * block),
    ]
    if include_naive:
        out.append(("naive", functools.partial(naive_entropy, q, k, scaling, causal), t * block))
    return out


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    causal = not args.no_causal
    b, h, kv, d = args.batch, args.heads, args.kv_heads, args.head_dim
    scaling = d**-0.5
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"# entropy kernel: batch {b}, {h} query / {kv} kv heads, head_dim {d}, {'causal' if causal else 'full'},"
        f" {args.dtype}, {device.type} ({torch.__version__}, {torch.get_num_threads()} threads),"
        f" median of {args.repeats} after {args.warmup} warm-up, load average {os.getloadavg()[0]:.1f} at start"
    )
    mem_title = "peak MiB" if device.type == "cuda" else "score-block MiB (theory)"
    print()
    print(f"| T | method | ms | x SDPA | {mem_title} | err vs f64 (nats) |")
    print("|---:|---|---:|---:|---:|---:|")
    for t in [int(x) for x in args.seq_lens.split(",") if x]:
        q = torch.randn(b, h, t, d, device=device, dtype=dtype)
        k = torch.randn(b, kv, t, d, device=device, dtype=dtype)
        v = torch.randn(b, kv, t, d, device=device, dtype=dtype)
        ref, _ = entropy_from_qk(q.double(), k.double(), scaling, None, causal, method="exact")
        methods = cases(q, k, v, scaling, causal, args.memory_budget, include_naive=t <= args.skip_naive_above)
        base_ms = None
        for name, fn, theory in methods:
            with torch.no_grad():
                ms, peak = measure(fn, device, args.warmup, args.repeats)
                err = "-" if name == "sdpa" else f"{(fn().double() - ref).abs().max().item():.1e}"
            base_ms = ms if base_ms is None else base_ms
            memory = mib(peak) if device.type == "cuda" else ("-" if theory is None else mib(theory))
            print(f"| {t} | {name} | {ms:,.2f} | {ms / base_ms:.1f} | {memory} | {err} |", flush=True)


if __name__ == "__main__":
    main()
