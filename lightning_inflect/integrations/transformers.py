"""The monitors and the injection in the Hugging Face ``Trainer`` (and TRL's trainers, which are ``Trainer``\\ s).

The same four callbacks as the Lightning ones, with the same names, options, logged keys, ``.history`` and values,
as ``transformers.TrainerCallback``\\ s over the same framework-free core (:mod:`lightning_inflect.core`)::

    from lightning_inflect.integrations.transformers import (
        AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor, InjectionCallback)

    trainer = Trainer(model=model, args=TrainingArguments("out", report_to=["tensorboard"], logging_steps=10),
                      train_dataset=train, callbacks=[AttentionEntropyMonitor(every_n_steps=10),
                                                      GradientNormMonitor(every_n_steps=10),
                                                      InjectionCallback(auto=True, at_fraction=0.3)])
    trainer.train()  # or trainer.train(resume_from_checkpoint=True)

How they reach the ``Trainer``: a ``TrainerCallback`` never sees the ``Trainer``, only its arguments, state and
control. The monitors need its log path (``Trainer.log``: the only way into ``state.log_history`` and every
``report_to`` integration), its model's micro-batches (no callback sees a batch) and the moment the gradients are
complete but not yet clipped (no callback runs there); a resume needs to re-attach the adapters before the
``Trainer`` loads the weights and the optimizer, which it does before any callback runs. So each callback given in
``Trainer(callbacks=[...])`` binds itself, in its ``on_init_end``, to the ``Trainer`` that calls it (found a few
frames up: the ``Trainer``'s ``__init__``) through :func:`watch`, which can also be called by hand (needed for a
callback added with ``add_callback`` to a run that resumes). :func:`watch` wires these once per ``Trainer``:

* a forward pre-hook on the module the ``Trainer`` calls (``trainer.model_wrapped``: the model, or the compiled or
  DDP module accelerate made of it; set at ``on_train_begin``, removed when ``train()`` ends or fails) hands each
  training micro-batch to the callbacks: its tensors, without the loop's switches (``num_items_in_batch``; TRL's
  ``use_cache``, ``fused_lm_head``). Eval forwards and the probe's own (eval mode, ``no_grad``) are skipped. On the
  outer module the hook runs outside a compiled graph (``torch_compile=True`` gets no graph break from it);
* ``trainer.accelerator.clip_grad_norm_``, which the ``Trainer`` calls on every optimizer step before
  ``on_pre_optimizer_step`` (to clip, or with ``inf`` to measure the norm), first tells the callbacks that the step's
  gradients are complete: the parameter-gradient norms are the unclipped ones, as in Lightning;
* ``trainer.create_optimizer`` and ``trainer.train`` are wrapped on this instance so that a resume re-enters the
  saved injection before the weights and the optimizer state load (and, for a ``PeftModel``, whose adapters the
  ``Trainer`` reloads leaving all but its first inactive and frozen, puts the injected training set back before the
  optimizer is created).

Where the values go:

* Scalars go through ``Trainer.log`` at the optimizer step they were measured at (``state.global_step`` during that
  step, the step Lightning logs them at): they reach ``state.log_history`` with the same keys as in Lightning
  (``inflect/attn_entropy/layer_00``, ...), and every ``report_to`` integration. TensorBoard (``TensorBoardCallback``)
  files every training key under ``train/``, as it does the loss: ``train/inflect/attn_entropy/layer_00``.
* Heatmaps, the custom-scalars layout and the injection report go to the ``TensorBoardCallback``'s writer when
  TensorBoard is enabled (``report_to`` includes ``"tensorboard"``), on the main process.
* One device-to-host transfer per logging step, as in Lightning.

"Every N steps" counts the ``Trainer``'s optimizer steps (``state.global_step``), whatever
``gradient_accumulation_steps`` is.

Checkpoints: every callback's state (histories, probe, CKA reference, the injection's phase and record) is saved in
``inflect_state.pt`` inside each ``checkpoint-N`` folder and read with ``torch.load(weights_only=True)``. The
``Trainer``'s own stateful-callback mechanism (``ExportableState``) cannot hold it: it writes JSON into
``trainer_state.json`` and rebuilds a callback from its constructor arguments, so no tensor can be restored.

Refused at ``on_train_begin``, before anything trains, with the setting to change: DeepSpeed and FSDP (the
parameter-gradient norms and the injection need whole ``.grad`` tensors and a model they can add modules to), and
for the injection several processes (the ``Trainer``'s DDP wrapper cannot be rebuilt around the new trainable set).
The monitors run under the ``Trainer``'s DDP, each value that of one process over the union of the ranks' examples.
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.integrations import TensorBoardCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from transformers.utils import SAFE_WEIGHTS_NAME

from lightning_inflect.core.cka import CKADriftCore
from lightning_inflect.core.entropy import EntropyMonitorCore
from lightning_inflect.core.grads import GradientNormCore
from lightning_inflect.core.host import scaler_scale
from lightning_inflect.core.injection import InjectionCore, check_weights_match_state, holds_adapter
from lightning_inflect.core.monitor import MonitorCore
from lightning_inflect.injection import (
    lora_parameters,
    restore_training_setup,
    retarget_optimizers,
    training_setup,
)
from lightning_inflect.validation import checkpoint_state_error

__all__ = [
    "STATE_FILE",
    "AttentionEntropyMonitor",
    "CKADriftMonitor",
    "GradientNormMonitor",
    "HFHost",
    "InjectionCallback",
    "watch",
]

log = logging.getLogger(__name__)

STATE_FILE = "inflect_state.pt"
"""The file, inside each ``checkpoint-N`` folder, that holds the inflect callbacks' state (``{state_key: state}``)."""

