"""Model discovery: a table of tiny real architectures, the override, the structural fallback and the errors."""

import pytest
import torch
from conftest import NO_INTERFACE, tiny_model, tiny_no_interface
from torch import nn

from lightning_inflect.architectures import (
    MODEL_LAYOUTS,
    LayerDiscoveryError,
    check_layer_indices,
    find_attention_modules,
    find_hf_model,
    find_layers,
)

CASES = [
    # model_type, head, expected path from the model given, attention class, query attr (or fused)
    ("bert", "seq_cls", "bert.encoder.layer", "BertSelfAttention", "query"),
    ("bert", "base", "encoder.layer", "BertSelfAttention", "query"),
    ("roberta", "seq_cls", "roberta.encoder.layer", "RobertaSelfAttention", "query"),
    ("distilbert", "seq_cls", "distilbert.transformer.layer", "DistilBertSelfAttention", "q_lin"),
    ("gpt2", "seq_cls", "transformer.h", "GPT2Attention", "c_attn"),
    ("gpt2", "base", "h", "GPT2Attention", "c_attn"),
    ("llama", "seq_cls", "model.layers", "LlamaAttention", "q_proj"),
]


@pytest.mark.parametrize(("model_type", "head", "path", "attn_cls", "query"), CASES)
def test_table_finds_blocks_attention_and_projections(model_type, head, path, attn_cls, query):
    model = tiny_model(model_type, head=head)
    info = find_layers(model)
    assert info.source == "table"
    assert info.path == path
    assert info.num_layers == model.config.num_hidden_layers == 3
    assert info.blocks is model.get_submodule(path)
    attn = find_attention_modules(info)
    assert [type(a).__name__ for a in attn] == [attn_cls] * 3
    layout = MODEL_LAYOUTS[model_type]
    proj = layout.query or layout.qkv
    assert proj == query and all(isinstance(getattr(a, proj), nn.Module) for a in attn)
    for target in layout.lora_targets + layout.mlp_targets:
        assert info.blocks[0].get_submodule(_full(info.blocks[0], target)) is not None


# Tiny, dropout-free configs of models whose attention does not go through transformers' attention interface
# (shared with tests/test_capture_probs.py).
NO_INTERFACE_CASES = [
    # model_type, head, expected path, attention class, query (or fused qkv) attribute
    ("deberta-v2", "seq_cls", "deberta.encoder.layer", "DisentangledSelfAttention", "query_proj"),
    ("deberta-v2", "base", "encoder.layer", "DisentangledSelfAttention", "query_proj"),
    ("deberta", "seq_cls", "deberta.encoder.layer", "DisentangledSelfAttention", "in_proj"),
    ("mpnet", "seq_cls", "mpnet.encoder.layer", "MPNetSelfAttention", "q"),
    ("gpt_neo", "seq_cls", "transformer.h", "GPTNeoSelfAttention", "q_proj"),
    ("gpt_neo", "base", "h", "GPTNeoSelfAttention", "q_proj"),
    ("bloom", "seq_cls", "transformer.h", "BloomAttention", "query_key_value"),
    ("falcon", "seq_cls", "transformer.h", "FalconAttention", "query_key_value"),
    ("falcon", "base", "h", "FalconAttention", "query_key_value"),
]


@pytest.mark.parametrize(("model_type", "head", "path", "attn_cls", "query"), NO_INTERFACE_CASES)
def test_table_rows_for_models_without_attention_interface(model_type, head, path, attn_cls, query):
    model = tiny_no_interface(model_type, head=head)
    info = find_layers(model)
    assert (info.source, info.path) == ("table", path)
    assert info.num_layers == model.config.num_hidden_layers == 3
    assert info.blocks is model.get_submodule(path)
    attn = find_attention_modules(info)
    assert [type(a).__name__ for a in attn] == [attn_cls] * 3
    layout = MODEL_LAYOUTS[model_type]
    assert (layout.query or layout.qkv) == query
    for name in (layout.query, layout.key, layout.value, layout.qkv):
        assert name is None or all(isinstance(getattr(a, name), nn.Linear) for a in attn)
    for target in layout.lora_targets + layout.mlp_targets:
        assert isinstance(info.blocks[0].get_submodule(_full(info.blocks[0], target)), nn.Linear)
    for target in layout.lora_targets:  # the attention targets are projections of the attention module
        assert isinstance(attn[0].get_submodule(target), nn.Linear)


