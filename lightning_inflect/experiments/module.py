"""A minimal :class:`~lightning.pytorch.LightningModule` around a Hugging Face sequence classifier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

__all__ = ["SequenceClassificationModule"]


class SequenceClassificationModule(LightningModule):
    """Train a Hugging Face ``AutoModelForSequenceClassification`` with AdamW on dict batches.

    Batches are dicts with ``input_ids``, ``attention_mask``, ``labels`` and optionally ``token_type_ids`` (as
    :func:`~lightning_inflect.experiments.make_dataloader` yields); they are passed as ``self.model(**batch)``, so the
    model computes the loss.

    Logged keys:
        - ``train_loss``: the training loss, every step (written every ``log_every_n_steps``).
        - ``val_loss``, ``val_acc``: validation loss and accuracy, averaged over the validation epoch.

    Args:
        model: The classifier, for instance from ``AutoModelForSequenceClassification.from_pretrained(...)``; stored as
            ``self.model`` and put in train mode (``from_pretrained`` returns it in eval mode, and Lightning keeps the
            modes of submodules as it finds them, which would train without dropout).
        lr: The AdamW learning rate.
        weight_decay: The AdamW weight decay, applied to matrices only (biases and LayerNorm weights get none).

    Raises:
        ValueError: If ``lr`` is not positive or ``weight_decay`` is negative.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ...                     intermediate_size=32, num_labels=2)
        >>> module = SequenceClassificationModule(BertForSequenceClassification(config), lr=1e-3)
        >>> batch = {"input_ids": torch.tensor([[1, 5, 2], [1, 2, 0]]),
        ...          "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]), "labels": torch.tensor([1, 0])}
        >>> module.model.training
        True
        >>> module(**batch).logits.shape
        torch.Size([2, 2])
        >>> module.configure_optimizers().defaults["lr"]
        0.001
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 2e-5,
        weight_decay: float = 0.0,
        num_training_steps: int | None = None,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        if not lr > 0:
            raise ValueError(f"Expected argument `lr` to be a positive float but got {lr!r}.")
        if not weight_decay >= 0:
            raise ValueError(f"Expected argument `weight_decay` to be a float >= 0 but got {weight_decay!r}.")
        self.model = model.train()
        self.lr = lr
        self.weight_decay = weight_decay
        self.num_training_steps = num_training_steps
        self.warmup_steps = warmup_steps
        self.save_hyperparameters(ignore=["model"])

    def forward(self, **inputs: Tensor):
        return self.model(**inputs)

    @staticmethod
    def _check_batch(batch: Mapping[str, Tensor]) -> None:
        if not isinstance(batch, Mapping) or "labels" not in batch:
            keys = list(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(
                f"Expected a dict batch with `input_ids`, `attention_mask` and `labels` but got {keys}. Build the"
                " dataloader with `lightning_inflect.experiments.make_dataloader`."
            )

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        self._check_batch(batch)
        loss = self.model(**batch).loss
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["labels"].shape[0])
        return loss

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        self._check_batch(batch)
        outputs = self.model(**batch)
        labels = batch["labels"]
        acc = (outputs.logits.argmax(dim=-1) == labels).float().mean()
        self.log("val_loss", outputs.loss, prog_bar=True, batch_size=labels.shape[0])
        self.log("val_acc", acc, prog_bar=True, batch_size=labels.shape[0])
        return outputs.loss

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in trainable if p.ndim >= 2]
        no_decay = [p for p in trainable if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": self.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr)
        if self.num_training_steps is None:
            return optimizer
        from transformers import get_linear_schedule_with_warmup

        schedule = get_linear_schedule_with_warmup(optimizer, self.warmup_steps, self.num_training_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
