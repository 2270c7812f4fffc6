"""Quiet output: the commands print progress and results; library noise shows only with --verbose."""

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest
from _data import write_invented_data

from lightning_inflect.experiments.quiet import NOISE_LOGGERS, is_quiet, quiet_libraries

NOISE = {
    "transformers' load report of the new head": "LOAD REPORT",
    "transformers' loading bar": "Loading weights",
    "Lightning's tips": "💡 Tip",
    "Lightning's device lines": "GPU available",
    "the harness has no validation loader on purpose": "but have no `val_dataloader`",
}


def test_the_transfer_command_is_quiet_unless_verbose(tmp_path):
    """The real command in fresh processes (warnings and log handlers as a user's terminal gets them), both at once."""
    from lightning_inflect.experiments import minilm_path

    data_dir = write_invented_data(tmp_path / "data")  # what is printed does not depend on the sentences
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": ""}
    runs = {}
    for flags in ([], ["--verbose"]):
        out = tmp_path / ("verbose" if flags else "quiet")
        args = ["transfer", "--strategy", "full", "--source-ckpt", str(minilm_path()), "--preset", "tiny"]
        args += ["--out", str(out), "--data-dir", str(data_dir), *flags]
        command = [sys.executable, "-m", "lightning_inflect", *args]
        runs[bool(flags)] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    printed = {verbose: run.communicate(timeout=300)[0].decode() for verbose, run in runs.items()}
    for verbose, run in runs.items():
        assert run.returncode == 0, printed[verbose]
    for what, text in NOISE.items():
        assert text not in printed[False], f"{what} shown without --verbose:\n{printed[False]}"
        assert text in printed[True], f"{what} missing with --verbose:\n{printed[True]}"
    for verbose in (False, True):  # progress and results either way
        assert "Epoch 0: 100%" in printed[verbose] and '"test_acc":' in printed[verbose]
    assert not re.search(r"\.py:\d+: ", printed[False]), printed[False]  # no warning at all (they name their line)


def test_quiet_block_restores_everything_also_on_errors():
    from transformers.utils import logging as hf_logging

    loggers = [logging.getLogger(name) for name in NOISE_LOGGERS]
    levels, filters, bars = [lg.level for lg in loggers], list(warnings.filters), hf_logging.is_progress_bar_enabled()
    with pytest.raises(KeyError), quiet_libraries():
        assert is_quiet() and not hf_logging.is_progress_bar_enabled()
        assert all(lg.getEffectiveLevel() >= logging.WARNING for lg in loggers)
        raise KeyError("boom")
    assert not is_quiet() and hf_logging.is_progress_bar_enabled() == bars
    assert [lg.level for lg in loggers] == levels and warnings.filters == filters


def test_load_report_left_out_for_a_new_head_only(tmp_path, caplog):
    """A backbone loaded as a classifier: no report for the new head; a warning when the backbone lacks weights."""
    from transformers import BertConfig, BertModel

    from lightning_inflect.experiments.models import load_classifier

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(tmp_path / "backbone")
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "no-pooler")
    reports = _Records()
    logging.getLogger("transformers").addHandler(reports)
    try:
        with quiet_libraries(), caplog.at_level(logging.WARNING, logger="lightning_inflect"):
            load_classifier(tmp_path / "backbone")
            assert reports.messages == [] and caplog.messages == []
            load_classifier(tmp_path / "no-pooler")
            assert reports.messages == []
            (warning,) = caplog.messages
            assert "bert.pooler.dense.weight" in warning and "--verbose" in warning
        load_classifier(tmp_path / "backbone")  # outside a quiet block: transformers' own report
        assert len(reports.messages) == 1 and "LOAD REPORT" in reports.messages[0]
    finally:
        logging.getLogger("transformers").removeHandler(reports)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
