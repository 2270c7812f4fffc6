"""Attention probabilities from the model itself, for models whose attention bypasses transformers' interface.

:func:`~lightning_inflect.capture.capture_attention_entropy` needs the model to call ``ALL_ATTENTION_FUNCTIONS``.
About a third of the modeling files of transformers 5.24 (DeBERTa-v2/v3, DeBERTa, MPNet, GPT-Neo, BLOOM, Falcon, ...)
compute attention inline instead. Their eager code forms the probability matrix and returns it when asked
(``output_attentions=True``), so for them the probe reads the model's own probabilities:

- every listed attention module gets ``output_attentions=True`` (when its ``forward`` has that parameter), through a
  forward pre-hook: the model's top-level ``output_attentions`` stays off, so the model does not collect the
  probabilities of all layers;
- a forward hook on each listed module finds the ``(batch, heads, queries, keys)`` tensor in the module's output and
  hands it to ``sink(layer, probs)`` at once;
- the attention implementation is switched to eager only when the model does not already run it (every config of
  the model gets ``_attn_implementation = "eager"``, and a listed module whose class is a flash or SDPA subclass of an
  eager class runs as that eager class), and everything is restored on exit, also after an exception.

``set_attn_implementation`` cannot do the switch: transformers 5.24 refuses it (with a warning) for exactly these
models, since they do not use the attention interface.

This path is O(T^2) memory per layer: the model materialises each layer's ``(batch, heads, T, T)`` probabilities
(one layer at a time). It is meant for one probe forward, in eval mode under ``torch.no_grad()``; the training forward
keeps its own implementation.

Known model quirks (transformers 5.24), handled here:

- Falcon with ``alibi=True`` folds ALiBi into the 4-D mask for every implementation and its eager branch adds it a
  second time, so eager and SDPA disagree. When the capture switched the model away from SDPA it zeroes the separate
  ``alibi`` argument, so the probabilities (and the outputs) are those of the SDPA forward that training runs.
- Falcon (rotary) under SDPA with ``output_attentions=True`` adds the boolean SDPA mask to the scores (no masking at
  all): switching the config to eager, as done here, makes the model build an additive mask.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["capture_attention_probs"]

# Per attention class (by name): arguments to replace while the capture has switched the model to eager, because the
# eager branch of that class computes something else than its SDPA branch (see the module docstring).
_EAGER_ARGUMENT_FIXES: dict[str, dict[str, Callable[[Any], Any]]] = {
    "FalconAttention": {"alibi": lambda alibi: alibi if alibi is None else torch.zeros_like(alibi)},
}

_NON_EAGER_CLASS = re.compile(r"Flash|Sdpa|SDPA|Flex")


def _configs(model: nn.Module) -> list[Any]:
    """Every Hugging Face config reachable from ``model``: its own, its submodules' and their ``sub_configs``."""
    found: dict[int, Any] = {}
    todo = [getattr(mod, "config", None) for mod in model.modules()]
    while todo:
        cfg = todo.pop()
        if cfg is None or id(cfg) in found or not hasattr(cfg, "_attn_implementation"):
            continue
        found[id(cfg)] = cfg
        todo.extend(getattr(cfg, key, None) for key in getattr(cfg, "sub_configs", None) or {})
    return list(found.values())


def _set_impl(config: Any, value: Any) -> None:
    # The internal attribute, not the property: the property's setter also rewrites the sub-configs.
    if hasattr(config, "_attn_implementation_internal"):
        config._attn_implementation_internal = value
    else:
        config._attn_implementation = value


def _eager_class(cls: type) -> type | None:
    """The eager class that a flash/SDPA attention subclass derives from (``GPTNeoFlashAttention2`` -> its base)."""
    if not _NON_EAGER_CLASS.search(cls.__name__):
        return None
    for base in cls.__mro__[1:]:
        if base is nn.Module or not issubclass(base, nn.Module):
            return None
        if not _NON_EAGER_CLASS.search(base.__name__):
            return base
    return None


def _parameter_slot(module: nn.Module, name: str) -> int | None:
    """Position of ``forward``'s parameter ``name`` (-1 when keyword-only), or None when there is none."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    for i, p in enumerate(params):
        if p.name == name:
            if p.kind == p.KEYWORD_ONLY:
                return -1
            return i if p.kind == p.POSITIONAL_OR_KEYWORD else None
    return None


def _replace_arguments(module: nn.Module, fixes: Mapping[str, Callable[[Any], Any]]) -> Callable[..., Any] | None:
    """A forward pre-hook (``with_kwargs=True``) that replaces ``forward``'s arguments named in ``fixes``."""
    slots = {name: slot for name, fn in fixes.items() if (slot := _parameter_slot(module, name)) is not None}
    if not slots:
        return None

    def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        new = list(args)
        for name, slot in slots.items():
            if 0 <= slot < len(new):
                new[slot] = fixes[name](new[slot])
            else:
                kwargs[name] = fixes[name](kwargs.get(name))
        return tuple(new), kwargs

    return hook


