"""lightning-inflect: find where learning is blocked in a transformer, while it fine-tunes.

Callbacks (importing them imports Lightning):

>>> from lightning_inflect import AttentionEntropyMonitor, GradientNormMonitor, CKADriftMonitor
"""

from lightning_inflect.adapters import LayerDiscoveryError

__version__ = "0.1.0"

_CALLBACKS = ("AttentionEntropyMonitor", "CKADriftMonitor", "GradientNormMonitor")

__all__ = [*_CALLBACKS, "LayerDiscoveryError", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import lightning_inflect.functional` stays free of Lightning.
    if name in _CALLBACKS:
        from lightning_inflect import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module 'lightning_inflect' has no attribute {name!r}")
