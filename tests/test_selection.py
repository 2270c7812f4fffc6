"""Layer selectors: hand-made histories with a known answer, properties over random histories, argument checks."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_inflect.selection import (
    SKI,
    CKAImportance,
    GradientProbe,
    Manual,
    RandomK,
    Selection,
    Selector,
    TopK,
    Uniform,
    history_tensor,
    local_maxima_band,
    minmax,
    ski_scores,
)

NAN = float("nan")


def hist(*rows, steps=None):
    """One metric's history from rows of per-block values, logged at steps 100, 200, ... unless given."""
    return {"steps": list(steps or range(100, 100 * len(rows) + 1, 100)), "values": [list(r) for r in rows]}


# entropy dips at block 4; the activation gradient falls a hundredfold crossing from block 5 back into block 4
ENTROPY_DIP_4 = [2.0, 2.0, 2.0, 2.0, 0.5, 2.0, 2.0, 2.0]
GRAD_STEP_5_TO_4 = [0.01, 0.01, 0.01, 0.01, 0.01, 1.0, 1.0, 1.0]


def inflection_history(entropy=ENTROPY_DIP_4, grads=GRAD_STEP_5_TO_4, n_rows=1):
    return {"attn_entropy": hist(*[entropy] * n_rows), "act_grad_norm": hist(*[grads] * n_rows)}


# ---------------------------------------------------------------------------------------------------------------------
# pure functions


def test_minmax_constant_nan_and_rounding():
    assert minmax(torch.tensor([3.0, 3.0, 3.0])).tolist() == [0.0, 0.0, 0.0]
    # a spread at rounding level is a constant, not a signal to amplify to [0, 1]
    x = torch.tensor([0.3, 0.1 + 0.2, 0.3], dtype=torch.float64)
    assert minmax(x).tolist() == [0.0, 0.0, 0.0]
    out = minmax(torch.tensor([1.0, NAN, 3.0, math.inf]))
    assert out[[0, 2]].tolist() == [0.0, 1.0]
    assert out[[1, 3]].isnan().all()
    assert minmax(torch.tensor([NAN, NAN])).isnan().all()
    assert minmax(torch.tensor([1, 3])).tolist() == [0.0, 1.0]


def test_ski_scores_known_answer_and_weights():
    h, g = torch.tensor(ENTROPY_DIP_4), torch.tensor(GRAD_STEP_5_TO_4)
    scores = ski_scores(h, g, a=0.5)
    assert scores.argmax().item() == 4
    assert scores[4].item() == pytest.approx(1.0)
    torch.testing.assert_close(ski_scores(h, g, a=1.0), minmax(-h))
    # a = 0: the gradient term alone; drop_4 = log g_5 - log g_4 is the only non-zero drop
    expected = torch.zeros(8)
    expected[4] = 1.0
    torch.testing.assert_close(ski_scores(h, g, a=0.0), expected)
    # a term with weight 0 is not read: NaN there does not spread
    assert not ski_scores(h, torch.full((8,), NAN), a=1.0).isnan().any()
    assert not ski_scores(torch.full((8,), NAN), g, a=0.0).isnan().any()


def test_ski_scores_invariant_to_affine_entropy_and_scaled_gradients():
    gen = torch.Generator().manual_seed(0)
    h, g = torch.rand(6, generator=gen, dtype=torch.float64), torch.rand(6, generator=gen, dtype=torch.float64) + 0.1
    torch.testing.assert_close(ski_scores(3 * h + 7, 1e-3 * g, a=0.3), ski_scores(h, g, a=0.3))


def test_ski_scores_zero_gradient_is_the_largest_drop_and_finite():
    scores = ski_scores(torch.ones(3), torch.tensor([0.0, 1.0, 1.0]), a=0.0)
    assert torch.isfinite(scores).all()
    assert scores.tolist() == [1.0, 0.0, 0.0]


