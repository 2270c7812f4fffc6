"""The names lightning-inflect logs under, in one place: metric names, key parts and how keys are built.

Framework-free (no Lightning, no peft, no transformers): the Lightning callbacks, the selectors and any other front
end (a Hugging Face ``Trainer`` callback) spell every key the same way through these constants.

A logged key is ``<log_key_prefix>/<metric>/layer_LL`` for a per-block value (``LL`` the two-digit block index,
``/head_HH`` appended for a per-head value) and ``<log_key_prefix>/<name>`` for a run-level value:

>>> layer_key(DEFAULT_PREFIX, CKA_DRIFT, 1)
'inflect/cka_drift/layer_01'
>>> run_key(DEFAULT_PREFIX, OVERHEAD_MS)
'inflect/overhead_ms'
"""

from __future__ import annotations

__all__ = [
    "ACT_GRAD_NORM",
    "ATTN_ENTROPY",
    "ATTN_ENTROPY_NORMALIZED",
    "CKA_DRIFT",
    "CKA_IMPORTANCE",
    "DEFAULT_PREFIX",
    "HEATMAP",
    "INFLECTION_SCORE",
    "INJECTION",
    "MONITOR_METRICS",
    "OVERHEAD_MS",
    "TRAINABLE_PARAMS",
    "layer_key",
    "run_key",
]

DEFAULT_PREFIX = "inflect"
"""The default ``log_key_prefix``: the first part of every key."""

# ------------------------------------------------------------------------------------------------ per-block metrics
ATTN_ENTROPY = "attn_entropy"
"""Mean attention entropy of a block on the probe, in nats (``AttentionEntropyMonitor``)."""
ATTN_ENTROPY_NORMALIZED = "attn_entropy_normalized"
"""Attention entropy divided by ``log(n_valid_keys)``, in ``[0, 1]`` (``AttentionEntropyMonitor(normalized=True)``)."""
ACT_GRAD_NORM = "act_grad_norm"
"""Norm of the loss gradient at a block's output, per example, mean over the step (``GradientNormMonitor``)."""
PARAM_GRAD_NORM = "param_grad_norm"
"""Norm of the gradient of a block's trainable parameters (``GradientNormMonitor``)."""
CKA_DRIFT = "cka_drift"
"""``1 - CKA`` of a block's probe representation against the reference (``CKADriftMonitor``)."""
CKA_IMPORTANCE = "cka_importance"
"""``1 - CKA`` between a block's input and output (the ``CKAImportance`` selector; the InjectionCallback's probe)."""
INFLECTION_SCORE = "inflection_score"
"""The selector's per-block score at the injection (``InjectionCallback``)."""

MONITOR_METRICS = (ATTN_ENTROPY, ATTN_ENTROPY_NORMALIZED, ACT_GRAD_NORM, PARAM_GRAD_NORM, CKA_DRIFT)
"""The per-block metrics the monitors log (and keep in ``.history``)."""

# ------------------------------------------------------------------------------------------------ run-level names
OVERHEAD_MS = "overhead_ms"
"""All inflect monitors' own time on a logging step, in milliseconds."""
TRAINABLE_PARAMS = "trainable_params"
"""Trainable parameters of the model after the injection (``InjectionCallback``)."""
HEATMAP = "heatmap"
"""Key part of the heatmap images: ``<prefix>/heatmap/<metric>``."""
INJECTION = "injection"
"""Key of the injection report text: ``<prefix>/injection``."""


def layer_key(prefix: str, metric: str, layer: int, head: int | None = None) -> str:
    """The logged key of one layer (and optionally head): ``inflect/attn_entropy/layer_03/head_11``.

    Example:
        >>> layer_key("inflect", "cka_drift", 3)
        'inflect/cka_drift/layer_03'
        >>> layer_key("inflect", "attn_entropy", 0, head=11)
        'inflect/attn_entropy/layer_00/head_11'
    """
    key = f"{prefix}/{metric}/layer_{layer:02d}"
    return key if head is None else f"{key}/head_{head:02d}"


def run_key(prefix: str, *parts: str) -> str:
    """The logged key of a run-level value (or an image or text): ``prefix`` and ``parts`` joined by ``/``.

    Example:
        >>> run_key("inflect", TRAINABLE_PARAMS)
        'inflect/trainable_params'
        >>> run_key("inflect", HEATMAP, CKA_DRIFT)
        'inflect/heatmap/cka_drift'
    """
    return "/".join((prefix, *parts))
