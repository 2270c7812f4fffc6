"""Linear CKA, minibatch HSIC and the shared PCA basis against naive references and invariants."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_inflect.functional import (
    cka_from_hsic,
    hsic_terms,
    linear_cka,
    minibatch_cka,
    pca_basis,
    pca_project,
    shared_pca_cka,
)


def naive_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Kornblith et al. feature-space formula: ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    return ((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm())).item()


def naive_unbiased_hsic(k: torch.Tensor, lk: torch.Tensor) -> float:
    """Song et al. (2012) unbiased HSIC written with explicit sums over index tuples (i != j != q)."""
    n = k.shape[0]
    k = k.double().clone().fill_diagonal_(0)
    lk = lk.double().clone().fill_diagonal_(0)
    t1 = sum(k[i, j] * lk[i, j] for i in range(n) for j in range(n))
    t2 = k.sum() * lk.sum() / ((n - 1) * (n - 2))
    t3 = 2 / (n - 2) * sum(k[i, :].sum() * lk[i, :].sum() for i in range(n))
    return float((t1 + t2 - t3) / (n * (n - 3)))


def test_biased_cka_matches_feature_space_formula():
    torch.manual_seed(0)
    x, y = torch.randn(20, 7), torch.randn(20, 4)
    y = y + x[:, :4]  # correlated
    assert linear_cka(x, y).item() == pytest.approx(naive_cka(x, y), abs=1e-10)


def test_unbiased_hsic_matches_naive_sums():
    torch.manual_seed(1)
    x, y = torch.randn(9, 3), torch.randn(9, 5)
    xc, yc = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    t = hsic_terms(x, y, unbiased=True)
    assert t[0].item() == pytest.approx(naive_unbiased_hsic(xc @ xc.T, yc @ yc.T), rel=1e-9)
    assert t[1].item() == pytest.approx(naive_unbiased_hsic(xc @ xc.T, xc @ xc.T), rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(5, 30), p=st.integers(1, 12), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_invariances(n, p, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    y = torch.randn(n, p, generator=g, dtype=torch.float64) + 0.5 * x
    q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    for unbiased in (False, True):
        assert linear_cka(x, x, unbiased).item() == pytest.approx(1.0, abs=1e-9)
        base = linear_cka(x, y, unbiased).item()
        assert linear_cka(x @ q, y, unbiased).item() == pytest.approx(base, abs=1e-8)  # rotation
        assert linear_cka(x * scale, y, unbiased).item() == pytest.approx(base, abs=1e-8)  # isotropic scaling
        assert linear_cka(x + 3.0, y, unbiased).item() == pytest.approx(base, abs=1e-8)  # translation
    assert 0.0 <= linear_cka(x, y).item() <= 1.0 + 1e-12


def test_minibatch_sums_hsic_terms_not_ckas():
    torch.manual_seed(2)
    x, y = torch.randn(24, 6), torch.randn(24, 6)
    pairs = [(x[:8], y[:8]), (x[8:16], y[8:16]), (x[16:], y[16:])]
    total = sum(hsic_terms(a, b, True) for a, b in pairs)
    assert minibatch_cka(pairs, unbiased=True).item() == pytest.approx(cka_from_hsic(total).item(), abs=1e-12)
    mean_of_ckas = sum(linear_cka(a, b, True) for a, b in pairs).item() / 3
    assert minibatch_cka(pairs, unbiased=True).item() != pytest.approx(mean_of_ckas, abs=1e-6)
    # one batch, biased: identical to plain CKA
    assert minibatch_cka([(x, y)], unbiased=False).item() == pytest.approx(naive_cka(x, y), abs=1e-10)


def test_degenerate_inputs_are_nan_free():
    x = torch.randn(10, 4)
    const = torch.ones(10, 4) * 3.0
    zeros = torch.zeros(10, 4)
    rank1 = torch.randn(10, 1) @ torch.randn(1, 4)
    for unbiased in (False, True):
        assert linear_cka(const, const, unbiased).item() == 1.0
        assert linear_cka(zeros, const, unbiased).item() == 1.0
        assert linear_cka(x, const, unbiased).item() == 0.0
        assert linear_cka(const, x, unbiased).item() == 0.0
        v = linear_cka(rank1, x, unbiased)
        assert torch.isfinite(v)
        assert linear_cka(rank1, rank1, unbiased).item() == pytest.approx(1.0, abs=1e-9)


def test_pca_basis_is_orthonormal_and_capped_at_rank():
    x = torch.randn(6, 10)
    mean, comps = pca_basis(x, k=50)
    assert comps.shape == (10, 5)  # n - 1
    assert torch.allclose(comps.T @ comps, torch.eye(5, dtype=torch.float64), atol=1e-10)
    # the projection keeps all the variance of the centred data
    proj = pca_project(x, mean, comps)
    assert proj.norm().item() == pytest.approx((x.double() - mean).norm().item(), rel=1e-9)
    with pytest.raises(ValueError, match="`k` to be a positive int"):
        pca_basis(x, 0)


def test_full_rank_shared_basis_equals_plain_cka():
    torch.manual_seed(3)
    ref = [torch.randn(12, 5), torch.randn(12, 5)]
    cur = [r + 0.7 * torch.randn(12, 5) for r in ref]
    plain = minibatch_cka(list(zip(ref, cur)), unbiased=True).item()
    for basis in ("reference", "joint"):
        assert shared_pca_cka(ref, cur, k=5, basis=basis).item() == pytest.approx(plain, abs=1e-9)
    # and a truncated basis changes the answer but keeps CKA(X, X) = 1
    assert shared_pca_cka(ref, ref, k=2).item() == pytest.approx(1.0, abs=1e-9)


def test_cka_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 4 examples"):
        hsic_terms(torch.randn(3, 2), torch.randn(3, 2), unbiased=True)
    with pytest.raises(ValueError, match="same n"):
        hsic_terms(torch.randn(5, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="`basis` to be one of"):
        shared_pca_cka([torch.randn(5, 2)], [torch.randn(5, 2)], k=2, basis="pooled")
    with pytest.raises(ValueError, match="empty"):
        minibatch_cka([])
