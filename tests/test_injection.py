"""InjectionCallback end to end with the real Trainer and real peft on tiny models."""

import glob
import json
import math

import lightning.pytorch as pl
import pytest
import torch
from conftest import NO_DROPOUT, ClsModule, loader, tiny_model
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import SingleDeviceStrategy
from peft import LoraConfig, PeftModel
from peft.tuners.lora import LoraLayer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForSequenceClassification

from lightning_inflect import GradientNormMonitor, InjectionCallback
from lightning_inflect.architectures import find_layers
from lightning_inflect.injection import (
    InjectionRecord,
    export_adapters,
    inject_lora,
    lora_settings,
    resolve_targets,
    targeted_config,
)
from lightning_inflect.selection import Manual, Selection, Selector, TopK


def _fixed_batch():
    ds = loader(8).dataset
    return {"input_ids": ds.ids[:6], "attention_mask": ds.mask[:6]}


class LogitsAt(Callback):
    """Records the model's eval-mode logits on a fixed batch at on_train_batch_start of one step."""

    def __init__(self, step):
        self.step, self.logits = step, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and self.logits is None:
            was = pl_module.training
            pl_module.eval()
            with torch.no_grad():
                self.logits = pl_module.model(**_fixed_batch()).logits.clone()
            pl_module.train(was)


def test_injection_keeps_logits_and_trains_exactly_the_new_set(trainer_factory):
    before, after = LogitsAt(2), LogitsAt(2)
    inj = InjectionCallback(layers=[0, 2], at_step=2, r=4)
    module = ClsModule(tiny_model("bert"))
    frozen_ref = {}

    class Snapshot(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2 and not frozen_ref:
                frozen_ref.update({n: p.detach().clone() for n, p in pl_module.named_parameters()})

    trainer = trainer_factory([before, inj, after, Snapshot()], max_steps=5)
    trainer.fit(module, loader(64))
    # logits unchanged at the moment of injection
    assert torch.equal(before.logits, after.logits)
    # the optimizer holds every trainable tensor exactly once, and nothing frozen
    opt_params = [p for g in trainer.optimizers[0].param_groups for p in g["params"]]
    assert len({id(p) for p in opt_params}) == len(opt_params)
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert {id(p) for p in opt_params} == {id(p) for p in trainable}
    lora = {n: p for n, p in module.named_parameters() if "lora_" in n}
    assert len(lora) == 2 * 2 * 2  # 2 blocks x (query, value) x (A, B)
    assert all(".layer.0." in n or ".layer.2." in n for n in lora)
    # zero-initialised B matrices compare equal by value, yet each one is in the optimizer
    b_mats = [p for n, p in lora.items() if "lora_B" in n]
    assert len({id(p) for p in b_mats} & {id(p) for p in opt_params}) == 4
    # after training on: LoRA and head moved, the frozen backbone did not
    for n, p in module.named_parameters():
        if "lora_" in n:
            continue
        ref = frozen_ref[n]
        if n.startswith("model.classifier"):
            assert not torch.equal(ref, p), n
        else:
            assert torch.equal(ref, p), n
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in lora.items() if "lora_B" in n)
    assert inj.record.trainable_after < inj.record.trainable_before
    assert inj.record.keep_trainable == ["classifier"]


def test_inject_lora_is_a_no_op_on_logits_for_each_architecture():
    for model_type in ("bert", "distilbert", "gpt2", "llama"):
        model = tiny_model(model_type).eval()
        batch = _fixed_batch()
        with torch.no_grad():
            ref = model(**batch).logits
        info = find_layers(model)
        layout_targets = info.layout.lora_targets
        record = InjectionRecord(
            [1, 2], resolve_targets(info, [1, 2], layout_targets, ""),
            targeted_config(lora_settings(r=4, lora_alpha=8), info, [1, 2], layout_targets), [],
        )  # fmt: skip
        new = inject_lora(model, record)
        assert new and all(p.requires_grad for p in new)
        with torch.no_grad():
            assert torch.allclose(model(**batch).logits, ref, atol=0, rtol=0), model_type


