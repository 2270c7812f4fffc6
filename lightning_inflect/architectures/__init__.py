"""Model knowledge: where blocks, attention modules and projections are, per ``config.model_type``."""

from lightning_inflect.architectures.discovery import (
    LayerDiscoveryError,
    LayerInfo,
    check_layer_indices,
    find_attention_modules,
    find_hf_model,
    find_layers,
)
from lightning_inflect.architectures.table import MODEL_LAYOUTS, ModelLayout

__all__ = [
    "MODEL_LAYOUTS",
    "LayerDiscoveryError",
    "LayerInfo",
    "ModelLayout",
    "check_layer_indices",
    "find_attention_modules",
    "find_hf_model",
    "find_layers",
]
