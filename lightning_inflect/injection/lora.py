"""peft glue: choose LoRA targets in given blocks, inject, freeze the backbone, keep the head, export adapters."""

from __future__ import annotations

import copy
import enum
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from lightning_inflect.architectures import LayerInfo
from lightning_inflect.validation import check_int, check_number, check_str_list

if TYPE_CHECKING:
    from peft import LoraConfig

ADAPTER_NAME = "inflect"
"""The peft adapter name of our LoRA: a model's own adapters (peft's ``"default"``, any other) are never touched."""

__all__ = [
    "ADAPTER_NAME",
    "InjectionRecord",
    "activate_lora",
    "active_adapters",
    "adapter_state",
    "attach_dormant_lora",
    "check_module_names",
    "count_trainable",
    "default_targets",
    "export_adapters",
    "head_module_names",
    "inject_lora",
    "lora_parameters",
    "lora_settings",
    "plan_injection",
    "resolve_targets",
    "targeted_config",
    "user_adapter_parameters",
    "wrapped_modules",
]


@dataclass
class InjectionRecord:
    """What an injection did, plain data so it can live in a checkpoint and be re-applied on resume.

    Attributes:
        layers: the blocks that received adapters.
        target_modules: full module names (from the Hugging Face model) that LoRA wraps, for people and checks.
        lora: the keyword arguments of the peft ``LoraConfig`` that was injected (plain JSON types): the user's
            settings with ``target_modules`` (names inside a block), ``layers_to_transform`` (the blocks) and
            ``layers_pattern`` (the escaped block path), see :func:`targeted_config`.
        keep_trainable: module names whose parameters stay trainable besides the adapters (task head, user list).
        freeze_backbone: whether every other parameter was frozen.
        step: the optimizer step at which the injection happened.
        trainable_before, trainable_after: trainable parameter counts of the Hugging Face model.
        reason: why these layers (from the selector).
        scores: the selector's per-block scores, if it has them.
        adapter_name: the peft adapter name of these adapters.
        train_user_adapters: whether the adapters the model already carried (a user's own LoRA, their
            ``modules_to_save`` copies) go on training where they trained (records of version 0.3 and earlier,
            which froze them, read as False).
    """

    layers: list[int]
    target_modules: list[str]
    lora: dict[str, Any]
    keep_trainable: list[str]
    freeze_backbone: bool = True
    step: int = 0
    trainable_before: int = 0
    trainable_after: int = 0
    reason: str = ""
    scores: list[float] | None = field(default=None)
    adapter_name: str = ADAPTER_NAME
    train_user_adapters: bool = True

    @property
    def r(self) -> int:
        """The LoRA rank."""
        return int(self.lora.get("r", 8))

    @property
    def lora_alpha(self) -> float:
        """The LoRA scaling numerator."""
        return float(self.lora.get("lora_alpha", 8))

    @property
    def lora_dropout(self) -> float:
        """The dropout on the LoRA input."""
        return float(self.lora.get("lora_dropout", 0.0))

    def config(self, **extra: Any) -> LoraConfig:
        """The peft ``LoraConfig`` of this injection (``extra`` adds fields, e.g. ``modules_to_save``)."""
        from peft import LoraConfig

        return LoraConfig(**self.lora, **extra)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self, lora_numel: int) -> str:
        """What was done, in words (Markdown): blocks, LoRA settings, reason, parameter counts, modules."""
        return (
            f"**Injected LoRA at step {self.step}** into blocks {self.layers} "
            f"(r={self.r}, lora_alpha={self.lora_alpha:g}, lora_dropout={self.lora_dropout:g}).\n\n"
            f"Reason: {self.reason}\n\n"
            f"Trainable parameters: {self.trainable_before:,} before, {self.trainable_after:,} after "
            f"(LoRA: {lora_numel:,}; kept trainable: {self.keep_trainable}).\n\nModules: "
            + ", ".join(f"`{t}`" for t in self.target_modules)
        )

    @classmethod
    def from_dict(cls, data: dict) -> InjectionRecord:
        """A record from :meth:`to_dict`, also from the checkpoints of versions 0.1 and 0.2 (flat LoRA fields,
        explicit module names; 0.1 used peft's ``"default"`` adapter name)."""
        data = {"adapter_name": "default", "train_user_adapters": False, **data}
        if "lora" not in data:
            flat = ("r", "lora_alpha", "lora_dropout")
            data["lora"] = {k: data[k] for k in flat if k in data} | {
                "target_modules": list(data.get("target_modules", []))
            }
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


