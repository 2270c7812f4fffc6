"""The Hugging Face Trainer front end: the real ``transformers.Trainer`` against the real Lightning ``Trainer``.

The same model (a real transformers BERT, random init, no dropout), data order, seed, optimizer (AdamW), linear
schedule and clipping in both loops; the HF run must log the same keys at the same optimizer steps with the same
values (rel 1e-5), with and without gradient accumulation, in ``state.log_history`` and TensorBoard (read back).
"""

from __future__ import annotations

import copy
import math

import lightning.pytorch as pl
import pytest
import torch
from conftest import NO_DROPOUT, SyncCounter, TokenData, tiny_model
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments

import lightning_inflect as li
from lightning_inflect.integrations import transformers as hf
from lightning_inflect.names import layer_key

LR, STEPS, BATCH = 1e-3, 6, 4


def _args(tmp_path, accumulate: int = 1, **kw) -> TrainingArguments:
    base = dict(
        output_dir=str(tmp_path / "hf"), per_device_train_batch_size=BATCH, gradient_accumulation_steps=accumulate,
        max_steps=STEPS, learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, train_sampling_strategy="sequential", report_to=[], logging_steps=1000,
        save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    base.update(kw)
    return TrainingArguments(**base)


def _monitors(module, every: int = 2) -> list:
    return [
        module.AttentionEntropyMonitor(every_n_steps=every, normalized=True),
        module.GradientNormMonitor(every_n_steps=every),
        module.CKADriftMonitor(every_n_steps=every, pca_components=4),
    ]


class _Lightning(pl.LightningModule):
    """The HF Trainer's training step, written as a LightningModule: AdamW and the linear schedule per step."""

    def __init__(self, model, loss_scale: float) -> None:
        super().__init__()
        self.model, self.loss_scale = model, loss_scale

    def training_step(self, batch, batch_idx):
        return self.model(**batch).loss * self.loss_scale

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=LR, weight_decay=0.0, eps=1e-8)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (STEPS - s) / STEPS))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _hf_run(tmp_path, model, accumulate, callbacks, **kw):
    data = TokenData(BATCH * STEPS * accumulate, seed=1)
    trainer = Trainer(model=model, args=_args(tmp_path, accumulate, **kw), train_dataset=data, callbacks=callbacks)
    hf.watch(trainer)
    trainer.train()
    return trainer


@pytest.mark.parametrize("accumulate", [1, 2])
def test_hf_trainer_logs_the_lightning_values_at_the_same_steps(tmp_path, accumulate):
    torch.manual_seed(0)
    model = tiny_model("bert", **NO_DROPOUT)
    lit_model = copy.deepcopy(model)
    hf_monitors = _monitors(hf)
    trainer = _hf_run(tmp_path, model, accumulate, hf_monitors)
    # HF does not divide the loss by the accumulation steps when the model takes `num_items_in_batch` (its own
    # loss-normalisation path); Lightning always divides: the LightningModule undoes it so that the gradients match.
    scale = accumulate if trainer.model_accepts_loss_kwargs else 1
    lit_monitors = _monitors(li)
    pl.Trainer(
        callbacks=lit_monitors,
        logger=False,
        max_steps=STEPS,
        accumulate_grad_batches=accumulate,
        gradient_clip_val=1.0,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(_Lightning(lit_model, scale), DataLoader(TokenData(BATCH * STEPS * accumulate, seed=1), batch_size=BATCH))
    logged = {}  # step -> every inflect key logged at it
    for row in trainer.state.log_history:
        logged.setdefault(row["step"], {}).update({k: v for k, v in row.items() if k.startswith("inflect/")})
    for ours, theirs in zip(hf_monitors, lit_monitors):
        assert set(ours.history) == set(theirs.history)
        for metric, hist in ours.history.items():
            ref = theirs.history[metric]
            assert hist.steps == ref.steps == [0, 2, 4], metric
            got, want = torch.tensor(hist.rows, dtype=torch.float64), torch.tensor(ref.rows, dtype=torch.float64)
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-7), (metric, got, want)
            for step, row in zip(hist.steps, hist.rows):  # state.log_history holds the same keys and values
                assert {i: logged[step][layer_key("inflect", metric, i)] for i in ours.layers} == dict(
                    zip(ours.layers, row)
                )
    assert all(k in logged[s] for s in (0, 2, 4) for k in ("inflect/overhead_ms",))


