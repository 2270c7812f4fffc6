"""Where the blocks, attention modules and projections sit in each Hugging Face architecture.

One row per ``config.model_type``, in the spirit of peft's ``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``.
Paths are dotted attribute paths: ``layers`` from the base model (``model.base_model``), ``attention`` from a block,
the projections from the attention module. A model type that is missing still works through the structural
fallback of :func:`lightning_inflect.architectures.find_layers`; add a row (or pass ``layers_path=``) to make it
explicit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MODEL_LAYOUTS", "ModelLayout"]


@dataclass(frozen=True)
class ModelLayout:
    """Model knowledge for one architecture.

    Attributes:
        layers: path of the ``nn.ModuleList`` of transformer blocks, from the base model.
        attention: path of the self-attention module, from a block.
        query: query projection, from the attention module (None when fused into ``qkv``).
        key: key projection, from the attention module (None when fused into ``qkv``).
        value: value projection, from the attention module (None when fused into ``qkv``).
        qkv: fused query/key/value projection, from the attention module.
        lora_targets: default LoRA ``target_modules`` (module names inside a block) for attention.
        mlp_targets: extra LoRA targets for the feed-forward part, used on request.
    """

    layers: str
    attention: str
    query: str | None = None
    key: str | None = None
    value: str | None = None
    qkv: str | None = None
    lora_targets: tuple[str, ...] = ()
    mlp_targets: tuple[str, ...] = ()


_BERT_LIKE = ModelLayout(
    layers="encoder.layer",
    attention="attention.self",
    query="query",
    key="key",
    value="value",
    lora_targets=("query", "value"),
    mlp_targets=("intermediate.dense", "output.dense"),
)
_LLAMA_LIKE = ModelLayout(
    layers="layers",
    attention="self_attn",
    query="q_proj",
    key="k_proj",
    value="v_proj",
    lora_targets=("q_proj", "v_proj"),
    mlp_targets=("gate_proj", "up_proj", "down_proj"),
)

MODEL_LAYOUTS: dict[str, ModelLayout] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "distilbert": ModelLayout(
        layers="transformer.layer",
        attention="attention",
        query="q_lin",
        key="k_lin",
        value="v_lin",
        lora_targets=("q_lin", "v_lin"),
        mlp_targets=("ffn.lin1", "ffn.lin2"),
    ),
    "vit": ModelLayout(
        layers="encoder.layer",
        attention="attention.attention",
        query="query",
        key="key",
        value="value",
        lora_targets=("query", "value"),
        mlp_targets=("intermediate.dense", "output.dense"),
    ),
    "gpt2": ModelLayout(
        layers="h",
        attention="attn",
        qkv="c_attn",
        lora_targets=("c_attn",),
        mlp_targets=("mlp.c_fc", "mlp.c_proj"),
    ),
    "gpt_neox": ModelLayout(
        layers="layers",
        attention="attention",
        qkv="query_key_value",
        lora_targets=("query_key_value",),
        mlp_targets=("mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
    ),
    "opt": ModelLayout(
        layers="decoder.layers",
        attention="self_attn",
        query="q_proj",
        key="k_proj",
        value="v_proj",
        lora_targets=("q_proj", "v_proj"),
        mlp_targets=("fc1", "fc2"),
    ),
    # Models whose attention does not go through transformers' attention interface (their entropy comes from the
    # probabilities they return, see lightning_inflect.capture.probs). LoRA targets as in peft's mapping.
    "deberta-v2": ModelLayout(
        layers="encoder.layer",
        attention="attention.self",
        query="query_proj",
        key="key_proj",
        value="value_proj",
        lora_targets=("query_proj", "value_proj"),
        mlp_targets=("intermediate.dense", "output.dense"),
    ),
    "deberta": ModelLayout(
        layers="encoder.layer",
        attention="attention.self",
        qkv="in_proj",
        lora_targets=("in_proj",),
        mlp_targets=("intermediate.dense", "output.dense"),
    ),
    "mpnet": ModelLayout(
        layers="encoder.layer",
        attention="attention.attn",
        query="q",
        key="k",
        value="v",
        lora_targets=("q", "v"),
        mlp_targets=("intermediate.dense", "output.dense"),
    ),
    "gpt_neo": ModelLayout(
        layers="h",
        attention="attn.attention",
        query="q_proj",
        key="k_proj",
        value="v_proj",
        lora_targets=("q_proj", "v_proj"),
        mlp_targets=("mlp.c_fc", "mlp.c_proj"),
    ),
    "bloom": ModelLayout(
        layers="h",
        attention="self_attention",
        qkv="query_key_value",
        lora_targets=("query_key_value",),
        mlp_targets=("mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
    ),
    "falcon": ModelLayout(
        layers="h",
        attention="self_attention",
        qkv="query_key_value",
        lora_targets=("query_key_value",),
        mlp_targets=("mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
}
