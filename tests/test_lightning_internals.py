"""Lightning's private attributes are read in one module only, each behind a function with a safe fallback."""

from __future__ import annotations

import re
from pathlib import Path

from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

from lightning_inflect.callbacks.lightning_internals import callback_state_in_checkpoint, tensor_parallel_size

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_inflect"
INTERNALS = PACKAGE / "callbacks" / "lightning_internals.py"

# Lightning's private names we need (each documented in lightning_internals.py with the public API it lacks), and
# any other private attribute of a Trainer or a strategy, or private import from Lightning.
PRIVATE = re.compile(
    r"_checkpoint_connector|_loaded_checkpoint|_METADATA_FILENAME|_tensor_parallel_size"
    r"|\b(?:trainer|strategy)\._[a-z]\w*|from (?:lightning|pytorch_lightning)(?:\.[\w.]+)? import \(?\s*_\w+"
)


def test_lightnings_private_names_appear_only_in_lightning_internals():
    found = {
        f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if path != INTERNALS
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    }
    assert not found, sorted(found)
    assert len(set(PRIVATE.findall(INTERNALS.read_text()))) >= 4  # the pattern does match where they are read


def test_tensor_parallel_size_of_real_strategies():
    assert tensor_parallel_size(DDPStrategy()) == 1
    assert tensor_parallel_size(ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=2)) == 2
    assert tensor_parallel_size(ModelParallelStrategy()) == "auto"
    assert tensor_parallel_size(object()) == 1  # a strategy without the attribute: no tensor parallelism


class _Trainer:  # a Trainer before Lightning's checkpoint connector exists, resuming from a file
    def __init__(self, ckpt_path):
        self.ckpt_path = ckpt_path


def test_callback_state_is_read_from_the_checkpoint_file(tmp_path):
    import torch

    path = tmp_path / "a.ckpt"
    torch.save({"callbacks": {"Mine{}": {"history": {}}}, "state_dict": {}}, path)
    assert callback_state_in_checkpoint(_Trainer(str(path)), "Mine{}") == (True, {"history": {}})
    assert callback_state_in_checkpoint(_Trainer(str(path)), "Other{}") == (False, None)
    assert callback_state_in_checkpoint(_Trainer(None), "Mine{}") == (False, None)
