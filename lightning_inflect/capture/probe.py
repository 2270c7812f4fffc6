"""The probe forward: a fixed batch run in eval mode under ``no_grad``, gathering entropy and block outputs."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_inflect.capture.attention import capture_attention_entropy
from lightning_inflect.functional.entropy import EntropySums

__all__ = ["ProbeResult", "default_model_inputs", "eval_mode", "pool_hidden", "run_probe", "to_device"]

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
    """Pool ``(batch, seq, dim)`` block outputs to ``(batch, dim)`` over real tokens.

    Example:
        >>> h = torch.arange(6.0).view(1, 3, 2); m = torch.tensor([[1, 1, 0]])
        >>> pool_hidden(h, m, "mean").tolist(), pool_hidden(h, m, "last").tolist()
        ([[1.0, 2.0]], [[2.0, 3.0]])
    """
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


@dataclass
class ProbeResult:
    """What one probe pass over all probe batches gathered.

    Attributes:
        entropy: block index -> summed entropies over all probe batches.
        pooled: block index -> one ``(n_b, dim)`` float32 CPU tensor per probe batch.
        pooled_inputs: block index -> the same for the block's input hidden states.
        forwards: number of model forwards run.
    """

    entropy: dict[int, EntropySums] = field(default_factory=dict)
    pooled: dict[int, list[Tensor]] = field(default_factory=dict)
    pooled_inputs: dict[int, list[Tensor]] = field(default_factory=dict)
    forwards: int = 0


def run_probe(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]],
    blocks: Sequence[nn.Module],
    entropy_layers: Sequence[int] = (),
    attention_modules: Sequence[nn.Module] | None = None,
    output_layers: Sequence[int] = (),
    pooling: Pooling = "mean",
    reduction: Literal["token", "example"] = "token",
    precision_context: Any = None,
    input_layers: Sequence[int] = (),
) -> ProbeResult:
    """Run ``model(**batch)`` for each probe batch in eval mode under ``no_grad``; gather what was asked.

    The model's and every submodule's train/eval flags are restored afterwards, and every hook is removed, also
    when the forward raises.

    Args:
        model: the Hugging Face model.
        batches: keyword-input dicts, already on the model's device.
        blocks: the block list.
        entropy_layers: blocks whose attention entropy to gather (needs ``attention_modules``).
        attention_modules: the attention module of every block.
        output_layers: blocks whose pooled outputs to gather.
        pooling: how to pool block outputs over tokens.
        reduction: entropy reduction (see :func:`~lightning_inflect.functional.reduce_entropy`).
        precision_context: a callable returning a context manager (autocast) to run the forward in.
        input_layers: blocks whose pooled *inputs* to gather (the input of block 0 is the embedding output).
    """
    result = ProbeResult()
    handles = []
    current_mask: list[Tensor | None] = [None]

    def make_hook(layer: int):
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            h = out[0] if isinstance(out, (tuple, list)) else out
            pooled = pool_hidden(h, current_mask[0], pooling).detach().float().cpu()
            result.pooled.setdefault(layer, []).append(pooled)

        return hook

    def make_pre_hook(layer: int):
        def hook(_mod: nn.Module, args: Any, kwargs: Any) -> None:
            h = args[0] if args else kwargs.get("hidden_states")
            if isinstance(h, Tensor):
                pooled = pool_hidden(h, current_mask[0], pooling).detach().float().cpu()
                result.pooled_inputs.setdefault(layer, []).append(pooled)

        return hook

    try:
        for layer in output_layers:
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        for layer in input_layers:
            handles.append(blocks[layer].register_forward_pre_hook(make_pre_hook(layer), with_kwargs=True))
        attn_map = {attention_modules[i]: i for i in entropy_layers} if attention_modules is not None else {}
        with eval_mode(model), torch.no_grad():
            for batch in batches:
                mask = batch.get("attention_mask")
                current_mask[0] = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None
                ctx = precision_context() if precision_context is not None else _null()
                with capture_attention_entropy(model, attn_map, result.entropy, current_mask[0], reduction), ctx:
                    model(**batch)
                result.forwards += 1
    finally:
        for h in handles:
            h.remove()
    return result


@contextmanager
def _null() -> Iterator[None]:
    yield
