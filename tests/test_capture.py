"""Probe capture: exact entropy under SDPA (against eager attention's probabilities), outputs untouched, cleanup."""

import pytest
import torch
from conftest import tiny_model
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from lightning_inflect.architectures import find_attention_modules, find_layers
from lightning_inflect.capture import (
    ActivationGradCapture,
    EntropyRequest,
    PooledRequest,
    mean_norms,
    pool_hidden,
    run_probe,
)
from lightning_inflect.functional import attention_entropy


def _entropy(model, batches, layers=(0, 1, 2), reduction="token"):
    """Per-block EntropySums rows from one probe pass."""
    info = find_layers(model)
    request = EntropyRequest(tuple(layers), reduction)
    result = run_probe(model, batches, info.blocks, [request], find_attention_modules(info))
    sums = result.answer(request)
    return {layer: type(sums)(*(f[i] for f in sums)) for i, layer in enumerate(layers)}, result


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
    batch = _batch()
    entropy, result = _entropy(model, [batch])
    assert result.entropy_source == "interface" and result.forwards == 1
    ref = _eager_reference(model, batch)
    ref_norm = _eager_reference(model, batch, normalized=True)
    for layer in range(3):
        assert torch.allclose(entropy[layer].mean(), ref[layer], atol=1e-4), (layer, attn)
        assert torch.allclose(entropy[layer].normalized_mean(), ref_norm[layer], atol=1e-4)
    # real signal, not a constant: heads differ and stay within [0, log T]
    means = torch.stack([entropy[i].mean() for i in range(3)])
    assert (means > 0).all() and (means <= torch.log(torch.tensor(9.0))).all()


def test_entropy_follows_softcapping_and_sliding_window_in_eager_gemma2():
    model = tiny_model("gemma2", attn="eager", head="base")
    ids = torch.randint(2, 60, (2, 9), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    entropy, _ = _entropy(model, [batch])
    eager = tiny_model("gemma2", attn="eager", head="base")
    eager.load_state_dict(model.state_dict())
    eager.eval()
    with torch.no_grad():
        attns = eager(**batch, output_attentions=True).attentions
    for layer, probs in enumerate(attns):
        ref = attention_entropy(probs.double(), reduction="per_head")
        assert torch.allclose(entropy[layer].mean(), ref, atol=1e-4)


def test_entropy_accumulates_over_probe_batches_like_one_big_batch():
    model = tiny_model("bert", head="base")
    a, b = _batch(1), _batch(2)
    both = {k: torch.cat([a[k], b[k]]) for k in a}
    for reduction in ("token", "example"):
        split, result = _entropy(model, [a, b], [0], reduction)
        joint, _ = _entropy(model, [both], [0], reduction)
        assert torch.allclose(split[0].mean(), joint[0].mean(), atol=1e-6)
        assert result.forwards == 2


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
    pooled = PooledRequest((2,))
    result = run_probe(model, [batch], info.blocks, [EntropyRequest((0, 1, 2)), pooled], find_attention_modules(info))
    assert model.training and model.layers[0].training and not model.layers[1].training
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_before
    assert set(AttentionInterface._global_mapping) == keys_before
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).last_hidden_state, ref)
    assert result.answer(pooled)[0].shape == (1, 3, 32)
    assert not any(b._forward_hooks for b in info.blocks)


def test_probe_cleans_up_when_the_forward_raises():
    model = tiny_model("bert", head="base")
    info = find_layers(model)
    model.train()
    with pytest.raises(ValueError, match="input_ids"):
        run_probe(
            model,
            [{"attention_mask": torch.ones(1, 3)}],
            info.blocks,
            [EntropyRequest((0,)), PooledRequest((0, 1))],
            find_attention_modules(info),
        )
    assert model.training
    assert not any(b._forward_hooks for b in info.blocks)
    assert "eager" not in AttentionInterface._global_mapping


def _naive_pool(h, mask, pooling):
    """Loop over examples: the real tokens' mean, the first position, or the last real token."""
    rows = []
    for i in range(h.shape[0]):
        real = h[i, : int(mask[i].sum())] if mask is not None else h[i]
        rows.append({"mean": real.mean(0), "first": h[i, 0], "last": real[-1]}[pooling])
    return torch.stack(rows)


def test_pooled_block_outputs_match_hidden_states():
    model = tiny_model("bert", head="base")
    info = find_layers(model)
    batch = _batch()
    result = run_probe(model, [batch], info.blocks, [PooledRequest((0, 2), "mean")])
    model.eval()
    with torch.no_grad():
        hs = model(**batch, output_hidden_states=True).hidden_states
    rows = result.answer(PooledRequest((0, 2), "mean"))[0]
    for i, layer in enumerate((0, 2)):
        assert torch.allclose(rows[i], _naive_pool(hs[layer + 1], batch["attention_mask"], "mean"), atol=1e-6)


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
    sums, counts = cap.read()
    assert counts == [3, 3]
    means = mean_norms(sums.tolist(), counts)
    for mean, g in zip(means, grads):
        ref = torch.stack([g[i].norm() for i in range(3)]).mean()
        assert mean == pytest.approx(ref.item(), rel=1e-5)
    assert not any(b._forward_hooks for b in info.blocks)


