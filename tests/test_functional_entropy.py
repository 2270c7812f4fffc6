"""Attention entropy against a naive float64 reference and its invariants."""

import functools
import math

import pytest
import torch
from conftest import SyncCounter
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_inflect.functional import (
    attention_entropy,
    entropy_from_probs,
    entropy_from_qk,
    entropy_from_scores,
    reduce_entropy,
)
from lightning_inflect.functional import entropy as entropy_mod


def naive_entropy(scores: torch.Tensor, keep: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
    """Per-head mean entropy with explicit loops in float64: softmax over kept keys, -sum p log p."""
    b, h, q, _ = scores.shape
    out = torch.zeros(h, dtype=torch.float64)
    cnt = torch.zeros(h, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            for qi in range(q):
                if not query_mask[bi, qi]:
                    continue
                s = scores[bi, hi, qi].double()[keep[bi, hi, qi]]
                if len(s) == 0:
                    continue
                p = torch.softmax(s, 0)
                out[hi] += -(p * torch.log(p)).sum()
                cnt[hi] += 1
    return out / cnt


def test_uniform_attention_gives_log_k():
    for k in (1, 2, 7, 64):
        h, n = entropy_from_scores(torch.zeros(2, 3, 5, k))
        assert torch.allclose(h, torch.full_like(h, math.log(k)), atol=1e-6)
        assert (n == k).all()


def test_one_hot_attention_gives_zero():
    scores = torch.full((1, 1, 4, 6), -1e4)
    scores[..., 2] = 0.0
    h, _ = entropy_from_scores(scores)
    assert torch.allclose(h, torch.zeros_like(h), atol=1e-6)
    probs = torch.zeros(1, 1, 4, 6)
    probs[..., 2] = 1.0
    assert (entropy_from_probs(probs)[0] == 0).all()


def test_scores_and_probs_agree_with_naive_reference_under_padding():
    torch.manual_seed(0)
    scores = torch.randn(3, 2, 6, 6) * 4
    lengths = torch.tensor([6, 4, 2])
    key_mask = torch.arange(6)[None, :] < lengths[:, None]  # (b, k)
    keep = key_mask[:, None, None, :].expand(3, 2, 6, 6)
    ref = naive_entropy(scores, keep, key_mask)
    # bool mask path
    h, n = entropy_from_scores(scores, key_mask[:, None, None, :])
    got = reduce_entropy(h, n, key_mask).mean()
    assert torch.allclose(got, ref, atol=1e-6)
    # additive mask path (HF eager uses finfo.min)
    additive = torch.zeros(3, 1, 1, 6).masked_fill(~key_mask[:, None, None, :], torch.finfo(torch.float32).min)
    h2, n2 = entropy_from_scores(scores, additive)
    assert torch.allclose(reduce_entropy(h2, n2, key_mask).mean(), ref, atol=1e-6)
    # probabilities path
    probs = torch.softmax(scores + additive, -1)
    per_head = attention_entropy(probs, query_mask=key_mask, reduction="per_head")
    assert torch.allclose(per_head, ref, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 3),
    q=st.integers(1, 9),
    d=st.integers(1, 8),
    chunk=st.integers(1, 10),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
    temp=st.floats(0.01, 30.0),
)
def test_qk_chunked_matches_naive_reference(b, h, q, d, chunk, causal, seed, temp):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(b, h, q, d, generator=g) * temp
    key = torch.randn(b, h, q, d, generator=g)
    lengths = torch.randint(1, q + 1, (b,), generator=g)
    key_mask = torch.arange(q)[None, :] < lengths[:, None]
    ent, n = entropy_from_qk(query, key, mask=key_mask[:, None, None, :], is_causal=causal, query_chunk=chunk)
    scores = query.double() @ key.double().transpose(-1, -2) * d**-0.5
    keep = key_mask[:, None, None, :].expand(b, h, q, q).clone()
    if causal:
        keep &= torch.ones(q, q, dtype=torch.bool).tril()
    ref = naive_entropy(scores, keep, key_mask)
    got = reduce_entropy(ent, n, key_mask).mean()
    assert torch.allclose(got, ref, atol=1e-4, equal_nan=True)
    assert (ent >= 0).all() and (ent <= torch.log(n.clamp_min(1).double()) + 1e-4).all()


def test_grouped_query_heads_repeat_keys():
    torch.manual_seed(1)
    query, key = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8)
    a, _ = entropy_from_qk(query, key)
    b, _ = entropy_from_qk(query, key.repeat_interleave(2, dim=1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not divide"):
        entropy_from_qk(torch.randn(1, 3, 2, 4), torch.randn(1, 2, 2, 4))


def test_normalised_entropy_is_in_unit_interval_and_one_for_uniform():
    probs = torch.softmax(torch.randn(2, 3, 4, 4) * 3, -1)
    norm = attention_entropy(probs, normalize=True, reduction="none")
    assert (norm >= 0).all() and (norm <= 1 + 1e-6).all()
    assert torch.allclose(
        attention_entropy(torch.full((1, 1, 3, 3), 1 / 3), normalize=True), torch.tensor(1.0).double()
    )


def test_example_reduction_weighs_examples_equally():
    ent = torch.tensor([[[1.0, 1.0, 1.0, 1.0]], [[3.0, 0.0, 0.0, 0.0]]])  # (b=2, h=1, q=4)
    n = torch.full((2, 1, 4), 4)
    qmask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    assert reduce_entropy(ent, n, qmask, "token").mean().item() == pytest.approx(7 / 5)
    assert reduce_entropy(ent, n, qmask, "example").mean().item() == pytest.approx(2.0)


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="`reduction` to be one of"):
        attention_entropy(torch.ones(1, 1, 1, 1), reduction="max")
    with pytest.raises(ValueError, match="`reduction` to be one of"):
        reduce_entropy(torch.ones(1, 1, 1), torch.ones(1, 1, 1), reduction="sum")
    with pytest.raises(ValueError, match="shape"):
        attention_entropy(torch.ones(2, 2))
    with pytest.raises(ValueError, match="query_chunk"):
        entropy_from_qk(torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1), query_chunk=0)


