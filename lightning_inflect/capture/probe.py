"""The probe forward: fixed batches run in eval mode under ``no_grad``, answering the consumers' requests.

See :mod:`lightning_inflect.capture.contract` for the requests and the answers. One pass runs one forward per probe
batch for the union of all requests; each distinct need is computed once. Values stay on the model's device: the
runner itself never moves a tensor to the host.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_inflect.capture.attention import capture_attention_entropy
from lightning_inflect.capture.contract import ProbeRequest, ProbeResult, merge_requests
from lightning_inflect.capture.eager import force_eager
from lightning_inflect.functional.entropy import EntropySums, entropy_from_probs, reduce_entropy

__all__ = ["default_model_inputs", "eval_mode", "no_fastpath", "pool_hidden", "run_probe", "to_device"]

Pooling = Literal["mean", "first", "last"]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode and restore every submodule's own ``training`` flag afterwards.

    Example:
        >>> m = nn.Sequential(nn.Dropout(), nn.Dropout()); m[1].eval()  # doctest: +ELLIPSIS
        Dropout(...)
        >>> with eval_mode(m):
        ...     m.training
        False
        >>> m[0].training, m[1].training
        (True, False)
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def to_device(obj: Any, device: torch.device | str) -> Any:
    """Move the tensors of a nested mapping/sequence to ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def default_model_inputs(model: nn.Module, batch: Any) -> dict[str, Any]:
    """Keyword inputs for ``model`` from a dict batch: the keys its ``forward`` accepts, without ``labels``.

    Raises:
        TypeError: when the batch is not a mapping; pass ``probe_inputs=`` to map it.
    """
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"The probe needs the model's keyword inputs, but the training batch is a {type(batch).__name__}. "
            "Pass `probe_inputs=` (a function from your batch to a dict such as "
            "{'input_ids': ..., 'attention_mask': ...}) or a ready `probe=` batch."
        )
    params = inspect.signature(model.forward).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in batch.items() if k != "labels" and (takes_any or k in params)}


def pool_hidden(hidden: Tensor, mask: Tensor | None, pooling: Pooling) -> Tensor:
    """Pool ``(batch, seq, dim)`` block outputs to ``(batch, dim)`` over real tokens (``mask`` 1/True).

    ``"mean"`` averages the real tokens, ``"first"`` takes position 0 (CLS), ``"last"`` the last real token. A nested
    tensor (PyTorch's transformer fast path) is padded first. No host synchronisation.

    Example:
        >>> h = torch.arange(6.0).view(1, 3, 2); m = torch.tensor([[1, 1, 0]])
        >>> pool_hidden(h, m, "mean").tolist(), pool_hidden(h, m, "last").tolist()
        ([[1.0, 2.0]], [[2.0, 3.0]])
    """
    if hidden.is_nested:  # PyTorch's fast path (nn.TransformerEncoder in eval with padding) drops padded positions
        hidden = torch.nested.to_padded_tensor(hidden, 0.0)
        mask = None if mask is None else mask[:, : hidden.shape[1]]
    if hidden.dim() == 2:
        return hidden
    if pooling == "first":
        return hidden[:, 0]
    if mask is None:
        return hidden.mean(1) if pooling == "mean" else hidden[:, -1]
    m = mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)
    pos = torch.arange(mask.shape[1], device=mask.device)
    last = (mask.to(torch.bool) * pos).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@contextmanager