class _StepTracker(TrainerCallback):
    def __init__(self, counter: SyncCounter) -> None:
        self.counter = counter

    def on_step_begin(self, args, state, control, **kwargs):
        self.counter.step = state.global_step


def test_one_host_transfer_per_logging_step_and_tensorboard_reads_back(tmp_path):
    counter = SyncCounter(package_only=True)
    monitors = _monitors(hf)
    model = tiny_model("bert", **NO_DROPOUT)
    with counter:
        trainer = _hf_run(tmp_path, model, 2, [_StepTracker(counter), *monitors], report_to=["tensorboard"])
    per_step = {s: [c for c, at in zip(counter.calls, counter.steps) if at == s] for s in range(STEPS)}
    assert [len(per_step[s]) for s in range(STEPS)] == [1, 0, 1, 0, 1, 0], per_step  # one tolist per logging step
    assert set(counter.calls) == {"tolist"}
    tb = next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "TensorBoardCallback")
    events = EventAccumulator(tb.logging_dir, size_guidance={"scalars": 0, "images": 0}).Reload()
    for m in monitors:
        for metric, hist in m.history.items():
            for i, layer in enumerate(m.layers):
                got = [(e.step, e.value) for e in events.Scalars(f"train/{layer_key('inflect', metric, layer)}")]
                assert [s for s, _ in got] == hist.steps
                assert [v for _, v in got] == pytest.approx([r[i] for r in hist.rows], rel=1e-6)
    assert any(tag.startswith("inflect/heatmap/") for tag in events.Tags()["images"])  # the run's heatmaps


class _Watch(TrainerCallback):
    """Records logits of a fixed batch at the start of each step and right before its optimizer step, and the
    optimizer's groups."""

    def __init__(self, trainer_box: list, batch: dict) -> None:
        self.box, self.batch, self.logits, self.groups, self.lrs = trainer_box, batch, {}, {}, {}

    def _logits(self):
        model = self.box[0].model
        was = model.training
        model.eval()
        with torch.no_grad():
            out = model(**self.batch).logits
        model.train(was)
        return out

    def on_step_begin(self, args, state, control, **kwargs):
        self.logits[(state.global_step, "begin")] = self._logits()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.logits[(state.global_step, "pre")] = self._logits()
        opt = self.box[0].optimizer
        self.groups[state.global_step] = [list(g["params"]) for g in opt.param_groups]
        self.lrs[state.global_step] = [g["lr"] for g in opt.param_groups]
        if state.global_step == 3:  # right after the injection: what is frozen now must not move any more
            model = self.box[0].model
            self.frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("optim", ["adamw_torch", "adamw_torch_fused"])
def test_injection_inside_train_keeps_logits_and_trains_exactly_the_new_set(tmp_path, optim):
    model = tiny_model("bert", **NO_DROPOUT)
    data = TokenData(BATCH * STEPS, seed=1)
    batch = {k: v[:4] for k, v in vars(data).items() if k in ("ids", "mask")}
    batch = {"input_ids": batch["ids"], "attention_mask": batch["mask"]}
    box: list = []
    inject = hf.InjectionCallback(layers=[0, 2], at_step=3, export_dir=str(tmp_path / "export"))
    watcher = _Watch(box, batch)
    trainer = Trainer(model=model, args=_args(tmp_path, optim=optim), train_dataset=data, callbacks=[inject, watcher])
    box.append(trainer)
    hf.watch(trainer)
    trainer.train()
    assert inject.injected and inject.record.step == 3 and inject.record.layers == [0, 2]
    # logits unchanged by the injection itself (before step 3's update): B starts at zero
    torch.testing.assert_close(watcher.logits[(3, "begin")], watcher.logits[(3, "pre")], rtol=0, atol=1e-6)
    trainable = {id(p) for p in trainer.model.parameters() if p.requires_grad}
    lora = {id(p) for n, p in trainer.model.named_parameters() if ".lora_" in n}
    for step in (3, 4, 5):  # the optimizer trains exactly the new trainable set, the adapters in one new group
        groups = watcher.groups[step]
        assert {id(p) for g in groups for p in g} == trainable
        assert {id(p) for p in groups[-1]} == lora and len(groups) == len(watcher.groups[2]) + 1
        assert watcher.lrs[step][-1] == watcher.lrs[step][0] == pytest.approx(LR * (STEPS - step) / STEPS)
    now = dict(trainer.model.named_parameters())
    assert watcher.frozen and all(torch.equal(now[n], v) for n, v in watcher.frozen.items())  # the backbone stays
    assert not any(".lora_" in n for n in watcher.frozen) and any("encoder" in n for n in watcher.frozen)
    assert (tmp_path / "export" / "inflect_adapters" / "adapter_config.json").is_file()
    assert math.isfinite(trainer.state.log_history[-1].get("train_loss", 0.0))


