"""``examples/hf_trainer.py`` as a user runs it: the real MiniLM in the real Hugging Face ``Trainer`` on Rotten
Tomatoes sentences (real where the data folder is, invented otherwise), a few steps, with the monitors and
auto-injection; what it logs is read back from ``state.log_history``, TensorBoard and the exported adapters."""

import importlib.util
import json
from pathlib import Path

import pytest
from _data import real_or_invented_data_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_inflect.names import layer_key

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hf_trainer.py"


def _example():
    spec = importlib.util.spec_from_file_location("hf_trainer_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hf_trainer_example_injects_where_ski_says_and_logs_through_the_trainer(tmp_path):
    out = tmp_path / "run"
    argv = ["--data-dir", str(real_or_invented_data_dir(tmp_path)), "--output-dir", str(out), "--max-steps", "6",
            "--batch-size", "8", "--every-n-steps", "2", "--at-fraction", "0.5", "--train-samples", "48",
            "--val-samples", "16", "--max-length", "32"]  # fmt: skip
    trainer = _example().main(argv)
    injection = next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "InjectionCallback")
    record = injection.record
    assert record is not None and record.step == 3 and record.reason.startswith("SKI")
    assert record.trainable_after < record.trainable_before / 100  # LoRA and the classifier only
    config = json.loads((out / "inflect_adapters" / "adapter_config.json").read_text())
    assert sorted(config["layers_to_transform"]) == sorted(record.layers)
    logged: dict[int, dict] = {}  # step -> every inflect key logged at it
    for row in trainer.state.log_history:
        logged.setdefault(row["step"], {}).update({k: v for k, v in row.items() if k.startswith("inflect/")})
    assert sorted(s for s, row in logged.items() if "inflect/overhead_ms" in row) == [0, 2, 4]
    assert logged[3]["inflect/trainable_params"] == record.trainable_after  # the injection's report, at its step
    keys = [layer_key("inflect", m, i) for m in ("attn_entropy", "act_grad_norm", "cka_drift") for i in range(6)]
    assert all(k in logged[s] for s in (0, 2, 4) for k in keys)
    events = EventAccumulator(str(next(out.glob("runs/*"))), size_guidance={"scalars": 0}).Reload()
    got = [(e.step, e.value) for e in events.Scalars(f"train/{keys[0]}")]
    assert [s for s, _ in got] == [0, 2, 4]
    assert [v for _, v in got] == pytest.approx([logged[s][keys[0]] for s in (0, 2, 4)], rel=1e-6)
