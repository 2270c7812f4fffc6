"""Lightning callbacks: thin glue over the pure functions (gate, gather, compute, emit)."""

from lightning_inflect.callbacks.base import layer_key
from lightning_inflect.callbacks.cka import CKADriftMonitor
from lightning_inflect.callbacks.entropy import AttentionEntropyMonitor
from lightning_inflect.callbacks.grads import GradientNormMonitor
from lightning_inflect.callbacks.injection import InjectionCallback

__all__ = ["AttentionEntropyMonitor", "CKADriftMonitor", "GradientNormMonitor", "InjectionCallback", "layer_key"]
