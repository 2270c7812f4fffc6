"""A layer x step heatmap as an RGB image tensor, without a plotting library."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["heatmap_image"]

# Five anchor colours of the viridis colour map (dark blue -> yellow), linearly interpolated.
_ANCHORS = torch.tensor(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=torch.float32
)
_NAN_COLOUR = torch.tensor([128.0, 128.0, 128.0])


def heatmap_image(values: Tensor, cell: int = 8, max_width: int = 1024) -> Tensor:
    """Render ``values`` (layers x steps) as a ``(3, H, W)`` uint8 image, layer 0 on the top row.

    Each metric is scaled to its own finite min..max; NaN and inf cells are grey. Wide histories are shown with
    narrower columns (at least one pixel per step, at most ``max_width`` pixels, keeping the newest steps).

    Example:
        >>> img = heatmap_image(torch.tensor([[0.0, 1.0], [float("nan"), 0.5]]), cell=2)
        >>> img.shape, img.dtype
        (torch.Size([3, 4, 4]), torch.uint8)
        >>> img[:, 0, 0].tolist(), img[:, 0, 2].tolist(), img[:, 2, 0].tolist()
        ([68, 1, 84], [253, 231, 37], [128, 128, 128])
    """
    if values.dim() != 2:
        raise ValueError(f"Expected `values` of shape (layers, steps) but got {tuple(values.shape)}.")
    v = values.detach().float()
    v = v if v.device.type == "cpu" else v.cpu()
    if v.shape[1] > max_width:
        v = v[:, -max_width:]
    finite = torch.isfinite(v)
    any_finite = finite.any()
    lo = torch.where(any_finite, torch.where(finite, v, torch.inf).amin(), 0.0)
    hi = torch.where(any_finite, torch.where(finite, v, -torch.inf).amax(), 1.0)
    t = ((v - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1).nan_to_num(0.0)
    pos = t * (len(_ANCHORS) - 1)
    i0 = pos.floor().long().clamp(max=len(_ANCHORS) - 2)
    frac = (pos - i0).unsqueeze(-1)
    rgb = _ANCHORS[i0] * (1 - frac) + _ANCHORS[i0 + 1] * frac  # (layers, steps, 3)
    rgb[~finite] = _NAN_COLOUR
    col = max(1, min(cell, max_width // max(1, v.shape[1])))
    rgb = rgb.repeat_interleave(cell, dim=0).repeat_interleave(col, dim=1)
    return rgb.round().to(torch.uint8).permute(2, 0, 1).contiguous()
