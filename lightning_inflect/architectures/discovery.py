"""Find the Hugging Face model inside a module, its block list and each block's attention module."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from lightning_inflect.architectures.table import MODEL_LAYOUTS, ModelLayout

__all__ = [
    "LayerDiscoveryError",
    "LayerInfo",
    "check_layer_indices",
    "find_attention_modules",
    "find_hf_model",
    "find_layers",
]

# Names of a query (or fused query/key/value) projection, for the structural fallback of find_attention_modules:
# BERT, Llama, DistilBERT, GPT-2, GPT-NeoX/BLOOM/Falcon, ViT-likes, MosaicML, Phi-3, DeBERTa-v2/v3, DeBERTa, MPNet/T5.
_QUERY_NAMES = (
    "query",
    "q_proj",
    "q_lin",
    "c_attn",
    "query_key_value",
    "qkv",
    "Wqkv",
    "qkv_proj",
    "query_proj",
    "in_proj",
    "q",
)


class LayerDiscoveryError(LookupError):
    """The transformer blocks (or the model holding them) could not be found unambiguously."""


@dataclass(frozen=True)
class LayerInfo:
    """Where a model's transformer blocks are.

    Attributes:
        path: dotted path of the block ``nn.ModuleList`` from the model given to :func:`find_layers`.
        blocks: the block list itself.
        source: how it was found: an explicit override, the model table, or the structural fallback.
        layout: the table row used, if any.
    """

    path: str
    blocks: nn.ModuleList
    source: Literal["override", "table", "structural"]
    layout: ModelLayout | None = None

    @property
    def num_layers(self) -> int:
        return len(self.blocks)


def _get(root: nn.Module, path: str) -> nn.Module | None:
    mod: object = root
    for part in path.split(".") if path else []:
        mod = getattr(mod, part, None)
        if mod is None:
            return None
    return mod if isinstance(mod, nn.Module) else None


def _owns(mod: nn.Module, name: str) -> bool:
    return isinstance(getattr(mod, name, None), nn.Module)


def _prefix_of(model: nn.Module, sub: nn.Module) -> str | None:
    for name, mod in model.named_modules():
        if mod is sub:
            return name
    return None


def _structural_candidates(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(m) for m in mod}) == 1:
            out.append((name, mod))
    return out


def find_layers(model: nn.Module, layers_path: str | None = None) -> LayerInfo:
    """Locate the ``nn.ModuleList`` of transformer blocks.

    Order: an explicit ``layers_path`` (from ``model``), then the row of :data:`MODEL_LAYOUTS` for
    ``model.config.model_type`` (path from ``model.base_model``, then from ``model``), then a structural fallback:
    the only ``ModuleList`` of same-typed modules whose length equals ``config.num_hidden_layers`` (or the only
    such list at all).

    Raises:
        LayerDiscoveryError: listing what was tried and the candidate lists found, with the ``layers_path=`` fix.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> cfg = BertConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
        >>> info = find_layers(BertModel(cfg))
        >>> info.path, info.num_layers, info.source
        ('encoder.layer', 3, 'table')
    """
    tried: list[str] = []
    if layers_path is not None:
        mod = _get(model, layers_path)
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            return LayerInfo(layers_path, mod, "override")
        found = "nothing" if mod is None else f"a {type(mod).__name__}"
        names = ", ".join(repr(n) for n, _ in _structural_candidates(model)) or "none"
        raise LayerDiscoveryError(
            f"`layers_path={layers_path!r}` points to {found}, not a non-empty nn.ModuleList of blocks. "
            f"ModuleLists found in {type(model).__name__}: {names}."
        )
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    layout = MODEL_LAYOUTS.get(model_type) if model_type else None
    if layout is not None:
        base = getattr(model, "base_model", model)
        base = base if isinstance(base, nn.Module) else model
        for root in (base, model):
            mod = _get(root, layout.layers)
            prefix = _prefix_of(model, root)
            full = ".".join(p for p in (prefix, layout.layers) if p)
            tried.append(f"table[{model_type!r}]: {full!r}")
            if isinstance(mod, nn.ModuleList) and len(mod) > 0:
                return LayerInfo(full, mod, "table", layout)
    else:
        tried.append(f"table: no row for model_type={model_type!r}")
    cands = _structural_candidates(model)
    expected = getattr(config, "num_hidden_layers", None)
    matching = [c for c in cands if expected is None or len(c[1]) == expected]
    tried.append(f"structural: same-typed ModuleLists of length {expected if expected is not None else 'any'}")
    if len(matching) == 1:
        found_name, found_list = matching[0]
        return LayerInfo(found_name, found_list, "structural", layout)
    listing = ", ".join(f"{n!r} ({len(ml)} x {type(ml[0]).__name__})" for n, ml in cands) or "none"
    raise LayerDiscoveryError(
        f"Could not find the transformer blocks of {type(model).__name__}. Tried: {'; '.join(tried)}. "
        f"Candidate ModuleLists: {listing}. Pass `layers_path=` with the dotted path of the block list "
        f"(for example `layers_path='encoder.layer'`)."
    )


def find_attention_modules(info: LayerInfo) -> list[nn.Module]:
    """The self-attention module of each block: the table's path, else the innermost submodule that owns a
    query (or fused qkv) projection module named one of ``query``, ``q_proj``, ``q_lin``, ``c_attn``,
    ``query_key_value``, ``qkv``, ``Wqkv``, ``qkv_proj``, ``query_proj``, ``in_proj`` or ``q``.

    Example:
        >>> from transformers import GPT2Config, GPT2Model
        >>> info = find_layers(GPT2Model(GPT2Config(n_embd=16, n_layer=2, n_head=2)))
        >>> [type(m).__name__ for m in find_attention_modules(info)]
        ['GPT2Attention', 'GPT2Attention']
    """
    out = []
    for i, block in enumerate(info.blocks):
        mod = _get(block, info.layout.attention) if info.layout is not None else None
        if mod is None:
            owners = [m for _, m in block.named_modules() if any(_owns(m, q) for q in _QUERY_NAMES)]
            mod = owners[-1] if owners else None
        if mod is None:
            raise LayerDiscoveryError(
                f"Block {i} ({type(block).__name__}) has no attention module with a query projection named one of "
                f"{list(_QUERY_NAMES)}. Add a row for this model type to lightning_inflect.architectures.MODEL_LAYOUTS."
            )
        out.append(mod)
    return out


def find_hf_model(module: nn.Module, model_attr: str | None = None) -> tuple[str, nn.Module]:
    """The Hugging Face ``PreTrainedModel`` inside ``module`` (for instance a ``LightningModule``).

    Args:
        module: the container.
        model_attr: dotted attribute path of the model; without it, the single outermost ``PreTrainedModel``.

    Returns:
        ``(attribute path, model)``; the path is ``""`` when ``module`` itself is the model.

    Raises:
        LayerDiscoveryError: when none, or more than one, is found, with the candidates and the ``model_attr=`` fix.
    """
    from transformers import PreTrainedModel

    if model_attr is not None:
        mod = _get(module, model_attr)
        if mod is None:
            raise LayerDiscoveryError(
                f"`model_attr={model_attr!r}` does not name a submodule of {type(module).__name__}. "
                f"Top-level children: {[n for n, _ in module.named_children()]}."
            )
        return model_attr, mod
    found: list[tuple[str, nn.Module]] = []
    for name, mod in module.named_modules():
        if isinstance(mod, PreTrainedModel) and not any(name.startswith(f"{n}.") or n == "" for n, _ in found):
            found.append((name, mod))
    if len(found) == 1:
        return found[0]
    if not found:
        raise LayerDiscoveryError(
            f"No Hugging Face PreTrainedModel found inside {type(module).__name__}. Pass `model_attr=` with the "
            f"attribute that holds your transformer (for example `model_attr='model'`)."
        )
    names = [n for n, _ in found]
    raise LayerDiscoveryError(
        f"Found {len(found)} Hugging Face models inside {type(module).__name__}: {names}; which one to monitor is "
        f"ambiguous. Pass `model_attr=` with one of them, for example `model_attr={names[0]!r}`."
    )


def check_layer_indices(layers: Sequence[int] | None, num_layers: int, arg: str = "layers") -> list[int]:
    """Validate block indices against ``num_layers`` (negative indices count from the end); None means all.

    Example:
        >>> check_layer_indices([0, -1], 4)
        [0, 3]
    """
    if layers is None:
        return list(range(num_layers))
    out = []
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int) or not -num_layers <= i < num_layers:
            raise ValueError(
                f"Expected argument `{arg}` to hold block indices in [0, {num_layers - 1}] (or negative from the end) "
                f"but got {i!r} in {list(layers)!r}; the model has {num_layers} blocks."
            )
        out.append(i % num_layers)
    if len(set(out)) != len(out):
        raise ValueError(f"Expected argument `{arg}` to hold distinct block indices but got {list(layers)!r}.")
    return sorted(out)
