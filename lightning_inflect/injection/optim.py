"""Make an existing optimizer and its LR schedulers train exactly a new trainable set, without restarting them.

The strategy is *add a group*: frozen parameters leave their groups (their optimizer state is dropped, the groups
stay so indices keep matching the schedulers), and the new parameters (LoRA) join one new group that copies the
hyper-parameters of a template group, **including its current learning rate**, and follows that group's schedule
from the current step on. Schedulers are extended for the new group rather than rebuilt, so warm-up, cosine phase
and plateau counters continue where they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn
from torch.optim import Optimizer

__all__ = [
    "add_parameter_group",
    "drop_frozen_parameters",
    "extend_scheduler",
    "retarget_optimizer",
    "retarget_optimizers",
]


def drop_frozen_parameters(optimizer: Optimizer) -> int:
    """Remove parameters with ``requires_grad=False`` from every group (and their state); return how many left.

    Example:
        >>> import torch
        >>> a, b = nn.Parameter(torch.ones(1)), nn.Parameter(torch.ones(1))
        >>> opt = torch.optim.SGD([a, b], lr=0.1); b.requires_grad_(False)  # doctest: +ELLIPSIS
        Parameter containing:...
        >>> drop_frozen_parameters(opt), len(opt.param_groups[0]["params"])
        (1, 1)
    """
    removed = 0
    for group in optimizer.param_groups:
        keep = [p for p in group["params"] if p.requires_grad]
        for p in group["params"]:
            if not p.requires_grad:
                optimizer.state.pop(p, None)
                removed += 1
        group["params"] = keep
    return removed


def add_parameter_group(optimizer: Optimizer, params: Iterable[nn.Parameter], template_group: int = 0) -> int | None:
    """Add the parameters the optimizer does not hold yet (by identity) as one new group.

    The group copies every hyper-parameter of ``optimizer.param_groups[template_group]`` (``lr`` is its current
    value, ``initial_lr`` its schedule's base). Parameters already in the optimizer are skipped, so tensors that
    compare equal (zero-initialised LoRA ``B`` matrices) are all added, each once.

    Returns:
        The index of the new group, or None when there was nothing new to add.

    Example:
        >>> import torch
        >>> w = nn.Parameter(torch.ones(2)); opt = torch.optim.SGD([w], lr=0.5)
        >>> b1, b2 = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
        >>> add_parameter_group(opt, [b1, b2, w, b1])
        1
        >>> [len(g["params"]) for g in opt.param_groups], opt.param_groups[1]["lr"]
        ([1, 2], 0.5)
    """
    if not 0 <= template_group < len(optimizer.param_groups):
        raise ValueError(
            f"Expected argument `template_group` to be in [0, {len(optimizer.param_groups) - 1}] "
            f"but got {template_group!r}."
        )
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    new, seen = [], set()
    for p in params:
        if id(p) not in held and id(p) not in seen:
            seen.add(id(p))
            new.append(p)
    if not new:
        return None
    template = optimizer.param_groups[template_group]
    group: dict[str, Any] = {k: v for k, v in template.items() if k != "params"}
    group["params"] = new
    optimizer.add_param_group(group)
    return len(optimizer.param_groups) - 1


def extend_scheduler(scheduler: Any, template_group: int = 0) -> None:
    """Extend a scheduler's per-group lists after :func:`add_parameter_group` added groups to its optimizer.

    Handles ``LambdaLR``/``MultiplicativeLR`` (one lambda per group, the template's is reused, as in transformers'
    ``get_linear_schedule_with_warmup``), any ``LRScheduler`` with ``base_lrs`` (cosine, step, linear, one-cycle),
    ``SequentialLR``/``ChainedScheduler`` (their children) and ``ReduceLROnPlateau`` (``min_lrs``).
    """
    optimizer = scheduler.optimizer
    n = len(optimizer.param_groups)
    for child in getattr(scheduler, "_schedulers", []) or []:
        extend_scheduler(child, template_group)
    if hasattr(scheduler, "lr_lambdas"):
        while len(scheduler.lr_lambdas) < n:
            scheduler.lr_lambdas.append(scheduler.lr_lambdas[template_group])
    if hasattr(scheduler, "base_lrs"):
        while len(scheduler.base_lrs) < n:
            scheduler.base_lrs.append(scheduler.base_lrs[template_group])
    if hasattr(scheduler, "min_lrs"):
        while len(scheduler.min_lrs) < n:
            scheduler.min_lrs.append(scheduler.min_lrs[template_group])
    last = getattr(scheduler, "_last_lr", None)
    if isinstance(last, list):
        while len(last) < n:
            last.append(optimizer.param_groups[len(last)]["lr"])


def retarget_optimizer(
    optimizer: Optimizer, trainable: Sequence[nn.Parameter], new: Iterable[nn.Parameter], schedulers: Iterable[Any]
) -> None:
    """Make ``optimizer`` train exactly ``trainable``, the ``new`` parameters in one group of their own.

    ``new`` parameters already in a group (on resume, ``configure_optimizers`` saw them) are taken out first, so the
    groups are exactly those of the run that saved the checkpoint; frozen parameters leave their groups; the new
    group copies group 0 (:func:`add_parameter_group`), and the ``schedulers`` that drive this optimizer are
    extended for it (:func:`extend_scheduler`).
    """
    ids = {id(p) for p in new}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in ids]
    drop_frozen_parameters(optimizer)
    if add_parameter_group(optimizer, trainable) is not None:
        for scheduler in schedulers:
            if getattr(scheduler, "optimizer", None) is optimizer:
                extend_scheduler(scheduler)


def retarget_optimizers(
    module: nn.Module, optimizers: Iterable[Optimizer], new: Sequence[nn.Parameter], schedulers: Sequence[Any]
) -> None:
    """Make every optimizer of a training loop train exactly ``module``'s trainable set after an injection, the
    ``new`` parameters (the adapters) in one group of their own (:func:`retarget_optimizer`). The frozen
    parameters' last gradients are dropped too: no optimizer clears them any more, and they would be stale (and,
    under FSDP2, break the optimizer's state dict).

    Example:
        >>> import torch
        >>> net, extra = nn.Linear(2, 2), nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> net.bias.requires_grad_(False)
        Parameter containing:...
        >>> net.bias.grad = torch.ones(2)
        >>> holder = nn.ParameterList([*net.parameters(), extra])
        >>> retarget_optimizers(holder, [opt], [extra], [])
        >>> [len(g["params"]) for g in opt.param_groups], net.bias.grad
        ([1, 1], None)
    """
    trainable = [p for p in module.parameters() if p.requires_grad]
    for p in module.parameters():
        if not p.requires_grad:
            p.grad = None
    for optimizer in optimizers:
        retarget_optimizer(optimizer, trainable, new, schedulers)


def parameter_names(module: nn.Module, params: Sequence[nn.Parameter]) -> list[str]:
    """Names of ``params`` in ``module`` (for reports)."""
    ids = {id(p): n for n, p in module.named_parameters()}
    return [ids.get(id(p), "?") for p in params]
