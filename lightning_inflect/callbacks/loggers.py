"""Which logger gets the monitors' heatmap images and the injection report, and through which call.

Scalars go through :func:`log_metrics`: to every logger's ``log_metrics`` and into ``trainer.callback_metrics``
(where ``EarlyStopping`` and ``ModelCheckpoint`` look for their ``monitor``). Images and text have no common
Lightning interface, so each is sent the way the logger takes it, and a logger that takes neither is skipped without
a word:

* ``TensorBoardLogger``: images by ``experiment.add_image`` (CHW), text by ``experiment.add_text``.
* ``WandbLogger``, and any logger with Lightning's keyword signatures ``log_image(key=, images=, step=)`` and
  ``log_text(key=, columns=, data=, step=)`` (``WandbLogger`` is the only built-in one in Lightning 2.6): one
  ``(H, W, 3)`` uint8 array per image, the text as a table of one cell. A method of that name with another
  signature is not called.
* ``CSVLogger``, ``MLFlowLogger``, ``CometLogger`` and the rest: scalars only.

The callers write images and text on global rank 0 only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger

__all__ = ["TEXT_COLUMN", "log_heatmap", "log_metrics", "log_text", "takes_images", "takes_text"]

TEXT_COLUMN = "report"
"""The one column of the table that ``log_text`` loggers (W&B) receive the report in."""
_IMAGE_KEYWORDS = ("key", "images", "step")
_TEXT_KEYWORDS = ("key", "columns", "data", "step")


def log_metrics(trainer: Any, metrics: Mapping[str, float], step: int) -> None:
    """Log host ``metrics`` at ``step`` to every logger of ``trainer`` and put each, with its latest value, in
    ``trainer.callback_metrics``, so that ``EarlyStopping(monitor=...)`` and ``ModelCheckpoint(monitor=...)`` can
    use any inflect key.

    Call it on every rank (the values are already the same on every rank): Lightning's loggers write on rank 0 only,
    and every rank's ``EarlyStopping`` and ``ModelCheckpoint`` read their own ``callback_metrics``. The values are
    Python floats, already on the host: they enter ``callback_metrics`` as 0-dim CPU tensors of Lightning's dtype for
    logged values (the default dtype, at least float32), as ``self.log`` leaves them there, made from one host list
    (no device transfer).

    ``trainer.callback_metrics`` is, in Lightning 2.x, the logger connector's one dict: Lightning updates it
    with what ``self.log`` logged (our keys stay, unless a ``LightningModule`` logs the same name) and replaces it
    with an empty one only when ``fit``, ``validate``, ... start and around the sanity check, before any training
    step. A ``trainer`` without a dict there (a stand-in in tests) gets the loggers' call only.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
        >>> log_metrics(trainer, {"inflect/cka_drift/layer_01": 0.25}, step=10)
        >>> trainer.callback_metrics["inflect/cka_drift/layer_01"]
        tensor(0.2500)
    """
    metrics = dict(metrics)
    for logger in getattr(trainer, "loggers", None) or []:
        logger.log_metrics(metrics, step=step)
    store = getattr(trainer, "callback_metrics", None)
    if not metrics or not isinstance(store, MutableMapping):
        return
    dtype = torch.get_default_dtype()
    dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32  # as Lightning's `self.log`
    values = torch.tensor(list(metrics.values()), dtype=dtype).unbind()  # CPU, from host floats: no transfer
    store.update(zip(metrics, values))


def _keyword_method(logger: Logger, name: str, keywords: tuple[str, ...]) -> Callable[..., Any] | None:
    """``logger.<name>`` if it is a method that accepts all ``keywords`` (or ``**kwargs``), else None."""
    method = getattr(logger, name, None)
    if not callable(method):
        return None
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a C function): do not guess
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return method
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return method if set(keywords) <= named else None


def takes_images(logger: Logger) -> bool:
    """Whether :func:`log_heatmap` writes to ``logger`` (TensorBoard, or a Lightning-style ``log_image``).

    Example:
        >>> from lightning.pytorch.loggers import CSVLogger
        >>> takes_images(CSVLogger("runs")), takes_images(TensorBoardLogger("runs"))
        (False, True)
    """
    return isinstance(logger, TensorBoardLogger) or _keyword_method(logger, "log_image", _IMAGE_KEYWORDS) is not None


def takes_text(logger: Logger) -> bool:
    """Whether :func:`log_text` writes to ``logger`` (TensorBoard, or a Lightning-style ``log_text``).

    Example:
        >>> from lightning.pytorch.loggers import CSVLogger
        >>> takes_text(CSVLogger("runs")), takes_text(TensorBoardLogger("runs"))
        (False, True)
    """
    return isinstance(logger, TensorBoardLogger) or _keyword_method(logger, "log_text", _TEXT_KEYWORDS) is not None


def log_heatmap(loggers: Sequence[Logger], key: str, image: torch.Tensor, step: int) -> int:
    """Write one heatmap ``image`` (``(3, H, W)`` uint8, as :func:`~lightning_inflect.functional.heatmap_image`
    makes) under ``key`` at ``step`` to each of ``loggers`` that takes images; return how many got it.

    * ``TensorBoardLogger``: ``experiment.add_image(key, image, global_step=step, dataformats="CHW")``.
    * ``WandbLogger`` and any other logger with Lightning's ``log_image(key=, images=, step=)``: one ``(H, W, 3)``
      uint8 numpy array, ``log_image(key=key, images=[array], step=step)``.
    * every other logger (``CSVLogger`` ...): nothing.
    """
    if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(
            f"Expected `image` to be a (3, H, W) uint8 tensor, as `heatmap_image` returns, but got shape "
            f"{tuple(image.shape)} and dtype {image.dtype}. Render the values with `heatmap_image(values)` first."
        )
    written = 0
    hwc = None
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step, dataformats="CHW")
        elif (method := _keyword_method(logger, "log_image", _IMAGE_KEYWORDS)) is not None:
            if hwc is None:
                hwc = image.permute(1, 2, 0).contiguous().cpu().numpy()
            method(key=key, images=[hwc], step=step)
        else:
            continue
        written += 1
    return written


def log_text(loggers: Sequence[Logger], key: str, markdown: str, step: int) -> int:
    """Write the Markdown text ``markdown`` under ``key`` at ``step`` to each of ``loggers`` that takes text; return
    how many got it.

    * ``TensorBoardLogger``: ``experiment.add_text(key, markdown, global_step=step)`` (shown as Markdown).
    * ``WandbLogger`` and any other logger with Lightning's ``log_text(key=, columns=, data=, step=)``: a table of one
      column :data:`TEXT_COLUMN` and one row, the text as it is.
    * every other logger (``CSVLogger`` ...): nothing.
    """
    if not isinstance(markdown, str):
        raise TypeError(f"Expected `markdown` to be a str but got {type(markdown).__name__}; pass the text itself.")
    written = 0
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(key, markdown, global_step=step)
        elif (method := _keyword_method(logger, "log_text", _TEXT_KEYWORDS)) is not None:
            method(key=key, columns=[TEXT_COLUMN], data=[[markdown]], step=step)
        else:
            continue
        written += 1
    return written