_LOOP_KWARGS = frozenset({"num_items_in_batch"})  # tensors the Trainer adds to a batch for its loss, not examples
_TB_PREFIX = "train/"  # what TensorBoardCallback puts before every training key


def _unwrap(obj: Any, attr: str) -> Any:
    """The object accelerate wraps (``AcceleratedOptimizer.optimizer``, ``AcceleratedScheduler.scheduler``)."""
    while obj is not None and hasattr(obj, attr) and not isinstance(obj, (torch.optim.Optimizer,)):
        inner = getattr(obj, attr)
        if inner is obj:
            break
        obj = inner
    return obj


class HFHost:
    """The :class:`~lightning_inflect.core.injection.InjectionHost` of a Hugging Face ``Trainer``: its state's step,
    its process rank, accelerate's autocast and loss scaler, ``Trainer.log`` for scalars, the ``TensorBoardCallback``'s
    writer for images and text, its optimizer and scheduler."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.resume_from: str | None = None
        self._logs: dict[str, float] = {}
        self._writer: Any = None

    @property
    def key(self) -> Trainer:
        return self.trainer

    @property
    def model(self) -> torch.nn.Module:
        """The ``Trainer``'s model (``trainer.model``); a ``Trainer`` is never built without one."""
        return _model_of(self.trainer)

    @property
    def global_step(self) -> int:
        return self.trainer.state.global_step

    @property
    def is_global_zero(self) -> bool:
        return self.trainer.is_world_process_zero()

    @property
    def checkpoint(self) -> Any:
        return self.resume_from

    @property
    def precision_context(self) -> Callable[[], Any] | None:
        return self.trainer.accelerator.autocast

    def _tb_writer(self) -> Any:
        """The ``TensorBoardCallback``'s writer on the main process. It closes (and forgets) it in its
        ``on_train_end``, which runs before ours: the last one seen is kept for the run's final heatmaps."""
        if not self.is_global_zero:
            return None
        for cb in self.trainer.callback_handler.callbacks:
            if isinstance(cb, TensorBoardCallback) and getattr(cb, "tb_writer", None) is not None:
                self._writer = cb.tb_writer
                return cb.tb_writer
        return self._writer

    def close_writer(self) -> None:
        """Close the kept writer once the ``TensorBoardCallback`` has let it go (after the final heatmaps)."""
        live = any(
            isinstance(cb, TensorBoardCallback) and getattr(cb, "tb_writer", None) is self._writer
            for cb in self.trainer.callback_handler.callbacks
        )
        if self._writer is not None and not live:
            self._writer.close()
        self._writer = None

    @property
    def takes_images(self) -> bool:
        return self._tb_writer() is not None

    def loss_scale(self) -> torch.Tensor | float:
        return scaler_scale(getattr(self.trainer.accelerator, "scaler", None))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Collect ``metrics``; :meth:`emit` sends what the callbacks logged during one event in one ``Trainer.log``
        (one row of ``state.log_history``, at ``state.global_step``, the step being measured)."""
        self._logs.update(metrics)

    def emit(self) -> None:
        """Send the collected scalars through ``Trainer.log`` (``state.log_history``, every ``report_to``)."""
        if self._logs:
            logs, self._logs = self._logs, {}
            self.trainer.log(logs)

    def log_heatmap(self, key: str, image: torch.Tensor, step: int) -> None:
        writer = self._tb_writer()
        if writer is not None:
            writer.add_image(key, image, global_step=step, dataformats="CHW")

    def write_layout(self, layout: Mapping[str, Mapping[str, list]]) -> None:
        writer = self._tb_writer()
        if writer is None:
            return
        tb = {  # the charts match the keys as TensorBoardCallback writes them, under train/
            section: {
                name: [kind, [p.replace("^", f"^{_TB_PREFIX}", 1) for p in patterns]]
                for name, (kind, patterns) in charts.items()
            }
            for section, charts in layout.items()
        }
        writer.add_custom_scalars(tb)

    def log_text(self, key: str, markdown: str, step: int) -> None:
        writer = self._tb_writer()
        if writer is not None:
            writer.add_text(key, markdown, global_step=step)

    def warn(self, message: str) -> None:
        if self.is_global_zero:
            warnings.warn(message, stacklevel=3)

    def info(self, message: str) -> None:
        if self.is_global_zero:
            log.info(message)

    @property
    def world_size(self) -> int:
        return int(self.trainer.args.world_size)

    def broadcast(self, obj: Any) -> Any:
        if self.world_size == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def callbacks(self) -> list[Any]:
        return list(self.trainer.callback_handler.callbacks)

    def retarget(self, lora: list[torch.nn.Parameter]) -> None:
        """The ``Trainer``'s one optimizer and scheduler (inside accelerate's wrappers) train exactly the model's
        trainable set (:func:`~lightning_inflect.injection.retarget_optimizers`); before the ``Trainer`` created
        them (a resume re-attaching its adapters), only the stale gradients go."""
        optimizer = _unwrap(self.trainer.optimizer, "optimizer")
        scheduler = _unwrap(self.trainer.lr_scheduler, "scheduler")
        optimizers = [optimizer] if optimizer is not None else []
        retarget_optimizers(self.model, optimizers, lora, [scheduler] if scheduler is not None else [])


def _model_of(trainer: Trainer) -> torch.nn.Module:
    model = trainer.model
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"Expected the Trainer's `model` to be a torch.nn.Module but got {type(model).__name__}: the inflect "
            "callbacks need the model itself (pass `model=` to the Trainer, not only `model_init=`, or call "
            "`watch(trainer)` after the model is built)."
        )
    return model


def _refuse_setup(owner: str, trainer: Trainer, injection: bool) -> None:
    """What cannot work under this ``Trainer``'s settings: a clear error, before anything trains."""
    args = trainer.args
    if getattr(trainer, "is_deepspeed_enabled", False) or getattr(args, "deepspeed", None):
        raise NotImplementedError(
            f"{owner} does not support DeepSpeed (TrainingArguments(deepspeed={args.deepspeed!r})): ZeRO keeps "
            "gradients in partitioned buffers of its own, so a parameter's `.grad` is not its gradient. Remove "
            "`deepspeed=` (or the callback)."
        )
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(args, "fsdp", None):
        raise NotImplementedError(
            f"{owner} does not support FSDP in the Hugging Face Trainer (TrainingArguments(fsdp={args.fsdp!r})): "
            "FSDP1 leaves each rank a flat shard that looks like a whole gradient, the Trainer's FSDP2 path is not "
            "wired to the monitors' shard-aware reductions, and the injection cannot add modules to a sharded "
            "model. Remove `fsdp=`, or use the Lightning callbacks, which support FSDP2."
        )
    if injection and args.world_size > 1:
        raise NotImplementedError(
            f"{owner} in the Hugging Face Trainer runs in one process only, but this run has "
            f"world_size={args.world_size}: the Trainer's DDP wrapper is built before training and cannot be "
            "rebuilt around the new trainable set. Run on one device, or use the Lightning InjectionCallback (DDP "
            "and FSDP2)."
        )


