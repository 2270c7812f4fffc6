"""Grouped gradient norms, the gradient drop and the heatmap image."""

import itertools
import math

import pytest
import torch

from lightning_inflect.functional import grouped_grad_norms, heatmap_image, per_example_norm


def test_grouped_norms_match_concatenated_norm():
    torch.manual_seed(0)
    groups = [[torch.randn(3, 4), torch.randn(5)], [torch.randn(2, 2, 2)], [], [torch.randn(7).double()]]
    got = grouped_grad_norms(groups)
    for i, grp in enumerate(groups):
        ref = torch.cat([g.double().flatten() for g in grp]).norm().item() if grp else 0.0
        assert math.isclose(got[i].item(), ref, rel_tol=1e-6)
    assert got.dtype == torch.float64


def test_grouped_norms_keep_non_finite_values():
    got = grouped_grad_norms([[torch.tensor([float("nan"), 1.0])], [torch.tensor([float("inf")])], [torch.ones(4)]])
    assert math.isnan(got[0].item()) and math.isinf(got[1].item()) and got[2].item() == 2.0


def test_per_example_norm_is_frobenius_per_example():
    x = torch.randn(4, 3, 5)
    assert torch.allclose(per_example_norm(x), torch.stack([x[i].norm() for i in range(4)]))


def test_heatmap_maps_min_to_dark_and_max_to_bright():
    v = torch.tensor([[0.0, 2.0, 4.0], [1.0, float("inf"), 3.0]])
    img = heatmap_image(v, cell=1)
    assert img.shape == (3, 2, 3)
    brightness = img.float().sum(0)
    assert brightness[0, 2] > brightness[1, 2] > brightness[1, 0] > brightness[0, 0]
    assert img[:, 1, 1].tolist() == [128, 128, 128]
    wide = heatmap_image(torch.randn(2, 5000), cell=4, max_width=1000)
    assert wide.shape[2] == 1000


def test_gradient_drop_has_one_definition_shared_by_ski_and_the_trigger():
    from lightning_inflect.functional import gradient_drop
    from lightning_inflect.selection import GradientSuppressionTrigger
    from lightning_inflect.selection.ski import _grad_drop

    row = [0.5, 2.0, 0.0, 4.0, float("nan"), 1.0]
    naive = []
    for a, b in itertools.pairwise(row):  # log g[l+1] - log g[l]; zero as the smallest positive float; NaN stays NaN
        la, lb = (math.log(max(v, torch.finfo(torch.float64).tiny)) if v == v else math.nan for v in (a, b))
        naive.append(lb - la)
    got = gradient_drop(torch.tensor(row, dtype=torch.float64)).tolist()
    assert got[:3] == pytest.approx(naive[:3]) and all(math.isnan(v) for v in got[3:5])
    assert GradientSuppressionTrigger.drops(row)[:3] == pytest.approx(got[:3])
    ski = _grad_drop(torch.tensor(row, dtype=torch.float64)).tolist()
    assert ski[:3] == pytest.approx(got[:3]) and ski[-1] == 0.0
    assert GradientSuppressionTrigger(threshold=5.0, patience=1).update([1.0, 0.0, 1.0])  # vanished: fires
