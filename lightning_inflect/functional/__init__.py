"""Pure torch functions behind the callbacks: no Lightning, no peft, no transformers."""

from lightning_inflect.functional.cka import (
    cka_from_hsic,
    hsic_terms,
    linear_cka,
    minibatch_cka,
    pca_basis,
    pca_project,
    shared_pca_cka,
)
from lightning_inflect.functional.entropy import (
    EntropySums,
    attention_entropy,
    entropy_from_probs,
    entropy_from_qk,
    entropy_from_scores,
    reduce_entropy,
)
from lightning_inflect.functional.heatmap import heatmap_image
from lightning_inflect.functional.norms import gradient_drop, grouped_grad_norms, per_example_norm

__all__ = [
    "EntropySums",
    "attention_entropy",
    "cka_from_hsic",
    "entropy_from_probs",
    "entropy_from_qk",
    "entropy_from_scores",
    "gradient_drop",
    "grouped_grad_norms",
    "heatmap_image",
    "hsic_terms",
    "linear_cka",
    "minibatch_cka",
    "pca_basis",
    "pca_project",
    "per_example_norm",
    "reduce_entropy",
    "shared_pca_cka",
]
