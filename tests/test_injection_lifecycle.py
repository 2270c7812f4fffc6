"""The injection lifecycle on its own, without a Trainer: its transitions, that an injection keeps every adapter a
user's PeftModel had active, and that a saved state is checked whole before anything changes."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import NO_DROPOUT, loader, tiny_model
from peft import LoraConfig, get_peft_model

from lightning_inflect.architectures import find_hf_model, find_layers
from lightning_inflect.injection import (
    InjectionLifecycle,
    InjectionSchedule,
    Phase,
    active_adapters,
    default_targets,
    lora_settings,
    plan_injection,
)
from lightning_inflect.validation import CheckpointStateError


def _user_peft_model():
    model = get_peft_model(tiny_model("bert", **NO_DROPOUT), LoraConfig(task_type="SEQ_CLS", r=4,
                           target_modules=["query", "value"], init_lora_weights=False))  # fmt: skip
    with torch.no_grad():  # the user trained their copy of the head
        for p in model.base_model.model.classifier.modules_to_save["default"].parameters():
            p.add_(torch.randn_like(p))
    return model.eval()


def _record(peft_model, layers=(1,), step=3):
    _, hf = find_hf_model(peft_model)
    info = find_layers(hf)
    return hf, plan_injection(hf, info, list(layers), lora_settings(r=8), default_targets(hf, info), step=step)


def _logits(model):
    ds = loader(8).dataset
    with torch.no_grad():
        return model(input_ids=ds.ids[:6], attention_mask=ds.mask[:6]).logits


def test_transitions_and_their_checks():
    life = InjectionLifecycle(InjectionSchedule(at_step=2))
    assert life.phase is Phase.WAITING and life.plan(10) == 2 and life.due(2) and not life.due(1)
    life.postpone(3)
    assert life.phase is Phase.PROBING and life.planned_step == 3 and not life.due(2)
    life.postpone(4)  # a resume in the middle of probing probes again
    life.skip("nothing selected")
    assert life.phase is Phase.SKIPPED and life.planned_step is None and not life.pending
    assert life.plan(10) is None and not life.due(5)  # a skipped injection is not planned again
    with pytest.raises(RuntimeError, match="cannot go from 'skipped' to 'probing'"):
        life.postpone(6)
    with pytest.raises(RuntimeError, match="cannot go from 'waiting' to 'exported'"):
        InjectionLifecycle(InjectionSchedule(at_step=2)).exported()


def test_inject_keeps_every_active_adapter_and_the_logits():
    model = _user_peft_model()
    hf, record = _record(model)
    before, logits = active_adapters(model), _logits(model)
    life = InjectionLifecycle(InjectionSchedule(at_step=3))
    lora = life.inject(hf, record)
    after = active_adapters(model)
    assert life.phase is Phase.INJECTED and life.record is record and lora
    chosen = {f"base_model.model.{m}" for m in record.target_modules}
    assert after == {n: [*names, *(["inflect"] if n in chosen else [])] for n, names in before.items()}
    assert after["base_model.model.classifier"] == ["default"]
    assert (_logits(model) - logits).abs().max() <= 1e-6
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".lora_A.default." in n for n in trainable) and any(".lora_B.inflect." in n for n in trainable)
    assert any(".modules_to_save.default." in n for n in trainable)
    assert not any(".original_module." in n for n in trainable)
    with pytest.raises(RuntimeError, match="cannot go from 'injected' to 'injected'"):
        life.inject(hf, record)


def test_restore_enters_the_saved_phase_with_the_same_active_set():
    model = _user_peft_model()
    hf, record = _record(model, layers=(0, 2))
    life = InjectionLifecycle(InjectionSchedule(at_step=3))
    life.inject(hf, record)
    life.exported()
    state = copy.deepcopy(life.state_dict())
    fresh = _user_peft_model()
    fresh_hf, _ = _record(fresh)
    again = InjectionLifecycle(InjectionSchedule(at_step=3))
    lora = again.restore(state, fresh_hf, num_layers=3)
    assert again.phase is Phase.INJECTED and again.record.to_dict() == record.to_dict()  # the export is redone
    assert active_adapters(fresh) == active_adapters(model)
    assert sorted(n for n, _ in fresh.named_parameters()) == sorted(n for n, _ in model.named_parameters())
    assert {id(p) for p in lora} == {id(p) for n, p in fresh.named_parameters() if ".inflect." in n}
    assert again.restore(state, None, num_layers=3) == []  # the same state again (Lightning's load_state_dict)
    waiting = InjectionLifecycle(InjectionSchedule(at_step=3))
    waiting.restore({"phase": "skipped", "record": None, "planned_step": None}, fresh_hf, num_layers=3)
    assert waiting.phase is Phase.SKIPPED and waiting.plan(10) is None
    old = InjectionLifecycle(InjectionSchedule(at_step=3))  # a state of version 0.3: no phase
    old.restore({"record": None, "planned_step": 3}, fresh_hf, num_layers=3)
    assert old.phase is Phase.WAITING and old.planned_step == 3


DAMAGED = [
    "injected",
    ["record"],
    {"recorded": None},
    torch.zeros(2, 2),
    {"phase": "injected", "record": {"layers": [9], "target_modules": ["x"], "lora": {}, "keep_trainable": []}},
    {"phase": "injected", "record": {"r": 4}},
    {"phase": "later", "record": None},
    {"phase": "injected", "record": None},
    {"phase": "waiting", "record": None, "planned_step": -1},
    {"phase": "waiting", "record": None, "planned_step": True},
]


@pytest.mark.parametrize("state", DAMAGED, ids=range(len(DAMAGED)))
def test_a_damaged_state_raises_before_the_model_or_the_lifecycle_change(state):
    model = _user_peft_model()
    hf, _ = _record(model)
    names = {n: p.detach().clone() for n, p in model.named_parameters()}
    active = active_adapters(model)
    life = InjectionLifecycle(InjectionSchedule(at_step=3), owner="InjectionCallback (state key 'k')")
    with pytest.raises(CheckpointStateError, match=r"InjectionCallback \(state key 'k'\) cannot resume from 'c.ckpt'"):
        life.restore(state, hf, num_layers=3, checkpoint="c.ckpt")
    assert life.phase is Phase.WAITING and life.record is None and life.planned_step is None
    assert active_adapters(model) == active
    assert names.keys() == dict(model.named_parameters()).keys()
    assert all(torch.equal(names[n], p) for n, p in model.named_parameters())