class Sched(ClsModule):
    def __init__(self, kind, **kw):
        super().__init__(tiny_model("bert", **NO_DROPOUT), lr=0.1, **kw)
        self.kind = kind

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr)
        if self.kind == "linear_warmup":
            from transformers import get_linear_schedule_with_warmup

            sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=10)
        elif self.kind == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        elif self.kind == "lambda":
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.9**s)
        else:
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "train_loss", "interval": "step"}}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class LrLog(Callback):
    def __init__(self):
        self.lrs = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append([g["lr"] for g in optimizer.param_groups])


@pytest.mark.parametrize("kind", ["linear_warmup", "cosine", "lambda", "plateau"])
def test_schedulers_keep_their_phase_and_drive_the_new_group(trainer_factory, kind):
    runs = []
    for inject in (False, True):
        pl.seed_everything(0)
        lr_log = LrLog()
        cbs = [lr_log] + ([InjectionCallback(layers=[1], at_step=4)] if inject else [])
        trainer_factory(cbs, max_steps=9).fit(Sched(kind), loader(72))
        runs.append(lr_log.lrs)
    plain, injected = runs
    assert len(injected) == 9
    for step in range(9):
        if kind != "plateau":  # a plateau schedule follows the loss, which the injection changes
            assert injected[step][0] == pytest.approx(plain[step][0], rel=1e-12), step
        if step >= 4:
            assert len(injected[step]) == 2
            assert injected[step][1] == pytest.approx(injected[step][0], rel=1e-12), step
        else:
            assert len(injected[step]) == 1
    if kind == "plateau":
        assert min(lr[1] for lr in injected[4:]) <= max(lr[1] for lr in injected[4:])


