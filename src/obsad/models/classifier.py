"""A classifier of events on top of the book's encoder: :class:`ClassificationHead` and :class:`EventClassifier`.

The two-stage procedure (:mod:`obsad.train.two_stage`) pretrains a :class:`~obsad.models.TabularResNet` without
labels, then trains only a small head on the few events an analyst labelled. The head is separate from the
encoder so that the encoder can be frozen (its weights are not even given to the optimiser), partly unfrozen
(the last residual block) or, for the single-stage comparison, trained from scratch with the head.

Classes are ids ``0 .. n_classes - 1``; their names live with the model package (:class:`obsad.train.two_stage.
TwoStageModel`), encoded once at fit time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .tabular import TabularResNet, register_model

__all__ = ["ClassificationHead", "EventClassifier"]


@register_model
class ClassificationHead(nn.Module):
    """``LayerNorm -> Linear(d_model, d_hidden) -> ReLU -> Dropout -> Linear(d_hidden, n_classes)``: class logits.

    Small on purpose: with tens of labels, a wide head memorises them. ``d_hidden=0`` is a linear probe.
    """

    def __init__(self, d_model: int, n_classes: int, d_hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        if d_hidden < 0 or not 0.0 <= dropout < 1.0:
            raise ValueError("d_hidden must be >= 0 and 0 <= dropout < 1")
        self.d_model, self.n_classes = int(d_model), int(n_classes)
        self.d_hidden, self.dropout = int(d_hidden), float(dropout)
        layers: list[nn.Module] = [nn.LayerNorm(self.d_model)]
        if self.d_hidden:
            layers += [nn.Linear(self.d_model, self.d_hidden), nn.ReLU(), nn.Dropout(self.dropout),
                       nn.Linear(self.d_hidden, self.n_classes)]
        else:
            layers += [nn.Dropout(self.dropout), nn.Linear(self.d_model, self.n_classes)]
        self.net = nn.Sequential(*layers)

    def to_config(self) -> dict[str, Any]:
        return {"d_model": self.d_model, "n_classes": self.n_classes, "d_hidden": self.d_hidden,
                "dropout": self.dropout}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ClassificationHead":
        return cls(**config)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


@register_model
class EventClassifier(nn.Module):
    """An encoder and a head: ``logits = head(encoder(numeric, categorical))``.

    ``freeze(trainable_blocks=0)`` turns off the gradients of the whole encoder except its last
    ``trainable_blocks`` residual blocks and output norm; a frozen part also stays in eval mode when the
    classifier is put in training mode, so it computes exactly what it computed when it was pretrained.
    """

    def __init__(self, encoder: TabularResNet, head: ClassificationHead) -> None:
        super().__init__()
        if head.d_model != encoder.d_model:
            raise ValueError(f"the head takes {head.d_model} inputs, the encoder gives {encoder.d_model}")
        self.encoder = encoder
        self.head = head
        self.trainable_blocks: int | None = None  # None: nothing frozen

    def to_config(self) -> dict[str, Any]:
        return {"encoder": self.encoder.to_config(), "head": self.head.to_config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "EventClassifier":
        return cls(TabularResNet.from_config(config["encoder"]), ClassificationHead.from_config(config["head"]))

    @property
    def n_classes(self) -> int:
        return self.head.n_classes

    def freeze(self, trainable_blocks: int = 0) -> "EventClassifier":
        """Freeze the encoder but for its last ``trainable_blocks`` residual blocks (and its output norm)."""
        n_blocks = len(self.encoder.blocks)
        if not 0 <= int(trainable_blocks) <= n_blocks:
            raise ValueError(f"trainable_blocks must be in [0, {n_blocks}], got {trainable_blocks}")
        self.trainable_blocks = int(trainable_blocks)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        for module in self.unfrozen_modules():
            for p in module.parameters():
                p.requires_grad_(True)
        return self.train(self.training)

    def unfrozen_modules(self) -> list[nn.Module]:
        """The encoder's modules that train although the encoder is frozen (empty when fully frozen)."""
        if not self.trainable_blocks:
            return []
        return [*self.encoder.blocks[len(self.encoder.blocks) - self.trainable_blocks:], self.encoder.output_norm]

    def train(self, mode: bool = True) -> "EventClassifier":
        super().train(mode)
        if self.trainable_blocks is not None and mode:
            self.encoder.eval()  # frozen: no dropout, the pretrained function exactly
            for module in self.unfrozen_modules():
                module.train(True)
        return self

    def forward(self, numeric: Tensor, categorical: Tensor) -> Tensor:
        return self.head(self.encoder(numeric, categorical))

    @torch.no_grad()
    def head_proba(self, representation: Any) -> Tensor:
        """Class probabilities from the encoder's output ``[n, d_model]`` (computed once, e.g. by
        :meth:`TabularResNet.embed`, when the encoder is frozen and many heads are compared), in eval mode."""
        was_training = self.head.training
        self.head.eval()
        try:
            z = torch.as_tensor(representation, dtype=torch.float32)
            return torch.softmax(self.head(z).float(), dim=1).cpu()
        finally:
            self.head.train(was_training)

    @torch.no_grad()
    def predict_proba(self, numeric: Any, categorical: Any, batch_size: int = 8192) -> Tensor:
        """Class probabilities ``[n, n_classes]`` (CPU float32), in eval mode, in batches."""
        device = self.head.net[0].weight.device
        numeric = torch.as_tensor(numeric, dtype=torch.float32)
        categorical = torch.as_tensor(categorical, dtype=torch.long)
        was_training = self.training
        self.eval()
        try:
            parts = [torch.softmax(self(numeric[s:s + batch_size].to(device),
                                        categorical[s:s + batch_size].to(device)).float(), dim=1).cpu()
                     for s in range(0, numeric.shape[0], batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.empty(0, self.n_classes)
