"""InjectionCallback: partway through training, freeze the backbone and attach LoRA at the chosen blocks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_inflect.architectures import (
    LayerInfo,
    check_layer_indices,
    find_hf_model,
    find_layers,
)
from lightning_inflect.callbacks.injection_sharded import (
    attach_dormant,
    check_sharded,
    gather_adapters,
    reshard,
    sharded,
)
from lightning_inflect.callbacks.injection_state import report_injection
from lightning_inflect.callbacks.lightning_internals import callback_state_in_checkpoint
from lightning_inflect.callbacks.resume import before_weights_load_hooks, remove_hooks
from lightning_inflect.callbacks.selector_inputs import SelectorInputs
from lightning_inflect.injection import (
    ADAPTER_NAME,
    InjectionLifecycle,
    InjectionRecord,
    InjectionSchedule,
    check_module_names,
    count_trainable,
    default_targets,
    existing_adapters,
    export_adapters,
    lora_parameters,
    lora_settings,
    plan_injection,
    resolve_targets,
    retarget_optimizer,
)
from lightning_inflect.monitor import InflectMonitor
from lightning_inflect.names import ACT_GRAD_NORM, DEFAULT_PREFIX, PARAM_GRAD_NORM
from lightning_inflect.selection import SKI, GradientSuppressionTrigger, Selection, Selector, select_or_fall_back
from lightning_inflect.validation import (
    CheckpointStateError,
    check_bool,
    check_callable,
    check_choice,
    check_str,
    check_str_list,
    check_writable_dir,
)

if TYPE_CHECKING:
    from peft import LoraConfig

__all__ = ["InjectionCallback"]


def _callbacks(trainer: pl.Trainer) -> list[Callback]:
    return list(getattr(trainer, "callbacks", []))


log = logging.getLogger(__name__)

EmptyPolicy = Literal["raise", "skip", "fallback"]


def _check_which_blocks(
    auto: bool,
    layers: Sequence[int] | None,
    selector: Selector | None,
    trigger: GradientSuppressionTrigger | None,
    fallback_selector: Selector | None,
) -> None:
    """The arguments that say which blocks to adapt: exactly one way, of the right types."""
    if auto and layers is not None:
        raise ValueError(
            f"Expected either `auto=True` or `layers=` but got both (layers={list(layers)!r}). Drop `layers` "
            "to let the selector choose, or drop `auto` to inject exactly there."
        )
    if layers is not None and (isinstance(layers, (str, bytes)) or len(layers) == 0):
        raise ValueError(f"Expected argument `layers` to be a non-empty list of block indices but got {layers!r}.")
    if trigger is not None and not isinstance(trigger, GradientSuppressionTrigger):
        raise ValueError(f"Expected argument `trigger` to be a GradientSuppressionTrigger but got {trigger!r}.")
    if selector is not None and not auto:
        raise ValueError("A `selector` chooses blocks automatically: pass `auto=True` with it.")
    if not auto and layers is None:
        raise ValueError("Expected `layers=[...]` or `auto=True` (with an optional `selector=`) but got neither.")
    for name, sel in (("selector", selector), ("fallback_selector", fallback_selector)):
        if sel is not None and not isinstance(sel, Selector):
            raise ValueError(
                f"Expected argument `{name}` to be a lightning_inflect.selection.Selector but got {sel!r}."
            )


def _check_against_model(
    model: torch.nn.Module,
    info: LayerInfo,
    layers: Sequence[int] | None,
    selectors: Sequence[Selector],
    targets: Sequence[str],
    keep_trainable: Sequence[str],
) -> None:
    """What ``setup`` can check against the model: blocks, selectors' ``k``, LoRA targets, kept modules."""
    n = info.num_layers
    check_blocks = check_layer_indices(layers, n) if layers is not None else [0]
    for sel in selectors:
        sel.check_fits(n)
    resolve_targets(info, check_blocks, targets, "")  # fails now if a target matches nothing
    check_module_names(model, keep_trainable, "keep_trainable")


_EXPORT_HINT = (
    "The adapters go to `<export_dir>/inflect_adapters` at the end of fit: pass another `export_dir=`, or "
    "`export=False`."
)