def test_auto_injection_collects_its_own_diagnostics_and_logs_the_choice(trainer_factory, tmp_path):
    tb = TensorBoardLogger(tmp_path, name="tb")
    inj = InjectionCallback(auto=True, at_step=3, r=2)
    trainer_factory([inj], [tb], max_steps=5).fit(ClsModule(tiny_model("gpt2")), loader(64))
    assert inj.injected and inj.record.step == 3
    assert inj.record.reason.startswith("SKI")
    assert inj.record.scores is not None and len(inj.record.scores) == 3
    ea = EventAccumulator(tb.log_dir, size_guidance={"tensors": 0, "scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    for layer in range(3):
        events = ea.Scalars(f"inflect/inflection_score/layer_{layer:02d}")
        assert [e.step for e in events] == [3]
        assert events[0].value == pytest.approx(inj.record.scores[layer], rel=1e-6)
    assert ea.Scalars("inflect/trainable_params")[0].value == inj.record.trainable_after
    text = ea.Tensors("inflect/injection/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"blocks {inj.record.layers}" in text and "c_attn" in text
    assert "inflect/injection/text_summary" in tags["tensors"]


class Recorder(Selector):
    """Keeps the histories it is given and picks block 0."""

    requires = ("attn_entropy",)

    def select(self, history, num_layers):
        self.seen = history
        return Selection((0,), None, "recorded")


class EagerAt(Callback):
    """At one step, before the injection, the batch's eager attention probabilities and the session's forwards."""

    def __init__(self, step, monitor) -> None:
        self.step, self.monitor, self.attn, self.mask, self.forwards = step, monitor, None, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            eager = tiny_model("bert", attn="eager", **NO_DROPOUT).eval()
            eager.load_state_dict(pl_module.model.state_dict())
            self.mask = batch["attention_mask"]
            with torch.no_grad():
                self.attn = eager(input_ids=batch["input_ids"], attention_mask=self.mask, output_attentions=True)
            self.session = self.monitor._session
            self.forwards = self.session.forwards


def test_auto_injection_probes_in_the_monitors_session_with_the_monitors_definition(trainer_factory):
    mon = GradientNormMonitor(every_n_steps=1)  # the session exists, but nobody logs entropy
    eager, rec = EagerAt(2, mon), Recorder()
    inj = InjectionCallback(auto=True, selector=rec, at_step=2)
    trainer_factory([eager, mon, inj], max_steps=3).fit(ClsModule(tiny_model("bert", **NO_DROPOUT)), loader(48))
    assert eager.session.forwards == eager.forwards + 1  # one probe forward, run by the monitors' session
    row = rec.seen["attn_entropy"].rows[0]
    for layer, attn in enumerate(eager.attn.attentions):  # token mean of eager entropies, by loops
        terms = []
        for i in range(attn.shape[0]):
            n = int(eager.mask[i].sum())
            p = attn[i, :, :n, :n].double()
            terms.append(-(p * p.clamp_min(1e-300).log()).sum(-1).flatten())
        assert row[layer] == pytest.approx(torch.cat(terms).mean().item(), abs=1e-4)


def test_auto_uses_attached_monitor_history(trainer_factory):
    mon = GradientNormMonitor(every_n_steps=1, norms=["parameter"])
    from lightning_inflect.selection import GradientProbe

    inj = InjectionCallback(auto=True, selector=GradientProbe(k=1, window=2), at_step=3)
    trainer_factory([mon, inj], max_steps=4).fit(ClsModule(tiny_model("bert")), loader(64))
    values = torch.tensor(mon.history["param_grad_norm"].rows[1:3]).mean(0)
    assert inj.record.layers == [int(values.argmax())]


def test_export_loads_back_with_peft(trainer_factory, tmp_path):
    # at step 0 the frozen backbone is still the freshly initialised one, which `tiny_model` rebuilds below
    inj = InjectionCallback(layers=[1, 2], at_step=0, r=4, export_dir=tmp_path / "out", export_merged=True)
    module = ClsModule(tiny_model("bert", **NO_DROPOUT))
    trainer_factory([inj], max_steps=4).fit(module, loader(64))
    path = tmp_path / "out" / "inflect_adapters"
    assert inj.export_path == path
    module.eval()
    batch = _fixed_batch()
    with torch.no_grad():
        ref = module.model(**batch).logits
    fresh = tiny_model("bert", **NO_DROPOUT)  # same seed: same base weights as before training
    loaded = PeftModel.from_pretrained(fresh, str(path)).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, ref, atol=1e-6)

    merged = AutoModelForSequenceClassification.from_pretrained(str(path / "merged")).eval()
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, ref, atol=1e-5)


def test_a_peft_lora_config_reaches_the_model_and_the_export(trainer_factory, tmp_path):
    lora = LoraConfig(r=4, lora_alpha=8, use_rslora=True, use_dora=True, target_modules=["query"])
    inj = InjectionCallback(layers=[0, 2], at_step=0, lora_config=lora, export_dir=tmp_path, export_merged=True)
    module = ClsModule(tiny_model("bert", **NO_DROPOUT), lr=0.05)
    trainer_factory([inj], max_steps=3).fit(module, loader(48))
    ours = {n: m for n, m in module.model.named_modules() if isinstance(m, LoraLayer) and "inflect" in m.lora_A}
    assert sorted(ours) == [f"bert.encoder.layer.{i}.attention.self.query" for i in (0, 2)] == inj.record.target_modules
    assert all(m.scaling["inflect"] == 8 / 4**0.5 and m.use_dora["inflect"] for m in ours.values())  # rsLoRA, DoRA
    saved = json.loads((inj.export_path / "adapter_config.json").read_text())
    assert (saved["layers_to_transform"], saved["target_modules"], saved["use_rslora"]) == ([0, 2], ["query"], True)
    module.eval()
    batch = _fixed_batch()
    with torch.no_grad():
        ref = module.model(**batch).logits
        assert not torch.allclose(ref, tiny_model("bert", **NO_DROPOUT).eval()(**batch).logits, atol=1e-4)
        loaded = PeftModel.from_pretrained(tiny_model("bert", **NO_DROPOUT), str(inj.export_path)).eval()
        torch.testing.assert_close(loaded(**batch).logits, ref, atol=1e-5, rtol=0)
        merged = AutoModelForSequenceClassification.from_pretrained(str(inj.export_path / "merged")).eval()
        torch.testing.assert_close(merged(**batch).logits, ref, atol=1e-5, rtol=0)


def test_a_record_of_version_0_2_still_injects_the_same_modules():
    names = [f"model.layers.1.self_attn.{t}" for t in ("q_proj", "v_proj")]
    old = {"layers": [1], "target_modules": names, "r": 2, "lora_alpha": 4.0, "lora_dropout": 0.0,
           "keep_trainable": ["score"], "adapter_name": "inflect"}  # fmt: skip
    record = InjectionRecord.from_dict(old)
    assert (record.r, record.lora_alpha, record.lora_dropout) == (2, 4.0, 0.0)
    model = tiny_model("llama")
    inject_lora(model, record)
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, LoraLayer))
    assert wrapped == names and all(m.scaling["inflect"] == 2.0 for m in model.modules() if isinstance(m, LoraLayer))