def _resume_run(tmp_path, resume: bool, out: str, use_watch: bool = True):
    torch.manual_seed(0)
    model = tiny_model("bert", **NO_DROPOUT)
    monitors = _monitors(hf)
    inject = hf.InjectionCallback(layers=[1], at_step=2, export=False)
    args = _args(tmp_path, 2, output_dir=str(tmp_path / out), save_strategy="steps", save_steps=4, max_steps=8)
    trainer = Trainer(
        model=model, args=args, train_dataset=TokenData(BATCH * 16, seed=1), callbacks=[*monitors, inject]
    )
    if use_watch:
        hf.watch(trainer)
    trainer.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-4") if resume else None)
    return trainer, monitors, inject


def test_resume_after_the_injection_continues_bit_exact(tmp_path):
    full, full_monitors, full_inject = _resume_run(tmp_path, resume=False, out="full")
    assert (tmp_path / "full" / "checkpoint-4" / hf.STATE_FILE).is_file()
    resumed, monitors, inject = _resume_run(tmp_path, resume=True, out="resumed")
    assert inject.injected and inject.record.to_dict() == full_inject.record.to_dict()
    want = dict(full.model.named_parameters())
    got = dict(resumed.model.named_parameters())
    assert set(got) == set(want) and any(".lora_" in n for n in got)
    assert all(torch.equal(got[n], want[n]) for n in want)  # bit-exact weights after 8 steps
    assert {id(p) for p in resumed.optimizer.param_groups[-1]["params"]} == {
        id(p) for n, p in resumed.model.named_parameters() if ".lora_" in n
    }
    for ours, theirs in zip(monitors, full_monitors):  # histories: the checkpoint's, then the same new rows
        for metric, hist in ours.history.items():
            assert hist.steps == theirs.history[metric].steps == [0, 2, 4, 6]
            got, want = torch.tensor(hist.rows), torch.tensor(theirs.history[metric].rows)
            torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)  # NaN: blocks under no gradient


def test_a_damaged_state_is_refused_before_the_weights_load(tmp_path):
    _resume_run(tmp_path, resume=False, out="full")
    file = tmp_path / "full" / "checkpoint-4" / hf.STATE_FILE
    states = torch.load(file, weights_only=True)
    key = next(k for k in states if k.startswith("InjectionCallback"))
    states[key] = {**states[key], "phase": "sideways"}
    torch.save(states, file)
    torch.manual_seed(0)
    model = tiny_model("bert", **NO_DROPOUT)
    fresh = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(model=model, args=_args(tmp_path, output_dir=str(tmp_path / "r")),
                      train_dataset=TokenData(32), callbacks=[hf.InjectionCallback(layers=[1], at_step=2)])  # fmt: skip
    hf.watch(trainer)
    with pytest.raises(li.CheckpointStateError, match="phase") as err:
        trainer.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-4"))
    assert "checkpoint-4" in str(err.value)
    assert all(torch.equal(p, fresh[n]) for n, p in model.named_parameters())  # nothing loaded, nothing trained


