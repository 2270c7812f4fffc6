"""Probe capture: exact entropy under SDPA (against eager attention's probabilities), outputs untouched, cleanup."""

import pytest
import torch
from conftest import tiny_model
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from lightning_inflect.adapters import find_attention_modules, find_layers
from lightning_inflect.capture import ActivationGradCapture, pool_hidden, run_probe
from lightning_inflect.functional import attention_entropy

MODELS = ["bert", "roberta", "distilbert", "gpt2", "llama"]


def _batch(seed: int = 0, seq: int = 9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 60, (3, seq), generator=g)
    mask = torch.ones(3, seq, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids * mask + (1 - mask) * 1, "attention_mask": mask}


def _eager_reference(model, batch, normalized=False):
    """Entropy from the probabilities eager attention returns with output_attentions=True."""
    eager = tiny_model(model.config.model_type, attn="eager", head="base")
    eager.load_state_dict(model.state_dict(), strict=False)
    eager.eval()
    with torch.no_grad():
        attns = eager(**batch, output_attentions=True).attentions
    mask = batch["attention_mask"].bool()
    seq = mask.shape[1]
    keys = mask[:, None, None, :]
    if model.config.model_type in ("gpt2", "llama"):  # causal: query i sees keys <= i
        keys = keys & torch.ones(seq, seq, dtype=torch.bool).tril()
    return [
        attention_entropy(a.double(), query_mask=mask, key_mask=keys, normalize=normalized, reduction="per_head")
        for a in attns
    ]


@pytest.mark.parametrize("model_type", MODELS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_entropy_matches_eager_probabilities_with_padding(model_type, attn):
    model = tiny_model(model_type, attn=attn, head="base")
    assert model.config._attn_implementation == attn
    info = find_layers(model)
    batch = _batch()
    result = run_probe(model, [batch], info.blocks, [0, 1, 2], find_attention_modules(info))
    ref = _eager_reference(model, batch)
    ref_norm = _eager_reference(model, batch, normalized=True)
    for layer in range(3):
        assert torch.allclose(result.entropy[layer].mean(), ref[layer], atol=1e-4), (layer, attn)
        assert torch.allclose(result.entropy[layer].normalized_mean(), ref_norm[layer], atol=1e-4)
    # real signal, not a constant: heads differ and stay within [0, log T]
    means = torch.stack([result.entropy[i].mean() for i in range(3)])
    assert (means > 0).all() and (means <= torch.log(torch.tensor(9.0))).all()


def test_entropy_follows_softcapping_and_sliding_window_in_eager_gemma2():
    model = tiny_model("gemma2", attn="eager", head="base")
    info = find_layers(model)
    ids = torch.randint(2, 60, (2, 9), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    result = run_probe(model, [batch], info.blocks, [0, 1, 2], find_attention_modules(info))
    eager = tiny_model("gemma2", attn="eager", head="base")
    eager.load_state_dict(model.state_dict())
    eager.eval()
    with torch.no_grad():
        attns = eager(**batch, output_attentions=True).attentions
    for layer, probs in enumerate(attns):
        ref = attention_entropy(probs.double(), reduction="per_head")
        assert torch.allclose(result.entropy[layer].mean(), ref, atol=1e-4)


def test_entropy_accumulates_over_probe_batches_like_one_big_batch():
    model = tiny_model("bert", head="base")
    info = find_layers(model)
    a, b = _batch(1), _batch(2)
    both = {k: torch.cat([a[k], b[k]]) for k in a}
    split = run_probe(model, [a, b], info.blocks, [0], find_attention_modules(info))
    joint = run_probe(model, [both], info.blocks, [0], find_attention_modules(info))
    assert torch.allclose(split.entropy[0].mean(), joint.entropy[0].mean(), atol=1e-6)
    assert split.forwards == 2


def test_probe_leaves_outputs_mode_and_attention_functions_untouched():
    model = tiny_model("llama", head="base")
    model.train()
    model.layers[1].eval()  # a user's own choice that must survive
    info = find_layers(model)
    batch = _batch()
    sdpa_before = ALL_ATTENTION_FUNCTIONS["sdpa"]
    keys_before = set(AttentionInterface._global_mapping)
    model.eval()
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
    model.train()
    model.layers[1].eval()
    result = run_probe(model, [batch], info.blocks, [0, 1, 2], find_attention_modules(info), output_layers=[2])
    assert model.training and model.layers[0].training and not model.layers[1].training
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_before
    assert set(AttentionInterface._global_mapping) == keys_before
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).last_hidden_state, ref)
    assert result.pooled[2][0].shape == (3, 32)
    assert not any(b._forward_hooks for b in info.blocks)


def test_probe_cleans_up_when_the_forward_raises():
    model = tiny_model("bert", head="base")
    info = find_layers(model)
    model.train()
    with pytest.raises(ValueError, match="input_ids"):
        run_probe(model, [{"attention_mask": torch.ones(1, 3)}], info.blocks, [0], find_attention_modules(info), [0, 1])
    assert model.training
    assert not any(b._forward_hooks for b in info.blocks)
    assert "eager" not in AttentionInterface._global_mapping


def test_pooled_block_outputs_match_hidden_states():
    model = tiny_model("bert", head="base")
    info = find_layers(model)
    batch = _batch()
    result = run_probe(model, [batch], info.blocks, output_layers=[0, 2], pooling="mean")
    model.eval()
    with torch.no_grad():
        hs = model(**batch, output_hidden_states=True).hidden_states
    for layer in (0, 2):
        assert torch.allclose(result.pooled[layer][0], pool_hidden(hs[layer + 1], batch["attention_mask"], "mean"))


def test_activation_grad_capture_matches_autograd():
    model = tiny_model("bert", head="base")
    info = find_layers(model)
    batch = _batch()
    cap = ActivationGradCapture(info.blocks, [0, 2])
    outs = {}
    handles = [info.blocks[i].register_forward_hook(lambda m, i_, o, i=i: outs.__setitem__(i, o)) for i in (0, 2)]
    cap.arm()
    cap.new_micro_batch()
    h = model(**batch).last_hidden_state
    for i in (0, 2):
        outs[i].retain_grad()
    h.pow(2).mean().backward()
    grads = [outs[0].grad, outs[2].grad]
    cap.disarm()
    for hd in handles:
        hd.remove()
    means, count = cap.read()
    assert count == 3
    for layer, g in zip((0, 2), grads):
        ref = torch.stack([g[i].norm() for i in range(3)]).mean()
        assert torch.allclose(means[layer], ref, rtol=1e-5)
    assert not any(b._forward_hooks for b in info.blocks)
