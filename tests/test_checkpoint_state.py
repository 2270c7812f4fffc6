"""check_monitor_state on its own: a monitor's saved state is read back whole, or refused with one clear error."""

from __future__ import annotations

import pytest
import torch

from lightning_inflect.checkpoint_state import check_monitor_state
from lightning_inflect.validation import CheckpointStateError

LAYERS = [0, 1, 2]


def _good() -> dict:
    hist = {"blocks": LAYERS, "steps": [0, 2], "values": [[0.1, 0.2, float("nan")], [0.3, 0.4, 0.5]]}
    probe = [{"input_ids": torch.ones(4, 6, dtype=torch.long), "attention_mask": torch.ones(4, 6)}]
    return {"history": {"cka_drift": hist}, "last_probe_step": 2, "probe": probe,
            "reference": [torch.zeros(3, 4, 8)], "reference_step": 0}  # fmt: skip


def _check(state) -> None:
    check_monitor_state(state, owner="CKADriftMonitor (state key 'k')", metrics=["cka_drift"], layers=LAYERS,
                        checkpoint="last.ckpt")  # fmt: skip


def test_a_saved_state_passes_also_rank_probes_and_old_formats():
    _check(_good())
    ranks = {**_good(), "probe": {"ranks": [_good()["probe"], _good()["probe"]]}, "reference": [torch.zeros(3, 8, 8)]}
    _check(ranks)  # the reference holds the union of the ranks' examples
    _check({"history": {}})  # before the first logging step
    _check({**_good(), "reference": {0: torch.zeros(4, 8)}})  # version 0.1: the monitor takes a new reference


DAMAGED = {
    "a string": ("history", "`state` is 'history'"),
    "a list": ([1, 2], "`state` is [1, 2]"),
    "a tensor": (torch.zeros(2), "`state` is a tensor of shape (2,)"),
    "wrong keys": ({"histories": {}}, "expected a dict with 'history'"),
    "unknown key": ({**_good(), "extra": 1}, "expected a dict with 'history'"),
    "unknown metric": ({"history": {"attn_entropy": {}}}, "expected a dict from each of ['cka_drift']"),
    "history of a list": ({"history": {"cka_drift": [1]}}, "`history.cka_drift` is [1]"),
    "other blocks": ({"history": {"cka_drift": {"blocks": [0, 1], "steps": [], "values": []}}}, "monitored blocks"),
    "short row": ({"history": {"cka_drift": {"blocks": LAYERS, "steps": [0], "values": [[0.1]]}}}, "3 numbers"),
    "rows and steps": ({"history": {"cka_drift": {"blocks": LAYERS, "steps": [0, 1], "values": [[1, 2, 3]]}}},
                       "2 steps"),
    "text step": ({**_good(), "last_probe_step": "two"}, "`last_probe_step` is 'two'"),
    "reference shape": ({**_good(), "reference": [torch.zeros(2, 4, 8)]}, "tensor of shape (3 blocks, 4, hidden)"),
    "reference size": ({**_good(), "reference": [torch.zeros(3, 5, 8)]}, "`reference[0]` is a tensor of shape (3,"),
    "reference count": ({**_good(), "reference": [torch.zeros(3, 4, 8)] * 2}, "one tensor per probe batch (1)"),
    "probe of a string": ({**_good(), "probe": "ids"}, "`probe` is 'ids'"),
    "probe rows": ({**_good(), "probe": [{"input_ids": torch.ones(4, 6), "attention_mask": torch.ones(3, 6)}]},
                   "one first (batch) dimension"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_states_name_the_monitor_the_checkpoint_and_what_was_expected(case):
    state, expected = DAMAGED[case]
    with pytest.raises(CheckpointStateError) as err:
        _check(state)
    message = str(err.value)
    assert message.startswith("CKADriftMonitor (state key 'k') cannot resume from 'last.ckpt'"), message
    assert expected in message, message
    assert isinstance(err.value, ValueError)
