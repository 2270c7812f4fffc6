"""``data_dir="hf-hub"``: SST-2 and Rotten Tomatoes through the real ``datasets`` library.

There is no network here, so the one call that would reach the hub, :func:`datasets.load_dataset`, is replaced by
one that builds a real :class:`datasets.Dataset` with the hub's schema from the TSV files (GLUE's trailing space
included): the real ones where found, else invented rows in the same layout (``tests/_data.py``). Everything
after it, and the offline failure of the real ``load_dataset``, runs for real.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from _data import real_or_invented_data_dir

from lightning_inflect.experiments import (
    DATA_DIR_ENV_VAR,
    HUB_DATASETS,
    is_hub,
    load_from_hub,
    load_rotten_tomatoes,
    load_sst2,
    read_tsv,
)

datasets = pytest.importorskip("datasets", reason="the [hub] extra (pinned in requirements/ci.txt) is not installed")

HUB_SCHEMA = {  # repo -> (our folder, text column, label names, extra columns) as the hub publishes them
    "nyu-mll/glue": ("sst2", "sentence", ["negative", "positive"], True),
    "cornell-movie-review-data/rotten_tomatoes": ("rotten_tomatoes", "text", ["neg", "pos"], False),
}
OUR_SPLIT = {"validation": "dev"}  # hub split -> GLUE file name, for SST-2


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return real_or_invented_data_dir(tmp_path / "data")


@pytest.fixture
def fake_hub(monkeypatch, data_dir):
    calls: list[tuple[str, str | None, str]] = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        folder, column, names, glue = HUB_SCHEMA[path]
        if glue and name != "sst2":
            raise ValueError(f"BuilderConfig {name!r} not found.")
        file_split = OUR_SPLIT.get(split, split) if folder == "sst2" else split
        pairs = read_tsv(data_dir / folder / f"{file_split}.tsv")
        columns = {column: [t + (" " if glue else "") for t, _ in pairs], "label": [y for _, y in pairs]}
        features = {column: datasets.Value("string"), "label": datasets.ClassLabel(names=names)}
        if glue:
            columns["idx"], features["idx"] = list(range(len(pairs))), datasets.Value("int32")
        return datasets.Dataset.from_dict(columns, features=datasets.Features(features))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.mark.parametrize(
    ("loader", "split", "hub_call"),
    [
        (load_sst2, "train", ("nyu-mll/glue", "sst2", "train")),
        (load_sst2, "dev", ("nyu-mll/glue", "sst2", "validation")),
        (load_rotten_tomatoes, "train", ("cornell-movie-review-data/rotten_tomatoes", None, "train")),
        (load_rotten_tomatoes, "validation", ("cornell-movie-review-data/rotten_tomatoes", None, "validation")),
        (load_rotten_tomatoes, "test", ("cornell-movie-review-data/rotten_tomatoes", None, "test")),
    ],
)
def test_hub_pairs_equal_the_files(fake_hub, data_dir, loader, split, hub_call):
    from_hub = loader("hf-hub", split)
    assert fake_hub == [hub_call]
    assert from_hub == loader(data_dir, split)  # same text (trailing space removed), labels and order


def test_env_var_selects_the_hub_and_the_study_sees_the_same_data(fake_hub, data_dir, monkeypatch):
    from lightning_inflect.experiments.config import PRESETS
    from lightning_inflect.experiments.demo import demo_data
    from lightning_inflect.experiments.study_data import load_study_data

    monkeypatch.setenv(DATA_DIR_ENV_VAR, "hf-hub")
    assert is_hub(None) and load_sst2(None, "dev") == load_sst2(data_dir, "dev")
    cfg = replace(PRESETS["cpu-small"], data_dir=None)
    assert load_study_data(cfg).counts == load_study_data(replace(cfg, data_dir=str(data_dir))).counts
    demo = demo_data("hf-hub", sizes=(8, 4, 4))
    assert demo.real and demo.description.startswith("Data from the Hugging Face hub")
    assert all(pair in load_sst2(data_dir, "train") for pair in demo.source)


def test_bad_arguments_are_refused_before_the_hub(fake_hub):
    with pytest.raises(ValueError, match=r"`dataset` to be one of \['sst2', 'rotten_tomatoes'\] but got 'imdb'"):
        load_from_hub("imdb", "train")
    with pytest.raises(ValueError, match=r"`split` to be one of \['train', 'dev'\] but got 'test'"):
        load_from_hub("sst2", "test")
    assert fake_hub == []
    assert set(HUB_DATASETS) == {"sst2", "rotten_tomatoes"}


def test_without_the_datasets_library_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'lightning-inflect\[hub\]'") as excinfo:
        load_sst2("hf-hub", "dev")
    assert "sst2/{train,dev}.tsv" in str(excinfo.value)


def test_real_datasets_offline_with_empty_cache_says_what_to_do(tmp_path):
    """The real ``load_dataset`` in offline mode with nothing cached (a fresh process: ``datasets`` reads these
    variables when imported)."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    code = "from lightning_inflect.experiments import load_rotten_tomatoes as f; f('hf-hub', 'test')"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ConnectionError: Could not load split 'test' of cornell-movie-review-data/rotten_tomatoes")
    assert "pass a data directory holding" in last and "rotten_tomatoes/{train,validation,test}.tsv" in last
