"""What a monitor needs from the training loop it runs in: :class:`Host`, one small protocol, no framework.

The monitors' logic (:mod:`lightning_inflect.core.monitor` and the three monitors there) reads the loop's step, rank,
precision and loss scale, and sends its values out, only through a ``Host``. Each training loop has a thin adapter
that implements it: the Lightning one is :class:`lightning_inflect.callbacks.base.LightningHost`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from torch import Tensor

__all__ = ["Host", "scaler_scale"]


class Host(Protocol):
    """The training loop as the monitors see it.

    Members:
        key: the object one run's monitors share their :class:`~lightning_inflect.core.session.ProbeSession` by
            (the trainer); hashable, weakly referenceable.
        global_step: the number of optimizer steps done (a monitor logs when ``due(global_step)``).
        is_global_zero: whether this process writes images and layouts (rank 0).
        checkpoint: the checkpoint the run resumes from (a path), None when it does not; for errors.
        precision_context: a factory of the context the loop's forward runs under (autocast), or None.
        takes_images: whether some logger of the loop takes images (then heatmaps are rendered).
    """

    @property
    def key(self) -> Any: ...

    @property
    def global_step(self) -> int: ...

    @property
    def is_global_zero(self) -> bool: ...

    @property
    def checkpoint(self) -> Any: ...

    @property
    def precision_context(self) -> Callable[[], Any] | None: ...

    @property
    def takes_images(self) -> bool: ...

    def loss_scale(self) -> Tensor | float:
        """The loss scaler's current scale (its own on-device tensor, never read as a float), 1.0 without one."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Send host scalars, measured at optimizer step ``step``, everywhere the loop reports to (every rank)."""
        ...

    def log_heatmap(self, key: str, image: Tensor, step: int) -> None:
        """Send a ``(3, H, W)`` uint8 image to the loggers that take images (rank 0)."""
        ...

    def write_layout(self, layout: Mapping[str, Mapping[str, list]]) -> None:
        """A TensorBoard custom-scalars layout (rank 0), where the loop writes TensorBoard."""
        ...

    def warn(self, message: str) -> None:
        """Warn once per process group (rank 0)."""
        ...


def scaler_scale(scaler: Any) -> Tensor | float:
    """The current scale of a loop's loss scaler (``torch.amp.GradScaler``) without a host sync: its own on-device
    tensor where it has one, else its float; ``1.0`` without a scaler or with a disabled one. Each loop's
    :meth:`Host.loss_scale` hands its scaler here.

    Example:
        >>> import torch
        >>> scaler_scale(None), scaler_scale(torch.amp.GradScaler("cpu", enabled=False))
        (1.0, 1.0)
    """
    if scaler is None or not getattr(scaler, "is_enabled", lambda: False)():
        return 1.0
    scale = getattr(scaler, "_scale", None)  # torch's own tensor: reading it as a float would synchronise
    return scale if isinstance(scale, Tensor) else float(scaler.get_scale())
