"""InjectionCallback: partway through training, freeze the backbone and attach LoRA at the chosen blocks.

Lightning glue over :class:`~lightning_inflect.core.injection.InjectionCore`: the Trainer's checks, FSDP2's dormant
adapters and the resume's early state entry are Lightning's own; what to inject, when, and the state are the core's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_info

from lightning_inflect.architectures import check_layer_indices
from lightning_inflect.callbacks.base import LightningHost
from lightning_inflect.callbacks.injection_sharded import (
    attach_dormant,
    check_sharded,
    gather_adapters,
    reshard,
    sharded,
)
from lightning_inflect.callbacks.lightning_internals import callback_state_in_checkpoint
from lightning_inflect.callbacks.loggers import log_text
from lightning_inflect.callbacks.resume import before_weights_load_hooks, remove_hooks
from lightning_inflect.core.injection import InjectionCore, check_weights_match_state, holds_adapter
from lightning_inflect.injection import existing_adapters, lora_parameters, retarget_optimizers

__all__ = ["InjectionCallback", "LightningInjectionHost"]


def _check_fit(trainer: pl.Trainer, pl_module: pl.LightningModule, merged: bool) -> None:
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


def _default_export_dir(trainer: pl.Trainer) -> str:
    """The checkpoint folder, else the log folder, else the Trainer's root folder."""
    ckpt_dir = getattr(trainer.checkpoint_callback, "dirpath", None)
    return ckpt_dir or trainer.log_dir or trainer.default_root_dir


def _retarget_optimizers(trainer: pl.Trainer, pl_module: pl.LightningModule, lora: list[torch.nn.Parameter]) -> None:
    """Every optimizer of the Trainer trains exactly the module's trainable set (:func:`retarget_optimizers`)."""
    schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
    retarget_optimizers(pl_module, trainer.optimizers, lora, schedulers)


def _rewrap_ddp(trainer: pl.Trainer) -> None:
    """Wrap the module in DDP again, so that DDP's reducer knows the new trainable set: a reducer built
    before the injection would wait for gradients of frozen parameters and never see the adapters'."""
    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy) and strategy.model is not strategy.lightning_module:
        strategy.model = strategy.lightning_module
        strategy.configure_ddp()


class LightningInjectionHost(LightningHost):
    """The :class:`~lightning_inflect.core.injection.InjectionHost` of a Lightning ``Trainer``: its callbacks, its
    strategy's ranks and broadcast, its optimizers and schedulers (and DDP's wrapper), its loggers' text."""

    @property
    def world_size(self) -> int:
        return self.trainer.world_size

    def broadcast(self, obj: Any) -> Any:
        return self.trainer.strategy.broadcast(obj, src=0)

    def callbacks(self) -> list[Callback]:
        return list(getattr(self.trainer, "callbacks", []))

    def retarget(self, lora: list[torch.nn.Parameter]) -> None:
        _retarget_optimizers(self.trainer, self.trainer.lightning_module, lora)
        _rewrap_ddp(self.trainer)

    def log_text(self, key: str, markdown: str, step: int) -> None:
        log_text(self.trainer.loggers, key, markdown, step)

    def info(self, message: str) -> None:
        rank_zero_info(message)


class InjectionCallback(InjectionCore, Callback):
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

    _resumed = False  # this fit re-applied a saved injection: rebuild the optimizer groups in on_fit_start
    _load_hooks: tuple[Any, ...] = ()
    _checkpoint_read = False
    _trainer: pl.Trainer | None = None

    def _host(self, trainer: pl.Trainer) -> LightningInjectionHost:
        return LightningInjectionHost(trainer)

    # ------------------------------------------------------------------------------------------------ set up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        _check_fit(trainer, pl_module, self.export and self.export_merged)
        fit = self.begin_fit(self._host(trainer), pl_module)
        self._trainer = trainer
        self._resumed = False
        if not self.lifecycle.pending:
            return
        if sharded(trainer) and self.adapter_name not in existing_adapters(fit.model):
            n = fit.info.num_layers
            blocks = list(range(n)) if self.auto else check_layer_indices(self.layers_arg, n)
            attach_dormant(trainer, fit.model, self._plan(blocks))  # FSDP2 takes the blocks' parameters later
        # Lightning restores the weights before the callbacks' state and names the checkpoint only after `setup`:
        # enter a saved state just before the LightningModule's weights are loaded.
        self._checkpoint_read = False
        self._load_hooks = before_weights_load_hooks(pl_module, self._before_weights_load)

    def _dormant(self, host: Any) -> bool:
        return sharded(host.trainer)

    def _before_attach(self, host: Any) -> None:
        if sharded(host.trainer):
            reshard(host.trainer.lightning_module)

    def _before_weights_load(self, module: torch.nn.Module, state_dict: dict, *args: Any) -> None:
        """The first weights load of a resume: check the saved state whole and enter it; an injected one attaches
        the adapters the weights hold (under FSDP2: wakes them, and rebuilds the optimizer groups)."""
        if self._checkpoint_read or self._trainer is None:
            return
        self._checkpoint_read = True
        trainer = self._trainer
        self._checkpoint = trainer.ckpt_path
        found, state = callback_state_in_checkpoint(trainer, self.state_key)
        if sharded(trainer):  # every checkpoint has the dormant adapters; and the load runs after on_fit_start
            if found:
                self._enter_saved(trainer, state, dormant=True)
            return
        ours = holds_adapter(state_dict, self.adapter_name)
        if found:
            self._enter_saved(trainer, state, dormant=False)
        check_weights_match_state(self, trainer.ckpt_path, found, ours)

    def _enter_saved(self, trainer: pl.Trainer, state: Any, dormant: bool) -> None:
        fit = self._inputs()
        self.lifecycle.read_state(state, fit.info.num_layers, trainer.ckpt_path)  # checked before anything changes
        if dormant and isinstance(state, Mapping) and state.get("record"):
            reshard(trainer.lightning_module)
        lora = self.enter_saved(state, trainer.ckpt_path, dormant=dormant)
        self._resumed = self.injected
        if self._resumed and dormant:
            # FSDP2 loads the optimizer state right after the weights: give it the groups it was saved with now.
            _retarget_optimizers(trainer, trainer.lightning_module, lora)

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
        self.fit_planned(self._host(trainer), trainer.estimated_stepping_batches, trainer.max_steps, trainer.max_epochs)

    # -------------------------------------------------------------------------------------------- when to act
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_started(trainer.current_epoch, trainer.global_step)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self.batch_started(self._host(trainer), batch)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.before_optimizer_step(self._host(trainer))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int):
        self.batch_ended(self._host(trainer))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.record is None or not self.export:
            return
        tensors = gather_adapters(pl_module, self._inputs().model, self.record) if sharded(trainer) else None
        self.save_adapters(self._host(trainer), _default_export_dir(trainer), tensors)

    # -------------------------------------------------------------------------------------------------- state
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._checkpoint = self._trainer.ckpt_path if self._trainer is not None else None
        super().load_state_dict(state_dict)  # entered before the weights loaded, or pending

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_load_hooks()
        self.end_fit()
        self._trainer = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "fit")