_INIT_KEEPS_OUTPUTS = (True, "gaussian")
"""peft's ``init_lora_weights`` values that start ``B`` at zero and leave the base weights alone."""

_SET_BY_US = {
    "layers_to_transform": "the chosen blocks",
    "layers_pattern": "the block path",
    "modules_to_save": "`keep_trainable=` (trained in place)",
    "target_parameters": "`target_modules=` (module names inside a block)",
}


def lora_settings(
    lora_config: LoraConfig | None = None,
    *,
    r: int | None = None,
    lora_alpha: float | None = None,
    lora_dropout: float | None = None,
    target_modules: Sequence[str] | None = None,
) -> LoraConfig:
    """The LoRA settings of an injection as peft's ``LoraConfig``: ``lora_config`` as given, or one made from the
    shorthands (defaults ``r=8``, ``lora_alpha=16``, ``lora_dropout=0``, targets per model type).

    ``target_modules`` are names inside a block (``None``: the architectures table's, at ``setup``); the blocks are
    given later, as ``layers_to_transform`` (:func:`targeted_config`).

    Raises:
        ValueError: for a shorthand given together with ``lora_config``; for the fields the injection sets itself;
            for settings that would change the model's outputs at the injection (an ``init_lora_weights`` that
            does not start ``B`` at zero) or train outside the adapter (``bias``).

    Example:
        >>> lora_settings(r=4).r, lora_settings(r=4).lora_alpha
        (4, 16)
        >>> from peft import LoraConfig
        >>> lora_settings(LoraConfig(r=4, layers_to_transform=[1]))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected `lora_config.layers_to_transform` to be unset (the InjectionCallback sets it to ...
    """
    from peft import LoraConfig

    shorthands = {"r": r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout, "target_modules": target_modules}
    given = {k: v for k, v in shorthands.items() if v is not None}
    if lora_config is None:
        r = 8 if r is None else r
        lora_alpha = 16 if lora_alpha is None else lora_alpha
        lora_dropout = 0.0 if lora_dropout is None else lora_dropout
        check_int("r", r, low=1)
        check_number("lora_alpha", lora_alpha, 0.0, None, open_low=True)
        check_number("lora_dropout", lora_dropout, 0.0, 1.0, open_high=True)
        check_str_list("target_modules", target_modules, allow_empty=False, optional=True)
        return LoraConfig(
            r=r,
            lora_alpha=lora_alpha,  # type: ignore[arg-type]  # peft annotates int, computes with floats
            lora_dropout=lora_dropout,
            target_modules=None if target_modules is None else list(target_modules),
        )
    if not isinstance(lora_config, LoraConfig):
        raise ValueError(f"Expected argument `lora_config` to be a peft LoraConfig or None but got {lora_config!r}.")
    if given:
        raise ValueError(
            f"Expected either `lora_config=` or the shorthands {sorted(given)} but got both: put them into the "
            "LoraConfig."
        )
    for name, by in _SET_BY_US.items():
        if getattr(lora_config, name, None):
            raise ValueError(
                f"Expected `lora_config.{name}` to be unset (the InjectionCallback sets it to {by}) but got "
                f"{getattr(lora_config, name)!r}."
            )
    if isinstance(lora_config.target_modules, str):
        raise ValueError(
            f"Expected `lora_config.target_modules` to be module names inside a block but got the regular expression "
            f"{lora_config.target_modules!r}: peft applies a regular expression to every block, not the chosen ones."
        )
    if lora_config.init_lora_weights not in _INIT_KEEPS_OUTPUTS or lora_config.bias != "none":
        raise ValueError(
            "Expected `lora_config.init_lora_weights` in (True, 'gaussian') and `lora_config.bias='none'` but got "
            f"{lora_config.init_lora_weights!r} and {lora_config.bias!r}: the injection promises unchanged outputs "
            "and trains only the adapter and `keep_trainable`."
        )
    check_int("lora_config.r", lora_config.r, low=1)
    return copy.deepcopy(lora_config)