class EmptySelector(Selector):
    requires = ()

    def select(self, history, num_layers):
        return Selection((), None, "nothing stands out")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": [1]}, r"exactly one of `at_step`, `at_epoch`, `at_fraction` but got none"),
        ({"layers": [1], "at_step": 3, "at_epoch": 1}, r"but got at_step=3, at_epoch=1"),
        ({"layers": [1], "at_fraction": 1.0}, r"`at_fraction` to be a number in \(0.0, 1.0\) but got 1.0"),
        ({"layers": [1], "at_fraction": 0}, r"`at_fraction` to be a number in \(0.0, 1.0\) but got 0"),
        ({"layers": [], "at_step": 1}, r"`layers` to be a non-empty list"),
        ({"auto": True, "layers": [1], "at_step": 1}, r"either `auto=True` or `layers=` but got both"),
        ({"at_step": 1}, r"`layers=\[...\]` or `auto=True`"),
        ({"selector": TopK(2), "at_step": 1}, r"pass `auto=True`"),
        ({"layers": [1], "at_step": 1, "r": 0}, r"`r` to be a positive int"),
        ({"layers": [1], "at_step": 1, "lora_dropout": 1.0}, r"`lora_dropout` to be a number in \[0.0, 1.0\)"),
        ({"layers": [1], "at_step": 1, "target_modules": "query"}, r"`target_modules` to be a non-empty list"),
        ({"auto": True, "at_step": 1, "on_empty": "fallback"}, r"needs `fallback_selector=`"),
        ({"auto": True, "at_step": 1, "on_empty": "ignore"}, r"`on_empty` to be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InjectionCallback(**kwargs)


def test_bad_arguments_found_at_setup(trainer_factory):
    with pytest.raises(ValueError, match=r"`layers` to hold block indices in \[0, 2\].*got 5"):
        trainer_factory([InjectionCallback(layers=[5], at_step=1)]).fit(ClsModule(tiny_model("bert")), loader(16))
    with pytest.raises(ValueError, match=r"'q_proj' matches nothing.*Linear layers of this block: .*query"):
        trainer_factory([InjectionCallback(layers=[0], at_step=1, target_modules=["q_proj"])]).fit(
            ClsModule(tiny_model("bert")), loader(16)
        )


def test_empty_selection_policies(trainer_factory):
    with pytest.raises(RuntimeError, match=r"selected no block.*nothing stands out.*on_empty='skip'"):
        trainer_factory([InjectionCallback(auto=True, selector=EmptySelector(), at_step=1)], max_steps=3).fit(
            ClsModule(tiny_model("bert")), loader(32)
        )
    skip = InjectionCallback(auto=True, selector=EmptySelector(), at_step=1, on_empty="skip")
    with pytest.warns(UserWarning, match="no block selected"):
        trainer_factory([skip], max_steps=3).fit(ClsModule(tiny_model("bert")), loader(32))
    assert not skip.injected
    fb = InjectionCallback(
        auto=True, selector=EmptySelector(), at_step=1, on_empty="fallback", fallback_selector=Manual([0])
    )
    trainer_factory([fb], max_steps=3).fit(ClsModule(tiny_model("bert")), loader(32))
    assert fb.record.layers == [0] and "fallback" in fb.record.reason


def test_injection_beyond_max_steps_warns(trainer_factory):
    inj = InjectionCallback(layers=[0], at_step=10)
    with pytest.warns(UserWarning, match="No injection will happen"):
        trainer_factory([inj], max_steps=3).fit(ClsModule(tiny_model("bert")), loader(32))
    assert not inj.injected


class Manual_(ClsModule):
    def __init__(self):
        super().__init__(tiny_model("bert"))
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        loss = self.model(**batch).loss
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()


def test_manual_optimization_and_untested_strategies_are_refused(trainer_factory):
    with pytest.raises(ValueError, match="needs automatic optimization"):
        trainer_factory([InjectionCallback(layers=[0], at_step=1)]).fit(Manual_(), loader(16))

    class CustomStrategy(SingleDeviceStrategy):
        pass

    with pytest.raises(NotImplementedError, match=r"does not support CustomStrategy.*DDP"):
        trainer_factory([InjectionCallback(layers=[0], at_step=1)], strategy=CustomStrategy(device="cpu")).fit(
            ClsModule(tiny_model("bert")), loader(16)
        )


def test_at_epoch_and_at_fraction(trainer_factory):
    by_epoch = InjectionCallback(layers=[0], at_epoch=1)
    trainer_factory([by_epoch], max_epochs=2, max_steps=-1).fit(ClsModule(tiny_model("bert")), loader(32))
    assert by_epoch.record.step == 4  # 4 batches per epoch
    by_fraction = InjectionCallback(layers=[0], at_fraction=0.5)
    trainer_factory([by_fraction], max_steps=6, accumulate_grad_batches=2).fit(
        ClsModule(tiny_model("bert")), loader(128)
    )
    assert by_fraction.record.step == 3
    assert math.isfinite(by_fraction.record.trainable_after)


def test_export_adapters_function_round_trip(tmp_path):
    model = tiny_model("llama", **{}).eval()
    info = find_layers(model)
    targets = ["q_proj", "v_proj"]
    lora = targeted_config(lora_settings(r=2, lora_alpha=4), info, [0], targets)
    record = InjectionRecord([0], resolve_targets(info, [0], targets, ""), lora, ["score"])
    inject_lora(model, record)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    export_adapters(model, record, tmp_path)
    batch = _fixed_batch()
    with torch.no_grad():
        ref = model(**batch).logits
        loaded = PeftModel.from_pretrained(tiny_model("llama"), str(tmp_path)).eval()
        assert torch.allclose(loaded(**batch).logits, ref, atol=1e-5)
    assert sorted(glob.glob(str(tmp_path / "*"))) == sorted(
        str(tmp_path / f) for f in ("adapter_config.json", "adapter_model.safetensors", "inflect_injection.json")
    )


def _run_script(tmp_path, name, *args):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "scripts" / "inject_resume.py"
    out = tmp_path / name
    proc = subprocess.run([sys.executable, str(script), *map(str, args[:1]), str(out), *map(str, args[1:])],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("save_at", [5, 2], ids=["after-injection", "before-injection"])
def test_resume_in_a_new_process_is_bit_identical(tmp_path, save_at):
    full = _run_script(tmp_path, "full.pt", 8)
    _run_script(tmp_path, "part.pt", save_at, "-", save_at)
    ckpt = next((tmp_path / "ckpt").glob(f"*step={save_at}.ckpt"))
    resumed = _run_script(tmp_path, "resumed.pt", 8, ckpt)
    assert resumed["record"].layers == full["record"].layers == [0, 2] and resumed["record"].step == 3
    for step in range(save_at, 8):
        assert resumed["losses"][step] == full["losses"][step], step
    assert resumed["lrs"] == full["lrs"] and len(full["lrs"]) == 2
    assert full["state"].keys() == resumed["state"].keys()
    for k, v in full["state"].items():
        assert torch.equal(v, resumed["state"][k]), k


def test_trigger_injects_early_or_falls_back_to_the_fixed_point(trainer_factory):
    from lightning_inflect.selection import GradientSuppressionTrigger

    early = InjectionCallback(
        layers=[1], at_step=6, trigger=GradientSuppressionTrigger(threshold=-math.inf, patience=2)
    )
    mon = GradientNormMonitor(every_n_steps=1)
    trainer_factory([mon, early], max_steps=8).fit(ClsModule(tiny_model("bert")), loader(64))
    assert early.record.step == 2  # logs of steps 0 and 1 seen at the start of step 2
    assert early.record.reason.startswith("GradientSuppressionTrigger(threshold=-inf, patience=2) fired")

    never = InjectionCallback(layers=[1], at_step=4, trigger=GradientSuppressionTrigger(threshold=math.inf))
    trainer_factory([GradientNormMonitor(every_n_steps=1), never], max_steps=6).fit(
        ClsModule(tiny_model("bert")), loader(64)
    )
    assert never.record.step == 4 and never.record.reason.startswith("manual")

    with pytest.raises(ValueError, match=r"`trigger=` reads activation-gradient norms: add `GradientNormMonitor"):
        trainer_factory([InjectionCallback(layers=[1], at_step=4, trigger=GradientSuppressionTrigger())]).fit(
            ClsModule(tiny_model("bert")), loader(16)
        )
    with pytest.raises(ValueError, match=r"`patience` to be a positive int"):
        GradientSuppressionTrigger(patience=0)


def test_auto_at_epoch_without_monitors_probes_one_step_then_injects(trainer_factory):
    from lightning_inflect.selection import GradientProbe

    inj = InjectionCallback(auto=True, selector=GradientProbe(k=1), at_epoch=1)
    trainer_factory([inj], max_epochs=2, max_steps=-1).fit(ClsModule(tiny_model("bert")), loader(32))
    assert inj.record.step == 5  # epoch 1 starts at step 4; its gradients are probed, the injection follows
    assert "step 4" in inj.record.reason


def test_monitors_after_injection_report_frozen_blocks_honestly(trainer_factory):
    """After freezing, blocks below every trainable parameter get no activation gradient: NaN with its own warning
    (not the non-finite one), and zero parameter-gradient norm; the adapted block gets real values."""
    mon = GradientNormMonitor(every_n_steps=1)
    inj = InjectionCallback(layers=[1], at_step=2, r=2)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer_factory([mon, inj], max_steps=4).fit(ClsModule(tiny_model("bert")), loader(64))
    messages = [str(w.message) for w in caught]
    assert any("no gradient reached the outputs of blocks [0]" in m for m in messages)
    assert not any("non-finite `act_grad_norm`" in m for m in messages)
    act, param = mon.history["act_grad_norm"].rows, mon.history["param_grad_norm"].rows
    assert all(math.isfinite(v) and v > 0 for v in act[1])  # before the injection: every block
    assert math.isnan(act[3][0]) and act[3][1] > 0 and act[3][2] > 0
    assert param[3][0] == 0.0 and param[3][2] == 0.0 and param[3][1] > 0