def test_callbacks_given_to_the_trainer_bind_themselves_and_resume_without_watch(tmp_path):
    # Trainer(callbacks=[...]) is all a user writes: the callbacks bind in on_init_end, resume included
    full, full_monitors, _ = _resume_run(tmp_path, resume=False, out="full")
    resumed, monitors, inject = _resume_run(tmp_path, resume=True, out="resumed", use_watch=False)
    assert inject.injected
    want = dict(full.model.named_parameters())
    assert all(torch.equal(p, want[n]) for n, p in resumed.model.named_parameters())
    for ours, theirs in zip(monitors, full_monitors):
        for metric, hist in ours.history.items():
            assert hist.steps == theirs.history[metric].steps == [0, 2, 4, 6]
            torch.testing.assert_close(hist.full(), theirs.history[metric].full(), rtol=0, atol=0, equal_nan=True)


def test_a_callback_added_later_binds_at_train_begin_but_a_resume_needs_watch(tmp_path):
    monitor = hf.GradientNormMonitor(every_n_steps=2)
    args = _args(tmp_path, output_dir=str(tmp_path / "first"), save_strategy="steps", save_steps=4)
    trainer = Trainer(model=tiny_model("bert", **NO_DROPOUT), args=args, train_dataset=TokenData(32))
    trainer.add_callback(monitor)  # after __init__: no on_init_end for it
    trainer.train()
    assert monitor.history["param_grad_norm"].steps == [0, 2, 4]
    assert any("inflect/param_grad_norm/layer_00" in row for row in trainer.state.log_history)
    assert (tmp_path / "first" / "checkpoint-4" / hf.STATE_FILE).is_file()
    args = _args(tmp_path, output_dir=str(tmp_path / "second"), save_strategy="steps", save_steps=4)
    late = Trainer(model=tiny_model("bert", **NO_DROPOUT), args=args, train_dataset=TokenData(32))
    late.add_callback(hf.GradientNormMonitor(every_n_steps=2))  # its history would restart silently: refused
    with pytest.raises(RuntimeError, match=r"watch\(trainer\)"):
        late.train(resume_from_checkpoint=str(tmp_path / "first" / "checkpoint-4"))
    assert late.state.global_step == 4 and not list((tmp_path / "second").iterdir())  # no step ran, nothing saved


class _NoBlocks(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x, labels=None):
        out = self.linear(x)
        return {"loss": torch.nn.functional.cross_entropy(out, labels), "logits": out}


def test_a_model_without_blocks_is_refused_at_train_begin(tmp_path):
    data = [{"x": torch.randn(4), "labels": torch.tensor(i % 2)} for i in range(16)]
    model = _NoBlocks()
    before = model.linear.weight.detach().clone()
    trainer = hf.watch(Trainer(model=model, args=_args(tmp_path), train_dataset=data), hf.CKADriftMonitor(2))
    with pytest.raises(li.LayerDiscoveryError):
        trainer.train()
    assert torch.equal(model.linear.weight, before)


def test_watch_refuses_what_is_not_a_hf_trainer_or_its_callbacks(tmp_path):
    with pytest.raises(TypeError, match=r"transformers\.Trainer"):
        hf.watch(object())  # type: ignore[arg-type]
    trainer = Trainer(model=tiny_model("bert"), args=_args(tmp_path), train_dataset=TokenData(8))
    with pytest.raises(TypeError, match=r"integrations\.transformers"):
        hf.watch(trainer, li.GradientNormMonitor(2))


def test_a_users_peft_model_keeps_its_adapter_and_task_head_active(tmp_path):
    from peft import LoraConfig, get_peft_model

    from lightning_inflect.injection import active_adapters

    config = LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"], init_lora_weights=False)
    model = get_peft_model(tiny_model("bert", **NO_DROPOUT), config)
    before = active_adapters(model)
    head = {n: p.detach().clone() for n, p in model.named_parameters() if "modules_to_save.default" in n}
    inject = hf.InjectionCallback(layers=[1], at_step=2, export=False)
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=TokenData(BATCH * STEPS, seed=1),
                      callbacks=[inject])  # fmt: skip
    hf.watch(trainer)
    trainer.train()
    after = active_adapters(model)
    assert inject.injected and set(after) == set(before)  # ours sits beside theirs in the same projections
    assert all("default" in after[name] for name in before)  # the user's adapter and head copy stay active
    ours = {name for name, active in after.items() if inject.adapter_name in active}
    assert ours and all(".layer.1." in name for name in ours)
    moved = {n: p for n, p in model.named_parameters() if n in head}
    assert head and all(not torch.equal(moved[n], v) for n, v in head.items())  # their task head trained


