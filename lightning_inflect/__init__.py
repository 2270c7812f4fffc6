"""lightning-inflect: find where learning is blocked in a transformer, while it fine-tunes.

Callbacks (importing them imports Lightning):

>>> from lightning_inflect import AttentionEntropyMonitor, GradientNormMonitor, CKADriftMonitor, InjectionCallback

Framework-free: the monitors' contract :class:`InflectMonitor` (:mod:`lightning_inflect.monitor`) and the logged
names (:mod:`lightning_inflect.names`):

>>> from lightning_inflect import InflectMonitor, names
>>> isinstance(CKADriftMonitor(every_n_steps=10), InflectMonitor), names.layer_key("inflect", names.CKA_DRIFT, 1)
(True, 'inflect/cka_drift/layer_01')
"""

from lightning_inflect import names
from lightning_inflect.architectures import LayerDiscoveryError
from lightning_inflect.monitor import InflectMonitor
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
from lightning_inflect.validation import CheckpointStateError

__version__ = "0.1.0"

_CALLBACKS = ("AttentionEntropyMonitor", "CKADriftMonitor", "GradientNormMonitor", "InjectionCallback")

__all__ = [
    *_CALLBACKS,
    "SKI",
    "CKAImportance",
    "CheckpointStateError",
    "GradientProbe",
    "InflectMonitor",
    "LayerDiscoveryError",
    "Manual",
    "RandomK",
    "Selection",
    "Selector",
    "TopK",
    "Uniform",
    "__version__",
    "names",
]


def __getattr__(name: str):
    # Lazy, so that `import lightning_inflect.functional` stays free of Lightning.
    if name in _CALLBACKS:
        from lightning_inflect import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module 'lightning_inflect' has no attribute {name!r}")
