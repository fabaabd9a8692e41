"""The event-sequence encoder: a small Transformer over a window of one entity's events.

Tokens are the per-event representations of the (frozen) :class:`~obsad.models.TabularResNet`, in time order
(:func:`obsad.features.sequences.entity_windows`). Each token is projected to ``d_model`` (32, the seed's
default), given a learned position, and read by ``n_layers`` pre-norm Transformer encoder layers with
``n_heads`` (4) heads; padding is masked out of attention. A window's representation is the mean of its valid
output tokens (:meth:`EventSequenceEncoder.pool`).

Pretraining (:class:`MaskedEventObjective`) hides whole events of a window, replacing their token by a learned
``[MASK]`` vector, and asks the encoder to reconstruct each hidden event's representation from the others: to
know what usually comes before and after an event of this entity. A window whose events cannot be predicted
from each other — a burst of failures among successes, a scan across ports — is what the encoder learns to
represent differently.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .tabular import register_model

__all__ = ["EventSequenceEncoder", "MaskedEventObjective"]


@register_model
class EventSequenceEncoder(nn.Module):
    """``[b, L, d_event]`` tokens (+ ``valid`` mask) -> ``[b, L, d_model]`` contextual tokens."""

    def __init__(self, d_event: int, d_model: int = 32, n_heads: int = 4, n_layers: int = 2, d_ff: int = 64,
                 max_len: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        if min(d_event, d_model, n_heads, n_layers, d_ff, max_len) < 1:
            raise ValueError("sizes must be >= 1")
        self.d_event, self.d_model, self.n_heads, self.n_layers = int(d_event), int(d_model), int(n_heads), int(n_layers)
        self.d_ff, self.max_len, self.dropout = int(d_ff), int(max_len), float(dropout)
        self.mask_vector = nn.Parameter(torch.zeros(self.d_event))
        self.token = nn.Linear(self.d_event, self.d_model)
        self.position = nn.Embedding(self.max_len, self.d_model)
        layer = nn.TransformerEncoderLayer(self.d_model, self.n_heads, self.d_ff, self.dropout, batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, self.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(self.d_model)

    def to_config(self) -> dict[str, Any]:
        return {"d_event": self.d_event, "d_model": self.d_model, "n_heads": self.n_heads, "n_layers": self.n_layers,
                "d_ff": self.d_ff, "max_len": self.max_len, "dropout": self.dropout}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "EventSequenceEncoder":
        return cls(**config)

    def forward(self, tokens: Tensor, valid: Tensor, masked: Tensor | None = None) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[2] != self.d_event or tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens must be [b, L <= {self.max_len}, {self.d_event}], got {list(tokens.shape)}")
        valid = valid.bool()
        if masked is not None:
            tokens = torch.where(masked.bool()[..., None], self.mask_vector.to(tokens.dtype), tokens)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.token(tokens) + self.position(positions)[None]
        h = self.layers(h, src_key_padding_mask=~valid)
        return self.norm(h)

    @staticmethod
    def pool(h: Tensor, valid: Tensor) -> Tensor:
        """Mean of the valid tokens: one vector per window ``[b, d_model]``."""
        w = valid.to(h.dtype)[..., None]
        return (h * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)

    @torch.no_grad()
    def embed(self, tokens: Any, valid: Any, batch_size: int = 2048) -> Tensor:
        """Window representations ``[n, d_model]`` (CPU float32), in eval mode, in batches."""
        tokens = torch.as_tensor(tokens, dtype=torch.float32)
        valid = torch.as_tensor(valid, dtype=torch.bool)
        device = self.token.weight.device
        was_training = self.training
        self.eval()
        try:
            parts = []
            for s in range(0, tokens.shape[0], batch_size):
                t, v = tokens[s:s + batch_size].to(device), valid[s:s + batch_size].to(device)
                parts.append(self.pool(self(t, v), v).float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.empty(0, self.d_model)


    @torch.no_grad()
    def embed_windows(self, representations: Any, index: Any, batch_size: int = 2048) -> Tensor:
        """Window representations straight from the per-event table ``[n_events, d_event]`` and the windows'
        ``index [n_windows, L]`` (``-1`` = padding), gathering each batch's tokens on the fly."""
        reps = torch.as_tensor(representations, dtype=torch.float32)
        index = torch.as_tensor(index, dtype=torch.long)
        parts = []
        for s in range(0, index.shape[0], batch_size):
            idx = index[s:s + batch_size]
            valid = idx >= 0
            tokens = reps[idx.clamp_min(0)] * valid[..., None]
            parts.append(self.embed(tokens, valid, batch_size=batch_size))
        return torch.cat(parts) if parts else torch.empty(0, self.d_model)


@register_model
class MaskedEventObjective(nn.Module):
    """Hide ``mask_prob`` of each window's events (at least one), reconstruct their representations (MSE).

    Batches: ``{"tokens": [b, L, d_event], "valid": [b, L]}``. Windows of a single event teach nothing and
    are still accepted: their one event is hidden and predicted from its position alone.
    """

    def __init__(self, encoder: EventSequenceEncoder, mask_prob: float = 0.2) -> None:
        super().__init__()
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.encoder = encoder
        self.mask_prob = float(mask_prob)
        self.head = nn.Linear(encoder.d_model, encoder.d_event)

    def to_config(self) -> dict[str, Any]:
        return {"encoder": self.encoder.to_config(), "mask_prob": self.mask_prob}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MaskedEventObjective":
        return cls(EventSequenceEncoder.from_config(config["encoder"]), mask_prob=config["mask_prob"])

    def sample_mask(self, valid: Tensor) -> Tensor:
        """Each valid event hidden with probability ``mask_prob``; one random valid event in any window that
        would otherwise have none."""
        valid = valid.bool()
        masked = (torch.rand(valid.shape, device=valid.device) < self.mask_prob) & valid
        none = ~masked.any(dim=1)
        if none.any():
            pick = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, -1.0).argmax(dim=1)
            masked[none, pick[none]] = True
        return masked & valid

    def forward(self, batch: dict[str, Tensor]):
        from obsad.train.objectives import ObjectiveOutput

        tokens, valid = batch["tokens"].float(), batch["valid"].bool()
        masked = self.sample_mask(valid)
        h = self.encoder(tokens, valid, masked)
        loss = F.mse_loss(self.head(h[masked]), tokens[masked])
        return ObjectiveOutput(loss, {"masked_events": float(masked.sum())})