def _naive_entropy(probs, keys, query_mask, reduction):
    """Per-head mean entropy of eager probabilities, by loops: over valid queries ('token') or per example first."""
    b, h, q, _ = probs.shape
    out = torch.zeros(h, dtype=torch.float64)
    for head in range(h):
        per_example, all_terms = [], []
        for i in range(b):
            terms = []
            for j in range(q):
                if not query_mask[i, j]:
                    continue
                p = probs[i, head, j].double()[keys[i, 0, j] if keys.shape[2] > 1 else keys[i, 0, 0]]
                terms.append(-(p[p > 0] * p[p > 0].log()).sum())
            all_terms += terms
            if terms:
                per_example.append(torch.stack(terms).mean())
        out[head] = torch.stack(all_terms).mean() if reduction == "token" else torch.stack(per_example).mean()
    return out


def test_requests_with_different_reductions_and_poolings_share_one_forward():
    """Two entropy reductions and three poolings in one pass: each answer matches its own naive reference."""
    model = tiny_model("gpt2", head="base")
    info = find_layers(model)
    batch = _batch()
    requests = [
        EntropyRequest((0, 2), "token"),
        EntropyRequest((1, 2), "example"),
        PooledRequest((0, 1), "mean"),
        PooledRequest((1,), "first"),
        PooledRequest((0, 1), "last"),  # not block 2: GPT-2's last hidden state has the final layer norm applied
    ]
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    result = run_probe(model, [batch], info.blocks, requests, find_attention_modules(info))
    handle.remove()
    assert len(calls) == 1 and result.forwards == 1
    eager = tiny_model("gpt2", attn="eager", head="base")
    eager.load_state_dict(model.state_dict())
    eager.eval()
    with torch.no_grad():
        out = eager(**batch, output_attentions=True, output_hidden_states=True)
    mask = batch["attention_mask"].bool()
    keys = mask[:, None, None, :] & torch.ones(9, 9, dtype=torch.bool).tril()
    for request in requests[:2]:
        sums = result.answer(request)
        for row, layer in enumerate(request.layers):
            ref = _naive_entropy(out.attentions[layer], keys, mask, request.reduction)
            assert torch.allclose(sums.mean()[row].double(), ref, atol=1e-4), (request, layer)
    assert not torch.allclose(_naive_entropy(out.attentions[2], keys, mask, "token"),
                              _naive_entropy(out.attentions[2], keys, mask, "example"), atol=1e-3)  # fmt: skip
    for request in requests[2:]:
        rows = result.answer(request)[0]
        assert rows.shape == (len(request.layers), 3, 32)
        for row, layer in enumerate(request.layers):
            ref = _naive_pool(out.hidden_states[layer + 1], batch["attention_mask"], request.pooling)
            assert torch.allclose(rows[row], ref, atol=1e-5), request
    with pytest.raises(KeyError, match="not run with"):
        result.answer(PooledRequest((0,), "first"))


def test_requests_validate_their_arguments():
    with pytest.raises(ValueError, match=r"`reduction` to be one of \['token', 'example'\] but got 'max'"):
        EntropyRequest((0,), "max")
    with pytest.raises(ValueError, match=r"`pooling` to be one of"):
        PooledRequest((0,), "max")
    with pytest.raises(ValueError, match=r"`layers` to be a non-empty sequence"):
        PooledRequest(())


class _TorchEncoder(torch.nn.Module):
    """A plain nn.TransformerEncoder: its fast path returns nested tensors in eval mode with padding."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(64, 16)
        layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=True)

    def forward(self, input_ids, attention_mask):
        return self.encoder(self.embed(input_ids), src_key_padding_mask=~attention_mask.bool())


def test_probe_pools_models_whose_fast_path_returns_nested_tensors():
    model = _TorchEncoder()
    batch = _batch()
    request = PooledRequest((0, 1))
    rows = run_probe(model, [batch], model.encoder.layers, [request]).answer(request)[0]
    model.eval()
    with torch.no_grad():
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            h, refs = model.embed(batch["input_ids"]), []
            for layer in model.encoder.layers:
                h = layer(h, src_key_padding_mask=~batch["attention_mask"].bool())
                refs.append(_naive_pool(h, batch["attention_mask"], "mean"))
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    for row, ref in zip(rows, refs):
        assert torch.allclose(row, ref, atol=1e-5)
    assert torch.backends.mha.get_fastpath_enabled()
    nested = torch.nested.nested_tensor([torch.ones(3, 2), torch.ones(1, 2) * 2])
    assert pool_hidden(nested, torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]), "mean").tolist() == [[1, 1], [2, 2]]
