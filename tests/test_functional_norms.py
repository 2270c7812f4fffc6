"""Grouped gradient norms and the heatmap image."""

import math

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