def _calling_trainer() -> Trainer | None:
    """The ``Trainer`` whose method runs the current callback event: a ``TrainerCallback`` is never handed its
    ``Trainer``, but its events are called from the ``Trainer``'s own methods (``__init__`` for ``on_init_end``,
    the training loop for ``on_train_begin``), a few frames up."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            obj = frame.f_locals.get("self")
            if isinstance(obj, Trainer):
                return obj
            frame = frame.f_back
        return None
    finally:
        del frame


def _epoch(state: Any) -> int:
    """The index of the epoch that starts (``state.epoch`` is a float, exact at epoch boundaries)."""
    e = float(state.epoch or 0.0)
    return round(e) if abs(e - round(e)) < 1e-6 else math.floor(e)


class _HFGlue(TrainerCallback):
    """The Hugging Face glue shared by the four callbacks: the binding to a ``Trainer`` and the refusals."""

    _hf: HFHost | None = None
    _active = False

    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """A ``Trainer`` built with this callback in ``callbacks=[...]`` has just finished its ``__init__``: bind
        to it (:func:`watch`), so that nothing else is needed, resume included."""
        trainer = _calling_trainer()
        if trainer is not None and (self._hf is None or self._hf.trainer is not trainer):
            watch(trainer)

    def _bound(self, state: Any) -> HFHost:
        """The host of the ``Trainer`` this callback is bound to; a callback added with ``add_callback`` after the
        ``Trainer`` was built binds now, at ``on_train_begin`` of a run that does not resume."""
        if self._hf is None:
            trainer = _calling_trainer()
            if trainer is not None and not state.global_step:
                watch(trainer)
        if self._hf is None:
            raise RuntimeError(
                f"{type(self).__name__} is not bound to its Trainer, which it binds to by itself only when given in "
                "`Trainer(callbacks=[...])`: call `lightning_inflect.integrations.transformers.watch(trainer)` "
                "before `trainer.train()` (needed to resume: the adapters and the state are entered before the "
                "Trainer loads the weights)."
            )
        return self._hf

    def _start(self, injection: bool, state: Any) -> HFHost:
        host = self._bound(state)
        _refuse_setup(type(self).__name__, host.trainer, injection)
        self._active = True
        return host

    def _finish(self) -> None:
        """The last inflect callback to end the run closes the kept TensorBoard writer (:meth:`HFHost.close_writer`)."""
        wiring = _WIRINGS.get(self._hf.trainer) if self._hf is not None else None
        if wiring is not None and not any(cb._active for cb in wiring.callbacks()):
            wiring.host.close_writer()

    # the events the wiring of watch() delivers
    def _micro_batch(self, host: HFHost, batch: dict[str, Any]) -> None: ...

    def _gradients_complete(self, host: HFHost) -> None: ...


class _HFMonitor(MonitorCore, _HFGlue):
    """Hugging Face glue of the monitors: each event hands the :class:`HFHost` to the core."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        host = self._start(injection=False, state=state)
        self._checkpoint = host.resume_from
        self.begin_fit(host, host.model)
        saved = _saved_states(host).get(self.state_key)
        if saved is not None:
            self.load_state_dict(saved)  # checked whole already, before the weights loaded
        self.fit_started(host)

    def _micro_batch(self, host: HFHost, batch: dict[str, Any]) -> None:
        self.batch_started(host, batch)

    def _gradients_complete(self, host: HFHost) -> None:
        self.before_optimizer_step(host, _unwrap(host.trainer.optimizer, "optimizer"))

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._active and self._hf is not None:
            # state.global_step still counts the steps before this one: flush this step's values, logged at it
            self.batch_ended(self._hf, steps_done=state.global_step + 1)
            self._hf.emit()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._active or self._hf is None:
            return
        self.train_ended(self._hf)
        self._hf.emit()
        self._active = False
        self.end_fit(self._hf.key)
        self._finish()