def test_fully_masked_rows_are_nan_free():
    h, n = entropy_from_scores(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    assert torch.equal(h, torch.zeros(2)) and (n == 0).all()


# ------------------------------------------------------------------ entropy_from_qk: paths, masks, syncs, fallbacks


METHODS = ["fused", "exact"]


def reference_qk(query, key, scale=None, keep=None, bias=None, softcap=None, is_causal=False):
    """Per-query entropy and valid-key count in float64 from an explicit softmax: -(p * log p).sum()."""
    q, k = query.double(), key.double()
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = q @ k.transpose(-1, -2) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    full_keep = torch.ones(s.shape, dtype=torch.bool)
    if bias is not None:
        s = s + bias.double()
    if keep is not None:
        full_keep = full_keep & keep
    if is_causal:
        full_keep = full_keep & (torch.arange(s.shape[2])[:, None] >= torch.arange(s.shape[3])[None, :])
    p = torch.softmax(s.masked_fill(~full_keep, float("-inf")), dim=-1)
    plogp = torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))
    n = full_keep.sum(-1)
    return torch.where(n > 0, -plogp.sum(-1), torch.zeros_like(plogp[..., 0])), n


def _qk(b=2, h=4, kv=2, q_len=7, k_len=None, d=8, seed=0, temp=1.0):
    g = torch.Generator().manual_seed(seed)
    k_len = q_len if k_len is None else k_len
    return torch.randn(b, h, q_len, d, generator=g) * temp, torch.randn(b, kv, k_len, d, generator=g)


def _padding(lengths, k_len):
    return torch.arange(k_len)[None, :] < torch.tensor(lengths)[:, None]  # (batch, keys)