def no_fastpath() -> Iterator[None]:
    """Turn off PyTorch's fused transformer fast path (it returns nested tensors in eval mode with padding)."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


EntropySource = Literal["auto", "interface", "probs"]


def run_probe(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]],
    blocks: Sequence[nn.Module] | nn.ModuleList,
    requests: Sequence[ProbeRequest],
    attention_modules: Sequence[nn.Module] | None = None,
    precision_context: Any = None,
    entropy_source: EntropySource = "auto",
) -> ProbeResult:
    """Run ``model(**batch)`` for each probe batch in eval mode under ``no_grad``, answering ``requests``.

    The model's and every submodule's train/eval flags are restored afterwards, and every hook and patch is removed,
    also when the forward raises.

    Entropy comes from the model's own attention calls through transformers' attention interface (exact under SDPA,
    no ``output_attentions``). With ``entropy_source="auto"``, when a requested block's attention is never seen that
    way, the pass is run again with the model's own probabilities (``output_attentions=True``, eager attention for
    that pass only; O(T^2) memory per layer). ``result.entropy_source`` says which was used: pass it back as
    ``entropy_source`` on later probes of the same model to skip the first attempt.

    Args:
        model: the Hugging Face model.
        batches: keyword-input dicts, already on the model's device.
        blocks: the block list.
        requests: what to compute (:class:`EntropyRequest`, :class:`PooledRequest`), merged.
        attention_modules: the attention module of every block (needed for entropy requests).
        precision_context: a callable returning a context manager (autocast) to run the forward in.
        entropy_source: ``"auto"``, ``"interface"`` or ``"probs"``, see above.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> from lightning_inflect.architectures import find_attention_modules, find_layers
        >>> from lightning_inflect.capture import EntropyRequest, PooledRequest
        >>> model = BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        ...                              intermediate_size=32))
        >>> info = find_layers(model)
        >>> batch = {"input_ids": torch.tensor([[5, 6, 7, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 0]])}
        >>> ent, pooled = EntropyRequest((0, 1)), PooledRequest((1,), "first")
        >>> result = run_probe(model, [batch], info.blocks, [ent, pooled], find_attention_modules(info))
        >>> result.answer(ent).mean().shape, [t.shape for t in result.answer(pooled)], result.entropy_source
        (torch.Size([2, 2]), [torch.Size([1, 1, 16])], 'interface')
    """
    if entropy_source not in ("auto", "interface", "probs"):
        raise ValueError(
            "Expected argument `entropy_source` to be one of ['auto', 'interface', 'probs'] "
            f"but got {entropy_source!r}."
        )
    entropy_layers, reductions, pooled = merge_requests(requests)
    if entropy_layers and attention_modules is None:
        raise ValueError("Entropy was requested but `attention_modules` is None: pass the block's attention modules.")
    attn_map = {attention_modules[i]: i for i in entropy_layers} if attention_modules is not None else {}
    first = "probs" if entropy_source == "probs" else "interface"
    result = _probe_pass(model, batches, blocks, attn_map, reductions, pooled, precision_context, first)
    if entropy_source == "auto" and result.missing:
        again = _probe_pass(model, batches, blocks, attn_map, reductions, pooled, precision_context, "probs")
        again.forwards += result.forwards
        result = again if len(again.missing) < len(result.missing) else result
    return result


def _probe_pass(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]],
    blocks: Sequence[nn.Module] | nn.ModuleList,
    attn_map: dict[nn.Module, int],
    reductions: tuple[str, ...],
    pooled: dict[tuple[str, str], tuple[int, ...]],
    precision_context: Any,
    source: str,
) -> ProbeResult:
    sums: dict[str, dict[int, EntropySums]] = {r: {} for r in reductions}
    per_batch: dict[tuple[str, str], dict[int, Tensor]] = {key: {} for key in pooled}
    result = ProbeResult(pooled={key: [] for key in pooled}, pooled_layers=dict(pooled))
    current_mask: list[Tensor | None] = [None]

    def add_entropy(layer: int, ent: Tensor, n_valid: Tensor) -> None:
        qm = current_mask[0]
        qm = qm if qm is not None and qm.shape[-1] == ent.shape[-1] and qm.shape[0] == ent.shape[0] else None
        for reduction in reductions:
            part = reduce_entropy(ent, n_valid, qm, reduction)  # type: ignore[arg-type]
            acc = sums[reduction]
            acc[layer] = part if layer not in acc else acc[layer] + part

    def add_probs(layer: int, probs: Tensor) -> None:
        keep = probs > 0  # masked keys (padding, causal, local windows) have probability exactly 0 in eager attention
        qm = current_mask[0]
        if qm is not None and qm.shape[-1] == probs.shape[-1] and qm.shape[0] == probs.shape[0]:
            keep = keep & qm.to(torch.bool)[:, None, None, :]
        add_entropy(layer, *entropy_from_probs(probs, keep))

    handles = _pool_hooks(blocks, pooled, per_batch, current_mask)
    try:
        # force_eager: a model compiled in place (`model.compile()`) is not traced again for the probe
        with eval_mode(model), torch.no_grad(), no_fastpath(), force_eager():
            for batch in batches:
                mask = batch.get("attention_mask")
                current_mask[0] = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None
                ctx = precision_context() if precision_context is not None else _null()
                with _entropy_capture(model, attn_map, source, add_entropy, add_probs) as kwargs, ctx:
                    model(**batch, **(kwargs if isinstance(kwargs, dict) else {}))
                result.forwards += 1
                for key, got in per_batch.items():
                    result.pooled[key].append(torch.stack([got[layer] for layer in pooled[key]]))
                    got.clear()
    finally:
        for h in handles:
            h.remove()
    if attn_map:
        seen = set(sums[reductions[0]]) if reductions else set()
        wanted_layers = tuple(sorted(attn_map.values()))
        result.missing = tuple(layer for layer in wanted_layers if layer not in seen)
        result.entropy_layers = tuple(layer for layer in wanted_layers if layer in seen)
        result.entropy_source = source if result.entropy_layers else None
        if result.entropy_layers:
            result.entropy = {r: _stack_sums([sums[r][layer] for layer in result.entropy_layers]) for r in reductions}
    return result


def _entropy_capture(
    model: nn.Module, attn_map: dict[nn.Module, int], source: str, add_entropy: Any, add_probs: Any
) -> Any:
    """The context that feeds the entropy sinks during one forward (nothing when no entropy is requested)."""
    if not attn_map:
        return _null()
    if source == "probs":
        from lightning_inflect.capture.probs import capture_attention_probs

        return capture_attention_probs(model, attn_map, add_probs)
    return capture_attention_entropy(model, attn_map, add_entropy)


def _pool_hooks(
    blocks: Sequence[nn.Module] | nn.ModuleList,
    pooled: dict[tuple[str, str], tuple[int, ...]],
    per_batch: dict[tuple[str, str], dict[int, Tensor]],
    current_mask: list[Tensor | None],
) -> list[Any]:
    """Register one hook per block and site that pools its hidden states for every pooling asked there."""

    def pool_at(site: str, layer: int):
        wanted = [key for key, layers in pooled.items() if key[0] == site and layer in layers]

        def take(h: Any) -> None:
            if isinstance(h, Tensor):
                for key in wanted:
                    per_batch[key][layer] = pool_hidden(h.detach(), current_mask[0], key[1]).float()  # type: ignore[arg-type]

        return take

    handles: list[Any] = []
    try:
        for layer in sorted({i for (site, _), ls in pooled.items() if site == "output" for i in ls}):
            take = pool_at("output", layer)
            handles.append(blocks[layer].register_forward_hook(lambda _m, _i, out, t=take: t(_first(out))))
        for layer in sorted({i for (site, _), ls in pooled.items() if site == "input" for i in ls}):
            take = pool_at("input", layer)
            handles.append(
                blocks[layer].register_forward_pre_hook(
                    lambda _m, args, kwargs, t=take: t(args[0] if args else kwargs.get("hidden_states")),
                    with_kwargs=True,
                )
            )
    except BaseException:
        for h in handles:  # a block index out of range: leave no hook behind
            h.remove()
        raise
    return handles


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


def _stack_sums(parts: list[EntropySums]) -> EntropySums:
    """Stack per-layer sums into ``(layers, heads)`` fields; layers with fewer heads are padded with empty heads."""
    heads = max(p.count.shape[0] for p in parts)

    def pad(t: Tensor) -> Tensor:
        return t if t.shape[0] == heads else torch.cat([t, t.new_zeros(heads - t.shape[0])])

    return EntropySums(*(torch.stack([pad(getattr(p, f)) for p in parts]) for f in EntropySums._fields))


@contextmanager
def _null() -> Iterator[None]:
    yield