def test_ski_scores_shape_errors():
    with pytest.raises(ValueError, match="same length"):
        ski_scores(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="same length"):
        ski_scores(torch.ones(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"Expected argument `a` to be a number in \[0.0, 1.0\] but got 2"):
        ski_scores(torch.ones(3), torch.ones(3), a=2)


@pytest.mark.parametrize(
    ("scores", "band", "expected"),
    [
        ([0.0, 0.9, 0.2, 0.1, 0.1, 0.3, 0.8, 0.1], 1, [0, 1, 2, 5, 6, 7]),
        ([0.0, 0.9, 0.2, 0.1, 0.1, 0.3, 0.8, 0.1], 0, [1, 6]),
        ([0.9, 0.1, 0.5], 0, [0, 2]),  # edges compare with their single neighbour
        ([0.9, 0.1, 0.5], 5, [0, 1, 2]),  # band clipped to range
        ([0.0, 0.7, 0.7, 0.0], 0, [1, 2]),  # two-block plateau: >= both, > one
        ([0.0, 0.7, 0.7, 0.7, 0.0], 0, [1, 3]),  # plateau middle is > neither neighbour
        ([0.4, 0.4, 0.4], 1, []),  # flat
        ([0.0, 0.0, 0.0], 1, []),
        ([NAN, 0.9, 0.2], 0, [1]),  # a NaN neighbour counts as no neighbour
        ([NAN, 0.5, NAN], 0, []),  # no neighbour at all: not a maximum
        ([0.5], 1, []),
    ],
)
def test_local_maxima_band_table(scores, band, expected):
    assert local_maxima_band(scores, band) == expected
    assert local_maxima_band(torch.tensor(scores), band) == expected


def test_history_tensor_window_nan_and_nonfinite():
    h = {"m": hist([9.0, 9.0, 9.0], [1.0, NAN, math.inf], [3.0, 2.0, NAN])}
    assert history_tensor(h, "m", 3, window=1)[:2].tolist() == [3.0, 2.0]
    out = history_tensor(h, "m", 3, window=2)
    assert out[:2].tolist() == [2.0, 2.0]
    assert out[2].isnan()  # inf ignored like NaN; nothing left
    assert history_tensor(h, "m", 3, window=10).tolist() == [13 / 3, 5.5, 9.0]
    assert history_tensor(h, "m", 3, window=3).dtype == torch.float64


def test_history_tensor_accepts_missing_steps_and_tensor_rows():
    h = {"m": {"values": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}}
    assert history_tensor(h, "m", 2, window=2).tolist() == [2.0, 3.0]


@pytest.mark.parametrize(
    ("history", "match"),
    [
        ({"m": hist([1.0, 2.0])}, r"2 values at step 100 but `num_layers` is 3: record one value per block, NaN"),
        ({"m": {"steps": [1, 2], "values": [[1.0, 2.0, 3.0]]}}, "2 steps but 1 rows"),
        ({"m": [[1.0, 2.0, 3.0]]}, "mapping with 'steps' and 'values'"),
        ({"m": hist()}, r"Metric `m` has no finite values \(no logs yet\)"),
        ({"m": hist([NAN, NAN, NAN])}, r"Metric `m` has no finite values in its last log \(step 100\)"),
        ({"x": hist([1.0, 2.0, 3.0])}, r"Metric `m` is missing from the history \(it has \['x'\]\)"),
    ],
)
def test_history_tensor_errors(history, match):
    with pytest.raises(ValueError, match=match):
        history_tensor(history, "m", 3)


# ---------------------------------------------------------------------------------------------------------------------
# SKI


@pytest.mark.parametrize(("band", "expected"), [(0, (4,)), (1, (3, 4, 5)), (2, (2, 3, 4, 5, 6))])
def test_ski_picks_the_block_where_entropy_dips_and_gradient_drops(band, expected):
    sel = SKI(band=band).select(inflection_history(n_rows=3), num_layers=8)
    assert sel.layers == expected
    assert len(sel.scores) == 8
    assert max(sel.scores) == sel.scores[4] == pytest.approx(1.0)
    assert sel.reason == (
        f"SKI a=0.5 over logs at steps 100-300: local maxima at blocks 4 (scores 1), band +-{band} -> {list(expected)}"
    )


def test_ski_a_weights_entropy_against_gradient():
    # entropy points at block 2, the gradient drop at block 5
    history = inflection_history(entropy=[2.0, 2.0, 0.5, 2.0, 2.0, 2.0, 2.0, 2.0], grads=[0.01] * 5 + [1.0] * 3)
    assert SKI(a=1.0, band=0).select(history, 8).layers == (2,)
    assert SKI(a=0.0, band=0).select(history, 8).layers == (4,)
    assert SKI(a=0.5, band=0).select(history, 8).layers == (2, 4)
    # a metric with weight 0 is neither required nor read
    assert SKI(a=1.0).requires == ("attn_entropy",)
    assert SKI(a=0.0).requires == ("act_grad_norm",)
    assert SKI(a=1.0, band=0).select({"attn_entropy": history["attn_entropy"]}, 8).layers == (2,)
    assert SKI(a=0.0, band=0).select({"act_grad_norm": history["act_grad_norm"]}, 8).layers == (4,)


def test_ski_window_ignores_old_rows():
    old = [2.0, 0.5, 2.0, 2.0, 2.0, 2.0]
    new = [2.0, 2.0, 2.0, 2.0, 0.5, 2.0]
    history = {"attn_entropy": hist(old, old, old, new, new)}
    sel = SKI(a=1.0, window=2, band=0).select(history, 6)
    assert sel.layers == (4,)
    assert "steps 400-500" in sel.reason
    assert SKI(a=1.0, window=5, band=0).select(history, 6).layers == (1, 4)  # both dips in the mean
    assert SKI(a=1.0, window=5, top_k=1).select(history, 6).layers == (1,)  # the old one, three rows of five


def test_ski_reports_each_metric_window_when_steps_differ():
    history = {
        "attn_entropy": hist(ENTROPY_DIP_4, steps=[50]),
        "act_grad_norm": hist(GRAD_STEP_5_TO_4, GRAD_STEP_5_TO_4, steps=[40, 50]),
    }
    sel = SKI(window=2, band=0).select(history, 8)
    assert sel.layers == (4,)
    assert "over attn_entropy at step 50 and act_grad_norm at steps 40-50:" in sel.reason


def test_ski_nan_columns_are_unscored_and_never_peaks():
    entropy = [NAN, 2.0, 2.0, 0.5, 2.0, 2.0]
    history = {"attn_entropy": hist(entropy), "act_grad_norm": hist([1.0, 1.0, 1.0, 1.0, 1.0, NAN])}
    sel = SKI(band=0).select(history, 6)
    assert math.isnan(sel.scores[0])
    assert math.isnan(sel.scores[4])  # drop_4 = log g_5 - log g_4 needs block 5's gradient
    assert math.isnan(sel.scores[5])  # the last block's drop is 0 only where its gradient was measured
    assert sel.layers == (3,)
    assert "(blocks [0, 4, 5] not scored: a metric is NaN there)" in sel.reason


@pytest.mark.parametrize("top_k", [None, 2])
def test_ski_flat_scores_select_nothing_and_say_so(top_k):
    history = {"attn_entropy": hist([1.5] * 5), "act_grad_norm": hist([0.2] * 5)}
    sel = SKI(top_k=top_k).select(history, 5)
    assert sel.layers == ()
    assert sel.scores == (0.0,) * 5
    assert "flat scores" in sel.reason
    assert "selecting none" in sel.reason


def test_ski_top_k_with_ties_prefers_lower_blocks():
    history = {"attn_entropy": hist([2.0, 1.0, 2.0, 1.0, 2.0, 1.0])}
    sel = SKI(a=1.0, top_k=2).select(history, 6)
    assert sel.layers == (1, 3)
    assert "top-2 by score: blocks 1 (1), 3 (1) -> [1, 3]" in sel.reason


# ---------------------------------------------------------------------------------------------------------------------
# score-less and metric top-k rules


@pytest.mark.parametrize("cls", [CKAImportance, GradientProbe])
def test_metric_top_k_tie_breaking_window_and_nan(cls):
    metric = cls.metric
    sel = cls(k=2).select({metric: hist([1.0, 3.0, 2.0, 3.0, 3.0])}, 5)
    assert sel.layers == (1, 3)  # three blocks tie at 3: the lower two win
    assert sel.scores == (1.0, 3.0, 2.0, 3.0, 3.0)
    assert f"top-2 by {metric}: blocks 1 (3), 3 (3) -> [1, 3]" in sel.reason
    # window: the old row is ignored with window=1, averaged in with window=2
    history = {metric: hist([0.0, 0.0, 9.0], [1.0, 2.0, 0.0])}
    assert cls(k=1).select(history, 3).layers == (1,)
    assert cls(k=1, window=2).select(history, 3).layers == (2,)
    # unmeasured blocks are never picked, and the reason says too few were measured
    sel = cls(k=3).select({metric: hist([NAN, 1.0, 2.0])}, 3)
    assert sel.layers == (1, 2)
    assert "only 2 of 3 blocks measured" in sel.reason


def test_rules_without_scores():
    assert TopK(k=2).select({}, 6) == Selection((4, 5), None, "TopK k=2: the last 2 of 6 blocks -> [4, 5]")
    assert Uniform().select({}, 3).layers == (0, 1, 2)
    assert Uniform().select({}, 3).scores is None
    assert Manual([-1, 0, 2]).select({}, 4).layers == (0, 2, 3)
    assert "layers=[-1, 0, 2]" in Manual([-1, 0, 2]).select({}, 4).reason


def test_random_k_deterministic_and_leaves_global_rng_alone():
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    first = RandomK(k=4, seed=0).select({}, 12)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    torch.manual_seed(123)
    random.seed(123)
    assert RandomK(k=4, seed=0).select({}, 12) == first  # global seeds do not matter
    assert first.layers == tuple(sorted(random.Random(0).sample(range(12), 4)))
    draws = {RandomK(k=4, seed=s).select({}, 12).layers for s in range(10)}
    assert len(draws) > 5  # different seeds give different blocks


def test_repr_eq_and_requires():
    assert repr(SKI()) == "SKI(a=0.5, window=3, band=1, top_k=None)"
    assert repr(CKAImportance()) == "CKAImportance(k=4, window=1)"
    assert repr(GradientProbe(k=2)) == "GradientProbe(k=2, window=1)"
    assert repr(TopK()) == "TopK(k=4)"
    assert repr(Uniform()) == "Uniform()"
    assert repr(RandomK(seed=3)) == "RandomK(k=4, seed=3)"
    assert repr(Manual([1, 2])) == "Manual(layers=(1, 2))"
    assert SKI(a=0.5) == SKI() != SKI(a=0.4)
    assert len({SKI(), SKI(), Uniform()}) == 2
    assert SKI().requires == ("attn_entropy", "act_grad_norm")
    assert SKI.requires == ("attn_entropy", "act_grad_norm")  # also readable from the class
    assert CKAImportance().requires == ("cka_importance",)
    assert GradientProbe().requires == ("param_grad_norm",)
    assert (CKAImportance.requires, GradientProbe.requires) == (("cka_importance",), ("param_grad_norm",))
    assert TopK().requires == Uniform().requires == RandomK().requires == Manual([0]).requires == ()
    assert all(isinstance(s, Selector) for s in (SKI(), CKAImportance(), TopK(), Uniform(), RandomK(), Manual([0])))


# ---------------------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SKI(a=1.5), r"Expected argument `a` to be a number in \[0.0, 1.0\] but got 1.5\."),
        (lambda: SKI(a=-0.1), r"argument `a` to be a number in \[0.0, 1.0\] but got -0.1"),
        (lambda: SKI(a=NAN), r"argument `a` to be a number in \[0.0, 1.0\] but got nan"),
        (lambda: SKI(a=True), r"argument `a` to be a number in \[0.0, 1.0\] but got True"),
        (lambda: SKI(a="0.5"), r"argument `a` to be a number in \[0.0, 1.0\] but got '0.5'"),
        (lambda: SKI(window=0), r"Expected argument `window` to be a positive int but got 0\."),
        (lambda: SKI(window=1.0), r"argument `window` to be a positive int but got 1.0"),
        (lambda: SKI(band=-1), r"Expected argument `band` to be a non-negative int but got -1\."),
        (lambda: SKI(top_k=0), r"Expected argument `top_k` to be None \(local maxima\) or a positive int but got 0\."),
        (lambda: CKAImportance(k=0), r"Expected argument `k` to be a positive int but got 0\."),
        (lambda: CKAImportance(window=-2), r"argument `window` to be a positive int but got -2"),
        (lambda: GradientProbe(k=2.5), r"argument `k` to be a positive int but got 2.5"),
        (lambda: GradientProbe(window=None), r"argument `window` to be a positive int but got None"),
        (lambda: TopK(k=-1), r"argument `k` to be a positive int but got -1"),
        (lambda: RandomK(k=0), r"argument `k` to be a positive int but got 0"),
        (lambda: RandomK(seed="a"), r"Expected argument `seed` to be an int but got 'a'\."),
        (lambda: Manual([]), r"Expected argument `layers` to be a non-empty sequence of distinct int .* got \[\]\."),
        (lambda: Manual([1, 1]), r"argument `layers` to be a non-empty sequence of distinct .* got \[1, 1\]"),
        (lambda: Manual([0.5]), r"argument `layers` .* got \[0.5\]"),
        (lambda: Manual(3), r"argument `layers` .* got 3"),
        (lambda: Manual("01"), r"argument `layers` .* got '01'"),
        (lambda: local_maxima_band([1.0], band=-1), r"argument `band` to be a non-negative int but got -1"),
        (lambda: Selection((2, 1), None, ""), "sorted, distinct, non-negative"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("selector", "num_layers", "match"),
    [
        (TopK(k=5), 4, r"`TopK\(k=5\)` asks for k=5 blocks but the model has only 4 .* use k <= 4, or `Uniform\(\)`"),
        (RandomK(k=5), 4, r"`RandomK\(k=5, seed=0\)` asks for k=5 blocks"),
        (CKAImportance(k=5), 4, r"`CKAImportance\(k=5, window=1\)` asks for k=5 blocks"),
        (SKI(top_k=5), 4, r"asks for top_k=5 blocks .* use top_k <= 4"),
        (Manual([0, 4]), 4, r"names blocks \[4\], outside \[-4, 4\)"),
        (Manual([-5]), 4, r"names blocks \[-5\], outside \[-4, 4\)"),
        (Manual([1, -3]), 4, r"names blocks \[1\] more than once for `num_layers`=4"),
        (Uniform(), 0, r"Expected argument `num_layers` to be a positive int but got 0\."),
    ],
)
def test_select_checks_against_num_layers(selector, num_layers, match):
    with pytest.raises(ValueError, match=match):
        selector.select({}, num_layers)


@pytest.mark.parametrize(
    ("selector", "metric", "monitor"),
    [
        (SKI(), "attn_entropy", "AttentionEntropyMonitor"),
        (SKI(a=0.0), "act_grad_norm", "GradientNormMonitor` with 'activation'"),
        (GradientProbe(), "param_grad_norm", "GradientNormMonitor` with 'parameter'"),
        (CKAImportance(), "cka_importance", "InjectionCallback`'s own probe"),
    ],
)
def test_missing_or_empty_metric_names_the_monitor(selector, metric, monitor):
    with pytest.raises(ValueError, match=rf"{metric}`, which is missing from the history .*{monitor}"):
        selector.select({}, 4)
    empty = {m: hist([NAN] * 4, [NAN] * 4) for m in selector.requires}
    with pytest.raises(
        ValueError,
        match=rf"metric `{metric}` has no finite values in its last .*\. It is .*{monitor}",
    ):
        selector.select(empty, 4)


# ---------------------------------------------------------------------------------------------------------------------
# properties over random histories


METRICS = ("attn_entropy", "act_grad_norm", "param_grad_norm", "cka_importance")


@st.composite
def histories(draw):
    num_layers = draw(st.integers(1, 10))
    n_rows = draw(st.integers(1, 4))
    value = st.one_of(st.floats(0.0, 10.0), st.just(NAN), st.just(0.0))
    history = {}
    for metric in METRICS:
        rows = draw(
            st.lists(st.lists(value, min_size=num_layers, max_size=num_layers), min_size=n_rows, max_size=n_rows)
        )
        rows[-1][draw(st.integers(0, num_layers - 1))] = draw(st.floats(0.01, 10.0))  # something was measured
        history[metric] = hist(*rows)
    return num_layers, history


@st.composite
def selectors(draw, num_layers):
    k = st.integers(1, num_layers)
    window = st.integers(1, 5)
    return [
        SKI(
            a=draw(st.floats(0.0, 1.0)),
            window=draw(window),
            band=draw(st.integers(0, 3)),
            top_k=draw(st.none() | k),
        ),
        CKAImportance(k=draw(k), window=draw(window)),
        GradientProbe(k=draw(k), window=draw(window)),
        TopK(k=draw(k)),
        Uniform(),
        RandomK(k=draw(k), seed=draw(st.integers(-(2**31), 2**31))),
        Manual(
            draw(st.lists(st.integers(-num_layers, num_layers - 1), min_size=1, unique_by=lambda i: i % num_layers))
        ),
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_selector_returns_sorted_distinct_in_range(data):
    num_layers, history = data.draw(histories())
    for selector in data.draw(selectors(num_layers)):
        sel = selector.select(history, num_layers)
        assert list(sel.layers) == sorted(set(sel.layers)), selector
        assert all(0 <= i < num_layers for i in sel.layers), selector
        assert sel.scores is None or len(sel.scores) == num_layers, selector
        assert isinstance(sel.reason, str)
        assert sel.reason.startswith(type(selector).__name__), sel.reason
        assert sel.reason.endswith(f"-> {list(sel.layers)}") if sel.layers else "selecting none" in sel.reason
        if isinstance(selector, (TopK, RandomK)):
            assert len(sel.layers) == selector.k
        if isinstance(selector, SKI) and sel.layers:
            s = sel.scores
            assert all(0.0 <= v <= 1.0 + 1e-12 for v in s if not math.isnan(v))
            if selector.top_k is not None:
                assert s.index(max(v for v in s if not math.isnan(v))) in sel.layers
            else:  # every pick lies within the band of a block that beats or ties its scored neighbours
                peaks = [
                    j
                    for j in range(num_layers)
                    if not math.isnan(s[j])
                    and all(s[j] >= s[n] for n in (j - 1, j + 1) if 0 <= n < num_layers and not math.isnan(s[n]))
                ]
                assert all(any(abs(i - j) <= selector.band for j in peaks) for i in sel.layers)
        again = selector.select(history, num_layers)
        assert (again.layers, again.reason) == (sel.layers, sel.reason)


def test_selection_does_not_import_lightning_peft_or_transformers():
    code = (
        "import sys, lightning_inflect.selection\n"
        "roots = ('lightning', 'pytorch_lightning', 'peft', 'transformers')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in roots]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_gradient_suppression_trigger_counts_consecutive_logs_and_resets():
    import math

    from lightning_inflect.selection import GradientSuppressionTrigger

    t = GradientSuppressionTrigger(threshold=math.log(2), patience=3)
    halving = [1.0, 2.0, 4.0]  # the gradient halves crossing each block backwards: drop log 2 everywhere
    assert GradientSuppressionTrigger.drops(halving) == pytest.approx([math.log(2)] * 2)
    assert [t.update(halving), t.update(halving)] == [False, False]
    assert t.update([float("nan")] * 3) is False and t.streak == 0  # a non-finite row resets
    assert [t.update(halving), t.update(halving), t.update(halving)] == [False, False, True]
    assert "block" in t.reason
    t.reset()
    assert t.streak == 0 and t.update([1.0, 1.1, 1.2]) is False  # small drops never fire
