"""MetricHistory: the one history type the monitors keep and the selectors and the trigger read."""

import math

import pytest
import torch

from lightning_inflect.history import MetricHistory
from lightning_inflect.selection import SKI, GradientProbe, history_tensor

NAN = float("nan")


def test_rows_window_last_full_and_spread_over_blocks():
    h = MetricHistory(blocks=(1, 3))
    for step, row in ((0, [1.0, 2.0]), (5, [3.0, NAN]), (10, [5.0, 6.0])):
        h.append(step, row)
    assert len(h) == 3 and h.steps == [0, 5, 10]
    assert h.full().shape == (3, 2) and h.full().dtype == torch.float64
    assert (
        torch.allclose(h.window(2), h.full()[1:], equal_nan=True)
        and h.window(9).shape == (3, 2)
        and h.window(0).shape == (0, 2)
    )
    assert h.last().tolist() == [5.0, 6.0]
    spread = h.over(num_layers=4)
    assert spread.blocks == (0, 1, 2, 3) and spread.steps == h.steps
    assert [[v if not math.isnan(v) else None for v in r] for r in spread.rows] == [
        [None, 1.0, None, 2.0], [None, 3.0, None, None], [None, 5.0, None, 6.0],
    ]  # fmt: skip


def test_state_round_trip_and_the_old_format():
    h = MetricHistory((0, 2), [3], [[1.5, 2.5]])
    assert MetricHistory.from_state(h.state()) == h
    old = {"steps": [3], "values": [[1.5, 2.5]]}  # version 0.1 stored no blocks
    assert MetricHistory.from_state(old, blocks=[0, 2]) == h
    with pytest.raises(ValueError, match="name its `blocks`"):
        MetricHistory.from_state(old)


def test_rows_must_match_the_blocks():
    with pytest.raises(ValueError, match="Expected 2 values \\(one per block\\) but got 3"):
        MetricHistory((0, 1)).append(0, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="one row of 2 values"):
        MetricHistory((0, 1), [0, 1], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="nothing was logged"):
        MetricHistory((0,)).last()


def test_selectors_read_a_metric_history_like_the_plain_mapping_it_stands_for():
    ent = MetricHistory((0, 1, 2, 3), [0, 10], [[2.0, 1.0, 1.5, 2.0], [2.0, 0.5, 1.5, 2.0]])
    grads = MetricHistory((1, 2, 3), [9], [[1.0, 0.1, 0.1]])  # a monitor of blocks 1-3 only
    typed = {"attn_entropy": ent, "act_grad_norm": grads, "param_grad_norm": grads}
    plain = {
        "attn_entropy": {"steps": ent.steps, "values": ent.rows},
        "act_grad_norm": {"steps": [9], "values": [[NAN, 1.0, 0.1, 0.1]]},
        "param_grad_norm": {"steps": [9], "values": [[NAN, 1.0, 0.1, 0.1]]},
    }
    for selector in (SKI(window=2), GradientProbe(k=1)):
        a, b = selector.select(typed, 4), selector.select(plain, 4)
        assert a.layers == b.layers and a.reason == b.reason
        assert str(a.scores) == str(b.scores)  # NaN where a block was not monitored, in both
    assert torch.equal(history_tensor(typed, "attn_entropy", 4, window=2), torch.tensor([2.0, 0.75, 1.5, 2.0]).double())