def _plain(value: Any) -> Any:
    """``value`` in plain JSON types (sets as sorted lists, enums as their values), for checkpoints and JSON."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def targeted_config(settings: LoraConfig, info: LayerInfo, layers: Sequence[int], targets: Sequence[str]) -> dict:
    """The keyword arguments of the ``LoraConfig`` that adapts ``targets`` (names inside a block) in the blocks
    ``layers`` only: ``settings``' own fields (those that differ from peft's defaults) with peft's
    ``layers_to_transform`` and ``layers_pattern`` (the block path, escaped, so that no other numbered list of
    the model matches). Plain JSON types, so it goes into checkpoints and ``adapter_config.json`` as it is.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> from lightning_inflect.architectures import find_layers
        >>> bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
        ...                             intermediate_size=16))
        >>> kw = targeted_config(lora_settings(r=4), find_layers(bert), [2, 0], ["query"])
        >>> kw["r"], kw["target_modules"], kw["layers_to_transform"], kw["layers_pattern"]
        (4, ['query'], [0, 2], 'encoder\\\\.layer')
    """
    from peft import LoraConfig

    defaults = LoraConfig().to_dict()
    own = {k: v for k, v in settings.to_dict().items() if k in defaults and v != defaults[k]}
    own.update(
        target_modules=list(targets), layers_to_transform=sorted(set(layers)), layers_pattern=re.escape(info.path)
    )
    return _plain(own)


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


def plan_injection(
    model: nn.Module,
    info: LayerInfo,
    layers: Sequence[int],
    settings: LoraConfig,
    targets: Sequence[str],
    keep_trainable: Sequence[str] = (),
    **fields: Any,
) -> InjectionRecord:
    """The record of adapting ``targets`` (names inside a block) of the blocks ``layers`` of ``model`` with the LoRA
    ``settings`` (:func:`lora_settings`): the full module names, the targeted ``LoraConfig``
    (:func:`targeted_config`), the modules kept trainable (the task head, :func:`head_module_names`, and
    ``keep_trainable``) and the trainable count before; ``fields`` fills the others (``step``, ``reason``, ...).

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> from lightning_inflect.architectures import find_layers
        >>> bert = BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=2,
        ...                                      num_attention_heads=2, intermediate_size=16))
        >>> record = plan_injection(bert, find_layers(bert), [1], lora_settings(r=2), ["query"], step=5)
        >>> record.target_modules, record.keep_trainable, record.step
        (['bert.encoder.layer.1.attention.self.query'], ['classifier'], 5)
    """
    return InjectionRecord(
        layers=list(layers),
        target_modules=resolve_targets(info, layers, targets, ""),
        lora=targeted_config(settings, info, layers, targets),
        keep_trainable=sorted(set(head_module_names(model)) | set(keep_trainable)),
        trainable_before=count_trainable(model),
        **fields,
    )


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


def _adapter_layers(model: nn.Module) -> dict[str, Any]:
    """Every module of ``model`` that switches peft adapters on and off: tuner layers (LoRA, ...) and the
    ``modules_to_save`` / trainable-token wrappers a ``PeftModel`` puts around a task head."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    return {n: m for n, m in model.named_modules() if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))}


def active_adapters(model: nn.Module) -> dict[str, list[str]]:
    """The active adapters of every adapter-carrying module of ``model`` (its LoRA layers and its
    ``modules_to_save`` wrappers), by module name: what an injection must keep, plus its own adapter.

    Example:
        >>> from peft import LoraConfig, get_peft_model
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> bert = BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=1,
        ...                                      num_attention_heads=2, intermediate_size=16))
        >>> peft_model = get_peft_model(bert, LoraConfig(task_type="SEQ_CLS", target_modules=["query"]))
        >>> {k.split(".")[-1]: v for k, v in active_adapters(peft_model).items()}
        {'query': ['default'], 'classifier': ['default']}
    """
    return {name: list(layer.active_adapters) for name, layer in _adapter_layers(model).items()}


def user_adapter_parameters(model: nn.Module, adapter_name: str = ADAPTER_NAME) -> list[nn.Parameter]:
    """The parameters of the adapters ``model`` carries besides ``adapter_name``: a user's LoRA tensors and the
    copies of their ``modules_to_save`` (a ``PeftModel``'s trained task head); not the base weights these wrap."""
    ours = {id(p) for p in lora_parameters(model, adapter_name)}
    out: dict[int, nn.Parameter] = {}
    for layer in _adapter_layers(model).values():
        base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else getattr(layer, "original_module", None)
        skip = {id(p) for p in base.parameters()} if base is not None and base is not layer else set()
        out.update({id(p): p for p in layer.parameters() if id(p) not in skip and id(p) not in ours})
    return list(out.values())


