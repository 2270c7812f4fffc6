"""lightning-inflect: find where learning is blocked in a transformer, while it fine-tunes.

Callbacks (importing them imports Lightning):

>>> from lightning_inflect import AttentionEntropyMonitor, GradientNormMonitor, CKADriftMonitor, InjectionCallback
"""

from lightning_inflect.architectures import LayerDiscoveryError
from lightning_inflect.selection import (
    SKI,
    CKAImportance,
    GradientProbe,
    Manual,
    RandomK,
    Selection,
    Selector,
    TopK,
    Uniform,
)

__version__ = "0.1.0"

_CALLBACKS = ("AttentionEntropyMonitor", "CKADriftMonitor", "GradientNormMonitor", "InjectionCallback")

__all__ = [
    *_CALLBACKS,
    "SKI",
    "CKAImportance",
    "GradientProbe",
    "LayerDiscoveryError",
    "Manual",
    "RandomK",
    "Selection",
    "Selector",
    "TopK",
    "Uniform",
    "__version__",
]


def __getattr__(name: str):
    # Lazy, so that `import lightning_inflect.functional` stays free of Lightning.
    if name in _CALLBACKS:
        from lightning_inflect import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module 'lightning_inflect' has no attribute {name!r}")
