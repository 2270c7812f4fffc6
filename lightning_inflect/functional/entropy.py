"""Attention entropy per query, from probabilities or from raw scores.

All functions are pure torch. Shapes follow Hugging Face attention: ``(batch, heads, queries, keys)``.

The entropy of query ``i`` in head ``h`` is

.. math::

    H_{h,i} = -\\sum_{j \\in V_i} a_{h,ij} \\log a_{h,ij}
            = \\operatorname{logsumexp}_{j \\in V_i}(s_{h,ij}) - \\sum_{j \\in V_i} a_{h,ij} s_{h,ij}

in nats, where :math:`V_i` are the keys query ``i`` may attend to (not padding, not masked by causality)
and :math:`a = \\operatorname{softmax}(s)` over those keys. The second form needs only the scores, so it is exact for
models that never materialise the probabilities (SDPA, flash attention).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "EntropySums",
    "attention_entropy",
    "entropy_from_probs",
    "entropy_from_qk",
    "entropy_from_scores",
    "reduce_entropy",
]


class EntropySums(NamedTuple):
    """Per-head running sums that make a mean over several batches exact.

    Attributes:
        entropy: ``(heads,)`` float64 sum of entropies in nats.
        normalized: ``(heads,)`` float64 sum of entropies divided by ``log(n_valid_keys)``.
        count: ``(heads,)`` float64 number of terms in each sum.
    """

    entropy: Tensor
    normalized: Tensor
    count: Tensor

    def __add__(self, other: object) -> EntropySums:  # type: ignore[override]
        if not isinstance(other, EntropySums):
            return NotImplemented
        return EntropySums(self.entropy + other.entropy, self.normalized + other.normalized, self.count + other.count)

    def mean(self) -> Tensor:
        """Mean entropy per head, ``(heads,)``. Heads with no valid query give NaN."""
        return self.entropy / self.count

    def normalized_mean(self) -> Tensor:
        """Mean normalised entropy per head, in ``[0, 1]``."""
        return self.normalized / self.count


def _key_mask_from(mask: Tensor | None, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Turn a bool (True = attend) or additive float mask into masked scores and a bool key mask."""
    if mask is None:
        return scores, torch.ones_like(scores, dtype=torch.bool)
    if mask.dtype == torch.bool:
        keep = mask.expand_as(scores)
        return scores.masked_fill(~keep, float("-inf")), keep
    scores = scores + mask.to(scores.dtype)
    # Additive masks use the dtype's most negative value (or -inf) for masked keys.
    keep = (mask > torch.finfo(mask.dtype).min / 2).expand_as(scores)
    return scores.masked_fill(~keep, float("-inf")), keep


def entropy_from_scores(scores: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Entropy of ``softmax(scores)`` over the last axis, without forming the probabilities' logarithm.

    Args:
        scores: ``(..., keys)`` attention logits (already scaled), any float dtype; computed in float32 or wider.
        mask: broadcastable to ``scores``: bool with True where a key may be attended, or an additive float mask
            (0 to keep, a very negative value to drop) as Hugging Face eager attention uses.

    Returns:
        ``(entropy, n_valid)``: both of shape ``scores.shape[:-1]``; ``entropy`` in nats, 0 where no key is valid.

    Example:
        >>> h, n = entropy_from_scores(torch.zeros(1, 1, 1, 4))
        >>> round(h.item(), 6) == round(math.log(4), 6), n.item()
        (True, 4)
        >>> h, n = entropy_from_scores(torch.zeros(1, 4), mask=torch.tensor([[True, True, False, False]]))
        >>> round(h.item(), 6) == round(math.log(2), 6), n.item()
        (True, 2)
    """
    work_dtype = torch.promote_types(scores.dtype, torch.float32)
    s, keep = _key_mask_from(mask, scores.to(work_dtype))
    n_valid = keep.sum(-1)
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    p = torch.exp(s - lse)  # exactly 0 on masked keys
    expected = (p * s.masked_fill(~keep, 0.0)).sum(-1)
    ent = lse.squeeze(-1) - expected
    ent = torch.where(n_valid > 0, ent, torch.zeros_like(ent)).clamp_min(0.0)
    return ent, n_valid


def entropy_from_probs(probs: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Entropy of given attention probabilities, ``-sum p log p`` with ``0 log 0 = 0``.

    Args:
        probs: ``(..., keys)`` probabilities that sum to one over valid keys (eager attention's ``attn_weights``).
        mask: optional bool key mask (True = valid) broadcastable to ``probs``; masked keys are ignored. Without
            it, keys are counted as valid where they could carry mass, which the probabilities cannot tell, so
            ``n_valid`` then counts every key.

    Returns:
        ``(entropy, n_valid)`` of shape ``probs.shape[:-1]``.

    Example:
        >>> h, _ = entropy_from_probs(torch.tensor([[1.0, 0.0, 0.0]]))
        >>> h.item()
        0.0
        >>> h, _ = entropy_from_probs(torch.full((1, 8), 1 / 8))
        >>> round(h.item(), 5) == round(math.log(8), 5)
        True
    """
    p = probs.to(torch.promote_types(probs.dtype, torch.float32))
    keep = torch.ones_like(p, dtype=torch.bool) if mask is None else mask.to(torch.bool).expand_as(p)
    p = p.masked_fill(~keep, 0.0)
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)), torch.zeros_like(p))
    return (-plogp.sum(-1)).clamp_min(0.0) + 0.0, keep.sum(-1)