def _check_fit(
    trainer: pl.Trainer, pl_module: pl.LightningModule, trigger: GradientSuppressionTrigger | None, merged: bool
) -> None:
    """What the Trainer and the LightningModule must offer; checked in ``setup``."""
    if not pl_module.automatic_optimization:
        raise ValueError(
            "InjectionCallback needs automatic optimization: with `automatic_optimization = False` it cannot know "
            "which optimizer steps to extend. Inject by hand with `lightning_inflect.injection.inject_lora`."
        )
    strategy = trainer.strategy
    if type(strategy) not in (SingleDeviceStrategy, DDPStrategy, ModelParallelStrategy):
        raise NotImplementedError(
            f"InjectionCallback does not support {type(strategy).__name__}: supported are the single-device "
            "strategy, DDP (`strategy='ddp'`) and FSDP2 (`ModelParallelStrategy(tensor_parallel_size=1)` with "
            "`fully_shard` in `configure_model`). DeepSpeed and FSDPStrategy (FSDP1) are not: use FSDP2 for sharding."
        )
    if sharded(trainer):
        check_sharded(strategy, merged)
    if trigger is not None and not any(
        isinstance(cb, InflectMonitor) and ACT_GRAD_NORM in cb.metrics for cb in _callbacks(trainer)
    ):
        raise ValueError(
            "`trigger=` reads activation-gradient norms: add `GradientNormMonitor(every_n_steps=...)` (with "
            "'activation' in its `norms`) to the Trainer's callbacks."
        )


def _check_weights_match_state(cb: InjectionCallback, ckpt: Any, found: bool, ours: bool) -> None:
    """A checkpoint's weights hold ``cb``'s adapter (``ours``) exactly when its saved state (``found``) says the
    injection happened; anything else was written by other code or edited."""
    if not found and ours:
        raise CheckpointStateError(
            f"The checkpoint {ckpt!r} holds LoRA weights of adapter {cb.adapter_name!r} but no state of "
            f"InjectionCallback {cb.state_key!r}: resume with the InjectionCallback arguments "
            "(at_step/at_epoch/at_fraction) that made it."
        )
    if found and ours != cb.injected:
        held = "hold" if ours else "do not hold"
        raise CheckpointStateError(
            f"{cb.lifecycle.owner} cannot resume from {ckpt!r}: its state says {cb.lifecycle.phase.value!r} but the "
            f"model's weights {held} adapter {cb.adapter_name!r}. The checkpoint was written by other code or "
            "edited; resume from another checkpoint."
        )


def _default_export_dir(trainer: pl.Trainer) -> str:
    """The checkpoint folder, else the log folder, else the Trainer's root folder."""
    ckpt_dir = getattr(trainer.checkpoint_callback, "dirpath", None)
    return ckpt_dir or trainer.log_dir or trainer.default_root_dir


def _retarget_optimizers(trainer: pl.Trainer, pl_module: pl.LightningModule, lora: list[torch.nn.Parameter]) -> None:
    """Every optimizer trains exactly the module's trainable set, the adapters in one new group of their own. The
    frozen parameters' last gradients go too: no optimizer clears them any more, and they would be stale."""
    trainable = [p for p in pl_module.parameters() if p.requires_grad]
    for p in pl_module.parameters():
        if not p.requires_grad:
            p.grad = None
    schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
    for optimizer in trainer.optimizers:
        retarget_optimizer(optimizer, trainable, lora, schedulers)


def _rewrap_ddp(trainer: pl.Trainer) -> None:
    """Wrap the module in DDP again, so that DDP's reducer knows the new trainable set: a reducer built
    before the injection would wait for gradients of frozen parameters and never see the adapters'."""
    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy) and strategy.model is not strategy.lightning_module:
        strategy.model = strategy.lightning_module
        strategy.configure_ddp()