class AttentionEntropyMonitor(EntropyMonitorCore, _HFMonitor):
    """:class:`lightning_inflect.AttentionEntropyMonitor` for the Hugging Face ``Trainer``: the same options,
    logged keys (``inflect/attn_entropy/layer_LL``, ...), ``.history`` and values; see :func:`watch`."""


class GradientNormMonitor(GradientNormCore, _HFMonitor):
    """:class:`lightning_inflect.GradientNormMonitor` for the Hugging Face ``Trainer``: the same options, logged
    keys (``inflect/act_grad_norm/layer_LL``, ``inflect/param_grad_norm/layer_LL``), ``.history`` and values, of
    the accumulated, unclipped gradients; see :func:`watch`."""


class CKADriftMonitor(CKADriftCore, _HFMonitor):
    """:class:`lightning_inflect.CKADriftMonitor` for the Hugging Face ``Trainer``: the same options, logged keys
    (``inflect/cka_drift/layer_LL``), ``.history`` and values; see :func:`watch`."""


class InjectionCallback(InjectionCore, _HFGlue):
    """:class:`lightning_inflect.InjectionCallback` for the Hugging Face ``Trainer``: the same options, schedule
    (``at_step`` counts ``state.global_step``; ``at_fraction`` of ``state.max_steps``; ``at_epoch``), selection,
    logged keys and export.

    At the planned step's first micro-batch it freezes the backbone except the head, attaches peft LoRA at the
    chosen blocks (logits unchanged: ``B`` starts at zero) and makes the ``Trainer``'s optimizer and scheduler train
    exactly that set from this step on: frozen parameters leave their groups, the adapters join one new group that
    copies group 0 (its current learning rate, weight decay) and follows group 0's schedule (the linear schedule's
    lambda, not restarted). A user's ``PeftModel`` keeps its adapters active. At the end of ``train()`` the
    adapters are saved in ``<export_dir>/inflect_adapters`` (default: ``args.output_dir``).
    """

    _resumed_lora: list[torch.nn.Parameter] | None = None
    _resumed_setup: dict[str, Any] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        host = self._start(injection=True, state=state)
        if self._fit is None:  # a resume began the fit already, to re-attach the adapters before the weights loaded
            self.begin_fit(host, host.model)
        epochs = args.num_train_epochs if args.max_steps <= 0 else None
        self.fit_planned(host, state.max_steps, args.max_steps, None if epochs is None else math.ceil(epochs))

    def _resume(self, host: HFHost, saved: Mapping[str, Any]) -> None:
        """Before the weights load: enter the saved state; an injected one re-attaches the adapters."""
        _refuse_setup(type(self).__name__, host.trainer, injection=True)
        self.begin_fit(host, host.model)
        state = saved.get(self.state_key)
        if state is None:
            return
        lora = self.enter_saved(state, host.resume_from)
        self._resumed_lora = lora if self.injected else None
        self._resumed_setup = training_setup(self._inputs().model) if self.injected else None

    def _creating_optimizer(self, host: HFHost) -> None:
        """The ``Trainer`` loaded the checkpoint's weights and is about to create its optimizer. Resuming a
        ``PeftModel``, it reloads every saved adapter (``load_adapter``), ours too, then activates only its first
        one and leaves the others frozen: the injected model's active adapters and trainable set are put back."""
        if self._resumed_setup is not None and self._fit is not None:
            changed = restore_training_setup(self._fit.model, self._resumed_setup)
            self._resumed_setup = None
            if changed:
                host.info(f"{type(self).__name__}: the injected adapters' active set and trainable flags restored.")

    def _optimizer_created(self, host: HFHost) -> None:
        """The ``Trainer`` created its optimizer (over the re-attached adapters): give it the saved groups."""
        if self._resumed_lora is not None and self._fit is not None:
            host.retarget(lora_parameters(self._fit.model, self.adapter_name))
            self._resumed_lora = None

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._active:
            self.epoch_started(_epoch(state), state.global_step)

    def _micro_batch(self, host: HFHost, batch: dict[str, Any]) -> None:
        self.batch_started(host, batch)

    def _gradients_complete(self, host: HFHost) -> None:
        self.before_optimizer_step(host)

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._active and self._hf is not None:
            self.batch_ended(self._hf)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._active and self._hf is not None:
            self.batch_ended(self._hf)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._active or self._hf is None:
            return
        self._active = False
        self.save_adapters(self._hf, args.output_dir)
        self.end_fit()
        self._finish()


