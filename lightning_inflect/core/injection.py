"""The InjectionCallback's logic, framework-free: options, when to inject, what to select, the injection, its state.

:class:`InjectionCore` is everything the injection does that does not depend on the training loop. It reads the
loop through an :class:`InjectionHost` (a :class:`~lightning_inflect.core.host.Host` that also knows the loop's
callbacks, optimizers and ranks) and is driven by a few events, which each loop's glue calls from its own hooks:

* :meth:`~InjectionCore.begin_fit` once the model is known, :meth:`~InjectionCore.fit_planned` once the fit's
  number of optimizer steps is, :meth:`~InjectionCore.epoch_started` at each epoch;
* :meth:`~InjectionCore.batch_started` with each training micro-batch, before its forward (the injection happens
  there, at the first micro-batch of the planned optimizer step), :meth:`~InjectionCore.before_optimizer_step`
  when the step's gradients are complete and not yet clipped, :meth:`~InjectionCore.batch_ended` after each
  micro-batch;
* :meth:`~InjectionCore.save_adapters` at the end of the fit, :meth:`~InjectionCore.end_fit` when it is over.

The phases and the checkpoint state are one :class:`~lightning_inflect.injection.InjectionLifecycle`. No Lightning,
no Hugging Face ``Trainer`` here: the Lightning callback (:class:`lightning_inflect.InjectionCallback`) and the
Hugging Face one (:class:`lightning_inflect.integrations.transformers.InjectionCallback`) are glue over it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

from lightning_inflect.architectures import LayerInfo, check_layer_indices, find_hf_model, find_layers
from lightning_inflect.core.host import Host
from lightning_inflect.core.selector_inputs import SelectorInputs
from lightning_inflect.injection import (
    ADAPTER_NAME,
    InjectionLifecycle,
    InjectionRecord,
    InjectionSchedule,
    check_module_names,
    count_trainable,
    default_targets,
    export_adapters,
    lora_settings,
    plan_injection,
    resolve_targets,
)
from lightning_inflect.monitor import InflectMonitor
from lightning_inflect.names import (
    ACT_GRAD_NORM,
    DEFAULT_PREFIX,
    INFLECTION_SCORE,
    INJECTION,
    PARAM_GRAD_NORM,
    TRAINABLE_PARAMS,
    layer_key,
    run_key,
)
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

__all__ = [
    "EXPORT_FOLDER",
    "InjectionCore",
    "InjectionHost",
    "check_weights_match_state",
    "holds_adapter",
    "injection_report",
    "report_injection",
]

EmptyPolicy = Literal["raise", "skip", "fallback"]

EXPORT_FOLDER = "inflect_adapters"
"""The folder, inside ``export_dir``, that the adapters are saved in (peft's format)."""

EXPORT_HINT = (
    f"The adapters go to `<export_dir>/{EXPORT_FOLDER}` at the end of the fit: pass another `export_dir=`, or "
    "`export=False`."
)


class InjectionHost(Host, Protocol):
    """The training loop as the injection sees it: a :class:`~lightning_inflect.core.host.Host`, plus

    Members:
        world_size: the number of processes.
    """

    @property
    def world_size(self) -> int: ...

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        ...

    def callbacks(self) -> Sequence[Any]:
        """The loop's callbacks (the monitors among them)."""
        ...

    def retarget(self, lora: list[torch.nn.Parameter]) -> None:
        """Make the loop's optimizers (and their schedulers) train exactly the model's trainable set, the adapters
        ``lora`` in one new group (:func:`~lightning_inflect.injection.retarget_optimizer`)."""
        ...

    def log_text(self, key: str, markdown: str, step: int) -> None:
        """Send Markdown text to the loggers that take text (rank 0)."""
        ...

    def info(self, message: str) -> None:
        """An info message (rank 0)."""
        ...


def injection_report(record: InjectionRecord, prefix: str, lora_numel: int) -> tuple[dict[str, float], str]:
    """What the injection logs: ``prefix/trainable_params`` and the selector's scores
    ``prefix/inflection_score/layer_LL`` (scalars, at ``record.step``), and the Markdown text ``prefix/injection``.

    Example:
        >>> record = InjectionRecord(layers=[1], target_modules=["query"], lora={"r": 2, "lora_alpha": 4.0,
        ...     "lora_dropout": 0.0}, keep_trainable=[], step=2, trainable_after=4, reason="SKI", scores=[0.5, 1.0])
        >>> metrics, text = injection_report(record, "inflect", lora_numel=4)
        >>> metrics
        {'inflect/trainable_params': 4.0, 'inflect/inflection_score/layer_00': 0.5, 'inflect/inflection_score/layer_01': 1.0}
    """  # noqa: E501
    metrics = {run_key(prefix, TRAINABLE_PARAMS): float(record.trainable_after)}
    if record.scores is not None:
        metrics.update({layer_key(prefix, INFLECTION_SCORE, i): float(s) for i, s in enumerate(record.scores)})
    return metrics, record.describe(lora_numel)


def report_injection(host: InjectionHost, record: InjectionRecord, prefix: str, lora_numel: int) -> None:
    """Send :func:`injection_report` to ``host``: the scalars on every rank (which all hold the same record), the
    text on rank 0, and the info log."""
    metrics, text = injection_report(record, prefix, lora_numel)
    host.log_metrics(metrics, record.step)
    if host.is_global_zero:
        host.log_text(run_key(prefix, INJECTION), text, record.step)
    host.info(text.replace("**", ""))


def holds_adapter(keys: Iterable[str], adapter_name: str) -> bool:
    """Whether a state dict's ``keys`` hold LoRA tensors of the adapter ``adapter_name`` (not a model's own ones).

    Example:
        >>> holds_adapter(["encoder.layer.1.query.lora_A.inflect.weight"], "inflect")
        True
        >>> holds_adapter(["encoder.layer.1.query.lora_A.default.weight"], "inflect")
        False
    """
    return any(".lora_" in k and f".{adapter_name}." in k for k in keys)


def check_weights_match_state(cb: InjectionCore, checkpoint: Any, found: bool, ours: bool) -> None:
    """A checkpoint's weights hold ``cb``'s adapter (``ours``) exactly when its saved state (``found``, entered in
    ``cb``) says the injection happened; anything else was written by other code or edited: a
    :class:`~lightning_inflect.validation.CheckpointStateError` naming the checkpoint, the callback and the fix."""
    if not found and ours:
        raise CheckpointStateError(
            f"The checkpoint {checkpoint!r} holds LoRA weights of adapter {cb.adapter_name!r} but no state of "
            f"{type(cb).__name__} {cb.state_key!r}: resume with the InjectionCallback arguments "
            "(at_step/at_epoch/at_fraction) that made it."
        )
    if found and ours != cb.injected:
        held = "hold" if ours else "do not hold"
        raise CheckpointStateError(
            f"{cb.lifecycle.owner} cannot resume from {checkpoint!r}: its state says {cb.lifecycle.phase.value!r} but "
            f"the model's weights {held} adapter {cb.adapter_name!r}. The checkpoint was written by other code or "
            "edited; resume from another checkpoint."
        )


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
    """What the start of a fit can check against the model: blocks, selectors' ``k``, LoRA targets, kept modules."""
    n = info.num_layers
    check_blocks = check_layer_indices(layers, n) if layers is not None else [0]
    for sel in selectors:
        sel.check_fits(n)
    resolve_targets(info, check_blocks, targets, "")  # fails now if a target matches nothing
    check_module_names(model, keep_trainable, "keep_trainable")


def _check_options(**options: Any) -> None:
    """Every option of the injection but the schedule, checked at construction."""
    o = options
    for name in ("auto", "include_mlp", "freeze_backbone", "export", "export_merged", "train_user_adapters"):
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


class InjectionCore:
    """The logic of the InjectionCallbacks (Lightning's and the Hugging Face ``Trainer``'s); see their documentation
    for the options. Glue classes override :meth:`_dormant` and :meth:`_before_attach` where their loop shards the
    model."""

    # What one fit learns (set in begin_fit and the events; the defaults are the state before any fit).
    selection: Selection | None = None
    export_path: Path | None = None
    _fit: SelectorInputs | None = None  # the model and blocks of this fit, and what the selectors read
    _boundary = True  # the next micro-batch starts an optimizer step
    _step_at_start = -1
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
        _check_options(
            auto=auto, layers=layers, selector=selector, trigger=trigger, include_mlp=include_mlp,
            freeze_backbone=freeze_backbone, keep_trainable=keep_trainable, on_empty=on_empty,
            fallback_selector=fallback_selector, export=export, export_merged=export_merged, export_dir=export_dir,
            model_attr=model_attr, layers_path=layers_path, log_key_prefix=log_key_prefix, adapter_name=adapter_name,
            probe_inputs=probe_inputs, train_user_adapters=train_user_adapters,
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
        self.target_modules: list[str] | None = None  # names inside a block, known at begin_fit
        self.include_mlp, self.freeze_backbone, self.keep_trainable = include_mlp, freeze_backbone, list(keep_trainable)
        self.on_empty, self.fallback_selector = on_empty, fallback_selector
        self.export, self.export_merged, self.export_dir = export, export_merged, export_dir
        self.model_attr, self.layers_path = model_attr, layers_path
        self.log_key_prefix, self.adapter_name = log_key_prefix, adapter_name
        self.probe_inputs, self.train_user_adapters = probe_inputs, train_user_adapters
        owner = f"{type(self).__name__} (state key {self.state_key!r})"
        self.lifecycle = InjectionLifecycle(self.schedule, owner=owner)

    # --------------------------------------------------------------------------------------------- questions
    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint: its class and schedule (Lightning's format)."""
        when = {"at_step": self.at_step, "at_epoch": self.at_epoch, "at_fraction": self.at_fraction}
        return f"{type(self).__qualname__}{when!r}"

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

    def _inputs(self) -> SelectorInputs:
        """This fit's model and blocks, and what the selectors read (made in ``begin_fit``)."""
        if self._fit is None:
            raise RuntimeError(f"{type(self).__name__} was used before its fit began; attach it to a trainer.")
        return self._fit

    # ------------------------------------------------------------------------------------------------ events
    def begin_fit(self, host: InjectionHost, root: torch.nn.Module) -> SelectorInputs:
        """Find the model in ``root`` and check every option against it (nothing is changed yet)."""
        _, model = find_hf_model(root, self.model_attr)
        info = find_layers(model, self.layers_path)
        selectors = [sel for sel in (self.selector, self.fallback_selector) if sel is not None]
        self._fit = SelectorInputs(
            host.key, model, info, selectors, self.probe_inputs, callbacks=host.callbacks,
            precision_context=host.precision_context,
        )  # fmt: skip
        self._batch_checked = False
        self._boundary, self._step_at_start = True, -1
        if self.lora.target_modules is None:
            self.target_modules = default_targets(model, info, self.include_mlp)
        else:
            self.target_modules = sorted(self.lora.target_modules)
        _check_against_model(model, info, self.layers_arg, selectors, self.target_modules, self.keep_trainable)
        if self.export and self.export_dir is not None:
            check_writable_dir("export_dir", self.export_dir, EXPORT_HINT)
        if self.trigger is not None and not any(
            isinstance(cb, InflectMonitor) and ACT_GRAD_NORM in cb.metrics for cb in host.callbacks()
        ):
            raise ValueError(
                "`trigger=` reads activation-gradient norms: add `GradientNormMonitor(every_n_steps=...)` (with "
                "'activation' in its `norms`) to the trainer's callbacks."
            )
        return self._fit

    def fit_planned(self, host: InjectionHost, total_steps: float, max_steps: int, max_epochs: int | None) -> None:
        """The fit plans ``total_steps`` optimizer steps: fix the planned step, warn when it cannot be reached."""
        if not self.lifecycle.pending:
            return
        self.lifecycle.plan(total_steps)
        why = self.schedule.too_late(max_steps, max_epochs, total_steps)
        if why:
            host.warn(f"{type(self).__name__} plans to inject {why} No injection will happen in this fit.")

    def epoch_started(self, epoch: int, global_step: int) -> None:
        self._boundary = True
        self.lifecycle.on_epoch_start(epoch, global_step)

    def batch_started(self, host: InjectionHost, batch: Any) -> None:
        """A training micro-batch, before its forward: at the first one of the planned step, inject."""
        step = host.global_step
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
            self._inject(host, batch, step)

    def before_optimizer_step(self, host: InjectionHost) -> None:
        """The step's gradients are complete (accumulated, unscaled, not clipped): the selector's own, if due."""
        if not self.lifecycle.pending or self.planned_step is None or host.global_step != self.planned_step - 1:
            return
        inputs = self._inputs()
        inputs.grads.collect(parameters=self.auto and inputs.needs_own(PARAM_GRAD_NORM))

    def batch_ended(self, host: InjectionHost) -> None:
        """After each micro-batch (``host.global_step`` counts the optimizer steps done)."""
        self._boundary = host.global_step != self._step_at_start

    def _trigger_fired(self) -> bool:
        if self.trigger is None or not self._inputs().trigger_fired(self.trigger):
            return False
        self._trigger_reason = f"{self.trigger!r} fired: {self.trigger.reason}; "
        return True

    def _choose(self, batch: Any, step: int) -> Selection:
        n = self._inputs().info.num_layers
        if not self.auto:
            layers = check_layer_indices(self.layers_arg, n)
            return Selection(tuple(layers), None, f"manual: layers={self.layers_arg}")
        assert self.selector is not None  # auto=True always has one
        history = self._inputs().history(batch, step)
        return select_or_fall_back(self.selector, history, n, self.on_empty, self.fallback_selector, step)

    # ----------------------------------------------------------------------------------------------- inject
    def _plan(self, layers: list[int], **fields: Any) -> InjectionRecord:
        fit = self._inputs()
        return plan_injection(
            fit.model, fit.info, layers, self.lora, self.target_modules or [], self.keep_trainable,
            freeze_backbone=self.freeze_backbone, adapter_name=self.adapter_name,
            train_user_adapters=self.train_user_adapters, **fields,
        )  # fmt: skip

    def _dormant(self, host: InjectionHost) -> bool:
        """Whether the adapters were attached dormant before the loop sharded the model (then they are woken)."""
        return False

    def _before_attach(self, host: InjectionHost) -> None:
        """Right before the adapters are attached (or woken): the loop's chance to reshard the model."""

    def _inject(self, host: InjectionHost, batch: Any, step: int) -> None:
        selection = self._choose(batch, step)
        if host.world_size > 1:  # decide together: rank 0's choice (or skip), scores and reason on every rank
            selection = host.broadcast(selection)
        self.selection = selection
        if not selection.layers:  # on_empty="skip"
            host.warn(f"{type(self).__name__}: no block selected ({selection.reason}); no injection.")
            self.lifecycle.skip(selection.reason)
            return
        fit = self._inputs()
        record = self._plan(
            list(selection.layers), step=step, reason=self._trigger_reason + selection.reason,
            scores=None if selection.scores is None else list(selection.scores),
        )  # fmt: skip
        self._before_attach(host)
        lora = self.lifecycle.inject(fit.model, record, dormant=self._dormant(host))
        record.trainable_after = count_trainable(fit.model)
        host.retarget(lora)
        report_injection(host, record, self.log_key_prefix, sum(int(q.numel()) for q in lora))

    def enter_saved(self, state: Any, checkpoint: Any, dormant: bool = False) -> list[torch.nn.Parameter]:
        """Enter a checkpoint's saved state (checked whole first, before anything changes); an injected one is
        re-applied to the model. Returns the adapters' trainable parameters when it was re-applied, else ``[]``."""
        fit = self._inputs()
        self.lifecycle.read_state(state, fit.info.num_layers, checkpoint)
        return self.lifecycle.restore(state, fit.model, fit.info.num_layers, checkpoint, dormant=dormant)

    # ------------------------------------------------------------------------------------------------- export
    def save_adapters(self, host: InjectionHost, export_dir: str | Path, tensors: dict[str, Any] | None = None) -> None:
        """Save the adapters in peft's format in ``<export_dir>/inflect_adapters`` (rank 0 writes), if injected."""
        record = self.record
        if record is None or not self.export:
            return
        if host.is_global_zero:
            folder = Path(self.export_dir or export_dir) / EXPORT_FOLDER
            model = self._inputs().model
            self.export_path = export_adapters(model, record, folder, merged=self.export_merged, tensors=tensors)
            host.info(f"{type(self).__name__}: adapters saved in {self.export_path}")
        self.lifecycle.exported()

    def end_fit(self) -> None:
        """The fit is over (or failed): remove every hook."""
        if self._fit is not None:
            self._fit.grads.disarm()
            self._fit = None

    # -------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return self.lifecycle.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        fit = self._fit
        num_layers = fit.info.num_layers if fit is not None else None
        self.lifecycle.restore(state_dict, None, num_layers, getattr(self, "_checkpoint", None))
