"""The transfer strategies of the study, in one registry read by the harness, the CLI and the report.

A strategy says which blocks train and how:

- **which blocks**: chosen by a ``selector`` after a diagnosis of the source model on target batches (a *selective*
  strategy), a fixed ``blocks`` rule, or neither (the whole model: full fine-tuning);
- **how**: LoRA adapters on those blocks, the backbone frozen (``lora=True``), or the blocks themselves unfrozen.

The classifier head trains in every strategy. :data:`STRATEGIES` holds them by name, in the order of the grid's
tables; :func:`register_strategy` adds one, and from then on ``lightning-inflect transfer --strategy NAME``, the
grid (``--strategies``, and its default: every registered strategy) and the report know it.

Example:
    >>> get_strategy("inflection-lora").display_name
    'inflection-layer LoRA (SKI)'
    >>> [s.name for s in STRATEGIES.values() if s.selective]
    ['inflection-lora', 'inflection-band-lora', 'cka-lora', 'grad-lora', 'random-lora']
    >>> get_strategy("magic")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Expected argument `strategy` to be one of the registered strategies ['full', ...] but got 'magic'. ...
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_inflect.experiments.config import ExperimentConfig

__all__ = ["SKI_BAND", "STRATEGIES", "Strategy", "get_strategy", "register_strategy", "strategy_names"]

SelectorFactory = Callable[["ExperimentConfig", int], Any]
"""``(cfg, seed) -> Selector``: the selector of a selective strategy, built for one run."""
BlocksRule = Callable[["ExperimentConfig", int], "tuple[list[int], str]"]
"""``(cfg, num_blocks) -> (blocks, reason)``: the fixed blocks of a strategy and a sentence saying why."""

_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Strategy:
    """How one transfer strategy fine-tunes the source model on the target task.

    Attributes:
        name: the key (``--strategy NAME``, folder names, tables): lower case words joined by ``-``.
        display_name: the label of the report's legends and tables.
        lora: train LoRA adapters on the blocks, the backbone frozen; otherwise the blocks themselves train.
        selector: ``(cfg, seed) -> Selector`` for a *selective* strategy: its blocks are the selector's choice after
            ``cfg.diagnose_steps`` diagnosis steps of the source model on target batches (no update).
        blocks: ``(cfg, num_blocks) -> (blocks, reason)``, the fixed blocks of a non-selective strategy.

    With neither ``selector`` nor ``blocks``, the whole model trains (full fine-tuning); a LoRA strategy needs one
    of them.

    Example:
        >>> s = Strategy("first-block-lora", "LoRA on block 0", lora=True, blocks=lambda cfg, n: ([0], "block 0"))
        >>> s.selective, s.kind
        (False, 'LoRA on fixed blocks')
        >>> Strategy("Bad Name", "x")
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `name` to be lower case words joined by '-' (like 'my-lora') but got 'Bad Name'.
    """

    name: str
    display_name: str
    lora: bool = False
    selector: SelectorFactory | None = None
    blocks: BlocksRule | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"Expected argument `name` to be lower case words joined by '-' (like 'my-lora') but got {self.name!r}."
            )
        if not isinstance(self.display_name, str) or not self.display_name:
            raise ValueError(f"Expected argument `display_name` to be a non-empty str but got {self.display_name!r}.")
        if self.selector is not None and self.blocks is not None:
            raise ValueError(
                f"Expected strategy {self.name!r} to have a `selector` or a `blocks` rule but got both: its blocks"
                " are either diagnosed or fixed."
            )
        if self.lora and self.selector is None and self.blocks is None:
            raise ValueError(
                f"Expected the LoRA strategy {self.name!r} to have a `selector` or a `blocks` rule but got neither."
            )

    @property
    def selective(self) -> bool:
        """Whether the blocks come from a diagnosis of the source model (a selector)."""
        return self.selector is not None

    @property
    def kind(self) -> str:
        """What trains, in words (``"LoRA on diagnosed blocks"``, ``"whole model"``, ...)."""
        if self.selector is None and self.blocks is None:
            return "whole model"
        how = "LoRA on" if self.lora else "unfrozen"
        return f"{how} {'diagnosed' if self.selective else 'fixed'} blocks"

    def selector_name(self, cfg: ExperimentConfig, seed: int = 0) -> str | None:
        """The selector's class name for ``cfg`` (None for a non-selective strategy)."""
        return None if self.selector is None else type(self.selector(cfg, seed)).__name__


