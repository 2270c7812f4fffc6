"""The three monitors end to end with the real Lightning Trainer, real loggers read back from disk."""

import csv
import glob
import math
import warnings

import lightning.pytorch as pl
import pytest
import torch
from conftest import NO_DROPOUT, ClsModule, loader, tiny_model
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor, LayerDiscoveryError
from lightning_inflect.core import session as session_mod


def _all(every=2, **kw):
    return [
        AttentionEntropyMonitor(every_n_steps=every, **kw.get("entropy", {})),
        GradientNormMonitor(every_n_steps=every),
        CKADriftMonitor(every_n_steps=every, pca_components=8),
    ]


def _flat(hist) -> list[float]:
    return [v for row in hist.rows for v in row]


def _events(path) -> EventAccumulator:
    ea = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def test_every_key_reaches_tensorboard_and_csv(trainer_factory, tmp_path):
    cbs = _all(entropy={"per_head": True, "normalized": True, "heatmap_every_n_logs": 2})
    tb, csv_logger = TensorBoardLogger(tmp_path, name="tb"), CSVLogger(tmp_path, name="csv")
    trainer = trainer_factory(cbs, [tb, csv_logger], max_steps=5)
    trainer.fit(ClsModule(tiny_model("bert")), loader(64))

    ea = _events(tb.log_dir)
    tags = set(ea.Tags()["scalars"])
    for metric in ("attn_entropy", "attn_entropy_normalized", "act_grad_norm", "param_grad_norm", "cka_drift"):
        for layer in range(3):
            key = f"inflect/{metric}/layer_{layer:02d}"
            assert key in tags
            assert [e.step for e in ea.Scalars(key)] == [0, 2, 4]
    assert {f"inflect/attn_entropy/layer_01/head_{h:02d}" for h in range(4)} <= tags
    assert [e.step for e in ea.Scalars("inflect/overhead_ms")] == [0, 2, 4]
    assert all(e.value > 0 for e in ea.Scalars("inflect/overhead_ms"))

    # values in range: entropy within [0, log T], normalised within [0, 1], drift 0 at the reference step
    for layer in range(3):
        assert all(0 < e.value <= math.log(12) for e in ea.Scalars(f"inflect/attn_entropy/layer_{layer:02d}"))
        assert all(0 < e.value <= 1 for e in ea.Scalars(f"inflect/attn_entropy_normalized/layer_{layer:02d}"))
        assert ea.Scalars(f"inflect/cka_drift/layer_{layer:02d}")[0].value == pytest.approx(0.0, abs=1e-9)
        assert ea.Scalars(f"inflect/cka_drift/layer_{layer:02d}")[-1].value > 0

    # one chart per metric with one curve per layer: the custom-scalars layout
    layout = layout_pb2.Layout()
    layout.ParseFromString(ea.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert set(charts) == {"attn_entropy", "attn_entropy_normalized", "act_grad_norm", "param_grad_norm",
                           "cka_drift", "overhead_ms"}  # fmt: skip
    import re

    assert [t for t in tags if re.match(charts["attn_entropy"][0], t)] == [
        f"inflect/attn_entropy/layer_{i:02d}" for i in range(3)
    ] or sorted(t for t in tags if re.match(charts["attn_entropy"][0], t)) == [
        f"inflect/attn_entropy/layer_{i:02d}" for i in range(3)
    ]
    # the heatmap image: 3 layers x 8 px rows, one 8 px column per log; written at the 2nd log and at the end
    images = ea.Images("inflect/heatmap/attn_entropy")
    assert [i.step for i in images] == [2, 4]
    assert (images[0].height, images[0].width, images[1].width) == (3 * 8, 2 * 8, 3 * 8)
    assert [i.step for i in ea.Images("inflect/heatmap/cka_drift")] == [4]  # default every 5 logs: only at the end

    # the CSV logger got the same numbers as TensorBoard and as the callback's history
    with open(glob.glob(f"{csv_logger.log_dir}/metrics.csv")[0]) as fh:
        rows = list(csv.DictReader(fh))
    got = [float(r["inflect/cka_drift/layer_02"]) for r in rows if r.get("inflect/cka_drift/layer_02")]
    assert got == pytest.approx([e.value for e in ea.Scalars("inflect/cka_drift/layer_02")], rel=1e-6)
    assert got == pytest.approx([v[2] for v in cbs[2].history["cka_drift"].rows], rel=1e-6)

    # every logged scalar is in trainer.callback_metrics with its latest value, as `self.log` leaves one there:
    # a 0-dim float32 CPU tensor, equal to the history's last row and to the last value the loggers got
    metrics = trainer.callback_metrics
    last_csv = {k: float(v) for r in rows for k, v in r.items() if v not in ("", None)}
    inflect = {k for k in metrics if k.startswith("inflect/")}
    assert inflect == {k for k in tags if k.startswith("inflect/")}  # no key more, no key less than TensorBoard
    for mon in cbs:
        for metric, hist in mon.history.items():
            for layer, value in zip(hist.blocks, hist.rows[-1]):
                key = f"inflect/{metric}/layer_{layer:02d}"
                got = metrics[key]
                assert got.dtype == torch.float32 and got.device.type == "cpu" and got.dim() == 0, key
                assert got.item() == pytest.approx(value, rel=1e-6), key
                assert got.item() == pytest.approx(ea.Scalars(key)[-1].value, rel=1e-6), key
                assert got.item() == pytest.approx(last_csv[key], rel=1e-6), key
    head = "inflect/attn_entropy/layer_01/head_03"
    assert metrics[head].item() == pytest.approx(ea.Scalars(head)[-1].value, rel=1e-6)
    overhead = ea.Scalars("inflect/overhead_ms")[-1].value
    assert metrics["inflect/overhead_ms"].item() == pytest.approx(overhead, rel=1e-6) and overhead > 0
    assert "train_loss" in metrics  # Lightning's own `self.log` values are kept beside ours


class ForwardCounter(Callback):
    """Counts the HF model's forwards in train mode and in eval mode (the probe)."""

    def __init__(self):
        self.train_forwards = 0
        self.eval_forwards = 0

    def setup(self, trainer, pl_module, stage):
        def pre_hook(mod, args, kwargs):
            if mod.training:
                self.train_forwards += 1
            else:
                self.eval_forwards += 1

        pl_module.model.register_forward_pre_hook(pre_hook, with_kwargs=True)


@pytest.mark.parametrize(("accumulate", "every"), [(1, 1), (2, 2), (3, 1)])
def test_one_shared_probe_forward_per_logging_step(trainer_factory, accumulate, every):
    counter = ForwardCounter()
    cbs = [
        AttentionEntropyMonitor(every_n_steps=every),
        CKADriftMonitor(every_n_steps=every),
        AttentionEntropyMonitor(every_n_steps=every, layers=[0], log_key_prefix="other"),
    ]
    max_steps = 4
    trainer = trainer_factory([counter, *cbs], max_steps=max_steps, accumulate_grad_batches=accumulate)
    trainer.fit(ClsModule(tiny_model("bert")), loader(8 * max_steps * accumulate))
    logging_steps = [s for s in range(max_steps) if s % every == 0]
    assert counter.train_forwards == max_steps * accumulate
    assert counter.eval_forwards == len(logging_steps)
    for cb in cbs:
        key = next(iter(cb.history))
        assert cb.history[key].steps == logging_steps


def test_activation_gradients_are_per_optimizer_step_under_accumulation(trainer_factory):
    """Batch 8 in one step and batch 4 x 2 accumulated give the same gradient of the same mean loss."""
    results = []
    for batch_size, accumulate in ((8, 1), (4, 2)):
        mon = GradientNormMonitor(every_n_steps=2)
        trainer = trainer_factory([mon], max_steps=3, accumulate_grad_batches=accumulate)
        trainer.fit(ClsModule(tiny_model("bert", **NO_DROPOUT)), loader(48, batch_size=batch_size))
        results.append(mon.history)
    a, b = results
    assert a["act_grad_norm"].steps == b["act_grad_norm"].steps == [0, 2]
    assert _flat(a["param_grad_norm"]) == pytest.approx(_flat(b["param_grad_norm"]), rel=1e-4)
    # activation norms are per example, and the per-example gradient of the mean loss is the same in both runs
    assert _flat(a["act_grad_norm"]) == pytest.approx(_flat(b["act_grad_norm"]), rel=1e-4)


class NaiveGradReference(Callback):
    """Per-block gradient norms computed the obvious way, after the monitor, on the same step."""

    def __init__(self):
        self.values = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        blocks = pl_module.model.bert.encoder.layer
        self.values[trainer.global_step] = [
            torch.cat([p.grad.flatten() for p in b.parameters() if p.grad is not None]).norm().item() for b in blocks
        ]


def test_parameter_gradient_norms_match_naive_reference(trainer_factory):
    mon, ref = GradientNormMonitor(every_n_steps=1, norms=["parameter"]), NaiveGradReference()
    trainer = trainer_factory([mon, ref], max_steps=3)
    trainer.fit(ClsModule(tiny_model("bert")), loader(32))
    for step, values in zip(mon.history["param_grad_norm"].steps, mon.history["param_grad_norm"].rows):
        assert values == pytest.approx(ref.values[step], rel=1e-5)
    assert "act_grad_norm" not in mon.history


def test_monitors_do_not_change_training(trainer_factory):
    """Same seed with and without monitors at every step (dropout on): bit-identical weights after training."""
    states = []
    for callbacks in ([], _all(every=1)):
        pl.seed_everything(7)
        module = ClsModule(tiny_model("gpt2"))
        trainer = trainer_factory(callbacks, max_steps=4, accumulate_grad_batches=2)
        trainer.fit(module, loader(64))
        states.append({k: v.clone() for k, v in module.state_dict().items()})
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def _no_hooks_left(module: torch.nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def test_hooks_and_patches_removed_when_training_step_raises(trainer_factory):
    module = ClsModule(tiny_model("bert"), fail_at=2)
    cbs = _all(every=1)
    trainer = trainer_factory(cbs, max_steps=5)
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(module, loader(64))
    assert _no_hooks_left(module)
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa and "eager" not in AttentionInterface._global_mapping
    assert trainer not in session_mod._SESSIONS
    assert all(cb._session is None for cb in cbs)
    assert cbs[1]._capture is not None and not cbs[1]._capture.armed


class AssertTrainingForwardUntouched(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = tiny_model("bert")
        self.sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def training_step(self, batch, batch_idx):
        assert self.model.config._attn_implementation == "sdpa"
        assert ALL_ATTENTION_FUNCTIONS["sdpa"] is self.sdpa  # no entropy wrapper on the training forward
        out = self.model(**batch)
        assert out.attentions is None
        return out.loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_training_forward_keeps_sdpa_without_attentions(trainer_factory):
    module = AssertTrainingForwardUntouched()
    trainer = trainer_factory(_all(every=1), max_steps=3)
    trainer.fit(module, loader(32))
    assert _no_hooks_left(module)


def test_state_survives_checkpoint_and_resume(trainer_factory, tmp_path):
    """Resume at step 4: same probe, same CKA reference, the values of the uninterrupted run.

    Every batch holds the same examples, so the comparison does not depend on how Lightning replays a plain
    DataLoader after a resume (which is Lightning's business, not ours)."""
    same = torch.utils.data.Subset(loader(8).dataset, range(8))
    data = torch.utils.data.DataLoader(torch.utils.data.ConcatDataset([same] * 4), batch_size=8)
    ckpt_dir = tmp_path / "ckpt"

    def run(max_steps, ckpt_path=None, save=False):
        pl.seed_everything(3)
        cbs = _all(every=1)
        extra = [ModelCheckpoint(dirpath=ckpt_dir, save_top_k=-1, save_on_train_epoch_end=True)] if save else []
        trainer = trainer_factory(cbs + extra, max_steps=max_steps, enable_checkpointing=save)
        trainer.fit(ClsModule(tiny_model("bert", **NO_DROPOUT)), data, ckpt_path=ckpt_path)
        return cbs

    full = run(7)
    run(4, save=True)
    ckpt = glob.glob(str(ckpt_dir / "*step=4.ckpt"))[0]
    state = torch.load(ckpt, weights_only=False)["callbacks"]
    assert {k.split("{")[0] for k in state} >= {"AttentionEntropyMonitor", "GradientNormMonitor", "CKADriftMonitor"}
    resumed = run(7, ckpt_path=ckpt)
    for a, b in zip(full, resumed):
        for metric, hist in a.history.items():
            assert b.history[metric].steps == hist.steps == list(range(7))
            assert _flat(b.history[metric]) == pytest.approx(_flat(hist), rel=1e-5, abs=1e-7), metric
    assert resumed[2].reference_step == 0
    assert len(full[2].reference) == len(resumed[2].reference) == 1  # one probe batch: (blocks, examples, hidden)
    assert all(torch.equal(x, y) for x, y in zip(full[2].reference, resumed[2].reference))


def test_early_stopping_on_a_drift_key_stops_when_the_drift_plateaus(trainer_factory):
    # lr=0: the weights never move, the drift stays 0; it must grow by min_delta within `patience` epochs or stop
    early = EarlyStopping(
        monitor="inflect/cka_drift/layer_01", mode="max", min_delta=1e-3, patience=2, check_on_train_epoch_end=True
    )
    drift = CKADriftMonitor(every_n_steps=1, pca_components=4)
    trainer = trainer_factory([drift, early], max_steps=-1, max_epochs=20)
    trainer.fit(ClsModule(tiny_model("bert", **NO_DROPOUT), lr=0.0), loader(16))  # 2 steps per epoch

    assert trainer.should_stop and early.stopped_epoch == 2 and trainer.current_epoch == 3 < 20
    assert trainer.global_step == 6 and drift.history["cka_drift"].steps == list(range(6))
    assert early.best_score.item() == pytest.approx(drift.history["cka_drift"].rows[0][1], abs=1e-9)
    assert all(abs(row[1]) < 1e-3 for row in drift.history["cka_drift"].rows)  # it did plateau


def test_model_checkpoint_keeps_the_step_with_the_highest_entropy_of_a_layer(trainer_factory, tmp_path):
    entropy = AttentionEntropyMonitor(every_n_steps=1)
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / "best", monitor="inflect/attn_entropy/layer_00", mode="max", save_top_k=1,
        every_n_train_steps=1,
    )  # fmt: skip
    trainer = trainer_factory([entropy, ckpt], max_steps=6, enable_checkpointing=True)
    trainer.fit(ClsModule(tiny_model("bert", **NO_DROPOUT), lr=2.0), loader(48))

    hist = entropy.history["attn_entropy"]
    values = [row[0] for row in hist.rows]
    assert hist.steps == list(range(6)) and len(set(values)) == 6  # the entropy moved: there is something to rank
    best = max(range(6), key=values.__getitem__)
    assert best != 5  # not the last checkpoint: ModelCheckpoint ranked them and kept an earlier one
    assert ckpt.best_model_score is not None
    assert ckpt.best_model_score.item() == pytest.approx(values[best], rel=1e-6)
    # step s's value is known once its optimizer step is done: the checkpoint saved then has global step s + 1
    assert ckpt.best_model_path.endswith(f"step={best + 1}.ckpt")
    assert [p.name for p in (tmp_path / "best").iterdir()] == [f"epoch=0-step={best + 1}.ckpt"]


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: AttentionEntropyMonitor(every_n_steps=0), r"`every_n_steps` to be a positive int but got 0"),
        (lambda: GradientNormMonitor(every_n_steps=2.5), r"`every_n_steps` to be a positive int but got 2.5"),
        (lambda: CKADriftMonitor(every_n_steps=True), r"`every_n_steps` to be a positive int but got True"),
        (lambda: AttentionEntropyMonitor(reduction="max"), r"`reduction` to be one of \['token', 'example'\]"),
        (lambda: GradientNormMonitor(norms=["hessian"]), r"`norms` to be a non-empty list of"),
        (lambda: GradientNormMonitor(norms="activation"), r"`norms` to be a non-empty list of"),
        (lambda: CKADriftMonitor(basis="pooled"), r"`basis` to be one of \['reference', 'joint'\]"),
        (lambda: CKADriftMonitor(pooling="max"), r"`pooling` to be one of"),
        (lambda: CKADriftMonitor(pca_components=0), r"`pca_components` to be a positive int"),
        (lambda: AttentionEntropyMonitor(layers=[]), r"`layers` to be None"),
        (lambda: AttentionEntropyMonitor(probe=[1, 2]), r"`probe` to be a dict"),
        (lambda: AttentionEntropyMonitor(log_key_prefix="x/"), r"`log_key_prefix`"),
        (lambda: AttentionEntropyMonitor(heatmap_every_n_logs=-1), r"`heatmap_every_n_logs`"),
    ],
)
def test_bad_arguments_fail_at_construction(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_layer_out_of_range_fails_at_setup(trainer_factory):
    trainer = trainer_factory([GradientNormMonitor(layers=[0, 7])])
    with pytest.raises(ValueError, match=r"`layers` to hold block indices in \[0, 2\].*got 7"):
        trainer.fit(ClsModule(tiny_model("bert")), loader(16))


class TwoModels(ClsModule):
    def __init__(self):
        super().__init__(tiny_model("bert"))
        self.teacher = tiny_model("gpt2")


class NoHF(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        return self.net(batch["input_ids"].float()[:, :4]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_ambiguous_or_missing_models_fail_at_setup(trainer_factory):
    with pytest.raises(LayerDiscoveryError, match=r"Found 2 Hugging Face models.*model_attr="):
        trainer_factory([CKADriftMonitor()]).fit(TwoModels(), loader(16))
    with pytest.raises(LayerDiscoveryError, match="No Hugging Face PreTrainedModel"):
        trainer_factory([CKADriftMonitor()]).fit(NoHF(), loader(16))
    # the explicit choice works
    mon = AttentionEntropyMonitor(every_n_steps=1, model_attr="teacher")
    trainer_factory([mon], max_steps=1).fit(TwoModels(), loader(16))
    assert mon.history["attn_entropy"].steps == [0]


def test_undiscoverable_blocks_fail_at_setup(trainer_factory):
    with pytest.raises(LayerDiscoveryError, match=r"`layers_path='bert.pooler'` points to a BertPooler"):
        trainer_factory([GradientNormMonitor(layers_path="bert.pooler")]).fit(ClsModule(tiny_model("bert")), loader(16))


def test_probe_the_model_cannot_take(trainer_factory):
    bad = AttentionEntropyMonitor(probe={"attention_mask": torch.ones(2, 4, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"probe batch could not be run through BertForSequenceClassification"):
        trainer_factory([bad]).fit(ClsModule(tiny_model("bert")), loader(16))


class TupleBatches(ClsModule):
    def training_step(self, batch, batch_idx):
        ids, mask, labels = batch
        return self.model(input_ids=ids, attention_mask=mask, labels=labels).loss


def _tuple_loader():
    ds = loader(16).dataset
    return torch.utils.data.DataLoader(
        [(ds[i]["input_ids"], ds[i]["attention_mask"], ds[i]["labels"]) for i in range(16)], batch_size=8
    )


def test_tuple_batches_need_probe_inputs(trainer_factory):
    with pytest.raises(TypeError, match="Pass `probe_inputs=`"):
        trainer_factory([CKADriftMonitor()]).fit(TupleBatches(tiny_model("bert")), _tuple_loader())
    mon = CKADriftMonitor(every_n_steps=1, probe_inputs=lambda b: {"input_ids": b[0], "attention_mask": b[1]})
    trainer_factory([mon], max_steps=2).fit(TupleBatches(tiny_model("bert")), _tuple_loader())
    assert mon.history["cka_drift"].steps == [0, 1]


def test_monitors_must_agree_on_the_probe(trainer_factory):
    cbs = [AttentionEntropyMonitor(probe_batches=2), CKADriftMonitor(probe_batches=1)]
    with pytest.raises(ValueError, match=r"share one probe forward.*probe_batches=1 vs 2"):
        trainer_factory(cbs).fit(ClsModule(tiny_model("bert")), loader(16))


def test_no_logger_warns_and_keeps_history(trainer_factory):
    mon = GradientNormMonitor(every_n_steps=1)
    with pytest.warns(UserWarning, match="has no logger"):
        trainer_factory([mon], max_steps=2).fit(ClsModule(tiny_model("bert")), loader(16))
    assert mon.history["param_grad_norm"].steps == [0, 1]


class NanLoss(ClsModule):
    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        return loss * float("nan") if batch_idx >= 1 else loss


def test_nan_gradients_are_logged_with_one_warning(trainer_factory, tmp_path):
    mon = GradientNormMonitor(every_n_steps=1)
    tb = TensorBoardLogger(tmp_path, name="tb")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer_factory([mon], [tb], max_steps=4).fit(NanLoss(tiny_model("bert")), loader(64))
    nonfinite = [w for w in caught if "non-finite `param_grad_norm`" in str(w.message)]
    assert len(nonfinite) == 1
    values = mon.history["param_grad_norm"].rows
    assert all(math.isfinite(v) for v in values[0]) and all(math.isnan(v) for v in values[2])
    assert math.isnan(_events(tb.log_dir).Scalars("inflect/param_grad_norm/layer_00")[2].value)


def test_given_probe_and_selected_layers(trainer_factory):
    ds = loader(16).dataset
    probe = {"input_ids": ds.ids[:6], "attention_mask": ds.mask[:6]}
    mon = AttentionEntropyMonitor(every_n_steps=1, layers=[-1], probe=probe)
    cka = CKADriftMonitor(every_n_steps=1, layers=[0, 2], probe=probe, basis="joint", unbiased=False)
    trainer_factory([mon, cka], max_steps=2).fit(ClsModule(tiny_model("llama")), loader(16))
    assert mon.layers == [2] and len(mon.history["attn_entropy"].rows[0]) == 1
    assert cka.layers == [0, 2] and len(cka.history["cka_drift"].rows[1]) == 2