# ------------------------------------------------------------------------------------------------------- wiring
_Inflect = (_HFMonitor, InjectionCallback)


class _Wiring:
    """What :func:`watch` installs on one ``Trainer``: the micro-batch hook, the gradients-complete hook, the
    checkpoint state, the resume."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer_ref = weakref.ref(trainer)
        self.host = HFHost(trainer)
        self.saved: dict[str, Any] = {}
        self._last_complete: int | None = None
        self._hook: Any = None  # on the module the Trainer calls, from on_train_begin on (see hook_model)
        self._model: torch.nn.Module | None = None  # the Trainer's model while hooked
        self._live: list[Any] | None = None  # this train()'s active inflect callbacks, from its first forward on
        create = trainer.create_optimizer

        def create_optimizer(*args: Any, **kwargs: Any) -> Any:
            injections = [cb for cb in self.callbacks() if isinstance(cb, InjectionCallback)]
            for cb in injections:
                cb._creating_optimizer(self.host)
            optimizer = create(*args, **kwargs)
            for cb in injections:
                cb._optimizer_created(self.host)
            return optimizer

        trainer.create_optimizer = create_optimizer  # type: ignore[method-assign]
        train = trainer.train

        def train_(resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
            self.begin(resume_from_checkpoint)
            try:
                return train(resume_from_checkpoint, *args, **kwargs)
            finally:
                self.unhook_model()  # also when train() fails: no hook left on the user's model

        train_.__doc__ = train.__doc__
        trainer.train = train_  # type: ignore[method-assign]

    def callbacks(self) -> list[Any]:
        trainer = self.trainer_ref()
        return [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, _Inflect)] if trainer else []

    def bind(self) -> None:
        for cb in self.callbacks():
            cb._hf = self.host

    def _active(self) -> list[Any]:
        """The inflect callbacks of the running ``train()``: looked up once, at its first forward (every
        ``on_train_begin`` has run by then), not on every micro-batch."""
        if self._live is None:
            self._live = [cb for cb in self.callbacks() if cb._active]
        return self._live

    def hook_model(self, trainer: Trainer) -> None:
        """Hand each training micro-batch to the callbacks: a forward pre-hook on the module the ``Trainer`` calls,
        ``trainer.model_wrapped`` (the model, or what accelerate made of it: a compiled module, DDP), known
        from ``on_train_begin`` on. On the outer module the hook runs outside a compiled graph, so that it neither
        breaks nor is traced into it (the monitors then hold the ``force_eager`` stance on logging steps only)."""
        self.unhook_model()
        self.wrap_clip(trainer.accelerator)
        self._model = _model_of(trainer)
        module = getattr(trainer, "model_wrapped", None)
        if not isinstance(module, torch.nn.Module):
            module = self._model
        self._hook = module.register_forward_pre_hook(self._pre_forward, with_kwargs=True)

    def wrap_clip(self, accelerator: Any) -> None:
        """Tell the callbacks that a step's gradients are complete, unclipped, when the ``Trainer`` calls
        ``accelerator.clip_grad_norm_`` (every optimizer step, before ``on_pre_optimizer_step``). Idempotent; done at
        each ``on_train_begin``, since a hyper-parameter search builds a new accelerator."""
        if getattr(accelerator.clip_grad_norm_, "_inflect_wiring", None) is self:
            return
        clip = accelerator.clip_grad_norm_

        def clip_grad_norm_(*args: Any, **kwargs: Any) -> Any:
            self._complete()
            return clip(*args, **kwargs)

        clip_grad_norm_._inflect_wiring = self  # type: ignore[attr-defined]
        accelerator.clip_grad_norm_ = clip_grad_norm_

    def unhook_model(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._model, self._live = None, None

    def _pre_forward(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if self._model is None or not self._model.training or not torch.is_grad_enabled():
            return  # evaluation, prediction, the probe's own forward
        active = self._active()
        if not active:
            return
        # The examples, not the loop's switches: the Trainer adds `num_items_in_batch` (its loss normalisation), TRL
        # `use_cache=False` and `fused_lm_head=True` (a loss head that needs labels); the probe runs without them.
        batch = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor) and k not in _LOOP_KWARGS}
        for cb in active:
            cb._micro_batch(self.host, batch)
        self.host.emit()  # the injection's report

    def _complete(self) -> None:
        step = self.host.global_step
        if self._last_complete == step:  # once per optimizer step
            return
        self._last_complete = step
        for cb in self._active():
            cb._gradients_complete(self.host)
        self.host.emit()

    def begin(self, resume_from_checkpoint: str | bool | None) -> None:
        """Before ``Trainer.train`` loads anything: bind, resolve the checkpoint, check and enter the saved state."""
        self.bind()
        trainer = self.trainer_ref()
        assert trainer is not None
        self._last_complete = None
        path = resume_from_checkpoint
        if isinstance(path, bool):
            path = get_last_checkpoint(trainer.args.output_dir) if path else None
        self.host.resume_from = None if path is None else str(path)
        self.saved = _read_state(self.host.resume_from, self.callbacks()) if path is not None else {}
        if path is None:
            return
        for cb in self.callbacks():
            if isinstance(cb, InjectionCallback):
                cb._resume(self.host, self.saved)
        _check_weights(self.host.resume_from, self.callbacks(), self.saved)


class _WiringCallback(TrainerCallback):
    """The wiring's own events: the micro-batch hook for the duration of ``train()``, and the inflect callbacks'
    state written into each checkpoint folder (``on_save`` runs right after it is made)."""

    def __init__(self, wiring: _Wiring) -> None:
        self.wiring = wiring

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trainer = self.wiring.trainer_ref()
        if trainer is not None:
            self.wiring.hook_model(trainer)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.wiring.unhook_model()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        callbacks = self.wiring.callbacks()
        states = {cb.state_key: cb.state_dict() for cb in callbacks}  # every rank: the monitors flush
        self.wiring.host.emit()
        if not callbacks or not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if folder.is_dir():
            torch.save(states, folder / STATE_FILE)


def _saved_states(host: HFHost) -> Mapping[str, Any]:
    wiring = _WIRINGS.get(host.trainer)
    return wiring.saved if wiring is not None else {}


def _read_state(checkpoint: str | None, callbacks: Sequence[Any]) -> dict[str, Any]:
    """The inflect state of ``checkpoint``, each callback's checked whole before anything changes."""
    if checkpoint is None:
        return {}
    file = Path(checkpoint) / STATE_FILE
    if not file.is_file():
        if callbacks:
            warnings.warn(
                f"The checkpoint {checkpoint!r} has no {STATE_FILE} (it was not written with these callbacks): the "
                "monitors start new histories and a pending injection plans anew.",
                stacklevel=3,
            )
        return {}
    saved = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(saved, Mapping):
        raise checkpoint_state_error(checkpoint, STATE_FILE, "file", "a dict {state_key: state}", saved)
    for cb in callbacks:
        if cb.state_key in saved and isinstance(cb, MonitorCore):
            cb._checkpoint = checkpoint
            # the blocks are known once the fit began; the whole state's shape is checked here, its blocks there
            if not isinstance(saved[cb.state_key], Mapping):
                raise checkpoint_state_error(checkpoint, cb.state_key, "state", "a dict", saved[cb.state_key])
    return dict(saved)