STRATEGIES: dict[str, Strategy] = {}
"""The registry: name -> :class:`Strategy`, in the order of the grid's tables. Add with :func:`register_strategy`."""


def register_strategy(strategy: Strategy, *, replace: bool = False) -> Strategy:
    """Add ``strategy`` to :data:`STRATEGIES` (at the end) and return it.

    Raises:
        ValueError: If a strategy of that name is registered already and ``replace`` is False.
    """
    if not isinstance(strategy, Strategy):
        raise TypeError(f"Expected argument `strategy` to be a `Strategy` but got {type(strategy).__name__}.")
    if strategy.name in STRATEGIES and not replace:
        raise ValueError(
            f"Expected argument `strategy` to have a new name but {strategy.name!r} is registered already."
            " Hint: pass `replace=True` to replace it."
        )
    STRATEGIES[strategy.name] = strategy
    return strategy


def strategy_names() -> list[str]:
    """The registered strategies' names, in registry order."""
    return list(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """The registered strategy called ``name``.

    Raises:
        ValueError: If none is; the message lists the registered ones.
    """
    if not isinstance(name, str) or name not in STRATEGIES:
        raise ValueError(
            f"Expected argument `strategy` to be one of the registered strategies {strategy_names()} but got"
            f" {name!r}. Hint: add one with `register_strategy`."
        )
    return STRATEGIES[name]


# ------------------------------------------------------------------------------------------------ built-in rules
def _last_k(cfg: ExperimentConfig, num_blocks: int) -> tuple[list[int], str]:
    """The last ``cfg.k`` blocks.

    Example:
        >>> from lightning_inflect.experiments.config import ExperimentConfig
        >>> _last_k(ExperimentConfig(k=2), 6)
        ([4, 5], 'shallow: last 2 blocks [4, 5] and the head')
    """
    blocks = list(range(max(0, num_blocks - cfg.k), num_blocks))
    return blocks, f"shallow: last {cfg.k} blocks {blocks} and the head"


def _every_block(cfg: ExperimentConfig, num_blocks: int) -> tuple[list[int], str]:
    return list(range(num_blocks)), f"uniform: all {num_blocks} blocks"


SKI_BAND = 1
"""Neighbours on each side of every local maximum of the SKI score taken by ``inflection-band-lora``."""


def _ski(cfg: ExperimentConfig, seed: int) -> Any:
    """SKI as this study ran it first: the ``cfg.k`` best-scoring blocks (the same count as the other selectors)."""
    from lightning_inflect.selection import SKI

    return SKI(top_k=cfg.k, window=cfg.diagnose_steps)


def _ski_band(cfg: ExperimentConfig, seed: int) -> Any:
    """SKI as the paper describes it: the local maxima of the score and ``SKI_BAND`` neighbours on each side (the
    number of blocks follows the scores)."""
    from lightning_inflect.selection import SKI

    return SKI(band=SKI_BAND, window=cfg.diagnose_steps)


def _cka_importance(cfg: ExperimentConfig, seed: int) -> Any:
    from lightning_inflect.selection import CKAImportance

    return CKAImportance(k=cfg.k)


def _gradient_probe(cfg: ExperimentConfig, seed: int) -> Any:
    from lightning_inflect.selection import GradientProbe

    return GradientProbe(k=cfg.k, window=cfg.diagnose_steps)


def _random_k(cfg: ExperimentConfig, seed: int) -> Any:
    from lightning_inflect.selection import RandomK

    return RandomK(k=cfg.k, seed=seed)


for _strategy in (
    Strategy("full", "full fine-tuning"),
    Strategy("shallow", "shallow (last k blocks)", blocks=_last_k),
    Strategy("uniform-lora", "uniform LoRA (all blocks)", lora=True, blocks=_every_block),
    Strategy("inflection-lora", "inflection-layer LoRA (SKI)", lora=True, selector=_ski),
    Strategy("inflection-band-lora", "inflection-layer LoRA (SKI, local maxima +-1)", lora=True, selector=_ski_band),
    Strategy("cka-lora", "CKA-importance LoRA", lora=True, selector=_cka_importance),
    Strategy("grad-lora", "gradient-probe LoRA", lora=True, selector=_gradient_probe),
    Strategy("random-lora", "random-k LoRA", lora=True, selector=_random_k),
):
    register_strategy(_strategy)
