"""The monitors under ``torch.compile``: what dynamo compiles and runs with them attached is what it compiles and
runs without them, and the values equal eager's.

Three ways users compile: the HF model wrapped inside the module (``self.model = torch.compile(hf)``), compiled in
place (``hf.compile()``), and the whole LightningModule (``torch.compile(module)``, which Lightning unwraps with
``from_compiled`` and whose ``training_step``/``forward`` it runs compiled).

Graph breaks, guards and recompiles are decided by dynamo while it traces Python bytecode, before a backend sees
the FX graph, so counting them with the ``"eager"`` backend (which runs each captured graph as it is) gives the
numbers inductor would get, without compiling C++; the value test uses ``"aot_eager"`` for the AOT-autograd
backward.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from conftest import NO_DROPOUT, ClsModule, loader, make_trainer, tiny_model
from torch._dynamo.utils import counters

from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor

pytestmark = pytest.mark.skipif(
    not hasattr(torch.compiler, "set_stance"), reason="compile support needs torch.compiler.set_stance (torch>=2.6)"
)


class WholeModule(ClsModule):
    """A module whose training step goes through ``forward``, for ``torch.compile(module)``."""

    def forward(self, batch):
        return self.model(**batch).loss

    def training_step(self, batch, batch_idx):
        return self(batch)


class GraphCounter(pl.Callback):
    """Per optimizer step: how many compiled graphs ran, and the code of the graphs compiled so far."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}
        self.compiled: list[str] = []
        self._step = -1

    def backend(self, inner: str):
        from torch._dynamo.backends.registry import lookup_backend

        compile_fn = lookup_backend(inner)

        def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]):
            self.compiled.append(gm.code)
            fn = compile_fn(gm, example_inputs)

            def run(*args: Any) -> Any:
                self.calls[self._step] = self.calls.get(self._step, 0) + 1
                return fn(*args)

            return run

        return backend

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 2:  # every frame has been compiled on steps 0 and 1: from now on, none may be
            torch.compiler.set_stance("fail_on_recompile")  # (between steps: the monitors restore it after theirs)

    def on_train_end(self, trainer, pl_module):
        torch.compiler.set_stance("default")


def _monitors(every: int) -> list[pl.Callback]:
    return [AttentionEntropyMonitor(every), GradientNormMonitor(every), CKADriftMonitor(every)]


def _fit(tmp_path, variant: str, monitors: bool, steps: int = 8, every: int = 3, backend: str = "eager"):
    torch._dynamo.reset()
    counters.clear()
    hf = tiny_model("bert", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                    **NO_DROPOUT)  # fmt: skip
    hf.config.problem_type = "single_label_classification"  # else HF sets it on the first call: one recompile
    counter = GraphCounter()
    compile_backend = counter.backend(backend)
    module: Any
    if variant == "eager":
        module = ClsModule(hf)
    elif variant == "wrapped":
        module = ClsModule(torch.compile(hf, backend=compile_backend))
    elif variant == "in_place":
        hf.compile(backend=compile_backend)
        module = ClsModule(hf)
    else:
        module = torch.compile(WholeModule(hf), backend=compile_backend)
    callbacks = _monitors(every) if monitors else []
    trainer = make_trainer(tmp_path, [*callbacks, counter], max_steps=steps)
    try:
        trainer.fit(module, loader(n=8 * steps, batch_size=8))
    finally:
        torch.compiler.set_stance("default")
    graph_breaks = sum(counters["graph_break"].values())
    return counter, graph_breaks, counters["stats"]["unique_graphs"], callbacks


@pytest.mark.parametrize("variant", ["wrapped", "in_place", "whole"])
def test_monitors_add_no_graph_break_graph_or_recompile(tmp_path, variant):
    plain, plain_breaks, plain_graphs, _ = _fit(tmp_path / "plain", variant, monitors=False)
    watched, breaks, graphs, monitors = _fit(tmp_path / "watched", variant, monitors=True)  # logs at steps 0, 3, 6
    assert (breaks, graphs) == (plain_breaks, plain_graphs)
    assert plain_breaks == 0 and plain_graphs >= 1
    assert watched.compiled == plain.compiled  # the very same graphs (fail_on_recompile from step 2 in both runs)
    logging = {0, 3, 6}
    for step in range(8):  # non-logging steps run exactly what the plain run runs; logging steps run eagerly
        assert watched.calls.get(step, 0) == (0 if step in logging else plain.calls[step]), step
    assert torch.compiler.set_stance("default").prev.stance == "default"  # the user's stance is back
    assert all(len(h) == 3 and not h.full().isnan().any() for m in monitors for h in m.history.values())


def test_compiled_variants_do_not_grow_with_logging_steps(tmp_path):
    short, _, short_graphs, _ = _fit(tmp_path / "short", "wrapped", monitors=True, steps=4, every=2)  # logs 0, 2
    long, _, long_graphs, _ = _fit(tmp_path / "long", "wrapped", monitors=True, steps=10, every=2)  # 5 logs
    assert long_graphs == short_graphs >= 1 and long.compiled == short.compiled
    assert sorted(long.calls) == [1, 3, 5, 7, 9] and sorted(short.calls) == [1, 3]  # logging steps run eagerly


def test_compiled_values_equal_eager(tmp_path):
    _, _, _, eager = _fit(tmp_path / "eager", "eager", monitors=True, steps=5, every=2)
    for variant in ("wrapped", "whole"):
        _, _, _, compiled = _fit(tmp_path / variant, variant, monitors=True, steps=5, every=2, backend="aot_eager")
        for e, c in zip(eager, compiled):
            for metric, hist in e.history.items():
                assert len(hist) == 3 and not hist.full().isnan().any(), metric
                torch.testing.assert_close(c.history[metric].full(), hist.full(), rtol=1e-4, atol=1e-6)