def _check_weights(checkpoint: str | None, callbacks: Sequence[Any], saved: Mapping[str, Any]) -> None:
    """The checkpoint's weights hold an injection's adapter exactly when its saved state says it happened."""
    if checkpoint is None:
        return
    file = Path(checkpoint) / SAFE_WEIGHTS_NAME
    if not file.is_file():
        return
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        keys = list(f.keys())
    for cb in callbacks:
        if isinstance(cb, InjectionCallback):
            check_weights_match_state(cb, checkpoint, cb.state_key in saved, holds_adapter(keys, cb.adapter_name))


_WIRINGS: weakref.WeakKeyDictionary[Trainer, _Wiring] = weakref.WeakKeyDictionary()


def watch(trainer: Trainer, *callbacks: TrainerCallback) -> Trainer:
    """Bind the inflect callbacks of ``trainer`` (those in its ``callbacks=[...]``, and ``callbacks`` given here,
    which are added) to it, and wire the hooks they need (see the module's documentation); returns ``trainer``.

    The callbacks given to the ``Trainer``'s constructor call it themselves. Call it by hand for callbacks added
    later (``trainer.add_callback``) to a run that resumes, before ``trainer.train()``. Calling it again is harmless.

    Raises:
        TypeError: when ``trainer`` is not a ``transformers.Trainer``, or a callback is not a ``TrainerCallback``.
    """
    if not isinstance(trainer, Trainer):
        raise TypeError(
            f"Expected argument `trainer` to be a transformers.Trainer (or a subclass such as TRL's SFTTrainer) but "
            f"got {type(trainer).__name__}. For Lightning, add the callbacks of `lightning_inflect` to its Trainer."
        )
    for cb in callbacks:
        if not isinstance(cb, TrainerCallback):
            raise TypeError(
                f"Expected the callbacks given to `watch` to be TrainerCallbacks but got {type(cb).__name__}: use the "
                "callbacks of `lightning_inflect.integrations.transformers`, not the Lightning ones."
            )
        trainer.add_callback(cb)
    lightning = [
        type(cb).__name__
        for cb in trainer.callback_handler.callbacks
        if type(cb).__module__.startswith("lightning_inflect.callbacks")
    ]
    if lightning:
        raise TypeError(
            f"The Trainer holds Lightning callbacks {lightning}: import them from "
            "`lightning_inflect.integrations.transformers` for the Hugging Face Trainer."
        )
    wiring = _WIRINGS.get(trainer)
    if wiring is None:
        wiring = _WIRINGS[trainer] = _Wiring(trainer)
        trainer.add_callback(_WiringCallback(wiring))
    wiring.bind()
    return trainer