def _peft_resume_run(tmp_path, resume: bool, out: str):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"], init_lora_weights=False)
    model = get_peft_model(tiny_model("bert", **NO_DROPOUT), config)
    inject = hf.InjectionCallback(layers=[1], at_step=2, export=False)
    args = _args(tmp_path, output_dir=str(tmp_path / out), save_strategy="steps", save_steps=4, max_steps=8)
    trainer = Trainer(model=model, args=args, train_dataset=TokenData(BATCH * 8, seed=1), callbacks=[inject])
    hf.watch(trainer)
    trainer.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-4") if resume else None)
    return trainer, inject


def test_a_users_peft_model_resumes_after_the_injection_bit_exact(tmp_path):
    # The Trainer saves a PeftModel through its own save_pretrained (its adapters only) and loads it back with
    # load_adapter: our adapter's weights must still travel with the checkpoint and come back.
    full, full_inject = _peft_resume_run(tmp_path, resume=False, out="full")
    resumed, inject = _peft_resume_run(tmp_path, resume=True, out="resumed")
    assert inject.injected and inject.record.to_dict() == full_inject.record.to_dict()
    want = dict(full.model.named_parameters())
    got = dict(resumed.model.named_parameters())
    assert set(got) == set(want) and any(f".{inject.adapter_name}." in n for n in got)
    assert all(torch.equal(got[n], want[n]) for n in want), [n for n in want if not torch.equal(got[n], want[n])]


def test_auto_injection_chooses_what_the_lightning_callback_chooses_and_reports_it(tmp_path):
    # SKI by default, from the monitors' histories: the same blocks and scores as in Lightning on the same run, the
    # scores and trainable count in state.log_history at the injection step, the text report in TensorBoard.
    torch.manual_seed(0)
    model = tiny_model("bert", num_hidden_layers=4, **NO_DROPOUT)
    lit_model = copy.deepcopy(model)
    hf_inject = hf.InjectionCallback(auto=True, at_step=4, export=False)
    trainer = _hf_run(tmp_path, model, 1, [*_monitors(hf, every=1), hf_inject], report_to=["tensorboard"])
    lit_inject = li.InjectionCallback(auto=True, at_step=4, export=False)
    pl.Trainer(
        callbacks=[*_monitors(li, every=1), lit_inject], logger=False, max_steps=STEPS, gradient_clip_val=1.0,
        accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    ).fit(_Lightning(lit_model, 1.0), DataLoader(TokenData(BATCH * STEPS, seed=1), batch_size=BATCH))  # fmt: skip
    ours, theirs = hf_inject.record, lit_inject.record
    assert ours is not None and theirs is not None and ours.step == theirs.step == 4
    assert ours.layers == theirs.layers and "SKI" in ours.reason
    # min-max normalised scores in [0, 1], from per-block values equal to rel 1e-5: the normalisation magnifies it
    torch.testing.assert_close(torch.tensor(ours.scores), torch.tensor(theirs.scores), rtol=0, atol=1e-4)
    assert ours.trainable_after == theirs.trainable_after
    at_4 = {k: v for row in trainer.state.log_history if row.get("step") == 4 for k, v in row.items()}
    assert at_4["inflect/trainable_params"] == ours.trainable_after
    assert [at_4[layer_key("inflect", "inflection_score", i)] for i in range(4)] == pytest.approx(ours.scores)
    tb = next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "TensorBoardCallback")
    events = EventAccumulator(tb.logging_dir, size_guidance={"tensors": 0}).Reload()
    text = [e for tag in events.Tags()["tensors"] if tag.startswith("inflect/injection") for e in events.Tensors(tag)]
    assert [e.step for e in text] == [4]
    report = text[0].tensor_proto.string_val[0].decode()
    assert all(str(i) in report for i in ours.layers) and "SKI" in report


def _graph_breaks(tmp_path, out: str, with_monitors: bool):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    monitors = _monitors(hf) if with_monitors else []
    _hf_run(tmp_path / out, tiny_model("bert", **NO_DROPOUT), 1, monitors, torch_compile=True,
            torch_compile_backend="eager")  # fmt: skip
    return sum(counters["graph_break"].values()), monitors