def _tensors(obj: Any) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, Mapping):
        for item in obj.values():
            yield from _tensors(item)


def _query_length(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int | None:
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    return hidden.shape[1] if isinstance(hidden, Tensor) and hidden.dim() == 3 else None


def _find_probs(output: Any, queries: int | None) -> Tensor | None:
    """The ``(batch, heads, queries, keys)`` probability tensor among a module's outputs."""
    cands = [t for t in _tensors(output) if t.dim() == 4 and t.is_floating_point()]
    if queries is not None:
        cands = [t for t in cands if t.shape[-2] == queries]
    square = [t for t in cands if t.shape[-1] == t.shape[-2]]
    best = square or cands
    return best[0] if best else None


@contextmanager
def capture_attention_probs(
    model: nn.Module,
    attention_modules: Mapping[nn.Module, int],
    sink: Callable[[int, Tensor], None],
) -> Iterator[dict[str, Any]]:
    """Hand each listed attention module's probabilities to ``sink`` while the block is active.

    Use it around one probe forward (eval mode, ``torch.no_grad()``)::

        with torch.no_grad(), capture_attention_probs(model, {attn: layer, ...}, sink) as extra:
            model(**batch, **extra)

    Args:
        model: the Hugging Face model (the configs of it and its submodules are switched to eager if needed).
        attention_modules: the module that computes a block's attention -> its block index
            (:func:`~lightning_inflect.architectures.find_attention_modules`).
        sink: called as ``sink(layer, probs)`` once per call of a listed module, as soon as its output exists, with
            the ``(batch, heads, queries, keys)`` probabilities on the model's device (the model's own tensor: do not
            modify it in place; keep what you need, not the tensor, to bound memory).

    Yields:
        Extra keyword arguments to pass to the model's forward (empty today: the modules are set up by hooks).

    Raises:
        RuntimeError: from the forward, when a listed module returns no probability tensor (its class does not
            materialise attention probabilities even under eager attention).

    Example:
        >>> from transformers import BloomConfig, BloomModel
        >>> model = BloomModel(BloomConfig(hidden_size=16, n_layer=2, n_head=2, vocab_size=32)).eval()
        >>> seen = []
        >>> modules = {block.self_attention: i for i, block in enumerate(model.h)}
        >>> with torch.no_grad(), capture_attention_probs(model, modules, lambda i, p: seen.append((i, p.shape))) as x:
        ...     _ = model(input_ids=torch.tensor([[1, 2, 3]]), **x)
        >>> seen
        [(0, torch.Size([1, 2, 3, 3])), (1, torch.Size([1, 2, 3, 3]))]
    """
    configs = _configs(model)
    switch = any(cfg._attn_implementation != "eager" for cfg in configs)
    classes = {mod: eager for mod in attention_modules if (eager := _eager_class(type(mod))) is not None}
    switch = switch or bool(classes)
    saved = [(cfg, cfg._attn_implementation) for cfg in configs] if switch else []

    def on_output(layer: int, mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        probs = _find_probs(output, _query_length(args, kwargs))
        if probs is None:
            shapes = [tuple(t.shape) for t in _tensors(output)]
            raise RuntimeError(
                f"Expected attention module {type(mod).__name__} of block {layer} to return its attention "
                f"probabilities, a (batch, heads, queries, keys) tensor, under eager attention, but got tensors of "
                f"shapes {shapes}. This model does not expose its attention probabilities; leave it out of the "
                f"entropy monitor's `layers` or pass the attention module that computes them."
            )
        sink(layer, probs)

    with ExitStack() as stack:
        try:
            for cfg, _ in saved:
                _set_impl(cfg, "eager")
            for mod, eager in classes.items():
                stack.callback(setattr, mod, "__class__", type(mod))
                mod.__class__ = eager
            for mod, layer in attention_modules.items():
                fixes: dict[str, Callable[[Any], Any]] = {"output_attentions": lambda _: True}
                if switch:
                    fixes.update(_EAGER_ARGUMENT_FIXES.get(type(mod).__name__, {}))
                pre = _replace_arguments(mod, fixes)
                if pre is not None:
                    stack.callback(mod.register_forward_pre_hook(pre, with_kwargs=True).remove)
                hook = mod.register_forward_hook(
                    lambda m, a, k, o, layer=layer: on_output(layer, m, a, k, o), with_kwargs=True
                )
                stack.callback(hook.remove)
            yield {}
        finally:
            stack.close()
            for cfg, impl in reversed(saved):
                _set_impl(cfg, impl)