def wrapped_modules(model: nn.Module) -> set[str]:
    """Names of the modules a ``PeftModel`` wraps as ``modules_to_save`` (or trainable tokens): the user's adapter
    trains and saves their copy, so an injection keeps them as they are and does not export them."""
    from peft.utils.other import AuxiliaryTrainingWrapper

    return {n for n, m in model.named_modules() if isinstance(m, AuxiliaryTrainingWrapper)}


def existing_adapters(model: nn.Module) -> set[str]:
    """Names of the LoRA adapters already in ``model`` (a user's own, for instance)."""
    return {name for layer in _lora_layers(model).values() for name in layer.lora_A}


def training_setup(model: nn.Module) -> dict[str, Any]:
    """What an injected model trains with: every adapter-carrying module's active adapters and every parameter's
    ``requires_grad``, by name. A loop that reloads adapters behind the injection's back (the Hugging Face
    ``Trainer`` resuming a ``PeftModel`` activates only the first adapter and loads the others frozen) puts it back
    with :func:`restore_training_setup`.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> setup = training_setup(net)
        >>> net.bias.requires_grad_(False)
        Parameter containing:...
        >>> restore_training_setup(net, setup), net.bias.requires_grad
        (['bias'], True)
    """
    return {
        "active": active_adapters(model),
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
    }


def restore_training_setup(model: nn.Module, setup: dict[str, Any]) -> list[str]:
    """Make ``model``'s active adapters and ``requires_grad`` flags those of ``setup`` (:func:`training_setup`);
    returns the names of the modules and parameters that had to change."""
    changed = []
    layers = _adapter_layers(model)
    for name, names in setup["active"].items():
        layer = layers.get(name)
        if layer is not None and list(layer.active_adapters) != names:
            layer.set_adapter(names)
            changed.append(name)
    flags = setup["requires_grad"]
    for name, p in model.named_parameters():
        if name in flags and p.requires_grad != flags[name]:
            p.requires_grad_(flags[name])
            changed.append(name)
    return changed


def _restore_active(model: nn.Module, before: dict[str, list[str]], ours: str, wrapped: set[str]) -> None:
    """Every adapter-carrying module active as in ``before``, plus adapter ``ours`` where it is in ``wrapped``:
    peft activates only the new adapter in every module it visits, wrappers of a user's task head included."""
    for name, layer in _adapter_layers(model).items():
        names = [*before.get(name, []), *([ours] if name in wrapped else [])]
        if list(layer.active_adapters) != names:
            layer.set_adapter(names)


def inject_lora(model: nn.Module, record: InjectionRecord) -> list[nn.Parameter]:
    """Attach LoRA adapter ``record.adapter_name`` to ``record.target_modules`` of ``model`` (in place), set what
    trains.

    Adapters the model already carries (a user's own LoRA under any name, the ``modules_to_save`` copy of a
    ``PeftModel``'s task head) are left as they are: their weights and active state do not change, and where a
    chosen module already carries LoRA, ours is added beside theirs and both stay active, so the model's outputs
    are unchanged (:func:`active_adapters` after is the one before plus ours). With ``freeze_backbone``
    everything but our adapter, the ``record.keep_trainable`` modules and (with ``record.train_user_adapters``) the
    user's adapters' own trainable tensors is frozen; without it the parameters keep the ``requires_grad`` they
    had. peft freezes whatever it is given except the adapters, so the flags are set again here, and the kept
    modules are trained in place (no ``modules_to_save`` deep copy that the optimizer would not know about); a
    kept module that the user's ``PeftModel`` wraps trains its active copy, as peft does, not the original.

    Returns:
        The new LoRA parameters. LoRA ``B`` matrices start at zero, so the model's outputs are unchanged.

    Raises:
        ValueError: when the model already has an adapter named ``record.adapter_name``.
    """
    from peft import inject_adapter_in_model

    if record.adapter_name in existing_adapters(model):
        raise ValueError(
            f"The model already carries a LoRA adapter named {record.adapter_name!r}; lightning-inflect adds its own "
            "adapter beside a model's adapters and never replaces one. Pass another `adapter_name=` to the "
            "InjectionCallback."
        )
    flags = {id(p): p.requires_grad for p in model.parameters()}
    active = active_adapters(model)
    user = {id(p) for p in user_adapter_parameters(model, record.adapter_name)}
    before = {id(p) for p in model.parameters()}
    inject_adapter_in_model(record.config(), model, adapter_name=record.adapter_name)
    wrapped = sorted(name for name, layer in _lora_layers(model).items() if record.adapter_name in layer.lora_A)
    if wrapped != sorted(record.target_modules):
        raise RuntimeError(
            f"peft wrapped {wrapped} for the LoRA settings {record.lora}, where {sorted(record.target_modules)} was "
            "meant: give `layers_path=` and `target_modules=` that name the blocks and modules unambiguously."
        )
    _restore_active(model, active, record.adapter_name, set(wrapped))
    lora = [p for p in model.parameters() if id(p) not in before]
    _set_trainable(model, record, lora, flags, user if record.train_user_adapters else set())
    return lora


