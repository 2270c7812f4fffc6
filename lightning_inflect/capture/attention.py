"""Exact attention entropy from a model's own attention calls, under any attention implementation.

Hugging Face models (transformers >= 5) compute attention through ``ALL_ATTENTION_FUNCTIONS[impl]`` with the
projected (and, for rotary models, rotated) queries and keys, the mask and the scaling they use. While
:func:`capture_attention_entropy` is active we wrap that function: for the modules we were given, the wrapper
computes per-query entropies from ``q``, ``k``, the mask and the scaling (chunked over queries, never keeping the
probability matrix), then calls the original function unchanged. The model keeps its SDPA (or flash) kernel; no
``output_attentions`` and no switch to eager.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from lightning_inflect.functional.entropy import entropy_from_qk

__all__ = ["capture_attention_entropy", "generic_eager_attention"]

log = logging.getLogger(__name__)


def generic_eager_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Plain softmax attention, used for eager models whose modeling file has no ``eager_attention_forward``."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    w = torch.matmul(query, key.transpose(2, 3)) * scale
    if attention_mask is not None:
        w = w.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool else w + attention_mask
    w = nn.functional.dropout(torch.softmax(w, dim=-1), p=dropout, training=module.training)
    return torch.matmul(w, value).transpose(1, 2).contiguous(), w


def _eager_for(module: nn.Module) -> Callable[..., Any]:
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    return fn if callable(fn) else generic_eager_attention


def _entropy_mask(impl: str, module: nn.Module, query: Tensor, key: Tensor, mask: Tensor | None, kwargs: dict):
    """The mask and causal flag that ``impl`` actually applies, mirrored for the entropy computation."""
    if mask is not None and mask.dim() == 2:  # flash attention passes the 2D padding mask
        mask = mask.to(torch.bool)[:, None, None, :]
    is_causal = False
    if impl != "eager" and mask is None:
        flag = kwargs.get("is_causal")
        flag = getattr(module, "is_causal", True) if flag is None else flag
        is_causal = bool(flag) and query.shape[2] > 1
    bias = kwargs.get("position_bias")
    if bias is not None:
        if mask is None:
            mask = bias
        elif mask.dtype == torch.bool:
            mask = bias.masked_fill(~mask, float("-inf"))
        else:
            mask = bias + mask
    return mask, is_causal


@contextmanager
def capture_attention_entropy(
    model: nn.Module,
    attention_modules: Mapping[nn.Module, int],
    sink: Callable[[int, Tensor, Tensor], None],
) -> Iterator[None]:
    """Call ``sink(layer, entropy, n_valid)`` for every attention call of the listed modules inside the block.

    ``entropy`` and ``n_valid`` are the ``(batch, heads, queries)`` per-query entropies (nats) and numbers of valid
    keys from :func:`~lightning_inflect.functional.entropy_from_qk`, computed from the queries, keys, mask, scaling
    and soft-capping the model itself passes to its attention function; the original function then runs unchanged.
    Nothing is transferred to the host.

    Args:
        model: the Hugging Face model (its ``config._attn_implementation`` names the function to wrap).
        attention_modules: the module that calls the attention function -> its block index.
        sink: receives each call's per-query entropies, on the model's device.
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    impl = getattr(getattr(model, "config", None), "_attn_implementation", None) or "eager"
    interfaces = [AttentionInterface._global_mapping]
    if impl in ALL_ATTENTION_FUNCTIONS._local_mapping:
        interfaces.append(ALL_ATTENTION_FUNCTIONS._local_mapping)
    saved: list[tuple[Any, bool, Any]] = [(m, impl in m, m.get(impl)) for m in interfaces]
    original = ALL_ATTENTION_FUNCTIONS.get(impl) if impl != "eager" else None
    by_id = {id(m): layer for m, layer in attention_modules.items()}

    def wrapper(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None, *a, **kw):
        layer = by_id.get(id(module))
        if layer is not None:
            mask, is_causal = _entropy_mask(impl, module, query, key, attention_mask, kw)
            with torch.no_grad():
                ent, n_valid = entropy_from_qk(
                    query, key, kw.get("scaling"), mask, is_causal, softcap=kw.get("softcap")
                )
            sink(layer, ent, n_valid)
        fn = original if original is not None else _eager_for(module)
        return fn(module, query, key, value, attention_mask, *a, **kw)

    for m in interfaces:
        m[impl] = wrapper
    try:
        yield
    finally:
        for m, had, fn in saved:
            if had:
                m[impl] = fn
            else:
                m.pop(impl, None)
