"""peft glue: choose LoRA targets in given blocks, inject, freeze the backbone, keep the head, export adapters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_inflect.architectures import LayerInfo

ADAPTER_NAME = "inflect"
"""The peft adapter name of our LoRA: a model's own adapters (peft's ``"default"``, any other) are never touched."""

__all__ = [
    "ADAPTER_NAME",
    "InjectionRecord",
    "check_module_names",
    "count_trainable",
    "default_targets",
    "export_adapters",
    "head_module_names",
    "inject_lora",
    "lora_parameters",
    "resolve_targets",
]


@dataclass
class InjectionRecord:
    """What an injection did, plain data so it can live in a checkpoint and be re-applied on resume.

    Attributes:
        layers: the blocks that received adapters.
        target_modules: full module names (from the Hugging Face model) that were wrapped by LoRA.
        r, lora_alpha, lora_dropout: the LoRA hyper-parameters.
        keep_trainable: module names whose parameters stay trainable besides the adapters (task head, user list).
        freeze_backbone: whether every other parameter was frozen.
        step: the optimizer step at which the injection happened.
        trainable_before, trainable_after: trainable parameter counts of the Hugging Face model.
        reason: why these layers (from the selector).
        scores: the selector's per-block scores, if it has them.
        adapter_name: the peft adapter name of these adapters.
    """

    layers: list[int]
    target_modules: list[str]
    r: int
    lora_alpha: float
    lora_dropout: float
    keep_trainable: list[str]
    freeze_backbone: bool = True
    step: int = 0
    trainable_before: int = 0
    trainable_after: int = 0
    reason: str = ""
    scores: list[float] | None = field(default=None)
    adapter_name: str = ADAPTER_NAME

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self, lora_numel: int) -> str:
        """What was done, in words (Markdown): blocks, LoRA settings, reason, parameter counts, modules."""
        return (
            f"**Injected LoRA at step {self.step}** into blocks {self.layers} "
            f"(r={self.r}, lora_alpha={self.lora_alpha}, lora_dropout={self.lora_dropout}).\n\n"
            f"Reason: {self.reason}\n\n"
            f"Trainable parameters: {self.trainable_before:,} before, {self.trainable_after:,} after "
            f"(LoRA: {lora_numel:,}; kept trainable: {self.keep_trainable}).\n\nModules: "
            + ", ".join(f"`{t}`" for t in self.target_modules)
        )

    @classmethod
    def from_dict(cls, data: dict) -> InjectionRecord:
        known = {f for f in cls.__dataclass_fields__}
        data = {"adapter_name": "default", **data}  # records of version 0.1 used peft's default name
        return cls(**{k: v for k, v in data.items() if k in known})


def count_trainable(module: nn.Module) -> int:
    """Number of trainable parameters (each tensor counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters() if p.requires_grad}.values())


def head_module_names(model: nn.Module) -> list[str]:
    """Top-level submodules of a Hugging Face model that sit outside its base model: the task head.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> cfg = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
        >>> head_module_names(BertForSequenceClassification(cfg))
        ['classifier']
    """
    base = getattr(model, "base_model", model)
    if base is model:
        return []
    return [n for n, child in model.named_children() if child is not base and any(True for _ in child.parameters())]


def default_targets(model: nn.Module, info: LayerInfo, include_mlp: bool = False) -> list[str]:
    """The architectures table's LoRA targets (module names inside a block) for ``model``.

    Raises:
        ValueError: when the table has none for this ``model_type``, with the ``target_modules=`` fix.
    """
    layout = info.layout
    if layout is None or not layout.lora_targets:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        raise ValueError(
            f"No default LoRA targets for model_type={model_type!r}: pass `target_modules=` (module names inside a "
            "block, e.g. ['q_proj', 'v_proj'])."
        )
    return list(layout.lora_targets) + (list(layout.mlp_targets) if include_mlp else [])


def check_module_names(model: nn.Module, names: Sequence[str], arg: str) -> None:
    """Every entry of ``names`` names a module of ``model`` (``arg`` is the option that gave them)."""
    modules = dict(model.named_modules())
    for m in names:
        if m not in modules:
            raise ValueError(f"Expected every entry of `{arg}` to name a module of the model but got {m!r}.")


def resolve_targets(info: LayerInfo, layers: Sequence[int], target_modules: Sequence[str], prefix: str) -> list[str]:
    """Full module names (``prefix`` + block path + leaf) of the ``nn.Linear``-like targets in the chosen blocks.

    A target matches a module of a block whose name equals it or ends with ``"." + target`` (peft's rule).

    Raises:
        ValueError: when a target matches nothing in one of the chosen blocks, listing the block's linear layers.
    """
    out: list[str] = []
    for layer in layers:
        block = info.blocks[layer]
        names = {n: m for n, m in block.named_modules() if n}
        for target in target_modules:
            hits = [n for n in names if (n == target or n.endswith("." + target)) and "lora_" not in n]
            if not hits:
                linears = sorted(n for n, m in names.items() if type(m).__name__ in ("Linear", "Conv1D"))
                raise ValueError(
                    f"Expected every entry of `target_modules` to match a module of block {layer}, but "
                    f"{target!r} matches nothing. Linear layers of this block: {linears}."
                )
            out.extend(f"{prefix}{info.path}.{layer}.{n}" for n in hits)
    return sorted(set(out))