def _set_trainable(
    model: nn.Module, record: InjectionRecord, lora: list[nn.Parameter], flags: dict[int, bool], user: set[int]
) -> None:
    """``lora`` trains; with ``record.freeze_backbone`` every other parameter but the kept modules' and the trainable
    ones among the ``user`` adapters' is frozen, without it each keeps its flag from ``flags`` (by ``id``: peft
    renames the wrapped weights) or trains when kept. A kept module wrapped by the user's ``PeftModel`` trains its
    active copy only (its original is not in the forward)."""
    keep = tuple(f"{m}." for m in record.keep_trainable)
    originals = tuple(f"{m}.original_module." for m in wrapped_modules(model))
    copies = {id(p) for p in user_adapter_parameters(model, record.adapter_name)}
    ours = {id(p) for p in lora}
    for name, p in model.named_parameters():
        kept = name.startswith(keep) and not name.startswith(originals)
        if kept and id(p) in copies:  # the user's copy of a kept head: trains when it is the active one
            kept = flags.get(id(p), p.requires_grad)
        if id(p) in ours:
            p.requires_grad_(True)
        elif record.freeze_backbone:
            p.requires_grad_(kept or (id(p) in user and flags.get(id(p), False)))
        else:
            p.requires_grad_(flags.get(id(p), p.requires_grad) or kept)


def attach_dormant_lora(model: nn.Module, record: InjectionRecord) -> list[nn.Parameter]:
    """Attach adapter ``record.adapter_name`` to ``record.target_modules`` of ``model`` *dormant*: inactive (peft
    skips it in the forward, the outputs are those of the model without it) and frozen (``requires_grad=False``,
    ``B`` at zero); nothing else changes. :func:`activate_lora` wakes the chosen modules' part later.

    This is how an injection fits sharded training (FSDP2): the adapters must be in the blocks before ``fully_shard``
    takes the blocks' parameters, so every candidate block gets one at ``setup`` and the injection only flips flags.
    ``record`` lists the candidate blocks and modules (its step, reason and counts are not used).

    Returns:
        The new LoRA parameters.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> from lightning_inflect.architectures import find_layers
        >>> bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        ...                             intermediate_size=16))
        >>> record = plan_injection(bert, find_layers(bert), [0, 1], lora_settings(r=2), ["query"])
        >>> lora = attach_dormant_lora(bert, record)
        >>> len(lora), any(p.requires_grad for p in lora), bert.encoder.layer[0].attention.self.query.active_adapters
        (4, False, [])
    """
    flags = {id(p): p.requires_grad for p in model.parameters()}
    lora = inject_lora(model, record)
    for layer in _lora_layers(model).values():
        if record.adapter_name in layer.active_adapters:
            layer.set_adapter([a for a in layer.active_adapters if a != record.adapter_name])
    ours = {id(p) for p in lora}
    for p in model.parameters():
        p.requires_grad_(False if id(p) in ours else flags[id(p)])
    return lora


def activate_lora(model: nn.Module, record: InjectionRecord) -> list[nn.Parameter]:
    """Wake the dormant adapter (:func:`attach_dormant_lora`) of ``record.target_modules``: active beside the
    modules' other adapters, trainable, and every other parameter set as :func:`inject_lora` sets it. The adapter
    stays dormant in the other modules. In place; works on sharded (DTensor) parameters, since only flags change.

    Returns:
        The LoRA parameters that now train (the chosen modules' ``lora_A``/``lora_B`` of this adapter).

    Raises:
        ValueError: when a target module carries no dormant adapter of that name.
    """
    layers = _lora_layers(model)
    missing = [m for m in record.target_modules if m not in layers or record.adapter_name not in layers[m].lora_A]
    if missing:
        raise ValueError(
            f"Expected a dormant LoRA adapter {record.adapter_name!r} on {missing} (attached at setup for sharded "
            "training) but found none: the blocks to inject must be among the candidate blocks of the setup."
        )
    flags = {id(p): p.requires_grad for p in model.parameters()}
    lora: list[nn.Parameter] = []
    for name in record.target_modules:
        layer = layers[name]
        layer.set_adapter([*[a for a in layer.active_adapters if a != record.adapter_name], record.adapter_name])
        lora += [*layer.lora_A[record.adapter_name].parameters(), *layer.lora_B[record.adapter_name].parameters()]
    user = {id(p) for p in user_adapter_parameters(model, record.adapter_name)} if record.train_user_adapters else set()
    _set_trainable(model, record, lora, flags, user)
    return lora