def entropy_from_qk(
    query: Tensor,
    key: Tensor,
    scaling: float | None = None,
    mask: Tensor | None = None,
    is_causal: bool = False,
    query_chunk: int = 256,
    softcap: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-query attention entropy from queries and keys, in bounded memory.

    Scores are formed for ``query_chunk`` queries at a time, so memory is ``O(batch * heads * query_chunk * keys)``
    instead of quadratic in the sequence length.

    Args:
        query: ``(batch, heads, queries, head_dim)``.
        key: ``(batch, kv_heads, keys, head_dim)``; ``kv_heads`` must divide ``heads`` (grouped-query attention).
        scaling: multiplier of ``q @ k^T``; defaults to ``head_dim ** -0.5``.
        mask: bool (True = attend) or additive float mask broadcastable to ``(batch, heads, queries, keys)``.
        is_causal: apply a causal (upper-left aligned) mask on top of ``mask``.
        query_chunk: queries per chunk.
        softcap: logit soft-capping (Gemma 2): scores become ``softcap * tanh(scores / softcap)`` before masking.

    Returns:
        ``(entropy, n_valid)`` of shape ``(batch, heads, queries)``.

    Example:
        >>> q = torch.zeros(1, 2, 3, 4); k = torch.randn(1, 1, 3, 4)
        >>> h, n = entropy_from_qk(q, k, is_causal=True)
        >>> n[0, 0].tolist()
        [1, 2, 3]
        >>> torch.allclose(h[0, 0], torch.log(torch.tensor([1.0, 2.0, 3.0])))
        True
    """
    if query_chunk < 1:
        raise ValueError(f"Expected argument `query_chunk` to be a positive int but got {query_chunk!r}.")
    _, h, q_len, d = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    if h % kv_heads != 0:
        raise ValueError(f"`key` has {kv_heads} heads, which does not divide the {h} query heads.")
    if kv_heads != h:
        key = key.repeat_interleave(h // kv_heads, dim=1)
    scale = d**-0.5 if scaling is None else scaling
    work_dtype = torch.promote_types(query.dtype, torch.float32)
    k_t = key.to(work_dtype).transpose(-1, -2)
    ents, counts = [], []
    for start in range(0, q_len, query_chunk):
        stop = min(start + query_chunk, q_len)
        s = torch.matmul(query[:, :, start:stop].to(work_dtype), k_t) * scale
        if softcap is not None:
            s = torch.tanh(s / softcap) * softcap
        m = None
        if mask is not None:
            m = mask[..., start:stop, :] if mask.shape[-2] == q_len else mask
        if is_causal:
            rows = torch.arange(start, stop, device=s.device)[:, None]
            causal = rows >= torch.arange(k_len, device=s.device)[None, :]
            if m is None:
                m = causal
            elif m.dtype == torch.bool:
                m = m & causal
            else:
                m = m.to(work_dtype).masked_fill(~causal, float("-inf"))
        e, n = entropy_from_scores(s, m)
        ents.append(e)
        counts.append(n)
    return torch.cat(ents, dim=-1), torch.cat(counts, dim=-1)


def reduce_entropy(
    entropy: Tensor,
    n_valid: Tensor,
    query_mask: Tensor | None = None,
    reduction: Literal["token", "example"] = "token",
) -> EntropySums:
    """Sum per-query entropies over valid queries into per-head :class:`EntropySums`.

    Args:
        entropy: ``(batch, heads, queries)`` entropies in nats.
        n_valid: ``(batch, heads, queries)`` number of valid keys per query.
        query_mask: ``(batch, queries)``, True (or 1) for real tokens; padding queries are left out.
        reduction: ``"token"`` weighs every valid (example, query) pair equally; ``"example"`` first averages over
            the queries of each example, then weighs examples equally.

    Returns:
        Per-head sums; ``.mean()`` gives the mean entropy per head.

    Example:
        >>> ent = torch.tensor([[[1.0, 3.0]]]); n = torch.tensor([[[2, 2]]])
        >>> reduce_entropy(ent, n, query_mask=torch.tensor([[1, 0]])).mean()
        tensor([1.], dtype=torch.float64)
    """
    if reduction not in ("token", "example"):
        raise ValueError(f"Expected argument `reduction` to be one of ['token', 'example'] but got {reduction!r}.")
    valid = n_valid > 0
    if query_mask is not None:
        valid = valid & query_mask.to(torch.bool)[:, None, :]
    e = torch.where(valid, entropy.double(), torch.zeros((), dtype=torch.float64, device=entropy.device))
    log_n = torch.log(n_valid.double().clamp_min(1.0))
    # A query with one valid key has entropy 0 and normalised entropy defined as 0.
    en = torch.where(valid & (n_valid > 1), e / log_n.clamp_min(1e-300), torch.zeros_like(e))
    w = valid.double()
    if reduction == "token":
        return EntropySums(e.sum((0, 2)), en.sum((0, 2)), w.sum((0, 2)))
    per_example = w.sum(2)  # (batch, heads)
    has = per_example > 0
    denom = per_example.clamp_min(1.0)
    return EntropySums((e.sum(2) / denom).sum(0), (en.sum(2) / denom).sum(0), has.double().sum(0))


def attention_entropy(
    probs: Tensor,
    query_mask: Tensor | None = None,
    key_mask: Tensor | None = None,
    normalize: bool = False,
    reduction: Literal["mean", "per_head", "none"] = "mean",
) -> Tensor:
    """Attention entropy of a probability tensor, the one-call convenience over the functions above.

    Args:
        probs: ``(batch, heads, queries, keys)`` attention probabilities.
        query_mask: ``(batch, queries)`` real tokens (True/1) vs padding.
        key_mask: ``(batch, keys)`` keys that may be attended, or a mask broadcastable to ``probs`` (for instance
            padding and causality together); defaults to ``query_mask`` when the shapes match. It sets the number of
            valid keys used by ``normalize``.
        normalize: divide each query's entropy by ``log(n_valid_keys)``, giving values in ``[0, 1]``.
        reduction: ``"mean"`` over valid queries, heads and examples; ``"per_head"`` gives ``(heads,)``;
            ``"none"`` gives ``(batch, heads, queries)`` with padding queries set to NaN.

    Example:
        >>> probs = torch.full((2, 3, 5, 5), 0.2)
        >>> round(attention_entropy(probs).item(), 5) == round(math.log(5), 5)
        True
        >>> attention_entropy(probs, normalize=True, reduction="per_head").round(decimals=6)
        tensor([1., 1., 1.], dtype=torch.float64)
    """
    if reduction not in ("mean", "per_head", "none"):
        raise ValueError(
            f"Expected argument `reduction` to be one of ['mean', 'per_head', 'none'] but got {reduction!r}."
        )
    if probs.dim() != 4:
        raise ValueError(f"Expected `probs` of shape (batch, heads, queries, keys) but got {tuple(probs.shape)}.")
    if key_mask is None and query_mask is not None and query_mask.shape[-1] == probs.shape[-1]:
        key_mask = query_mask
    km = None if key_mask is None else key_mask.to(torch.bool)
    if km is not None and km.dim() == 2:
        km = km[:, None, None, :]
    ent, n_valid = entropy_from_probs(probs, km)
    if reduction == "none":
        out = ent.double()
        if normalize:
            out = torch.where(n_valid > 1, out / torch.log(n_valid.double().clamp_min(2.0)), torch.zeros_like(out))
        if query_mask is not None:
            out = out.masked_fill(~query_mask.to(torch.bool)[:, None, :], math.nan)
        return out
    sums = reduce_entropy(ent, n_valid, query_mask)
    per_head = sums.normalized_mean() if normalize else sums.mean()
    return per_head if reduction == "per_head" else (per_head * sums.count).sum() / sums.count.sum()