def _check_options(**options: Any) -> None:
    """Every option of :class:`InjectionCallback` but the schedule, checked at construction."""
    o = options
    for name in ("auto", "include_mlp", "freeze_backbone", "export", "export_merged"):
        check_bool(name, o[name])
    _check_which_blocks(o["auto"], o["layers"], o["selector"], o["trigger"], o["fallback_selector"])
    check_str_list("keep_trainable", o["keep_trainable"])
    check_choice("on_empty", o["on_empty"], ["raise", "skip", "fallback"])
    check_str("model_attr", o["model_attr"], optional=True, hint="For example `model_attr='model'`.")
    check_str("layers_path", o["layers_path"], optional=True, hint="For example `layers_path='encoder.layer'`.")
    check_str("log_key_prefix", o["log_key_prefix"], hint="The default is 'inflect'.")
    check_str("adapter_name", o["adapter_name"], hint=f"The default is {ADAPTER_NAME!r}.")
    check_callable("probe_inputs", o["probe_inputs"])
    export_dir = o["export_dir"]
    if export_dir is not None and not isinstance(export_dir, (str, Path)):
        raise ValueError(f"Expected argument `export_dir` to be None, a str or a Path but got {export_dir!r}.")
    if o["on_empty"] == "fallback" and o["fallback_selector"] is None:
        raise ValueError("`on_empty='fallback'` needs `fallback_selector=`, for example `TopK(k=4)`.")


