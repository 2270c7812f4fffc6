"""Tokenised datasets and dataloaders for ``(text, label)`` pairs, padded per batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = ["PadCollator", "TextClassificationDataset", "make_dataloader"]

# Keys padded by PadCollator and the value each is padded with (`None`: the tokenizer's pad token id).
_PAD_KEYS: dict[str, int | None] = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0}


class TextClassificationDataset(Dataset):
    """``(text, label)`` pairs tokenised once, up front, truncated to ``max_length`` and not padded.

    Each item is a dict of integer lists (``input_ids``, ``attention_mask``, ``token_type_ids`` when the tokenizer
    returns them) plus an integer ``labels``; :class:`PadCollator` pads a batch of them.

    Args:
        pairs: The ``(text, label)`` pairs, for instance from
            :func:`~lightning_inflect.experiments.load_rotten_tomatoes`.
        tokenizer: A Hugging Face tokenizer (called as ``tokenizer(texts, truncation=True, max_length=...)``).
        max_length: The most tokens per example, special tokens included.

    Raises:
        ValueError: If ``max_length`` is not a positive integer.
    """

    def __init__(self, pairs: Sequence[tuple[str, int]], tokenizer: Any, max_length: int = 64) -> None:
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"Expected argument `max_length` to be a positive integer but got {max_length!r}.")
        self.max_length = max_length
        texts = [text for text, _ in pairs]
        self.labels = [int(label) for _, label in pairs]
        encoded = tokenizer(texts, truncation=True, max_length=max_length) if texts else {}
        self.encodings = {key: list(encoded[key]) for key in encoded if key in _PAD_KEYS}
        if texts and "input_ids" not in self.encodings:
            raise ValueError(
                f"Expected the tokenizer to return `input_ids` but it returned {list(encoded)}. Pass a Hugging Face"
                " tokenizer such as `AutoTokenizer.from_pretrained(...)`."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = self.labels[index]
        return item


class PadCollator:
    """Pad a list of tokenised examples to the longest one in the batch and stack them into tensors.

    Picklable, so it works with ``num_workers > 0``.

    Args:
        pad_token_id: The id written into ``input_ids`` at padded positions.
        padding_side: Pad on the ``"right"`` (BERT) or the ``"left"``.

    Raises:
        ValueError: If ``padding_side`` is not one of the allowed values.

    Example:
        >>> collate = PadCollator(pad_token_id=0)
        >>> batch = collate([
        ...     {"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "labels": 1},
        ...     {"input_ids": [101, 102], "attention_mask": [1, 1], "labels": 0},
        ... ])
        >>> batch["input_ids"]
        tensor([[101,   7, 102],
                [101, 102,   0]])
        >>> batch["attention_mask"].sum(dim=1)
        tensor([3, 2])
        >>> batch["labels"]
        tensor([1, 0])
    """

    def __init__(self, pad_token_id: int, padding_side: Literal["right", "left"] = "right") -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(
                f"Expected argument `padding_side` to be one of ['right', 'left'] but got {padding_side!r}."
            )
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        if not features:
            raise ValueError("Expected a non-empty list of examples to collate but got an empty one.")
        longest = max(len(feature["input_ids"]) for feature in features)
        batch: dict[str, Tensor] = {}
        for key, pad_value in _PAD_KEYS.items():
            if key not in features[0]:
                continue
            value = self.pad_token_id if pad_value is None else pad_value
            padded = torch.full((len(features), longest), value, dtype=torch.long)
            for row, feature in enumerate(features):
                ids = torch.as_tensor(feature[key], dtype=torch.long)
                if self.padding_side == "right":
                    padded[row, : len(ids)] = ids
                else:
                    padded[row, longest - len(ids) :] = ids
            batch[key] = padded
        if "attention_mask" not in batch:
            lengths = torch.tensor([len(feature["input_ids"]) for feature in features])
            positions = torch.arange(longest).expand(len(features), longest)
            if self.padding_side == "left":
                positions = positions.flip(1)
            batch["attention_mask"] = (positions < lengths[:, None]).long()
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([int(feature["labels"]) for feature in features], dtype=torch.long)
        return batch


def make_dataloader(
    pairs: Sequence[tuple[str, int]],
    tokenizer: Any,
    batch_size: int,
    max_length: int = 64,
    shuffle: bool = False,
    seed: int = 0,
    *,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """Build a :class:`~torch.utils.data.DataLoader` of dict batches padded to the longest example of each batch.

    Batches hold ``input_ids``, ``attention_mask``, ``token_type_ids`` (if the tokenizer returns them) and ``labels``,
    all ``torch.long``, ready for ``model(**batch)``.

    Args:
        pairs: The ``(text, label)`` pairs.
        tokenizer: A Hugging Face tokenizer; its ``pad_token_id`` and ``padding_side`` are used.
        batch_size: Examples per batch.
        max_length: The most tokens per example (longer texts are truncated).
        shuffle: Reshuffle every epoch, with a generator seeded by ``seed`` (the same order on every run).
        seed: The seed of the shuffling generator.
        drop_last: Drop the last incomplete batch.
        num_workers: Dataloader worker processes.

    Returns:
        The dataloader.

    Raises:
        ValueError: If ``batch_size`` or ``max_length`` is not a positive integer, or the tokenizer has no pad token.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected argument `batch_size` to be a positive integer but got {batch_size!r}.")
    pad_token_id = getattr(tokenizer, "pad_token_id", None)
    if pad_token_id is None:
        raise ValueError(
            "Expected the tokenizer to have a `pad_token_id` but it is None. Set one first, for instance"
            " `tokenizer.pad_token = tokenizer.eos_token`."
        )
    dataset = TextClassificationDataset(pairs, tokenizer, max_length=max_length)
    collate = PadCollator(pad_token_id, padding_side=getattr(tokenizer, "padding_side", "right"))
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=collate,
        drop_last=drop_last,
        num_workers=num_workers,
    )
