"""Attention entropy per query, from probabilities, from raw scores, or from queries and keys.

All functions are pure torch. Shapes follow Hugging Face attention: ``(batch, heads, queries, keys)``.

The entropy of query ``i`` in head ``h`` is

.. math::

    H_{h,i} = -\\sum_{j \\in V_i} a_{h,ij} \\log a_{h,ij}
            = \\operatorname{logsumexp}_{j \\in V_i}(s_{h,ij}) - \\sum_{j \\in V_i} a_{h,ij} s_{h,ij}

in nats, where :math:`V_i` are the keys query ``i`` may attend to (not padding, not masked by causality)
and :math:`a = \\operatorname{softmax}(s)` over those keys. The second form needs only the scores, so it is exact for
models that never materialise the probabilities (SDPA, flash attention).

:func:`entropy_from_qk` has two paths:

- **fused** (masks that only keep or drop keys): with :math:`s_{ij} = c\\, q_i \\cdot k_j`,
  :math:`\\sum_j a_{ij} s_{ij} = c\\, q_i \\cdot o_i` where :math:`o = \\operatorname{attention}(q, k, v=k)`, so one
  attention kernel that also returns the log-sum-exp gives :math:`H_i = \\mathrm{lse}_i - c\\, q_i \\cdot o_i`.
  Kernels: on CPU ``aten._scaled_dot_product_flash_attention_for_cpu`` (float32/float64, takes the additive mask
  and ``scale``, grouped-query heads natively); on CUDA ``aten._scaled_dot_product_efficient_attention`` with
  ``compute_log_sumexp=True`` (the memory-efficient kernel, the only fused CUDA kernel that runs in float32 and
  takes a mask; one call per query-head group for grouped-query attention, keys never repeated). Memory is
  ``O(batch * heads * queries * head_dim)`` plus, for a bool mask, a 0/-inf bias of the mask's shape (built per
  query chunk when it would exceed the memory budget); no score matrix.
- **exact** (additive float masks such as ALiBi or relative position biases, and logit soft-capping, where the
  identity above does not hold): scores for a chunk of queries at a time, all heads at once, chunks sized from a
  memory budget; per chunk ``H = -sum_j p_j log p_j`` with ``p = softmax(s)`` (``torch.special.entr``, ``0 log 0 = 0``).

Accuracy: inputs are upcast to float32 (float64 stays float64), so the result is the entropy of the attention the
given (possibly bfloat16) queries and keys define, computed in float32; it differs from the probabilities a bf16
kernel would round internally by that kernel's own rounding, not by ours. The float32 error grows with the largest
score magnitude ``max |s|``; measured against float64 (14 heads, T up to 2048): fused about ``3e-7 * max |s|`` nats
per query (the cancellation in ``lse - c q . o``: 1e-6 at ``max |s|`` = 5, 1e-5 at 25), exact about
``1e-6 + 1e-7 * max |s|``. ``benchmarks/entropy_kernel.py`` prints it for other shapes.

Masking rule: a bool mask is True where a key may be attended; an integer mask is read the same way (non-zero =
attend); an additive float mask drops a key where its value is ``<= -1e4`` (``MASKED_BIAS``, which also covers
``-inf``, ``finfo.min`` and the ``-10000`` of older BERT code): such keys get probability exactly 0 and are not
counted in ``n_valid``. Larger (finite) values are added to the scores as a bias. A valid key whose bias is below
``-1e4`` (ALiBi at a distance over ``1e4 / slope`` tokens) has probability ``exp(-1e4 + ...) = 0`` in float32 anyway,
so the rule only changes ``n_valid`` (hence the normalised entropy) there. Queries with no valid key get entropy 0
and ``n_valid`` 0, never NaN.

No function here synchronises the device with the host: branching depends on shapes, dtypes and Python arguments
only, never on tensor values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from lightning_inflect.validation import check_choice, check_int

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "MASKED_BIAS",
    "EntropySums",
    "attention_entropy",
    "entropy_from_probs",
    "entropy_from_qk",
    "entropy_from_scores",
    "reduce_entropy",
]

MASKED_BIAS = -1e4
"""Additive mask values at or below this drop the key (probability 0, not counted as valid)."""

DEFAULT_MEMORY_BUDGET = 256 * 2**20
"""Default bytes for the score block (and its temporaries) of one query chunk in :func:`entropy_from_qk`."""

# Working-dtype blocks of (batch, heads, chunk, keys) counted per chunk of the exact path: the scores, the
# probabilities, and room for a cast of an additive mask of another dtype; plus one bool block for the chunk's mask.
_EXACT_BLOCKS = 3


class EntropySums(NamedTuple):
    """Per-head running sums that make a mean over several batches exact.

    Attributes:
        entropy: ``(heads,)`` float64 sum of entropies in nats.
        normalized: ``(heads,)`` float64 sum of entropies divided by ``log(n_valid_keys)``.
        count: ``(heads,)`` float64 number of terms in each sum.
    """

    entropy: Tensor
    normalized: Tensor
    count: Tensor  # type: ignore[assignment]  # a field named like tuple.count, on purpose: the term counts

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

    def pooled_mean(self) -> Tensor:
        """Mean entropy over all heads' terms together (heads weighted by their number of terms), reducing the last
        (heads) axis: the value the monitor logs per block. The one definition of the head-weighted mean.

        Example:
            >>> s = EntropySums(torch.tensor([[2.0, 6.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 3.0]]))
            >>> s.pooled_mean(), s.pooled_normalized_mean()
            (tensor([2.]), tensor([0.5000]))
        """
        return self.entropy.sum(-1) / self.count.sum(-1)

    def pooled_normalized_mean(self) -> Tensor:
        """:meth:`pooled_mean` of the normalised entropy."""
        return self.normalized.sum(-1) / self.count.sum(-1)


# ----------------------------------------------------------------------------------------------------------- masks
def _keep_from(mask: Tensor) -> Tensor:
    """Bool keep-mask (True = key may be attended) of a bool, integer or additive float mask, same shape."""
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point():
        return mask > MASKED_BIAS
    if mask.is_complex():
        raise ValueError(f"Expected argument `mask` to be a bool, integer or floating tensor but got {mask.dtype}.")
    return mask != 0


def _as_4d_mask(mask: Tensor, batch: int, heads: int, queries: int, keys: int) -> Tensor:
    """View ``mask`` as ``(batch | 1, heads | 1, queries | 1, keys)``; integer masks become bool."""
    if mask.is_complex():
        raise ValueError(f"Expected argument `mask` to be a bool, integer or floating tensor but got {mask.dtype}.")
    if not mask.is_floating_point() and mask.dtype != torch.bool:
        mask = mask != 0
    if mask.dim() == 1:
        m = mask[None, None, None, :]
    elif mask.dim() == 2:  # (batch, keys): a padding mask per example
        m = mask[:, None, None, :]
    elif mask.dim() in (3, 4):
        m = mask if mask.dim() == 4 else mask[None]
    else:
        m = None
    target = (batch, heads, queries, keys)
    if m is None or m.shape[-1] != keys or any(n not in (1, t) for n, t in zip(m.shape[:3], target[:3])):
        raise ValueError(
            "Expected argument `mask` to be a (keys,) or (batch, keys) key mask, or broadcastable to (batch, heads,"
            f" queries, keys) = {target}, but got shape {tuple(mask.shape)}."
        )
    return m


def _rows(t: Tensor, start: int, stop: int) -> Tensor:
    """Query rows ``start:stop`` of a 4-D mask whose query axis is either full or broadcast (size 1)."""
    return t if t.shape[2] == 1 else t[:, :, start:stop]


def _causal_keep(start: int, stop: int, keys: int, device: torch.device) -> Tensor:
    """``(stop - start, keys)`` bool: query ``i`` sees keys ``j <= i`` (upper-left aligned, as SDPA's ``is_causal``)."""
    return torch.arange(start, stop, device=device)[:, None] >= torch.arange(keys, device=device)[None, :]


def _rows_per_chunk(budget: int, row_bytes: int, queries: int) -> int:
    return max(1, min(queries, budget // max(row_bytes, 1)))


def _count_valid(
    keep: Tensor | None, is_causal: bool, shape: tuple[int, int, int, int], budget: int, device: torch.device
) -> Tensor:
    """``(batch, heads, queries)`` int64 number of keys each query may attend to, without a score-sized tensor."""
    batch, heads, queries, keys = shape
    if keep is None:
        if is_causal:
            n = (torch.arange(1, queries + 1, device=device).clamp_max(keys))[None, None, :]
        else:
            n = torch.full((1, 1, 1), keys, dtype=torch.long, device=device)
    elif not is_causal:
        n = keep.sum(-1)
    elif keep.shape[2] == 1:  # key mask with causality: a running count over keys
        idx = torch.arange(queries, device=device).clamp_max(keys - 1)
        n = keep.cumsum(-1, dtype=torch.long)[:, :, 0].index_select(-1, idx)
    else:
        rows = _rows_per_chunk(budget, keep.shape[0] * keep.shape[1] * keys, queries)
        n = torch.cat(
            [
                (keep[:, :, a : a + rows] & _causal_keep(a, min(a + rows, queries), keys, device)).sum(-1)
                for a in range(0, queries, rows)
            ],
            dim=-1,
        )
    return n.expand(batch, heads, queries).contiguous()


# ------------------------------------------------------------------------------------------------- entropy of logits
def _entropy_of_logits(s: Tensor) -> Tensor:
    """``sum(entr(softmax(s)))`` over the last axis of masked logits (``-inf`` = dropped); NaN on rows with no key.

    One fused softmax pass, then ``entr`` in place: two blocks of ``s``'s size alive at once.
    """
    p = torch.softmax(s, dim=-1)
    return torch.special.entr(p, out=p).sum(-1)


def entropy_from_scores(scores: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Entropy of ``softmax(scores)`` over the last axis, as ``logsumexp(s) - sum_j p_j s_j`` (no ``log p``).

    Args:
        scores: ``(..., keys)`` attention logits (already scaled), any float dtype; computed in float32 or wider.
        mask: broadcastable to ``scores``: bool with True where a key may be attended, integer (non-zero =
            attend), or an additive float mask as Hugging Face eager attention uses (added to the scores; values
            ``<= -1e4`` drop the key, see the module docstring).

    Returns:
        ``(entropy, n_valid)``: both of shape ``scores.shape[:-1]``; ``entropy`` in nats, 0 where no key is valid.
        Differentiable with respect to ``scores``.

    Example:
        >>> h, n = entropy_from_scores(torch.zeros(1, 1, 1, 4))
        >>> round(h.item(), 6) == round(math.log(4), 6), n.item()
        (True, 4)
        >>> h, n = entropy_from_scores(torch.zeros(1, 4), mask=torch.tensor([[True, True, False, False]]))
        >>> round(h.item(), 6) == round(math.log(2), 6), n.item()
        (True, 2)
        >>> h, n = entropy_from_scores(torch.zeros(1, 4), mask=torch.tensor([[0.0, 0.0, -1e4, -1e4]]))
        >>> round(h.item(), 6) == round(math.log(2), 6), n.item()
        (True, 2)
    """
    work_dtype = torch.promote_types(scores.dtype, torch.float32)
    s = scores.to(work_dtype)
    if mask is None:
        keep = torch.ones((), dtype=torch.bool, device=scores.device).expand_as(s)
    else:
        keep = _keep_from(mask).expand_as(s)
        if mask.is_floating_point():
            s = s + mask.to(work_dtype)
        s = s.masked_fill(~keep, float("-inf"))
    n_valid = keep.sum(-1)
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    p = torch.exp(s - lse)  # exactly 0 on dropped keys
    # lse - sum p s rather than sum entr(p): its gradient stays finite where p = 0
    ent = lse.squeeze(-1) - (p * s.masked_fill(~keep, 0.0)).sum(-1)
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


# ------------------------------------------------------------------------------------------------- fused kernels
def _cpu_flash_attention_lse(
    query: Tensor, key: Tensor, bias: Tensor | None, is_causal: bool, scale: float
) -> tuple[Tensor, Tensor]:
    """``(out, logsumexp)`` of ``attention(q, k, v=k)`` with the CPU flash kernel (grouped-query heads native)."""
    b, h, q_len, _ = query.shape
    if bias is not None:
        bias = bias.expand(b, h, q_len, key.shape[2])
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, key, 0.0, is_causal, attn_mask=bias, scale=scale
    )
    return out, lse


def _efficient_attention_lse(
    query: Tensor,
    key: Tensor,
    bias: Tensor | None,
    is_causal: bool,
    scale: float,
    op: Callable[..., tuple[Tensor, ...]] | None = None,
) -> tuple[Tensor, Tensor]:
    """``(out, logsumexp)`` with CUDA's memory-efficient kernel, one call per group of query heads sharing keys.

    The kernel wants as many key heads as query heads and a bias of exactly ``(batch, heads, queries, keys)`` (an
    expanded view is fine) whose strides are multiples of 4 elements (``_additive_bias`` pads the key axis to 16);
    its log-sum-exp comes padded to a multiple of 32 queries, hence the slice.
    """
    op = torch.ops.aten._scaled_dot_product_efficient_attention if op is None else op
    b, h, q_len, d = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    groups = h // kv_heads
    full_bias = None if bias is None else bias.expand(b, h, q_len, k_len)
    outs, lses = [], []
    for g in range(groups):
        # query head kv * groups + g reads key head kv (the repeat_interleave convention of transformers)
        bias_g = None if full_bias is None else full_bias[:, g::groups]
        out, lse = op(query[:, g::groups], key, key, bias_g, True, 0.0, is_causal, scale=scale)[:2]
        outs.append(out)
        lses.append(lse[..., :q_len])
    if groups == 1:
        return outs[0], lses[0]
    return torch.stack(outs, dim=2).reshape(b, h, q_len, d), torch.stack(lses, dim=2).reshape(b, h, q_len)


# device type -> (kernel, working dtypes it runs in). A kernel error at run time makes method="auto" fall back.
_FUSED_KERNELS: dict[str, tuple[Callable[..., tuple[Tensor, Tensor]], frozenset[torch.dtype]]] = {
    "cpu": (_cpu_flash_attention_lse, frozenset({torch.float32, torch.float64})),
    "cuda": (_efficient_attention_lse, frozenset({torch.float32})),
}


def _additive_bias(keep: Tensor, dtype: torch.dtype) -> Tensor:
    """0 / -inf bias of ``keep``'s shape, key axis padded to 16 elements so every stride is kernel-aligned."""
    keys = keep.shape[-1]
    padded = -(-keys // 16) * 16
    bias = torch.zeros((*keep.shape[:-1], padded), dtype=dtype, device=keep.device)[..., :keys]
    return bias.masked_fill_(~keep, float("-inf"))


def _fused_entropy(
    query: Tensor, key: Tensor, scale: float, keep: Tensor | None, is_causal: bool, budget: int
) -> Tensor:
    """``lse - scale * q . attention(q, k, k)`` per query, in as few kernel calls as the mask's bias allows."""
    kernel = _FUSED_KERNELS[query.device.type][0]
    q_len, k_len = query.shape[2], key.shape[2]

    def run(q: Tensor, bias: Tensor | None, causal: bool) -> Tensor:
        out, lse = kernel(q, key, bias, causal, scale)
        return lse - scale * (q * out).sum(-1)

    if keep is None:
        return run(query, None, is_causal)
    row_bytes = keep.shape[0] * keep.shape[1] * (-(-k_len // 16) * 16) * query.element_size()
    rows = q_len if keep.shape[2] == 1 else _rows_per_chunk(budget, row_bytes, q_len)
    if rows >= q_len:
        return run(query, _additive_bias(keep, query.dtype), is_causal)
    parts = []
    for start in range(0, q_len, rows):  # the mask has a query axis: its bias is built one chunk at a time
        stop = min(start + rows, q_len)
        keep_c = keep[:, :, start:stop]
        if is_causal:
            keep_c = keep_c & _causal_keep(start, stop, k_len, query.device)
        parts.append(run(query[:, :, start:stop], _additive_bias(keep_c, query.dtype), False))
    return torch.cat(parts, dim=-1)


def _exact_entropy(
    query: Tensor,
    key: Tensor,
    scale: float,
    mask: Tensor | None,
    keep: Tensor | None,
    is_causal: bool,
    softcap: float | None,
    chunk: int,
) -> Tensor:
    """Entropy from explicit scores, ``chunk`` queries at a time, all heads at once, keys never repeated."""
    b, h, q_len, d = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    groups = h // kv_heads
    q5 = query.reshape(b, kv_heads, groups, q_len, d)
    k_t = key.transpose(-1, -2)
    bias = mask if mask is not None and mask.is_floating_point() else None
    out = torch.empty(b, h, q_len, dtype=query.dtype, device=query.device)
    for start in range(0, q_len, chunk):
        stop = min(start + chunk, q_len)
        rows = stop - start
        # the query heads that share a key head are folded into the rows of one matmul per key head
        s = torch.matmul(q5[:, :, :, start:stop].reshape(b, kv_heads, groups * rows, d) * scale, k_t)
        s = s.view(b, h, rows, k_len)
        if softcap is not None:
            s.div_(softcap).tanh_().mul_(softcap)
        if bias is not None:
            s.add_(_rows(bias, start, stop))
        drop = None if keep is None else ~_rows(keep, start, stop)
        if is_causal:
            causal_drop = ~_causal_keep(start, stop, k_len, query.device)
            drop = causal_drop if drop is None else drop | causal_drop
        if drop is not None:
            s.masked_fill_(drop, float("-inf"))
        out[:, :, start:stop] = _entropy_of_logits(s)
    return out


def _choose_path(
    method: str, mask_dtype: torch.dtype | None, softcap: float | None, device_type: str, work_dtype: torch.dtype
) -> Literal["fused", "exact"]:
    """Which path :func:`entropy_from_qk` takes, from arguments, dtypes and the device type only (never values)."""
    check_choice("method", method, ["auto", "exact", "fused"])
    if method == "exact":
        return "exact"
    keeps_or_drops = mask_dtype is None or mask_dtype == torch.bool
    kernel = _FUSED_KERNELS.get(device_type)
    has_kernel = kernel is not None and work_dtype in kernel[1]
    if method == "fused":
        if not keeps_or_drops or softcap is not None:
            raise ValueError(
                "Expected argument `method` to be 'auto' or 'exact' with an additive float `mask` or a `softcap` (the"
                " fused identity needs every key either kept or dropped) but got 'fused'."
            )
        if not has_kernel:
            raise ValueError(
                "Expected argument `method` to be 'auto' or 'exact' for this input: no fused attention kernel returns"
                f" the log-sum-exp for device type {device_type!r} in {work_dtype}, but got 'fused'."
            )
        return "fused"
    return "fused" if keeps_or_drops and softcap is None and has_kernel else "exact"


def entropy_from_qk(
    query: Tensor,
    key: Tensor,
    scaling: float | None = None,
    mask: Tensor | None = None,
    is_causal: bool = False,
    query_chunk: int | None = None,
    softcap: float | None = None,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    method: Literal["auto", "exact", "fused"] = "auto",
) -> tuple[Tensor, Tensor]:
    """Per-query attention entropy from queries and keys, exactly, at about the cost of one attention call.

    Paths (see the module docstring for the formulas and the accuracy):

    - ``"fused"``: ``H = lse - scale * q . attention(q, k, v=k)`` from one fused attention kernel that returns the
      log-sum-exp (CPU: ``aten._scaled_dot_product_flash_attention_for_cpu``; CUDA:
      ``aten._scaled_dot_product_efficient_attention``). For ``mask`` None, bool or integer, without ``softcap``.
      A bool mask becomes a 0/-inf bias of the mask's own shape; when the mask has a query axis and that bias
      would exceed ``memory_budget``, the kernel runs over chunks of queries.
    - ``"exact"``: explicit scores for a chunk of queries at a time (all heads), ``-sum p log p`` per row. Any mask,
      ``softcap``, any device. Memory per chunk: about ``3 * 4`` bytes (float32) plus 1 byte per element of the
      ``(batch, heads, chunk, keys)`` block, with ``chunk`` sized so this fits ``memory_budget``.
    - ``"auto"`` (default): fused when the mask is None/bool/integer, there is no ``softcap`` and the device has a
      fused kernel for the working dtype (CPU: float32/float64; CUDA: float32); exact otherwise. Decided from
      dtypes and arguments only. If the fused kernel raises a ``RuntimeError`` (for instance an unsupported head
      dimension or alignment), it warns (``RuntimeWarning``) and falls back to the exact path. Shape errors are
      raised before any kernel runs.

    Runs without autograd (``torch.no_grad()``) and never synchronises the device with the host.

    Args:
        query: ``(batch, heads, queries, head_dim)``.
        key: ``(batch, kv_heads, keys, head_dim)``; ``kv_heads`` must divide ``heads`` (grouped-query attention:
            query head ``h`` reads key head ``h // (heads // kv_heads)``).
        scaling: multiplier of ``q @ k^T``; defaults to ``head_dim ** -0.5``.
        mask: one of: ``(keys,)`` or ``(batch, keys)`` key mask (broadcast over heads and queries); a 3-D or 4-D
            mask broadcastable to ``(batch, heads, queries, keys)``. Bool (True = attend), integer (non-zero =
            attend) or additive float (``<= -1e4`` drops the key, larger values are a bias).
        is_causal: query ``i`` also sees only keys ``j <= i`` (upper-left aligned like SDPA's ``is_causal``), on top
            of ``mask``.
        query_chunk: queries per chunk of the exact path; ``None`` sizes chunks from ``memory_budget``.
        softcap: logit soft-capping (Gemma 2): scores become ``softcap * tanh(scores / softcap)`` before masking.
        memory_budget: bytes allowed for the per-chunk score block and its temporaries (exact path) or for a
            chunk's additive bias (fused path with a per-query mask). At least one query per chunk.
        method: ``"auto"``, ``"exact"`` or ``"fused"`` (a fused request that cannot run raises instead of falling
            back).

    Returns:
        ``(entropy, n_valid)`` of shape ``(batch, heads, queries)``: entropy in nats in the working dtype (float32,
        or float64 for float64 inputs), 0 where a query has no valid key; ``n_valid`` int64 counts the keys each
        query may attend to.

    Example:
        >>> q = torch.zeros(1, 2, 3, 4); k = torch.randn(1, 1, 3, 4)
        >>> h, n = entropy_from_qk(q, k, is_causal=True)
        >>> n[0, 0].tolist()
        [1, 2, 3]
        >>> torch.allclose(h[0, 0], torch.log(torch.tensor([1.0, 2.0, 3.0])))
        True
        >>> q, k = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8)
        >>> pad = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # (batch, keys)
        >>> fused, n = entropy_from_qk(q, k, mask=pad, method="fused")
        >>> exact, _ = entropy_from_qk(q, k, mask=pad, method="exact", query_chunk=4)
        >>> n[:, 0, 0].tolist(), torch.allclose(fused, exact, atol=1e-5)
        ([6, 4], True)
    """
    check_int("query_chunk", query_chunk, low=1, optional=True)
    check_int("memory_budget", memory_budget, low=1)  # bytes
    if query.dim() != 4 or key.dim() != 4:
        raise ValueError(
            "Expected `query` (batch, heads, queries, head_dim) and `key` (batch, kv_heads, keys, head_dim) but got"
            f" shapes {tuple(query.shape)} and {tuple(key.shape)}."
        )
    b, h, q_len, d = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    if key.shape[0] != b or key.shape[3] != d:
        raise ValueError(
            f"Expected `key` of shape ({b}, kv_heads, keys, {d}) to match `query` {tuple(query.shape)} but got"
            f" {tuple(key.shape)}."
        )
    if kv_heads == 0 or h % kv_heads != 0:
        raise ValueError(f"`key` has {kv_heads} heads, which does not divide the {h} query heads.")
    mask4 = None if mask is None else _as_4d_mask(mask, b, h, q_len, k_len)
    work = torch.promote_types(torch.promote_types(query.dtype, key.dtype), torch.float32)
    path = _choose_path(method, None if mask4 is None else mask4.dtype, softcap, query.device.type, work)
    scale = d**-0.5 if scaling is None else scaling
    with torch.no_grad():
        if q_len == 0 or k_len == 0 or b == 0:
            zeros = torch.zeros(b, h, q_len, dtype=work, device=query.device)
            return zeros, zeros.to(torch.long)
        keep = None if mask4 is None else _keep_from(mask4)
        n_valid = _count_valid(keep, is_causal, (b, h, q_len, k_len), memory_budget, query.device)
        q, k = query.to(work), key.to(work)
        ent = None
        if path == "fused":
            try:
                ent = _fused_entropy(q, k, scale, keep, is_causal, memory_budget)
            except (RuntimeError, NotImplementedError) as err:
                if method == "fused":
                    raise
                warnings.warn(
                    f"The fused attention-entropy kernel failed on {query.device.type} ({type(err).__name__}: {err});"
                    " using the exact chunked path.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if ent is None:
            itemsize = torch.empty((), dtype=work).element_size()
            chunk = query_chunk or _rows_per_chunk(memory_budget, b * h * k_len * (_EXACT_BLOCKS * itemsize + 1), q_len)
            ent = _exact_entropy(q, k, scale, mask4, keep, is_causal, softcap, chunk)
        ent = torch.where(n_valid > 0, ent, torch.zeros((), dtype=ent.dtype, device=ent.device)).clamp_min(0.0)
    return ent, n_valid


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
