"""Linear CKA with float64 minibatch HSIC accumulation and a shared PCA basis.

Linear centred kernel alignment between representations :math:`X \\in \\mathbb{R}^{n \\times p}` and
:math:`Y \\in \\mathbb{R}^{n \\times q}` of the same ``n`` examples is

.. math::

    \\operatorname{CKA}(X, Y) = \\frac{\\operatorname{HSIC}(K, L)}{\\sqrt{\\operatorname{HSIC}(K, K)\\,
    \\operatorname{HSIC}(L, L)}}, \\qquad K = XX^\\top,\\; L = YY^\\top .

Over several batches the HSIC terms are summed before the ratio is taken (minibatch CKA, Nguyen et al. 2021), never
the per-batch CKAs averaged. ``unbiased=True`` uses the unbiased HSIC estimator of Song et al. (2012), which needs at
least 4 examples per batch; ``unbiased=False`` the biased :math:`\\operatorname{tr}(KHLH)/(n-1)^2`.

Degenerate inputs (a representation that is constant over the examples, so its centred kernel is zero) have no
defined CKA. We return 1 when both sides are degenerate (nothing changed) and 0 when only one is, never NaN.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

from lightning_inflect.validation import check_int

__all__ = [
    "cka_from_hsic",
    "hsic_terms",
    "linear_cka",
    "minibatch_cka",
    "pca_basis",
    "pca_project",
    "shared_pca_cka",
]

_REL_EPS = 1e-10


def _hsic(k: Tensor, lk: Tensor, unbiased: bool) -> Tensor:
    n = k.shape[-1]
    if not unbiased:
        # Inputs are centred, so K and L are already doubly centred: tr(KHLH) = <K, L>_F.
        return (k * lk).sum((-2, -1)) / (n - 1) ** 2
    k = k - torch.diag_embed(torch.diagonal(k, dim1=-2, dim2=-1))
    lk = lk - torch.diag_embed(torch.diagonal(lk, dim1=-2, dim2=-1))
    ones_k = k.sum(-1)
    ones_l = lk.sum(-1)
    term = (
        (k * lk).sum((-2, -1))
        + ones_k.sum(-1) * ones_l.sum(-1) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (ones_k * ones_l).sum(-1)
    )
    return term / (n * (n - 3))


def hsic_terms(x: Tensor, y: Tensor, unbiased: bool = False) -> Tensor:
    """HSIC terms of one batch for linear kernels, in float64, batched over any leading dimensions.

    Args:
        x: ``(..., n, p)`` representations.
        y: ``(..., n, q)`` representations of the same ``n`` examples (same leading dimensions).
        unbiased: use the unbiased estimator (needs ``n >= 4``).

    Returns:
        ``(..., 5)`` float64 tensor ``[hsic(x, y), hsic(x, x), hsic(y, y), scale_x, scale_y]``; the scales (the
        biased HSIC of the uncentred inputs) only serve to detect degenerate inputs. Add the terms of several batches
        and pass the sum to :func:`cka_from_hsic`. No host synchronisation.

    Example:
        >>> x = torch.randn(8, 3)
        >>> t = hsic_terms(x, x)
        >>> torch.allclose(t[0], t[1]) and torch.allclose(t[1], t[2])
        True
        >>> hsic_terms(torch.randn(4, 8, 3), torch.randn(4, 8, 2)).shape  # 4 blocks at once
        torch.Size([4, 5])
    """
    if x.dim() < 2 or y.dim() != x.dim() or x.shape[:-1] != y.shape[:-1]:
        raise ValueError(
            f"Expected `x` (..., n, p) and `y` (..., n, q) with the same n and leading dimensions but got "
            f"{tuple(x.shape)}, {tuple(y.shape)}."
        )
    n = x.shape[-2]
    if n < (4 if unbiased else 2):
        need = 4 if unbiased else 2
        raise ValueError(f"HSIC needs at least {need} examples per batch (unbiased={unbiased}) but got {n}.")
    x = x.detach().double()
    y = y.detach().double()
    scale_x = x.square().sum((-2, -1)).square() / (n - 1) ** 2
    scale_y = y.square().sum((-2, -1)).square() / (n - 1) ** 2
    x = x - x.mean(-2, keepdim=True)
    y = y - y.mean(-2, keepdim=True)
    k = x @ x.transpose(-1, -2)
    lk = y @ y.transpose(-1, -2)
    return torch.stack(
        [_hsic(k, lk, unbiased), _hsic(k, k, unbiased), _hsic(lk, lk, unbiased), scale_x, scale_y], dim=-1
    )


def cka_from_hsic(terms: Tensor) -> Tensor:
    """CKA from (summed) :func:`hsic_terms`; NaN-free on degenerate inputs (see module docstring).

    Example:
        >>> cka_from_hsic(torch.tensor([2.0, 4.0, 1.0, 10.0, 10.0], dtype=torch.float64))
        tensor(1., dtype=torch.float64)
        >>> cka_from_hsic(torch.tensor([0.0, 0.0, 1.0, 10.0, 10.0], dtype=torch.float64))
        tensor(0., dtype=torch.float64)
    """
    xy, xx, yy, sx, sy = terms.unbind(-1)
    deg_x = xx <= _REL_EPS * sx
    deg_y = yy <= _REL_EPS * sy
    denom = torch.sqrt(xx.clamp_min(0.0) * yy.clamp_min(0.0))
    value = xy / torch.where(deg_x | deg_y, torch.ones_like(denom), denom)
    both = torch.ones_like(value)
    one = torch.zeros_like(value)
    return torch.where(deg_x & deg_y, both, torch.where(deg_x | deg_y, one, value))


def linear_cka(x: Tensor, y: Tensor, unbiased: bool = False) -> Tensor:
    """Linear CKA of one batch.

    Example:
        >>> x = torch.randn(16, 4)
        >>> round(linear_cka(x, x).item(), 6)
        1.0
        >>> q, _ = torch.linalg.qr(torch.randn(4, 4))
        >>> round(linear_cka(x, 3 * x @ q).item(), 6)
        1.0
    """
    return cka_from_hsic(hsic_terms(x, y, unbiased))


def minibatch_cka(pairs: Iterable[tuple[Tensor, Tensor]], unbiased: bool = True) -> Tensor:
    """CKA over several batches: HSIC terms summed in float64, then one ratio (Nguyen et al. 2021).

    Example:
        >>> x = torch.randn(12, 5)
        >>> round(minibatch_cka([(x[:6], x[:6]), (x[6:], x[6:])]).item(), 6)
        1.0
    """
    total: Tensor | None = None
    for x, y in pairs:
        t = hsic_terms(x, y, unbiased)
        total = t if total is None else total + t
    if total is None:
        raise ValueError("`pairs` is empty: minibatch CKA needs at least one batch.")
    return cka_from_hsic(total)


def pca_basis(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Mean and top-``k`` principal directions of ``x`` in float64, batched over leading dimensions.

    ``k`` is capped at the rank the data can support, ``min(n - 1, p)``, so that no direction is arbitrary.
    One batched SVD; on CUDA, ``torch.linalg.svd`` synchronises with the host once (its error check).

    Args:
        x: ``(..., n, p)`` representations.
        k: number of components wanted (>= 1).

    Returns:
        ``(mean, components)`` of shapes ``(..., p)`` and ``(..., p, k_eff)`` with orthonormal columns.

    Example:
        >>> mean, comps = pca_basis(torch.randn(10, 6), k=3)
        >>> comps.shape, torch.allclose(comps.T @ comps, torch.eye(3, dtype=torch.float64))
        (torch.Size([6, 3]), True)
        >>> pca_basis(torch.randn(5, 10, 6), k=3)[1].shape
        torch.Size([5, 6, 3])
    """
    check_int("k", k, low=1)
    x = x.detach().double()
    n, p = x.shape[-2:]
    mean = x.mean(-2)
    k_eff = max(1, min(k, n - 1, p))
    _, _, vh = torch.linalg.svd(x - mean.unsqueeze(-2), full_matrices=False)
    return mean, vh[..., :k_eff, :].transpose(-1, -2).contiguous()


