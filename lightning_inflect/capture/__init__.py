"""Hooks and the probe forward. Every context manager and capture object removes its hooks."""

from lightning_inflect.capture.attention import capture_attention_entropy, generic_eager_attention
from lightning_inflect.capture.contract import (
    EntropyRequest,
    PooledRequest,
    ProbeRequest,
    ProbeResult,
    merge_requests,
)
from lightning_inflect.capture.grads import ActivationGradCapture, mean_norms
from lightning_inflect.capture.probe import (
    default_model_inputs,
    eval_mode,
    no_fastpath,
    pool_hidden,
    run_probe,
    to_device,
)
from lightning_inflect.capture.probs import capture_attention_probs

__all__ = [
    "ActivationGradCapture",
    "EntropyRequest",
    "PooledRequest",
    "ProbeRequest",
    "ProbeResult",
    "capture_attention_entropy",
    "capture_attention_probs",
    "default_model_inputs",
    "eval_mode",
    "generic_eager_attention",
    "mean_norms",
    "merge_requests",
    "no_fastpath",
    "pool_hidden",
    "run_probe",
    "to_device",
]