def test_torch_compile_true_gets_no_graph_break_from_us_and_the_eager_values(tmp_path):
    # accelerate compiles the model (TrainingArguments(torch_compile=True)); our micro-batch hook sits on the
    # compiled module, outside the graph, and logging steps run eagerly: the breaks are those of the run without
    # monitors, and the values those of the model not compiled.
    breaks_without, _ = _graph_breaks(tmp_path, "plain", with_monitors=False)
    breaks_with, compiled = _graph_breaks(tmp_path, "monitored", with_monitors=True)
    torch.manual_seed(0)
    eager = _monitors(hf)
    _hf_run(tmp_path / "eager", tiny_model("bert", **NO_DROPOUT), 1, eager)
    assert breaks_with == breaks_without
    for ours, ref in zip(compiled, eager):
        for metric, hist in ours.history.items():
            assert hist.steps == ref.history[metric].steps == [0, 2, 4]
            torch.testing.assert_close(hist.full(), ref.history[metric].full(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("which", ["monitor", "injection"])
def test_fsdp_is_refused_at_train_begin_naming_the_setting(tmp_path, which):
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    env = {**os.environ, "LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(29500 + os.getpid() % 1000), "PYTHONPATH": str(here)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(here / "scripts" / "hf_fsdp_refused.py"), str(tmp_path), which],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "REFUSED untouched=True steps=0" in done.stdout, done.stdout + done.stderr[-3000:]
    assert "TrainingArguments(fsdp=" in done.stdout and "Remove `fsdp=`" in done.stdout


def test_a_probe_the_model_cannot_take_is_refused_at_train_begin(tmp_path):
    model = tiny_model("bert", **NO_DROPOUT)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    bad = hf.CKADriftMonitor(every_n_steps=2, probe={"pixel_values": torch.zeros(2, 3, 8, 8)})
    trainer = hf.watch(Trainer(model=model, args=_args(tmp_path), train_dataset=TokenData(32), callbacks=[bad]))
    with pytest.raises(ValueError, match="probe") as err:
        trainer.train()
    assert "pixel_values" in str(err.value) and trainer.state.global_step == 0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_no_hook_is_left_on_the_model_after_train_or_when_it_fails(tmp_path):
    model = tiny_model("bert", **NO_DROPOUT)
    before = (len(model._forward_pre_hooks), len(model._forward_hooks))
    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=TokenData(BATCH * STEPS, seed=1),
                      callbacks=_monitors(hf))  # fmt: skip
    trainer.train()
    assert (len(model._forward_pre_hooks), len(model._forward_hooks)) == before
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())  # no capture hook either
    trainer.train()  # a second train() on the same Trainer: one clip wrapper, the same values again at step 0
    clip = trainer.accelerator.clip_grad_norm_
    assert getattr(clip, "_inflect_wiring", None) is not None
    inner = [c.cell_contents for c in clip.__closure__ or () if callable(c.cell_contents)]
    assert inner and not any(hasattr(f, "_inflect_wiring") for f in inner)  # it wraps accelerate's, not itself
    bad = TokenData(BATCH * STEPS, seed=1)
    bad.ids = bad.ids[:, :0]  # empty sequences: the model fails inside train()
    failing = Trainer(model=model, args=_args(tmp_path / "f"), train_dataset=bad, callbacks=_monitors(hf))
    with pytest.raises(Exception):  # noqa: B017 (whatever the model raises)
        failing.train()
    assert (len(model._forward_pre_hooks), len(model._forward_hooks)) == before


def test_gradient_checkpointing_gives_the_same_values(tmp_path):
    # the blocks' forwards run again inside the backward: the activation-gradient hooks must count each block once
    runs = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        monitors = _monitors(hf)
        model = tiny_model("bert", **NO_DROPOUT)
        _hf_run(tmp_path / str(checkpointing), model, 1, monitors, gradient_checkpointing=checkpointing)
        assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules()) == checkpointing
        runs.append(monitors)
    for plain, checkpointed in zip(*runs):
        for metric, hist in plain.history.items():
            assert checkpointed.history[metric].steps == hist.steps == [0, 2, 4]
            torch.testing.assert_close(checkpointed.history[metric].full(), hist.full(), rtol=1e-5, atol=1e-7)
