"""Layer selectors: which transformer blocks to adapt, from the per-block diagnostics logged so far.

Pure code (torch and the standard library): no Lightning, no peft, no transformers. Every selector implements
:meth:`Selector.select` ``(history, num_layers) -> Selection``, lists in ``requires`` the metrics it reads, and explains
its choice in ``Selection.reason``.

Example:
    >>> from lightning_inflect.selection import SKI, Uniform
    >>> SKI()
    SKI(a=0.5, window=3, band=1, top_k=None)
    >>> SKI().requires
    ('attn_entropy', 'act_grad_norm')
    >>> Uniform().select({}, num_layers=2).reason
    'Uniform: all 2 blocks -> [0, 1]'
"""

from lightning_inflect.selection.base import (
    METRIC_SOURCES,
    History,
    MetricHistory,
    PlainHistory,
    Selection,
    Selector,
    history_tensor,
    select_or_fall_back,
)
from lightning_inflect.selection.rules import CKAImportance, GradientProbe, Manual, RandomK, TopK, Uniform
from lightning_inflect.selection.ski import SKI, local_maxima_band, minmax, ski_scores
from lightning_inflect.selection.trigger import GradientSuppressionTrigger

__all__ = [
    "METRIC_SOURCES",
    "SKI",
    "CKAImportance",
    "GradientProbe",
    "GradientSuppressionTrigger",
    "History",
    "Manual",
    "MetricHistory",
    "PlainHistory",
    "RandomK",
    "Selection",
    "Selector",
    "TopK",
    "Uniform",
    "history_tensor",
    "local_maxima_band",
    "minmax",
    "select_or_fall_back",
    "ski_scores",
]