class InjectionCallback(Callback):
    r"""At a chosen point of a ``fit``, freeze the backbone and attach peft LoRA adapters to chosen blocks.

    At the injection step (the start of an optimizer step, before its forward) the callback

    1. picks the blocks: ``layers=`` as given, or with ``auto=True`` a :mod:`~lightning_inflect.selection` rule
       (``SKI`` by default) applied to the per-block diagnostics of the monitors attached to the Trainer; a metric
       no monitor logs is collected by the callback itself (one probe forward on the current batch, and the
       gradients of the optimizer step just before the injection);
    2. wraps the attention projections of those blocks (``target_modules``, per ``model_type`` from the
       architectures table; with ``include_mlp=True`` the feed-forward ones too) with LoRA through
       ``peft.inject_adapter_in_model``, with a peft ``LoraConfig`` whose ``layers_to_transform`` are the chosen
       blocks; logits are unchanged at that moment since LoRA ``B`` starts at zero;
    3. freezes everything else except the task head (the Hugging Face model's modules outside its base model) and
       ``keep_trainable``, trained in place (no ``modules_to_save`` copy);
    4. makes every optimizer train exactly the new trainable set: frozen parameters leave their groups, the LoRA
       tensors join **one new group that copies group 0's hyper-parameters, including its current learning rate,
       and follows group 0's schedule** from then on (the schedulers are extended, not restarted: linear warm-up,
       cosine, ``LambdaLR``, ``ReduceLROnPlateau`` keep their phase);
    5. logs what it did; with DDP the model is wrapped again so the new trainable set is synchronised, and rank 0's
       selection (blocks, scores, reason) is broadcast to every rank.

    Under FSDP2 (``ModelParallelStrategy`` with ``fully_shard`` in ``configure_model``) the adapters cannot be added
    after sharding: ``setup`` attaches them *dormant* (inactive, frozen, ``B`` zero, :func:`attach_dormant_lora`)
    to every candidate block before ``configure_model`` runs, and step 2 wakes the chosen blocks' ones
    (:func:`activate_lora`); the export gathers the sharded tensors on every rank and rank 0 writes them.

    The lifecycle (waiting -> probing -> injected -> exported, or skipped) is one
    :class:`~lightning_inflect.injection.InjectionLifecycle`, saved in checkpoints. On resume the saved state is
    checked whole and entered just before Lightning loads the weights, so that a damaged state raises a
    :class:`~lightning_inflect.validation.CheckpointStateError` (naming the checkpoint, the callback and what was
    expected) before the model or the optimizer change: a checkpoint taken after the injection gets the same
    adapters (and active adapters) attached before the weights load, strictly, and the optimizer groups rebuilt in
    ``on_fit_start``, before the optimizer state loads (under FSDP2, which loads the checkpoint after
    ``on_fit_start``, both happen when the weights load); one from before the injection injects at the planned
    step; one where nothing was selected stays without an injection. At the end of ``fit`` the adapters are saved
    in peft's format in ``<export_dir>/inflect_adapters`` (default: the checkpoint folder, else the log folder):
    ``PeftModel.from_pretrained(base_model, path)`` loads them.

    Logged keys (``inflect`` is ``log_key_prefix``, at the injection step):

    * ``inflect/inflection_score/layer_LL``: the selector's per-block score (when it has one).
    * ``inflect/trainable_params``: trainable parameters of the Hugging Face model after the injection (the value
      before is in the text report).
    * text ``inflect/injection`` (TensorBoard, W&B: :mod:`lightning_inflect.callbacks.loggers`): chosen blocks,
      reason, injected module names, parameter counts.

    The two scalars also go into ``trainer.callback_metrics`` (0-dim CPU tensors, on every rank), like the
    monitors' values, so that ``EarlyStopping`` or ``ModelCheckpoint`` can read them after the injection step.

    Args:
        auto: choose the blocks with ``selector`` (default ``SKI()``).
        layers: the blocks to adapt (negative from the end); excludes ``auto``.
        selector: a :class:`~lightning_inflect.selection.Selector`; needs ``auto=True``.
        at_step: inject at this optimizer step (``trainer.global_step``).
        at_epoch: inject at the first optimizer step of this epoch.
        at_fraction: inject at this fraction, in (0, 1), of the planned optimizer steps.
        trigger: inject earlier, as soon as this trigger fires on the activation-gradient norms logged by a
            :class:`~lightning_inflect.GradientNormMonitor` (which must be attached); the ``at_*`` point stays the
            fallback. The trigger's reason is prepended to the selection's.
        r: LoRA rank (default 8).
        lora_alpha: LoRA scaling numerator, scale = ``lora_alpha / r`` (default 16).
        lora_dropout: dropout on the LoRA input (default 0).
        target_modules: module names inside a block (peft's matching: exact or ``.``-suffix); default per
            ``model_type``.
        lora_config: every LoRA setting as peft's ``LoraConfig`` instead of the four shorthands above (which it
            excludes), e.g. ``LoraConfig(r=16, lora_alpha=32, use_rslora=True, use_dora=True,
            target_modules=["query", "value"])``. Its ``target_modules`` are names inside a block (``None``: per
            ``model_type``); the callback sets ``layers_to_transform``/``layers_pattern`` to the chosen blocks, so
            those, ``modules_to_save`` (use ``keep_trainable``), a bias other than ``"none"`` and an
            ``init_lora_weights`` that does not start ``B`` at zero are refused.
        include_mlp: also adapt the feed-forward projections of the architectures table.
        freeze_backbone: freeze every parameter that is not LoRA, the head or ``keep_trainable``.
        keep_trainable: more module names (from the Hugging Face model) to keep training, e.g. ``["pooler"]``.
        on_empty: when the selector picks no block: ``"raise"``, ``"skip"`` (warn, no injection) or ``"fallback"``
            (use ``fallback_selector``).
        fallback_selector: the selector for ``on_empty="fallback"``.
        export: save the adapters at the end of ``fit``.
        export_merged: also save a full model with LoRA merged into the weights.
        export_dir: where to put ``inflect_adapters/``.
        model_attr, layers_path: as for the monitors.
        log_key_prefix: first part of every logged key.
        adapter_name: the peft adapter name of our LoRA. A model that already carries LoRA (a user's own peft
            adapters, under any other name) keeps it untouched: where a chosen module already has an adapter, ours
            is added beside it, and every adapter that was active stays active (LoRA layers and the
            ``modules_to_save`` wrappers of a ``PeftModel``'s task head alike); the export holds ours only. A model
            with an adapter of this name already is refused.
        train_user_adapters: with ``freeze_backbone``, whether the adapters the model already carries (a user's
            own LoRA, the ``modules_to_save`` copy of their task head) go on training where they trained (default),
            or are frozen with the backbone so that only ours and the kept modules train.
        probe_inputs: for auto-injection's own probe (metrics no monitor logs): maps a training batch to the
            model's keyword inputs; default keeps the keys of a dict batch that the model's ``forward`` accepts,
            minus ``labels``. Checked on the first training batch, before any optimizer step.

    Example:
        >>> cb = InjectionCallback(layers=[4, 5], at_step=500, r=8)
        >>> cb.state_key
        "InjectionCallback{'at_step': 500, 'at_epoch': None, 'at_fraction': None}"
    """

    # What one fit learns (set in setup and the hooks; the defaults are the state before any fit).
    selection: Selection | None = None
    export_path: Path | None = None
    _fit: SelectorInputs | None = None  # the Trainer, model and blocks of this fit, and what the selectors read
    _resumed = False  # this fit re-applied a saved injection: rebuild the optimizer groups in on_fit_start
    _boundary = True
    _step_at_start = -1
    _load_hooks: tuple[Any, ...] = ()
    _checkpoint_read = False
    _batch_checked = False

    def __init__(
        self,
        auto: bool = False,
        layers: Sequence[int] | None = None,
        selector: Selector | None = None,
        at_step: int | None = None,
        at_epoch: int | None = None,
        at_fraction: float | None = None,
        trigger: GradientSuppressionTrigger | None = None,
        r: int | None = None,
        lora_alpha: float | None = None,
        lora_dropout: float | None = None,
        target_modules: Sequence[str] | None = None,
        lora_config: LoraConfig | None = None,
        include_mlp: bool = False,
        freeze_backbone: bool = True,
        keep_trainable: Sequence[str] = (),
        on_empty: EmptyPolicy = "raise",
        fallback_selector: Selector | None = None,
        export: bool = True,
        export_merged: bool = False,
        export_dir: str | Path | None = None,
        model_attr: str | None = None,
        layers_path: str | None = None,
        log_key_prefix: str = DEFAULT_PREFIX,
        adapter_name: str = ADAPTER_NAME,
        probe_inputs: Callable[[Any], Mapping[str, Any]] | None = None,
        train_user_adapters: bool = True,
    ) -> None:
        self.schedule = InjectionSchedule(at_step, at_epoch, at_fraction, min_step=1 if auto is True else 0)
        check_bool("train_user_adapters", train_user_adapters)
        _check_options(
            auto=auto, layers=layers, selector=selector, trigger=trigger, include_mlp=include_mlp,
            freeze_backbone=freeze_backbone, keep_trainable=keep_trainable, on_empty=on_empty,
            fallback_selector=fallback_selector, export=export, export_merged=export_merged, export_dir=export_dir,
            model_attr=model_attr, layers_path=layers_path, log_key_prefix=log_key_prefix, adapter_name=adapter_name,
            probe_inputs=probe_inputs,
        )  # fmt: skip
        self.auto = auto
        self.layers_arg = None if layers is None else list(layers)
        self.selector = (selector or SKI()) if auto else None
        self.at_step, self.at_epoch, self.at_fraction = at_step, at_epoch, at_fraction
        self.trigger = trigger
        self._trigger_reason = ""
        self.lora = lora_settings(
            lora_config, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules
        )
        self.target_modules: list[str] | None = None  # names inside a block, known at setup
        self.include_mlp = include_mlp
        self.freeze_backbone = freeze_backbone
        self.keep_trainable = list(keep_trainable)
        self.on_empty = on_empty
        self.fallback_selector = fallback_selector
        self.export, self.export_merged, self.export_dir = export, export_merged, export_dir
        self.model_attr, self.layers_path = model_attr, layers_path
        self.log_key_prefix = log_key_prefix
        self.adapter_name = adapter_name
        self.probe_inputs = probe_inputs
        self.train_user_adapters = train_user_adapters
        self.lifecycle = InjectionLifecycle(self.schedule, owner=f"InjectionCallback (state key {self.state_key!r})")

    @property
    def state_key(self) -> str:
        return self._generate_state_key(at_step=self.at_step, at_epoch=self.at_epoch, at_fraction=self.at_fraction)

    @property
    def planned_step(self) -> int | None:
        """The optimizer step the injection is planned at, once known (see :class:`InjectionSchedule`)."""
        return self.schedule.planned_step

    @property
    def record(self) -> InjectionRecord | None:
        """What the injection did (None before it)."""
        return self.lifecycle.record

    @property
    def injected(self) -> bool:
        return self.lifecycle.injected

    # ------------------------------------------------------------------------------------------------ set up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        _check_fit(trainer, pl_module, self.trigger, self.export and self.export_merged)
        _, model = find_hf_model(pl_module, self.model_attr)
        info = find_layers(model, self.layers_path)
        selectors = [sel for sel in (self.selector, self.fallback_selector) if sel is not None]
        self._fit = SelectorInputs(trainer, model, info, selectors, self.probe_inputs)
        self._batch_checked = self._resumed = False
        if self.lora.target_modules is None:
            self.target_modules = default_targets(model, info, self.include_mlp)
        else:
            self.target_modules = sorted(self.lora.target_modules)
        _check_against_model(model, info, self.layers_arg, selectors, self.target_modules, self.keep_trainable)
        if self.export and self.export_dir is not None:
            check_writable_dir("export_dir", self.export_dir, _EXPORT_HINT)
        if not self.lifecycle.pending:
            return
        if sharded(trainer) and self.adapter_name not in existing_adapters(model):
            blocks = (
                list(range(info.num_layers)) if self.auto else check_layer_indices(self.layers_arg, info.num_layers)
            )
            attach_dormant(trainer, model, self._plan(blocks))  # FSDP2 takes the blocks' parameters in configure_model
        # Lightning restores the weights before the callbacks' state and names the checkpoint only after `setup`:
        # enter a saved state just before the LightningModule's weights are loaded.
        self._checkpoint_read = False
        self._load_hooks = before_weights_load_hooks(pl_module, self._before_weights_load)

    def _plan(self, layers: list[int], **fields: Any) -> InjectionRecord:
        fit = self._inputs()
        return plan_injection(
            fit.model, fit.info, layers, self.lora, self.target_modules or [], self.keep_trainable,
            freeze_backbone=self.freeze_backbone, adapter_name=self.adapter_name,
            train_user_adapters=self.train_user_adapters, **fields,
        )  # fmt: skip

    def _before_weights_load(self, module: torch.nn.Module, state_dict: dict, *args: Any) -> None:
        """The first weights load of a resume: check the saved state whole and enter it; an injected one attaches
        the adapters the weights hold (under FSDP2: wakes them, and rebuilds the optimizer groups)."""
        if self._checkpoint_read:
            return
        self._checkpoint_read = True
        fit = self._inputs()
        found, state = callback_state_in_checkpoint(fit.trainer, self.state_key)
        if sharded(fit.trainer):  # every checkpoint has the dormant adapters; and the load runs after on_fit_start
            if found:
                self._enter_saved(fit, state, dormant=True)
            return
        ours = any(".lora_" in k and f".{self.adapter_name}." in k for k in state_dict)  # not a model's own adapters
        if found:
            self._enter_saved(fit, state, dormant=False)
        _check_weights_match_state(self, fit.trainer.ckpt_path, found, ours)

    def _enter_saved(self, fit: SelectorInputs, state: Any, dormant: bool) -> None:
        ckpt = fit.trainer.ckpt_path
        self.lifecycle.read_state(state, fit.info.num_layers, ckpt)  # checked whole before anything changes
        if dormant and isinstance(state, Mapping) and state.get("record"):
            reshard(fit.trainer.lightning_module)
        lora = self.lifecycle.restore(state, fit.model, fit.info.num_layers, ckpt, dormant=dormant)
        self._resumed = self.injected
        if self._resumed and dormant:
            # FSDP2 loads the optimizer state right after the weights: give it the groups it was saved with now.
            _retarget_optimizers(fit.trainer, fit.trainer.lightning_module, lora)

    def _remove_load_hooks(self) -> None:
        self._load_hooks = remove_hooks(self._load_hooks)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not sharded(trainer):  # FSDP2 loads the checkpoint after this hook
            self._remove_load_hooks()
            if self._resumed:
                # Lightning loads the optimizer state after this hook: give it the groups it was saved with.
                _retarget_optimizers(trainer, pl_module, lora_parameters(self._inputs().model, self.adapter_name))
                _rewrap_ddp(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_load_hooks()
        total = trainer.estimated_stepping_batches
        if self.lifecycle.pending:
            self.lifecycle.plan(total)
            why = self.schedule.too_late(trainer.max_steps, trainer.max_epochs, total)
            if why:
                rank_zero_warn(f"InjectionCallback plans to inject {why} No injection will happen in this fit.")

    # -------------------------------------------------------------------------------------------- when to act
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._boundary = True
        self.lifecycle.on_epoch_start(trainer.current_epoch, trainer.global_step)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        step = trainer.global_step
        self._step_at_start = step
        life = self.lifecycle
        if not self._batch_checked:  # the first batch, before any optimizer step: fail now, not at the injection
            self._batch_checked = True
            if self.auto and life.pending and self._inputs().own_probe_metrics():
                self._inputs().model_inputs(batch)
        if not life.pending or self.planned_step is None:
            return
        inputs = self._inputs()
        grads = inputs.grads
        if self.auto and step == self.planned_step - 1 and inputs.needs_own(ACT_GRAD_NORM):
            grads.arm()
        if self._boundary and (life.due(step) or self._trigger_fired()):
            if (
                self.auto
                and not grads.armed
                and any(inputs.needs_own(m) and m not in grads.collected for m in (ACT_GRAD_NORM, PARAM_GRAD_NORM))
            ):
                # The selector needs gradients nobody logged and this step was not foreseen (at_epoch, a trigger,
                # step 0, a resume): probe this step's backward and inject at the next one.
                life.postpone(step + 1)
                grads.arm()
                return
            self._inject(trainer, pl_module, batch, step)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if not self.lifecycle.pending or self.planned_step is None or trainer.global_step != self.planned_step - 1:
            return
        inputs = self._inputs()
        inputs.grads.collect(parameters=self.auto and inputs.needs_own(PARAM_GRAD_NORM))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int):
        self._boundary = trainer.global_step != self._step_at_start

    def _trigger_fired(self) -> bool:
        if self.trigger is None or not self._inputs().trigger_fired(self.trigger):
            return False
        self._trigger_reason = f"{self.trigger!r} fired: {self.trigger.reason}; "
        return True

    def _inputs(self) -> SelectorInputs:
        """This fit's Trainer, model and blocks, and what the selectors read (made in ``setup``)."""
        if self._fit is None:
            raise RuntimeError("InjectionCallback was used before `setup(stage='fit')`; attach it to a Trainer.")
        return self._fit

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = self.record
        if record is None or not self.export:
            return
        model = self._inputs().model
        tensors = gather_adapters(pl_module, model, record) if sharded(trainer) else None
        if trainer.is_global_zero:
            folder = Path(self.export_dir or _default_export_dir(trainer)) / "inflect_adapters"
            self.export_path = export_adapters(model, record, folder, merged=self.export_merged, tensors=tensors)
            rank_zero_info(f"InjectionCallback: adapters saved in {self.export_path}")
        self.lifecycle.exported()

    def _choose(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, step: int) -> Selection:
        n = self._inputs().info.num_layers
        if not self.auto:
            layers = check_layer_indices(self.layers_arg, n)
            return Selection(tuple(layers), None, f"manual: layers={self.layers_arg}")
        assert self.selector is not None  # auto=True always has one
        history = self._inputs().history(batch, step)
        return select_or_fall_back(self.selector, history, n, self.on_empty, self.fallback_selector, step)

    # ----------------------------------------------------------------------------------------------- inject
    def _inject(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, step: int) -> None:
        selection = self._choose(trainer, pl_module, batch, step)
        if trainer.world_size > 1:  # decide together: rank 0's choice (or skip), scores and reason on every rank
            selection = trainer.strategy.broadcast(selection, src=0)
        self.selection = selection
        if not selection.layers:  # on_empty="skip"
            rank_zero_warn(f"InjectionCallback: no block selected ({selection.reason}); no injection.")
            self.lifecycle.skip(selection.reason)
            return
        fit = self._inputs()
        record = self._plan(
            list(selection.layers), step=step, reason=self._trigger_reason + selection.reason,
            scores=None if selection.scores is None else list(selection.scores),
        )  # fmt: skip
        if sharded(trainer):
            reshard(pl_module)
        lora = self.lifecycle.inject(fit.model, record, dormant=sharded(trainer))
        record.trainable_after = count_trainable(fit.model)
        _retarget_optimizers(trainer, pl_module, lora)
        _rewrap_ddp(trainer)
        report_injection(trainer, record, self.log_key_prefix, sum(int(q.numel()) for q in lora))

    # -------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return self.lifecycle.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        fit = self._fit
        num_layers, ckpt = (fit.info.num_layers, fit.trainer.ckpt_path) if fit is not None else (None, None)
        self.lifecycle.restore(state_dict, None, num_layers, ckpt)  # entered before the weights load, or pending

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_load_hooks()
        if self._fit is not None:
            self._fit.grads.disarm()
            self._fit = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "fit")