@pytest.mark.parametrize("model_type", sorted(NO_INTERFACE))
def test_structural_fallback_finds_the_same_modules_without_a_row(model_type, monkeypatch):
    model = tiny_no_interface(model_type)
    expected = find_attention_modules(find_layers(model))
    monkeypatch.delitem(MODEL_LAYOUTS, model_type)
    info = find_layers(model)
    assert info.source == "structural" and info.layout is None
    assert all(a is b for a, b in zip(find_attention_modules(info), expected, strict=True))


def _full(block: nn.Module, leaf: str) -> str:
    names = [n for n, _ in block.named_modules() if n == leaf or n.endswith("." + leaf)]
    assert names, f"LoRA target {leaf!r} not found in {type(block).__name__}"
    return names[0]


def test_override_wins_and_bad_override_lists_candidates():
    model = tiny_model("bert")
    assert find_layers(model, layers_path="bert.encoder.layer").source == "override"
    with pytest.raises(
        LayerDiscoveryError, match=r"`layers_path='bert.encoder'` points to a BertEncoder.*bert.encoder.layer"
    ):
        find_layers(model, layers_path="bert.encoder")
    with pytest.raises(LayerDiscoveryError, match="points to nothing"):
        find_layers(model, layers_path="nope")


class _Cfg:
    model_type = "my-arch"
    num_hidden_layers = 2


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Module()
        self.attn.q_proj = nn.Linear(4, 4)
        self.mlp = nn.Linear(4, 4)


class _Custom(nn.Module):
    def __init__(self, extra_list: bool = False):
        super().__init__()
        self.config = _Cfg()
        self.stack = nn.ModuleList([_Block(), _Block()])
        self.heads = nn.ModuleList([nn.Linear(4, 2), nn.Linear(4, 2)]) if extra_list else nn.ModuleList()


def test_structural_fallback_and_ambiguity():
    info = find_layers(_Custom())
    assert (info.source, info.path, info.num_layers) == ("structural", "stack", 2)
    assert [type(a).__name__ for a in find_attention_modules(info)] == ["Module", "Module"]
    with pytest.raises(
        LayerDiscoveryError, match=r"Tried: table: no row for model_type='my-arch'.*'stack'.*'heads'.*layers_path="
    ):
        find_layers(_Custom(extra_list=True))


def test_no_blocks_at_all():
    with pytest.raises(LayerDiscoveryError, match="Candidate ModuleLists: none"):
        find_layers(nn.Sequential(nn.Linear(2, 2)))


def test_find_hf_model_single_explicit_ambiguous_and_none():
    holder = nn.Module()
    holder.backbone = tiny_model("bert")
    holder.proj = nn.Linear(2, 2)
    name, model = find_hf_model(holder)
    assert name == "backbone" and model is holder.backbone
    holder.teacher = tiny_model("gpt2")
    with pytest.raises(
        LayerDiscoveryError, match=r"Found 2 Hugging Face models.*\['backbone', 'teacher'\].*model_attr="
    ):
        find_hf_model(holder)
    assert find_hf_model(holder, "teacher")[1] is holder.teacher
    with pytest.raises(LayerDiscoveryError, match="`model_attr='student'` does not name a submodule"):
        find_hf_model(holder, "student")
    with pytest.raises(LayerDiscoveryError, match="No Hugging Face PreTrainedModel"):
        find_hf_model(nn.Linear(2, 2))


def test_layer_indices():
    assert check_layer_indices(None, 3) == [0, 1, 2]
    assert check_layer_indices([-1, 0], 3) == [0, 2]
    with pytest.raises(ValueError, match=r"`layers` to hold block indices in \[0, 2\].*got 3"):
        check_layer_indices([3], 3)
    with pytest.raises(ValueError, match="distinct"):
        check_layer_indices([1, -2], 3)
    with pytest.raises(ValueError, match="got True"):
        check_layer_indices([True], 3)


def test_blocks_are_the_modules_that_run():
    model = tiny_model("llama")
    info = find_layers(model)
    seen = []
    handles = [b.register_forward_hook(lambda m, i, o, k=k: seen.append(k)) for k, b in enumerate(info.blocks)]
    model(input_ids=torch.randint(1, 60, (1, 5)))
    for h in handles:
        h.remove()
    assert seen == [0, 1, 2]