def pca_project(x: Tensor, mean: Tensor, components: Tensor) -> Tensor:
    """Project ``x`` (``(..., n, p)``) on a basis from :func:`pca_basis`, giving ``(..., n, k)`` float64."""
    return (x.detach().double() - mean.unsqueeze(-2)) @ components


def shared_pca_cka(
    reference: list[Tensor],
    current: list[Tensor],
    k: int,
    basis: Literal["reference", "joint"] = "reference",
    unbiased: bool = True,
    reference_basis: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """CKA between reference and current representations of the same probe batches, on one shared PCA basis.

    Batched over leading dimensions (for instance all blocks at once: ``(blocks, n_b, p)`` per batch), with no
    Python loop over them and no host synchronisation besides the SVD's (see :func:`pca_basis`).

    Args:
        reference: per-batch ``(..., n_b, p)`` representations at the reference point.
        current: the same batches' representations now.
        k: PCA components.
        basis: ``"reference"`` fits the PCA on the reference only (a fixed frame, cheap); ``"joint"`` on both
            stacked, so directions that appear only after training are kept.
        unbiased: HSIC estimator (see :func:`hsic_terms`).
        reference_basis: a precomputed ``pca_basis(cat(reference, -2), k)`` for ``basis="reference"``.

    Example:
        >>> ref = [torch.randn(8, 6), torch.randn(8, 6)]
        >>> round(shared_pca_cka(ref, ref, k=4).item(), 6)
        1.0
        >>> blocks = [torch.randn(3, 8, 6), torch.randn(3, 8, 6)]  # 3 blocks, 2 probe batches of 8
        >>> shared_pca_cka(blocks, [2 * b for b in blocks], k=4).round(decimals=6).tolist()
        [1.0, 1.0, 1.0]
    """
    if basis not in ("reference", "joint"):
        raise ValueError(f"Expected argument `basis` to be one of ['reference', 'joint'] but got {basis!r}.")
    if len(reference) != len(current) or any(r.shape[:-1] != c.shape[:-1] for r, c in zip(reference, current)):
        raise ValueError("`reference` and `current` must hold the same batches of examples.")
    if basis == "reference":
        mean, comps = reference_basis if reference_basis is not None else pca_basis(torch.cat(reference, -2), k)
    else:
        mean, comps = pca_basis(torch.cat([torch.cat(reference, -2), torch.cat(current, -2)], -2), k)
    return minibatch_cka(
        ((pca_project(r, mean, comps), pca_project(c, mean, comps)) for r, c in zip(reference, current)),
        unbiased=unbiased,
    )
