"""TRL's ``SFTTrainer`` (a ``transformers.Trainer``) with the inflect callbacks, where TRL installs (CI pins it in
``requirements/ci.txt``; it is no dependency of the package).

``SFTTrainer`` adds its own switches to every forward (``use_cache=False``; ``fused_lm_head=True``, a loss head that
needs the labels): the monitors must still probe the examples only, log the values a plain ``Trainer`` logs on the
same model, collated batches and settings, and the injection must train exactly its adapters.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from lightning_inflect.experiments import minilm_path
from lightning_inflect.integrations import transformers as hf

trl = pytest.importorskip("trl", reason="TRL is not installed (pip install trl); it is tested where it installs")

STEPS = 4


def _monitors() -> list:
    return [
        hf.AttentionEntropyMonitor(every_n_steps=2, normalized=True),
        hf.GradientNormMonitor(every_n_steps=2),
        hf.CKADriftMonitor(every_n_steps=2, pca_components=4),
    ]


def _sft(tmp_path, callbacks):
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())  # a local tokenizer: no hub
    tokenizer.eos_token = "[SEP]"
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id, attention_dropout=0.0)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    untouched = copy.deepcopy(model)  # before TRL patches the forward
    texts = [f"the film number {i} was {'good' if i % 3 else 'bad'} and {'long' * (i % 4)}" for i in range(32)]
    args = trl.SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=STEPS, per_device_train_batch_size=4,
                         learning_rate=1e-3, report_to=[], use_cpu=True, max_length=32, save_strategy="no",
                         disable_tqdm=True, logging_steps=1000, seed=0, train_sampling_strategy="sequential",
                         gradient_checkpointing=False)  # fmt: skip
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}),
                             processing_class=tokenizer, callbacks=callbacks)  # fmt: skip
    hf.watch(trainer)
    return trainer, untouched


def test_sft_trainer_logs_what_a_plain_trainer_logs_on_the_same_batches(tmp_path):
    sft_monitors = _monitors()
    sft, model = _sft(tmp_path, sft_monitors)
    sft.train()
    base = {f.name: getattr(sft.args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    base.update(output_dir=str(tmp_path / "plain"), remove_unused_columns=False)
    plain_monitors = _monitors()
    plain = Trainer(model=model, args=TrainingArguments(**base), train_dataset=sft.train_dataset,
                    data_collator=sft.data_collator, callbacks=plain_monitors)  # fmt: skip
    hf.watch(plain)
    plain.train()
    for ours, ref in zip(sft_monitors, plain_monitors):
        for metric, hist in ours.history.items():
            assert hist.steps == ref.history[metric].steps == [0, 2], metric
            got, want = hist.full(), ref.history[metric].full()
            if "grad_norm" in metric:
                # the same loss value, but TRL's fused loss head has a backward of its own (tiled log-softmax): the
                # gradients agree to ~2e-4, not to float rounding
                torch.testing.assert_close(got[0], want[0], rtol=1e-3, atol=1e-7)
            else:  # the probe's values: the same weights and batch at step 0
                torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-7)
            # step 2: after two AdamW steps, which magnify those 2e-4 (Adam's first steps move by lr * sign(g))
            torch.testing.assert_close(got[1], want[1], rtol=5e-2, atol=1e-6)
    logged = {k for row in sft.state.log_history for k in row}
    assert {"inflect/attn_entropy/layer_00", "inflect/param_grad_norm/layer_02", "inflect/overhead_ms"} <= logged


def test_sft_trainer_injection_trains_exactly_its_adapters(tmp_path):
    inject = hf.InjectionCallback(layers=[1], at_step=2, export_dir=str(tmp_path / "export"))
    sft, _ = _sft(tmp_path, [inject])
    frozen: dict[str, torch.Tensor] = {}

    class _AfterInjection(hf.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3 and not frozen:  # the injection step (2) is done
                frozen.update({n: p.detach().clone() for n, p in sft.model.named_parameters() if not p.requires_grad})

    sft.add_callback(_AfterInjection())
    sft.train()
    assert inject.injected and inject.record.layers == [1]
    named = dict(sft.model.named_parameters())
    lora_b = [p for n, p in named.items() if ".lora_B.inflect." in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: it trained
    assert frozen and all(torch.equal(named[n], v) for n, v in frozen.items())  # the backbone did not move
    assert all(".layers.1." in n for n in named if ".lora_" in n)
    assert (tmp_path / "export" / "inflect_adapters" / "adapter_config.json").is_file()
