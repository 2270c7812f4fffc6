"""Shared fixtures: tiny Hugging Face models built from configs, a LightningModule, token batches with padding."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VOCAB = 64

TINY = {
    "bert": dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, vocab_size=VOCAB),
    "roberta": dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, vocab_size=VOCAB,
        pad_token_id=1, max_position_embeddings=40,
    ),
    "distilbert": dict(dim=32, n_layers=3, n_heads=4, hidden_dim=64, vocab_size=VOCAB),
    "gpt2": dict(n_embd=32, n_layer=3, n_head=4, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=0),
    "llama": dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        vocab_size=VOCAB, pad_token_id=0,
    ),
    # logit soft-capping and a sliding window, both eager-only paths the entropy must follow
    "gemma2": dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        intermediate_size=64, vocab_size=VOCAB, pad_token_id=0, attn_logit_softcapping=2.0, sliding_window=4,
    ),
}  # fmt: skip


def tiny_model(model_type: str = "bert", attn: str = "sdpa", head: str = "seq_cls", seed: int = 0, **overrides):
    """A tiny randomly initialised model of `model_type` (offline, from a config)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(model_type, **{**TINY[model_type], **overrides}, num_labels=2)
    cls = AutoModelForSequenceClassification if head == "seq_cls" else AutoModel
    return cls.from_config(cfg, attn_implementation=attn)


NO_INTERFACE = {
    # DeBERTa-v3 style: relative attention with both position terms, log buckets, shared keys, normalised embeddings
    "deberta-v2": dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, vocab_size=VOCAB,
        max_position_embeddings=32, relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=4,
        max_relative_positions=8, share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pooler_dropout=0.0,
    ),
    "deberta": dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, vocab_size=VOCAB,
        max_position_embeddings=32, relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=8,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pooler_dropout=0.0,
    ),
    "mpnet": dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, vocab_size=VOCAB,
        max_position_embeddings=40, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    ),
    # global, local (sliding window of 3), global
    "gpt_neo": dict(
        hidden_size=32, num_layers=3, num_heads=4, intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=32,
        attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=3, embed_dropout=0.0,
        attention_dropout=0.0, resid_dropout=0.0, classifier_dropout=0.0, bos_token_id=0, eos_token_id=0,
        pad_token_id=0,
    ),
    "bloom": dict(hidden_size=32, n_layer=3, n_head=4, vocab_size=VOCAB, hidden_dropout=0.0, attention_dropout=0.0,
                  bos_token_id=0, eos_token_id=0, pad_token_id=0),
    # rotary and multi-query by default; `alibi=True` and `new_decoder_architecture=True` as overrides
    "falcon": dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, vocab_size=VOCAB, max_position_embeddings=32,
        new_decoder_architecture=False, hidden_dropout=0.0, attention_dropout=0.0, bos_token_id=0, eos_token_id=0,
        pad_token_id=0,
    ),
}  # fmt: skip


def tiny_no_interface(model_type: str, attn: str | None = None, head: str = "seq_cls", seed: int = 0, **overrides):
    """Like conftest's ``tiny_model``, for :data:`NO_INTERFACE`; ``attn=None`` keeps the model's default."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(model_type, **{**NO_INTERFACE[model_type], **overrides}, num_labels=2)
    cls = AutoModelForSequenceClassification if head == "seq_cls" else AutoModel
    return cls.from_config(cfg) if attn is None else cls.from_config(cfg, attn_implementation=attn)


NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0}


class TokenData(Dataset):
    """Random token sequences with right padding of varied length and a label tied to the first token."""

    def __init__(self, n: int = 32, seq: int = 12, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, VOCAB, (n, seq), generator=g)
        lengths = torch.randint(seq // 2, seq + 1, (n,), generator=g)
        self.mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
        self.ids = self.ids * self.mask  # pad id 0
        self.labels = (self.ids[:, 0] % 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


class ClsModule(pl.LightningModule):
    """What a user writes: a LightningModule holding a HF model, returning its loss."""

    def __init__(self, model: torch.nn.Module, lr: float = 1e-3, fail_at: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.fail_at = fail_at

    def training_step(self, batch, batch_idx):
        if self.fail_at is not None and batch_idx == self.fail_at:
            raise RuntimeError("boom")
        out = self.model(**batch)
        self.log("train_loss", out.loss)
        return out.loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loader(n: int = 32, batch_size: int = 8, seq: int = 12, seed: int = 0) -> DataLoader:
    return DataLoader(TokenData(n, seq, seed), batch_size=batch_size, shuffle=False)


def make_trainer(tmp_path, callbacks, loggers=None, **kw) -> pl.Trainer:
    defaults = dict(
        max_steps=4, accelerator="cpu", devices=1, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1, default_root_dir=str(tmp_path),
    )  # fmt: skip
    defaults.update(kw)
    return pl.Trainer(callbacks=callbacks, logger=loggers if loggers is not None else False, **defaults)


@pytest.fixture
def trainer_factory(tmp_path) -> Callable[..., pl.Trainer]:
    return lambda callbacks, loggers=None, **kw: make_trainer(tmp_path, callbacks, loggers, **kw)


# Calls that make the host wait for the device (or copy to the host) on a GPU; a TorchFunctionMode sees them on CPU too.
SYNC_FORCING = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.cpu,
    torch.Tensor.numpy,
    torch.Tensor.__float__,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
}
PACKAGE_DIR = str(Path(__file__).resolve().parents[1] / "lightning_inflect")


def _to_cpu(args, kwargs) -> bool:
    targets = [*args[1:], kwargs.get("device")]
    return any(
        (isinstance(t, torch.device) and t.type == "cpu") or (isinstance(t, str) and t.startswith("cpu"))
        for t in targets
    )


class SyncCounter(torch.overrides.TorchFunctionMode):
    """Records the name of every sync-forcing call (``.to("cpu")`` included) while active.

    With ``package_only=True`` only calls made directly by ``lightning_inflect`` code count (the calling frame is in
    the package), and ``where``/``steps`` record ``file:line`` and the value of ``self.step`` at the call.
    """

    def __init__(self, package_only: bool = False) -> None:
        super().__init__()
        self.package_only = package_only
        self.step = -1
        self.calls: list[str] = []
        self.where: list[str] = []
        self.steps: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_FORCING or (func is torch.Tensor.to and _to_cpu(args, kwargs)):
            frame = sys._getframe(1)
            if not self.package_only or frame.f_code.co_filename.startswith(PACKAGE_DIR):
                self.calls.append(func.__name__)
                self.where.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
                self.steps.append(self.step)
        return func(*args, **kwargs)