def lora_parameters(model: nn.Module, adapter_name: str = ADAPTER_NAME) -> list[nn.Parameter]:
    """The LoRA tensors of adapter ``adapter_name`` in ``model`` (each once, in module order); other adapters'
    tensors are not included."""
    seen, out = set(), []
    for name, p in model.named_parameters():
        if ".lora_" in name and f".{adapter_name}." in f"{name}." and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _lora_layers(model: nn.Module) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def existing_adapters(model: nn.Module) -> set[str]:
    """Names of the LoRA adapters already in ``model`` (a user's own, for instance)."""
    return {name for layer in _lora_layers(model).values() for name in layer.lora_A}


def inject_lora(model: nn.Module, record: InjectionRecord) -> list[nn.Parameter]:
    """Attach LoRA adapter ``record.adapter_name`` to ``record.target_modules`` of ``model`` (in place), set what
    trains.

    Adapters the model already carries (a user's own LoRA, under any name) are left as they are: their weights,
    ranks and active state do not change, and where a chosen module already carries LoRA, ours is added beside
    theirs and both stay active, so the model's outputs are unchanged. With ``freeze_backbone`` everything but our
    adapter and the ``record.keep_trainable`` modules is frozen (the user's adapters included); without it the
    parameters keep the ``requires_grad`` they had. peft freezes whatever it is given except the adapters, so the
    flags are set again here, and the kept modules are trained in place (no ``modules_to_save`` deep copy that the
    optimizer would not know about).

    Returns:
        The new LoRA parameters. LoRA ``B`` matrices start at zero, so the model's outputs are unchanged.

    Raises:
        ValueError: when the model already has an adapter named ``record.adapter_name``.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if record.adapter_name in existing_adapters(model):
        raise ValueError(
            f"The model already carries a LoRA adapter named {record.adapter_name!r}; lightning-inflect adds its own "
            "adapter beside a model's adapters and never replaces one. Pass another `adapter_name=` to the "
            "InjectionCallback."
        )
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    active = {name: list(layer.active_adapters) for name, layer in _lora_layers(model).items()}
    config = LoraConfig(
        r=record.r,
        lora_alpha=record.lora_alpha,  # type: ignore[arg-type]  # peft annotates int, computes with floats
        lora_dropout=record.lora_dropout,
        target_modules=list(record.target_modules),
        bias="none",
    )
    before = {id(p) for p in model.parameters()}
    inject_adapter_in_model(config, model, adapter_name=record.adapter_name)
    for name, layer in _lora_layers(model).items():  # peft activates only the new adapter: keep the others active
        ours = [record.adapter_name] if record.adapter_name in layer.lora_A else []
        layer.set_adapter([*active.get(name, []), *ours])
    keep = tuple(f"{m}." for m in record.keep_trainable)
    for name, p in model.named_parameters():
        if id(p) not in before:
            p.requires_grad_(True)
        elif record.freeze_backbone:
            p.requires_grad_(name.startswith(keep))
        else:
            p.requires_grad_(flags.get(name, p.requires_grad) or name.startswith(keep))
    return [p for p in model.parameters() if id(p) not in before]


def export_adapters(model: nn.Module, record: InjectionRecord, directory: str | Path, merged: bool = False) -> Path:
    """Save our adapter in peft's format (``adapter_config.json`` + ``adapter_model.safetensors``).

    The LoRA tensors come from peft's ``get_peft_model_state_dict`` for ``record.adapter_name`` only (a user's own
    adapters are theirs to save). ``PeftModel.from_pretrained(fresh_base_model, directory)`` loads them back, with
    the kept modules (task head) as ``modules_to_save``. With ``merged=True`` a ``merged/`` folder also gets the
    full model with every active LoRA adapter merged into the base weights (``save_pretrained`` of a copy), loadable
    with no peft at all.
    """
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = LoraConfig(
        r=record.r,
        lora_alpha=record.lora_alpha,  # type: ignore[arg-type]  # peft annotates int, computes with floats
        lora_dropout=record.lora_dropout,
        target_modules=list(record.target_modules),
        modules_to_save=list(record.keep_trainable) or None,
        bias="none",
        base_model_name_or_path=getattr(getattr(model, "config", None), "_name_or_path", None) or None,
    )
    config.save_pretrained(str(directory))
    keep = tuple(f"{m}." for m in record.keep_trainable)
    state = get_peft_model_state_dict(model, adapter_name=record.adapter_name)
    state.update({name: p for name, p in model.state_dict().items() if name.startswith(keep)})
    tensors = {f"base_model.model.{key}": p.detach().cpu().contiguous() for key, p in state.items()}
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "inflect_injection.json").write_text(json.dumps(record.to_dict(), indent=2))
    if merged:
        _save_merged(model, directory / "merged")
    return directory


def _save_merged(model: nn.Module, directory: Path) -> None:
    import copy

    from peft.tuners.lora import LoraLayer

    clone = copy.deepcopy(model)
    for name, module in list(clone.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = clone.get_submodule(parent_name) if parent_name else clone
            setattr(parent, child, module.get_base_layer())
    with torch.no_grad():
        clone.save_pretrained(str(directory))  # type: ignore[operator]  # a transformers PreTrainedModel