def adapter_state(model: nn.Module, record: InjectionRecord) -> dict[str, Any]:
    """The tensors :func:`export_adapters` writes, on the CPU, whole: adapter ``record.adapter_name`` of
    ``record.target_modules`` (not the dormant rest, not other adapters) and the kept modules' parameters, under
    peft's keys. A sharded (DTensor) tensor is gathered with ``full_tensor()``: a collective, so under FSDP2 every
    rank must call this, in the same order (it is deterministic)."""
    from peft import get_peft_model_state_dict

    chosen = tuple(f"{m}." for m in record.target_modules)
    keep = tuple(f"{m}." for m in _exported_keep(model, record))
    state = {k: v for k, v in get_peft_model_state_dict(model, adapter_name=record.adapter_name).items()
             if k.startswith(chosen)}  # fmt: skip
    state.update({name: p for name, p in model.state_dict().items() if name.startswith(keep)})
    out = {}
    for key, p in state.items():
        full = getattr(p, "full_tensor", None)
        out[f"base_model.model.{key}"] = (full() if full is not None else p).detach().cpu().contiguous()
    return out


def _exported_keep(model: nn.Module, record: InjectionRecord) -> list[str]:
    """The kept modules the export holds: not those the user's ``PeftModel`` wraps (their adapter saves them)."""
    wrapped = wrapped_modules(model)
    return [m for m in record.keep_trainable if m not in wrapped]


def export_adapters(
    model: nn.Module,
    record: InjectionRecord,
    directory: str | Path,
    merged: bool = False,
    tensors: dict[str, Any] | None = None,
) -> Path:
    """Save our adapter in peft's format (``adapter_config.json`` + ``adapter_model.safetensors``).

    The config is the injection's ``LoraConfig`` (:meth:`InjectionRecord.config`, blocks as
    ``layers_to_transform``) with the kept modules (task head) as ``modules_to_save``, written by its
    ``save_pretrained``. The tensors (:func:`adapter_state`, or ``tensors`` when given) are peft's
    ``get_peft_model_state_dict`` for ``record.adapter_name`` in the chosen modules only (a user's own adapters are
    theirs to save) plus the kept modules, under the keys ``PeftModel.save_pretrained`` writes (``base_model.model.``
    + the name in the model): the model is not a ``PeftModel``, and wrapping it in one would inject the adapter
    again. Under FSDP2 every rank gathers ``tensors = adapter_state(model, record)`` and one rank writes them.
    ``PeftModel.from_pretrained(fresh_base_model, directory)`` loads them back.

    With ``merged=True`` a ``merged/`` folder also gets the full model with every active LoRA adapter merged into
    the base weights, loadable with no peft at all; it is made from the saved files, as a user would: peft's
    ``PeftModel.from_pretrained`` over a copy of the model without our adapter, then ``merge_and_unload``.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name_or_path = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    keep = _exported_keep(model, record)
    config = record.config(modules_to_save=keep or None, base_model_name_or_path=name_or_path)
    config.save_pretrained(str(directory))
    tensors = adapter_state(model, record) if tensors is None else tensors
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    (directory / "inflect_injection.json").write_text(json.dumps(record.to_dict(), indent=2))
    if merged:
        _save_merged(model, record.adapter_name, directory)
    return directory


def _save_merged(model: nn.Module, adapter_name: str, directory: Path) -> None:
    """``directory/merged``: the exported adapter loaded by peft into a copy of ``model`` without it, then every
    adapter active in ``model`` merged by ``merge_and_unload``."""
    from peft import PeftModel
    from peft.functional import delete_adapter

    active = sorted({name for layer in _lora_layers(model).values() for name in layer.active_adapters})
    clone = copy.deepcopy(model)
    delete_adapter(clone, adapter_name, prefix="lora_")
    peft_model = PeftModel.from_pretrained(clone, str(directory), adapter_name=adapter_name)
    merged = peft_model.merge_and_unload(adapter_names=active)
    merged.save_pretrained(str(directory / "merged"))  # type: ignore[operator]  # a transformers PreTrainedModel
