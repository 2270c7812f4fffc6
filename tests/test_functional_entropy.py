"""Attention entropy against a naive float64 reference and its invariants."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_inflect.functional import (
    attention_entropy,
    entropy_from_probs,
    entropy_from_qk,
    entropy_from_scores,
    reduce_entropy,
)


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