def _assert_matches(got, ref, atol=1e-5):
    (ent, n), (ref_ent, ref_n) = got, ref
    assert ent.shape == ref_ent.shape and torch.equal(n, ref_n)
    assert not ent.isnan().any()
    assert torch.allclose(ent.double(), ref_ent, atol=atol), (ent.double() - ref_ent).abs().max()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "case", ["none", "padding", "causal", "causal+padding", "per-query", "causal+per-query", "key-1d", "int"]
)
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (6, 1)])
def test_qk_paths_match_float64_reference(method, case, heads):
    h, kv = heads
    query, key = _qk(h=h, kv=kv, q_len=9, seed=len(case) * 10 + h + kv)
    pad = _padding([9, 5], 9)
    per_query = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(3)) > 0.4
    is_causal = case.startswith("causal")
    mask, keep = {
        "none": (None, None),
        "padding": (pad, pad[:, None, None, :]),
        "causal": (None, None),
        "causal+padding": (pad[:, None, None, :], pad[:, None, None, :]),
        "per-query": (per_query, per_query),
        "causal+per-query": (per_query, per_query),
        "key-1d": (pad[1], pad[1]),
        "int": (pad.long(), pad[:, None, None, :]),
    }[case]
    got = entropy_from_qk(query, key, None, mask, is_causal, method=method)
    _assert_matches(got, reference_qk(query, key, keep=keep, is_causal=is_causal))


@pytest.mark.parametrize("method", [*METHODS, "auto"])
def test_fully_masked_queries_give_zero_entropy_and_no_valid_keys(method):
    query, key = _qk(q_len=5)
    keep = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    keep[0, 0, 2] = False  # one query sees nothing
    keep[1] = False  # a fully padded example
    ent, n = entropy_from_qk(query, key, mask=keep, is_causal=True, method=method)
    assert not ent.isnan().any()
    assert (ent[0, :, 2] == 0).all() and (n[0, :, 2] == 0).all()
    assert (ent[1] == 0).all() and (n[1] == 0).all()
    _assert_matches((ent, n), reference_qk(query, key, keep=keep, is_causal=True))
    assert not reduce_entropy(ent, n).mean().isnan().any()


def test_additive_bias_uses_exact_path_and_matches_reference():
    query, key = _qk(h=4, kv=2, q_len=11, temp=2.0)
    slopes = torch.tensor([0.5, 0.25, 0.125, 0.0625])[None, :, None, None]
    alibi = -slopes * (torch.arange(11)[None, :] - torch.arange(11)[:, None]).abs().float()  # (1, h, q, k)
    pad = _padding([11, 6], 11)[:, None, None, :]
    mask = alibi.masked_fill(~pad, torch.finfo(torch.float32).min)
    for chunk in (None, 1, 4):
        got = entropy_from_qk(query, key, 0.3, mask, True, chunk)
        _assert_matches(got, reference_qk(query, key, 0.3, keep=pad, bias=alibi, is_causal=True))
    with pytest.raises(ValueError, match="Expected argument `method`"):
        entropy_from_qk(query, key, 0.3, mask, method="fused")


@pytest.mark.parametrize("masked_value", [-1e4, -1e9, float("-inf"), torch.finfo(torch.float16).min])
def test_large_finite_additive_mask_values_count_as_masked(masked_value):
    query, key = _qk(h=2, kv=2, q_len=8, temp=3.0)
    pad = _padding([8, 3], 8)
    additive = torch.zeros(2, 1, 1, 8).masked_fill(~pad[:, None, None, :], masked_value)
    ent, n = entropy_from_qk(query, key, mask=additive)
    ref = reference_qk(query, key, keep=pad[:, None, None, :])
    _assert_matches((ent, n), ref)
    assert (n[1] == 3).all()
    got = reduce_entropy(ent, n, pad)
    want = reduce_entropy(ref[0], ref[1], pad)
    assert torch.allclose(got.normalized_mean(), want.normalized_mean(), atol=1e-6)
    scores = query @ key.transpose(-1, -2) * 8**-0.5
    h2, n2 = entropy_from_scores(scores, additive)
    assert torch.equal(n2, ref[1]) and torch.allclose(h2.double(), ref[0], atol=1e-5)


