"""Dormant adapters (how the injection fits FSDP2): attached at setup without changing anything, woken at the
injection into exactly what a direct injection gives."""

import copy

import pytest
import torch
from conftest import tiny_model

from lightning_inflect.architectures import find_layers
from lightning_inflect.injection import (
    activate_lora,
    attach_dormant_lora,
    inject_lora,
    lora_settings,
    plan_injection,
)


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {"input_ids": torch.randint(1, 50, (3, 9), generator=g), "attention_mask": torch.ones(3, 9).long()}


def _plan(model, layers, **kw):
    info = find_layers(model)
    return plan_injection(model, info, layers, lora_settings(r=4), info.layout.lora_targets, **kw)


@pytest.mark.parametrize("model_type", ["bert", "llama"])
def test_dormant_adapters_change_nothing_until_woken_like_a_direct_injection(model_type):
    model = tiny_model(model_type).eval()
    model.get_input_embeddings().weight.requires_grad_(False)  # a user's own frozen part stays frozen
    flags = {id(p): p.requires_grad for p in model.parameters()}
    batch = _batch()
    with torch.no_grad():
        ref = model(**batch).logits
    lora = attach_dormant_lora(model, _plan(model, [0, 1, 2]))
    assert len(lora) == 3 * 2 * len(find_layers(model).layout.lora_targets)
    assert not any(p.requires_grad for p in lora)
    assert all(flags[id(p)] == p.requires_grad for p in model.parameters() if id(p) in flags)
    for p in (q for n, q in model.named_parameters() if "lora_B" in n):  # even a non-zero B does nothing: inactive
        p.data.normal_()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, ref)

    direct = copy.deepcopy(model)  # the same weights, dormant adapters included; wake one block in each
    record = _plan(model, [1])
    woken = activate_lora(model, record)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in woken) == sorted(
        f"{m}.lora_{ab}.inflect.weight" for m in record.target_modules for ab in "AB"
    )
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted([names[id(p)] for p in woken] + [n for n in names.values() if "score" in n
                                                                     or "classifier" in n])  # fmt: skip
    # the reference: a model without dormant adapters, with the chosen block's weights, injected directly
    plain = tiny_model(model_type).eval()
    inject_lora(plain, _plan(plain, [1]))
    keep = {k: v for k, v in direct.state_dict().items() if ".lora_" not in k or ".layers.1." in k or ".layer.1." in k}
    chosen = (".layers.1.", ".layer.1.")
    plain.load_state_dict({k if any(c in k for c in chosen) else k.replace(".base_layer.", "."): v
                           for k, v in keep.items()})  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, plain(**batch).logits, rtol=0, atol=1e-6)
        assert not torch.allclose(model(**batch).logits, ref)  # block 1's B is awake now


def test_waking_a_block_without_dormant_adapters_is_refused():
    model = tiny_model("bert")
    attach_dormant_lora(model, _plan(model, [0]))
    with pytest.raises(ValueError, match=r"Expected a dormant LoRA adapter 'inflect' on \['bert.encoder.layer.2"):
        activate_lora(model, _plan(model, [2]))


def test_without_freezing_the_wrapped_weights_keep_their_own_flags():
    model = tiny_model("bert")
    query = model.bert.encoder.layer[0].attention.self.query
    query.bias.requires_grad_(False)
    record = _plan(model, [0], freeze_backbone=False)
    inject_lora(model, record)
    assert model.bert.encoder.layer[0].attention.self.query.base_layer is query  # wrapped
    assert query.weight.requires_grad  # peft froze it; the user had it trainable
    assert not query.bias.requires_grad  # and this one frozen
    assert model.bert.encoder.layer[1].attention.self.query.weight.requires_grad
