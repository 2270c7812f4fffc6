"""Hooks and the probe forward. Every context manager and capture object removes its hooks."""

from lightning_inflect.capture.attention import capture_attention_entropy, generic_eager_attention
from lightning_inflect.capture.grads import ActivationGradCapture
from lightning_inflect.capture.probe import (
    ProbeResult,
    default_model_inputs,
    eval_mode,
    pool_hidden,
    run_probe,
    to_device,
)

__all__ = [
    "ActivationGradCapture",
    "ProbeResult",
    "capture_attention_entropy",
    "default_model_inputs",
    "eval_mode",
    "generic_eager_attention",
    "pool_hidden",
    "run_probe",
    "to_device",
]