def test_one_and_two_dim_key_masks_broadcast_like_four_dim():
    query, key = _qk(b=3, q_len=6)
    pad = _padding([6, 4, 1], 6)
    four, n4 = entropy_from_qk(query, key, mask=pad[:, None, None, :], is_causal=True)
    two, n2 = entropy_from_qk(query, key, mask=pad, is_causal=True)
    assert torch.equal(four, two) and torch.equal(n4, n2)
    one, n1 = entropy_from_qk(query, key, mask=pad[1], method="exact", query_chunk=2)
    _assert_matches((one, n1), reference_qk(query, key, keep=pad[1]))
    with pytest.raises(ValueError, match="Expected argument `mask`"):
        entropy_from_qk(query, key, mask=torch.ones(6, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="Expected argument `mask`"):
        entropy_from_qk(query, key, mask=torch.ones(2, 6, dtype=torch.bool))  # batch is 3


@pytest.mark.parametrize("method", METHODS)
def test_softcap_matches_reference(method):
    query, key = _qk(q_len=6, temp=4.0)
    if method == "fused":
        with pytest.raises(ValueError, match="Expected argument `method`"):
            entropy_from_qk(query, key, softcap=5.0, method=method)
        return
    got = entropy_from_qk(query, key, None, _padding([6, 4], 6), True, 3, softcap=5.0)
    _assert_matches(
        got, reference_qk(query, key, keep=_padding([6, 4], 6)[:, None, None, :], softcap=5.0, is_causal=True)
    )
    assert torch.equal(
        entropy_from_qk(query, key, softcap=5.0)[0], entropy_from_qk(query, key, softcap=5.0, method="exact")[0]
    )


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_odd_chunks_and_tiny_budgets_give_the_same_entropy(chunk):
    query, key = _qk(h=4, kv=2, q_len=13, k_len=13)
    per_query = torch.rand(2, 1, 13, 13, generator=torch.Generator().manual_seed(1)) > 0.3
    ref = reference_qk(query, key, keep=per_query, is_causal=True)
    _assert_matches(entropy_from_qk(query, key, None, per_query, True, chunk, method="exact"), ref)
    # a budget of a few bytes: one query per chunk in both paths (the fused path then builds its bias per chunk)
    for method in METHODS:
        _assert_matches(entropy_from_qk(query, key, None, per_query, True, memory_budget=chunk, method=method), ref)


def test_exact_path_chunks_are_sized_from_the_memory_budget(monkeypatch):
    query, key = _qk(b=1, h=4, kv=2, q_len=40)
    seen = []
    original = entropy_mod._entropy_of_logits

    def spy(s):
        seen.append(tuple(s.shape))
        return original(s)

    monkeypatch.setattr(entropy_mod, "_entropy_of_logits", spy)
    row_bytes = 1 * 4 * 40 * (3 * 4 + 1)  # batch * heads * keys * (3 float32 blocks + 1 bool)
    ent, _ = entropy_from_qk(query, key, is_causal=True, method="exact", memory_budget=10 * row_bytes)
    assert {shape[2] for shape in seen} == {10} and len(seen) == 4
    assert max(math.prod(shape) * 13 for shape in seen) <= 10 * row_bytes
    _assert_matches((ent, _), reference_qk(query, key, is_causal=True))


@pytest.mark.parametrize("q_len", [1, 64, 300])
def test_fused_and_exact_agree_in_float32(q_len):
    query, key = _qk(b=2, h=6, kv=2, q_len=q_len, d=32, temp=2.0, seed=q_len)
    pad = _padding([q_len, max(1, q_len // 3)], q_len)
    fused = entropy_from_qk(query, key, None, pad, True, method="fused")
    exact = entropy_from_qk(query, key, None, pad, True, method="exact")
    assert fused[0].dtype == exact[0].dtype == torch.float32 and torch.equal(fused[1], exact[1])
    assert torch.allclose(fused[0], exact[0], atol=1e-5), (fused[0] - exact[0]).abs().max()
    _assert_matches(fused, reference_qk(query, key, keep=pad[:, None, None, :], is_causal=True))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_are_upcast_to_float32(dtype):
    query, key = _qk(q_len=20, temp=2.0)
    query, key = query.to(dtype), key.to(dtype)
    for method in METHODS:
        ent, n = entropy_from_qk(query, key, is_causal=True, method=method)
        assert ent.dtype == torch.float32
        _assert_matches((ent, n), reference_qk(query, key, is_causal=True))  # the entropy of the rounded q and k


def test_float64_inputs_stay_float64():
    query, key = _qk(q_len=10, temp=5.0)
    for method in METHODS:
        ent, n = entropy_from_qk(query.double(), key.double(), is_causal=True, method=method)
        assert ent.dtype == torch.float64
        _assert_matches((ent, n), reference_qk(query, key, is_causal=True), atol=1e-10)


def test_bad_arguments_raise_clear_errors():
    query, key = _qk()
    for budget in (0, -5, 1.5, True, None):
        with pytest.raises(ValueError, match="Expected argument `memory_budget` to be a positive int"):
            entropy_from_qk(query, key, memory_budget=budget)
    for chunk in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="Expected argument `query_chunk`"):
            entropy_from_qk(query, key, query_chunk=chunk)
    with pytest.raises(ValueError, match=r"Expected argument `method` to be one of \['auto', 'exact', 'fused'\]"):
        entropy_from_qk(query, key, method="flash")
    with pytest.raises(ValueError, match=r"Expected argument `method`.*additive float `mask`"):
        entropy_from_qk(query, key, mask=torch.zeros(2, 7), method="fused")
    with pytest.raises(ValueError, match="Expected `key` of shape"):
        entropy_from_qk(query, key[..., :4])
    with pytest.raises(ValueError, match="Expected `query`"):
        entropy_from_qk(query[0], key)


def test_no_host_syncs():
    query, key = _qk(h=4, kv=2, q_len=12, temp=2.0)
    pad = _padding([12, 7], 12)
    per_query = torch.rand(2, 1, 12, 12) > 0.3
    bias = torch.zeros(2, 1, 1, 12).masked_fill(~pad[:, None, None, :], -1e9)
    with SyncCounter() as counter:  # positive control: the counter sees what it must
        if torch.ones(()):
            torch.ones(2).to("cpu").tolist()
    assert counter.calls == ["__bool__", "to", "tolist"]
    with SyncCounter() as counter:
        for args, kwargs in [
            ((None, pad, True), {}),
            ((None, per_query, True), {"memory_budget": 64}),
            ((0.2, bias, False, 5), {"softcap": 3.0}),
            ((None, pad.long(), False), {"method": "exact"}),
            ((None, None, True), {}),
        ]:
            ent, n = entropy_from_qk(query, key, *args, **kwargs)
            reduce_entropy(ent, n, pad, "token")
            reduce_entropy(ent, n, pad, "example")
        entropy_from_scores(torch.randn(2, 3, 4, 5), bias[..., :5])
        entropy_from_scores(torch.randn(2, 3, 4, 5), pad[:, None, None, :5])
    assert counter.calls == []


def test_kernel_errors_fall_back_to_the_exact_path_under_auto_only(monkeypatch):
    query, key = _qk(h=4, kv=2, q_len=10)
    pad = _padding([10, 4], 10)
    want = entropy_from_qk(query, key, None, pad, True, method="exact")

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel image is available")

    monkeypatch.setitem(entropy_mod._FUSED_KERNELS, "cpu", (broken, frozenset({torch.float32})))
    with pytest.warns(RuntimeWarning, match="exact chunked path"):
        got = entropy_from_qk(query, key, None, pad, True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with pytest.raises(RuntimeError, match="no kernel image"):
        entropy_from_qk(query, key, None, pad, True, method="fused")

    def buggy(*args, **kwargs):
        raise IndexError("a real bug")

    monkeypatch.setitem(entropy_mod._FUSED_KERNELS, "cpu", (buggy, frozenset({torch.float32})))
    with pytest.raises(IndexError, match="a real bug"):  # not swallowed by the fallback
        entropy_from_qk(query, key, None, pad, True)
    with pytest.raises(ValueError, match="Expected `key`"):  # shapes are checked before any kernel runs
        entropy_from_qk(query, key[:, :, :, :3], None, pad, True)


@pytest.mark.parametrize(
    ("method", "mask_dtype", "softcap", "device", "dtype", "expected"),
    [
        ("auto", None, None, "cpu", torch.float32, "fused"),
        ("auto", torch.bool, None, "cpu", torch.float64, "fused"),
        ("auto", torch.bool, None, "cuda", torch.float32, "fused"),
        ("auto", None, None, "cuda", torch.float64, "exact"),  # the CUDA kernel has no float64
        ("auto", None, None, "mps", torch.float32, "exact"),  # no fused kernel known there
        ("auto", torch.float32, None, "cpu", torch.float32, "exact"),  # additive masks: decided by dtype
        ("auto", torch.float16, None, "cuda", torch.float32, "exact"),
        ("auto", torch.bool, 30.0, "cuda", torch.float32, "exact"),
        ("exact", torch.bool, None, "cuda", torch.float32, "exact"),
        ("fused", torch.bool, None, "cuda", torch.float32, "fused"),
        ("fused", None, None, "mps", torch.float32, ValueError),
        ("fused", torch.float32, None, "cpu", torch.float32, ValueError),
        ("fused", None, 30.0, "cpu", torch.float32, ValueError),
    ],
)
def test_path_selection_table(method, mask_dtype, softcap, device, dtype, expected):
    if expected is ValueError:
        with pytest.raises(ValueError, match="Expected argument `method`"):
            entropy_mod._choose_path(method, mask_dtype, softcap, device, dtype)
    else:
        assert entropy_mod._choose_path(method, mask_dtype, softcap, device, dtype) == expected


def fake_cuda_efficient_attention(
    query, key, value, attn_bias, compute_log_sumexp, dropout_p=0.0, is_causal=False, *, scale=None
):
    """CPU stand-in for aten._scaled_dot_product_efficient_attention that enforces the CUDA kernel's contract."""
    b, h, m, _ = query.shape
    n = key.shape[2]
    assert key.shape[1] == h and value.shape[1] == h, "the CUDA kernel has no grouped-query heads"
    assert compute_log_sumexp and dropout_p == 0.0
    assert query.stride(-1) == key.stride(-1) == value.stride(-1) == 1
    s = query.double() @ key.double().transpose(-1, -2) * scale
    if attn_bias is not None:
        assert attn_bias.shape == (b, h, m, n), "get_bias_4d_view wants exactly (batch, heads, queries, keys)"
        assert attn_bias.dtype == query.dtype and attn_bias.stride(-1) == 1
        assert all(st % 4 == 0 for st in attn_bias.stride()[:3]), "attn_bias is not correctly aligned"
        s = s + attn_bias.double()
    if is_causal:  # CausalFromTopLeft
        s = s.masked_fill(torch.arange(m)[:, None] < torch.arange(n)[None, :], float("-inf"))
    lse = torch.logsumexp(s, -1)
    out = torch.nan_to_num(torch.softmax(s, -1)) @ value.double()
    padded = torch.full((b, h, -(-m // 32) * 32), 1e30)  # the kernel pads the log-sum-exp to 32 queries
    padded[..., :m] = lse
    return out.to(query.dtype), padded.float(), torch.empty(()), torch.empty(())


@pytest.mark.parametrize("case", ["causal", "causal+padding", "per-query-chunked", "per-head-mask"])
def test_cuda_calling_convention_emulated_on_cpu(monkeypatch, case):
    kernel = functools.partial(entropy_mod._efficient_attention_lse, op=fake_cuda_efficient_attention)
    monkeypatch.setitem(entropy_mod._FUSED_KERNELS, "cpu", (kernel, frozenset({torch.float32})))
    query, key = _qk(h=6, kv=2, q_len=37, temp=2.0)
    pad = _padding([37, 20], 37)[:, None, None, :]
    mask = {
        "causal": None,
        "causal+padding": pad,
        "per-query-chunked": torch.rand(2, 1, 37, 37) > 0.3,
        "per-head-mask": torch.rand(2, 6, 37, 37) > 0.3,
    }[case]
    budget = 3000 if case == "per-query-chunked" else entropy_mod.DEFAULT_MEMORY_BUDGET
    got = entropy_from_qk(query, key, None, mask, True, memory_budget=budget, method="fused")
    _assert_matches(got, reference_qk(query, key, keep=mask, is_causal=True))


def test_scores_entropy_stays_differentiable():
    scores = torch.randn(2, 5, requires_grad=True)
    h, _ = entropy_from_scores(scores, torch.tensor([True, True, True, False, False]))
    h.sum().backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all() and (scores.grad[:, 3:] == 0).all()
