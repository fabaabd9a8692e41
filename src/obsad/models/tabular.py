"""The book's one encoder for encoded OCSF events, its heads, and their safe persistence.

:class:`TabularResNet` maps one event (``numeric`` float ``[n, d_num]`` and ``categorical`` ids ``[n, d_cat]``,
as :class:`obsad.features.EncodedFeatures` gives them) to a representation ``[n, d_model]``:

1. **Categorical fields** get their own embedding table, whose width grows with the field's vocabulary:
   ``width(card) = min(max_embedding_dim, max(2, round(1.6 * card ** 0.56)))`` (:func:`embedding_width`; the
   fast.ai rule of thumb, capped, and never below 2 so that a two-id field still has room for "missing" vs
   "present"). ``embedding_dim=<int>`` gives every field the same width instead. The lookup is vectorised:
   all tables live in one flat parameter and every embedding value of the batch is read with **one** gather
   (:class:`FieldEmbedding`), whatever the number of fields and widths.
2. **Numeric fields** are concatenated as they are (already scaled to roughly unit range by the
   ``FeatureEncoder``) and go through the same input projection as the embeddings. Per-feature *linear*
   embeddings ``x_j * w_j + b_j`` followed by a linear projection collapse to exactly this linear map, so they
   would only add width and time; the nonlinearity comes from the residual blocks.
3. ``concat -> Linear(d_in, d_model) -> n_blocks x [x + Linear(Dropout(act(Linear(LayerNorm(x)))))] -> LayerNorm``
   (``act`` ReLU by default, or GELU).

With ``mask_token=True`` (the masked-feature objective) each categorical table has one extra row per field, the
``[MASK]`` id (``mask_ids[j] == cardinalities[j]``, since 0 and 1 are taken by missing and unknown), and
``forward`` accepts a ``numeric_mask``: masked numeric values must be zeroed by the caller and the mask itself
enters the input projection as indicator columns, i.e. one learned ``[MASK]`` vector per numeric field added
to the projected input.

Heads take the representation as input and are separate modules, so the representation used downstream
(nearest neighbours, density models) is always the encoder's output, *before* any head.

Persistence: :func:`save_model` writes ``config.json`` (the class name and its JSON config) and
``weights.safetensors``; :func:`load_model` rebuilds the module from the config and refuses, with a
``ValueError``, a missing, corrupt or mismatched file. No pickle is involved anywhere.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io import atomic_path, canonicalize_safetensors, write_json

__all__ = [
    "DEFAULT_MODEL_CONFIG",
    "embedding_width",
    "FieldEmbedding",
    "ResidualBlock",
    "TabularResNet",
    "ProjectionHead",
    "MaskedFeatureHead",
    "MaskedPrediction",
    "save_model",
    "load_model",
    "register_model",
]

#: The book's default encoder size (everything but the data-dependent ``n_numeric`` and ``cardinalities``),
#: chosen to train the contrastive objective at >= 40k events/s on two CPU cores (``bench/bench_training.py``).
#: Embeddings capped at 12 dimensions (fields of more than ~150 values; the 80 categorical fields of the book
#: then take 543 input columns instead of 603 with a cap of 16). No dropout by default: the augmentations
#: (contrastive) and the masking (masked features) already regularise, and CPU dropout costs a random draw per
#: hidden unit. ReLU as in Gorishniy et al.'s tabular ResNet (2021), and cheaper than GELU on a CPU.
DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "d_model": 64,
    "n_blocks": 2,
    "d_hidden": 128,
    "dropout": 0.0,
    "embedding_dim": None,
    "max_embedding_dim": 12,
    "activation": "relu",
}

FORMAT = "obsad-model"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


def embedding_width(cardinality: int, max_dim: int = 16, scale: float = 1.6, power: float = 0.56) -> int:
    """Embedding width for a field with ``cardinality`` ids: ``min(max_dim, max(2, round(scale * card**power)))``."""
    if cardinality < 1:
        raise ValueError(f"cardinality must be >= 1, got {cardinality}")
    return int(min(max_dim, max(2, round(scale * float(cardinality) ** power))))


# --------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type] = {}


def register_model(cls: type) -> type:
    """Make ``cls`` (a module with ``to_config()`` / ``from_config()``) loadable by :func:`load_model`."""
    _REGISTRY[cls.__name__] = cls
    return cls


def check_ids_in_range(ids: np.ndarray, max_ids: np.ndarray, cardinalities: Sequence[int]) -> None:
    """A ``ValueError`` naming the first categorical id outside ``0 .. max_ids[field]``: an out-of-range id would
    silently read another field's embedding row. In numpy: on a few events, a fraction of torch's dispatch cost."""
    if ids.size and (bool((ids > max_ids).any()) or int(ids.min()) < 0):
        row, col = (int(v[0]) for v in np.nonzero((ids < 0) | (ids > max_ids)))
        raise ValueError(f"categorical id {int(ids[row, col])} out of range for field {col} "
                         f"(cardinality {cardinalities[col]})")


# --------------------------------------------------------------------------------------------- building blocks
class _FlatGather(torch.autograd.Function):
    """``weight[index]`` for a 1-D ``weight``; the backward is one scalar ``index_add_``, several times faster on
    CPU than ``F.embedding``'s backward run once per width group."""

    @staticmethod
    def forward(ctx, weight: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.size = weight.shape[0]
        return weight.index_select(0, index.reshape(-1)).view(index.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        out = grad.new_zeros(ctx.size).index_add_(0, index.reshape(-1), grad.reshape(-1))
        return out, None


class FieldEmbedding(nn.Module):
    """Per-field categorical embeddings of per-field widths, looked up for all fields at once.

    All tables live in one flat parameter ``weight`` (field ``j``'s table is a ``[rows_j, width_j]`` block,
    :meth:`table` gives it as a view). For a batch, the flat position of every output column is
    ``base_j + id * width_j + k`` (field ``j``, column ``k`` of its embedding): one integer index computation and
    **one** gather for the whole batch, whatever the number of fields and widths. ``forward(categorical [n, d_cat])
    -> [n, sum(widths)]``, fields in order. Ids must lie in ``[0, rows_j)`` (``cardinality``, plus the ``[MASK]``
    id when ``mask_token``). Initialised N(0, 1) like ``nn.Embedding``.
    """

    def __init__(self, cardinalities: Sequence[int], widths: Sequence[int], mask_token: bool = False) -> None:
        super().__init__()
        if len(cardinalities) != len(widths):
            raise ValueError("one width per categorical field is required")
        self.n_fields = len(cardinalities)
        self.rows = [int(c) + (1 if mask_token else 0) for c in cardinalities]
        self.widths = [int(w) for w in widths]
        sizes = [r * w for r, w in zip(self.rows, self.widths)]
        bases = [0]
        for size in sizes[:-1]:
            bases.append(bases[-1] + size)
        self.bases = bases
        self.out_dim = sum(self.widths)
        self.weight = nn.Parameter(torch.randn(sum(sizes)))
        column_field = torch.repeat_interleave(torch.arange(self.n_fields), torch.tensor(self.widths))
        column_pos = torch.cat([torch.arange(w) for w in self.widths])
        # int32 indices halve the memory traffic of the index (the table is far below 2**31 entries)
        self.register_buffer("field_width", torch.tensor(self.widths, dtype=torch.long), persistent=False)
        self.register_buffer("field_base", torch.tensor(bases, dtype=torch.long), persistent=False)
        self.register_buffer("column_field", column_field, persistent=False)
        self.register_buffer("column_pos", column_pos.to(torch.int32), persistent=False)

    def table(self, j: int) -> Tensor:
        """Field ``j``'s embedding table ``[rows_j, width_j]`` (a view of :attr:`weight`)."""
        start = self.bases[j]
        return self.weight[start:start + self.rows[j] * self.widths[j]].view(self.rows[j], self.widths[j])

    def flat_index(self, categorical: Tensor) -> Tensor:
        """Positions in :attr:`weight` of every output value ``[n, out_dim]`` (int32)."""
        start = (categorical * self.field_width + self.field_base).to(torch.int32)
        # gather with an expanded index is several times faster on CPU than index_select along dim 1
        cols = self.column_field.expand(categorical.shape[0], -1)
        return torch.gather(start, 1, cols) + self.column_pos

    def forward(self, categorical: Tensor) -> Tensor:
        return _FlatGather.apply(self.weight, self.flat_index(categorical))


class ResidualBlock(nn.Module):
    """Pre-norm residual MLP block: ``x + Linear(Dropout(act(Linear(LayerNorm(x)))))``, act GELU or ReLU."""

    def __init__(self, d_model: int, d_hidden: int, dropout: float = 0.0, activation: str = "gelu") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_hidden)
        self.act = _activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear2 = nn.Linear(d_hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.linear2(self.dropout(self.act(self.linear1(self.norm(x)))))


def _activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r} (expected 'gelu' or 'relu')")


# --------------------------------------------------------------------------------------------- the encoder
@register_model
class TabularResNet(nn.Module):
    """Encoder of encoded events: ``forward(numeric [n, d_num], categorical [n, d_cat]) -> [n, d_model]``.

    Parameters
    ----------
    n_numeric, cardinalities:
        The feature encoder's output sizes (``len(numeric_names)`` and ``cardinalities``, one per categorical
        column, including the two reserved ids).
    d_model, n_blocks, d_hidden, dropout:
        Width of the representation, number of residual blocks, hidden width inside a block (default
        ``2 * d_model``), dropout inside the blocks.
    embedding_dim:
        ``None``: each field's width follows :func:`embedding_width` (capped at ``max_embedding_dim``); an int:
        every field gets that width.
    mask_token:
        Add a ``[MASK]`` id per categorical field and accept ``numeric_mask`` (masked-feature pretraining).
    check_inputs:
        Check that categorical ids are in range (one cheap reduction per batch); an out-of-range id would
        otherwise silently read another field's embedding row.
    """

    def __init__(
        self,
        n_numeric: int,
        cardinalities: Sequence[int],
        d_model: int = DEFAULT_MODEL_CONFIG["d_model"],
        n_blocks: int = DEFAULT_MODEL_CONFIG["n_blocks"],
        dropout: float = DEFAULT_MODEL_CONFIG["dropout"],
        embedding_dim: int | None = DEFAULT_MODEL_CONFIG["embedding_dim"],
        *,
        d_hidden: int | None = DEFAULT_MODEL_CONFIG["d_hidden"],
        max_embedding_dim: int = DEFAULT_MODEL_CONFIG["max_embedding_dim"],
        activation: str = DEFAULT_MODEL_CONFIG["activation"],
        mask_token: bool = False,
        check_inputs: bool = True,
    ) -> None:
        super().__init__()
        cardinalities = [int(c) for c in cardinalities]
        if n_numeric < 0 or (n_numeric == 0 and not cardinalities):
            raise ValueError("the model needs at least one numeric or categorical field")
        if any(c < 2 for c in cardinalities):
            raise ValueError("every cardinality must be >= 2 (ids 0 and 1 are reserved for missing and unknown)")
        if d_model < 1 or n_blocks < 0 or not 0.0 <= dropout < 1.0:
            raise ValueError("d_model must be >= 1, n_blocks >= 0 and 0 <= dropout < 1")
        if embedding_dim is not None and embedding_dim < 1:
            raise ValueError("embedding_dim must be a positive int or None")
        self.n_numeric = int(n_numeric)
        self.cardinalities = cardinalities
        self.d_model = int(d_model)
        self.n_blocks = int(n_blocks)
        self.d_hidden = int(d_hidden) if d_hidden is not None else 2 * self.d_model
        self.dropout = float(dropout)
        self.embedding_dim = None if embedding_dim is None else int(embedding_dim)
        self.max_embedding_dim = int(max_embedding_dim)
        self.mask_token = bool(mask_token)
        self.check_inputs = bool(check_inputs)
        _activation(activation)
        self.activation = activation

        if self.embedding_dim is None:
            self.embedding_widths = [embedding_width(c, self.max_embedding_dim) for c in cardinalities]
        else:
            self.embedding_widths = [self.embedding_dim] * len(cardinalities)
        self.embeddings = FieldEmbedding(cardinalities, self.embedding_widths, mask_token=self.mask_token) \
            if cardinalities else None
        emb_dim = self.embeddings.out_dim if self.embeddings is not None else 0
        self.d_input = self.n_numeric * (2 if self.mask_token else 1) + emb_dim
        self.input_projection = nn.Linear(self.d_input, self.d_model)
        self.blocks = nn.ModuleList(ResidualBlock(self.d_model, self.d_hidden, self.dropout, activation)
                                    for _ in range(self.n_blocks))
        self.output_norm = nn.LayerNorm(self.d_model)
        # The largest valid id per field ([MASK] when enabled), and the [MASK] ids themselves.
        self.register_buffer("max_ids", torch.tensor([c - 1 + (1 if self.mask_token else 0) for c in cardinalities],
                                                     dtype=torch.long), persistent=False)
        self.register_buffer("mask_ids", torch.tensor(cardinalities, dtype=torch.long), persistent=False)

    # ---- config
    def to_config(self) -> dict[str, Any]:
        """A JSON-serialisable dict from which :meth:`from_config` rebuilds the same architecture."""
        return {
            "n_numeric": self.n_numeric,
            "cardinalities": list(self.cardinalities),
            "d_model": self.d_model,
            "n_blocks": self.n_blocks,
            "d_hidden": self.d_hidden,
            "dropout": self.dropout,
            "embedding_dim": self.embedding_dim,
            "max_embedding_dim": self.max_embedding_dim,
            "activation": self.activation,
            "mask_token": self.mask_token,
        }

    @property
    def config(self) -> dict[str, Any]:
        return self.to_config()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TabularResNet":
        config = dict(config)
        return cls(config.pop("n_numeric"), config.pop("cardinalities"), **config)

    def count_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @property
    def n_fields(self) -> int:
        return self.n_numeric + len(self.cardinalities)

    # ---- forward
    def _check(self, numeric: Tensor, categorical: Tensor, numeric_mask: Tensor | None) -> None:
        n = numeric.shape[0]
        if numeric.dim() != 2 or numeric.shape[1] != self.n_numeric:
            raise ValueError(f"numeric must be [n, {self.n_numeric}], got {list(numeric.shape)}")
        if categorical.dim() != 2 or categorical.shape != (n, len(self.cardinalities)):
            raise ValueError(f"categorical must be [{n}, {len(self.cardinalities)}], got {list(categorical.shape)}")
        if numeric_mask is not None and not self.mask_token:
            raise ValueError("numeric_mask needs a model built with mask_token=True")
        if self.check_inputs and categorical.numel():
            max_ids = self.max_ids.to(categorical.device)  # embed checks its input before moving it to the model
            if categorical.device.type == "cpu":
                check_ids_in_range(categorical.numpy(), max_ids.numpy(), self.cardinalities)
            elif bool((categorical > max_ids).any()) or int(categorical.min()) < 0:
                check_ids_in_range(categorical.cpu().numpy(), max_ids.cpu().numpy(), self.cardinalities)

    def forward(self, numeric: Tensor, categorical: Tensor, numeric_mask: Tensor | None = None) -> Tensor:
        """Representation ``[n, d_model]``; ``numeric_mask`` (bool ``[n, d_num]``) marks masked numeric inputs."""
        self._check(numeric, categorical, numeric_mask)
        # The input projection is one Linear over [numeric (, mask indicators), embeddings]; it is applied as two
        # products (no concatenated copy, and no gradient computed for the numeric inputs).
        weight, bias = self.input_projection.weight, self.input_projection.bias
        d_num_in = self.d_input - (self.embeddings.out_dim if self.embeddings is not None else 0)
        x = None
        if self.embeddings is not None:
            x = F.linear(self.embeddings(categorical), weight[:, d_num_in:], bias)
        if self.n_numeric:
            num = numeric.to(weight.dtype)
            if self.mask_token:
                mask = numeric_mask.to(weight.dtype) if numeric_mask is not None else torch.zeros_like(num)
                num = torch.cat([num, mask], dim=1)
            w_num = weight[:, :d_num_in]
            x = F.linear(num, w_num, bias) if x is None else torch.addmm(x, num, w_num.t())
        for block in self.blocks:
            x = block(x)
        return self.output_norm(x)

    @torch.no_grad()
    def embed(self, numeric: Any, categorical: Any, batch_size: int = 8192) -> Tensor:
        """Representations of many events ``[n, d_model]`` (CPU float32), in eval mode, in batches.

        Accepts arrays or tensors (e.g. ``EncodedFeatures.numeric`` / ``.categorical``); the module's mode is
        restored afterwards.
        """
        device = self.input_projection.weight.device
        numeric = torch.as_tensor(numeric, dtype=torch.float32)
        categorical = torch.as_tensor(categorical, dtype=torch.long)
        self._check(numeric, categorical, None)
        # modes switched only where one is training: switching every submodule costs more than a one-event forward
        training = [m for m in self._all_modules() if m.training]
        for m in training:
            m.training = False
        try:
            folded = self._folded_input()
            on_cpu = device.type == "cpu"  # no copies to make: a few events skip the calls that would make none
            parts = []
            for s in range(0, numeric.shape[0], batch_size):
                num, cat = numeric[s:s + batch_size], categorical[s:s + batch_size]
                if not on_cpu:
                    num, cat = num.to(device), cat.to(device)
                x = self._project_folded(num, cat, *folded)
                for block in self.blocks:
                    x = block(x)
                x = self.output_norm(x)
                parts.append(x if on_cpu and x.dtype == torch.float32 else x.float().cpu())
        finally:
            for m in training:
                m.training = True
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts) if parts else torch.empty(0, self.d_model)

    def _all_modules(self) -> tuple[nn.Module, ...]:
        """Every module of the model, listed once: walking the module tree on each call costs as much as a
        one-event forward (the tree is fixed once built)."""
        listed = self.__dict__.get("_module_list")
        if listed is None:
            listed = self.__dict__["_module_list"] = tuple(self.modules())
        return listed

    def _folded_input(self) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor]:
        """The input projection folded into the embedding tables, for inference: field ``j``'s table times its
        slice of the projection is a ``[rows_j, d_model]`` table, so an event's projected input is one summed
        lookup per field (``embedding_bag``) plus the numeric product — no ``[n, sum(widths)]`` intermediate and
        no large product. The same function as :meth:`forward` (up to float rounding, ~1e-6), 2-3 times faster on
        CPU. Kept until a weight changes (each tensor's in-place version counter says when an optimiser step or a
        ``load_state_dict`` did), so a service scoring one event at a time does not rebuild it per call."""
        weight, bias = self.input_projection.weight, self.input_projection.bias
        tensors = [weight, bias] + ([self.embeddings.weight] if self.embeddings is not None else [])
        key = tuple((id(t), t._version, t.device, t.dtype) for t in tensors)
        cached = getattr(self, "_folded_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        table = offsets = None
        if self.embeddings is not None:
            emb = self.embeddings
            column = self.d_input - emb.out_dim
            tables = []
            for j, width in enumerate(emb.widths):  # in float64: the same float32 table whatever the threads
                tables.append((emb.table(j).double() @ weight[:, column:column + width].double().t()).to(weight.dtype))
                column += width
            table = torch.cat(tables)
            offsets = torch.tensor([0] + list(itertools.accumulate(emb.rows))[:-1], dtype=torch.long,
                                   device=weight.device)
        folded = (table, offsets, weight[:, :self.n_numeric], bias)
        self._folded_cache = (key, folded)
        return folded

    def _project_folded(self, numeric: Tensor, categorical: Tensor, table: Tensor | None, offsets: Tensor | None,
                        w_num: Tensor, bias: Tensor) -> Tensor:
        x = bias.expand(numeric.shape[0], -1)
        if table is not None:
            x = x + F.embedding_bag(categorical + offsets, table, mode="sum")
        if self.n_numeric:  # in inference no input is masked: the mask indicators' columns multiply zeros
            x = torch.addmm(x, numeric.to(w_num.dtype), w_num.t())
        return x


# --------------------------------------------------------------------------------------------- heads
@register_model
class ProjectionHead(nn.Module):
    """The contrastive projection ``Linear(d_model, d_hidden) -> GELU -> Linear(d_hidden, proj_dim)``.

    The loss is computed on its output; the representation kept for detection is its input.
    """

    def __init__(self, d_model: int, proj_dim: int = 32, d_hidden: int | None = None) -> None:
        super().__init__()
        self.d_model, self.proj_dim = int(d_model), int(proj_dim)
        self.d_hidden = int(d_hidden) if d_hidden is not None else self.d_model
        self.net = nn.Sequential(nn.Linear(self.d_model, self.d_hidden), nn.GELU(),
                                 nn.Linear(self.d_hidden, self.proj_dim))

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)

    def to_config(self) -> dict[str, Any]:
        return {"d_model": self.d_model, "proj_dim": self.proj_dim, "d_hidden": self.d_hidden}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ProjectionHead":
        return cls(**config)

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass
class MaskedPrediction:
    """A :class:`MaskedFeatureHead` output: numeric ``mean`` / ``logvar`` (``None`` for MSE) ``[n, d_num]`` and
    the categorical ``logits`` of all fields side by side ``[n, sum(cardinalities)]``."""

    mean: Tensor
    logvar: Tensor | None
    logits: Tensor


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@register_model
class MaskedFeatureHead(nn.Module):
    """Predicts every field from the representation: a Gaussian (mean, log-variance) or a value per numeric field,
    and logits over each categorical field's vocabulary.

    ``Linear(d_model, d_hidden) -> GELU -> Linear(d_hidden, n_out)`` with ``n_out = d_num * (2 | 1) +
    sum(cardinalities)``: one matmul for all fields, computed transposed (``[n_out, n]``, one row per output) so
    that a field's logits are contiguous rows. The categorical cross-entropy (:meth:`categorical_nll`) gathers the
    logit rows of fields of similar vocabulary size into padded blocks (at most ``pad_ratio`` times the largest
    vocabulary of the block, ~20 blocks for 80 fields) and takes one ``logsumexp`` per block. Losses are in nats:
    ``-log p(value)`` for categoricals, the Gaussian negative log-density (constant included) or the squared
    error for numerics. The log-variance is soft-bounded to ``[-max_logvar, max_logvar]`` so a field that is
    perfectly predictable (an indicator) cannot drive its loss to minus infinity.
    """

    def __init__(self, d_model: int, n_numeric: int, cardinalities: Sequence[int], d_hidden: int | None = None,
                 numeric_loss: str = "gaussian", max_logvar: float = 6.0, pad_ratio: float = 1.3) -> None:
        super().__init__()
        if numeric_loss not in ("gaussian", "mse"):
            raise ValueError(f"numeric_loss must be 'gaussian' or 'mse', got {numeric_loss!r}")
        self.d_model, self.n_numeric = int(d_model), int(n_numeric)
        self.cardinalities = [int(c) for c in cardinalities]
        self.d_hidden = int(d_hidden) if d_hidden is not None else self.d_model
        self.numeric_loss = numeric_loss
        self.max_logvar = float(max_logvar)
        self.n_numeric_out = self.n_numeric * (2 if numeric_loss == "gaussian" else 1)
        self.n_logits = sum(self.cardinalities)
        self.trunk = nn.Sequential(nn.Linear(self.d_model, self.d_hidden), nn.GELU())
        self.output = nn.Linear(self.d_hidden, self.n_numeric_out + self.n_logits)
        offsets = [0]
        for c in self.cardinalities[:-1]:
            offsets.append(offsets[-1] + c)
        self.register_buffer("logit_offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        # Blocks of fields with similar vocabularies: block b holds n_b fields padded to width w_b; its rows in
        # the padded layout are [start_b, start_b + n_b * w_b). Padding rows point at row 0 and are set to -inf.
        order = sorted(range(len(self.cardinalities)), key=lambda j: self.cardinalities[j])
        blocks: list[list[int]] = []
        for j in order:
            if blocks and self.cardinalities[j] <= pad_ratio * self.cardinalities[blocks[-1][0]]:
                blocks[-1].append(j)
            else:
                blocks.append([j])
        rows: list[int] = []
        pads: list[int] = []
        self.blocks: list[tuple[int, int, int]] = []  # (start, n_fields, width)
        for block in blocks:
            width = max(self.cardinalities[j] for j in block)
            self.blocks.append((len(rows), len(block), width))
            for j in block:
                c = self.cardinalities[j]
                pads.extend(range(len(rows) + c, len(rows) + width))
                rows.extend(offsets[j] + k for k in range(c))
                rows.extend([0] * (width - c))
        block_order = [j for block in blocks for j in block]
        self.register_buffer("pad_rows", torch.tensor(rows, dtype=torch.long), persistent=False)
        self.register_buffer("pad_fill", torch.tensor(pads, dtype=torch.long), persistent=False)
        self.register_buffer("block_inverse", torch.argsort(torch.tensor(block_order, dtype=torch.long)),
                             persistent=False)
        self.pad_ratio = float(pad_ratio)

    def to_config(self) -> dict[str, Any]:
        return {"d_model": self.d_model, "n_numeric": self.n_numeric, "cardinalities": list(self.cardinalities),
                "d_hidden": self.d_hidden, "numeric_loss": self.numeric_loss, "max_logvar": self.max_logvar,
                "pad_ratio": self.pad_ratio}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MaskedFeatureHead":
        return cls(**config)

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- predictions
    def _numeric_from(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.numeric_loss == "gaussian":
            mean, raw_logvar = raw.unflatten(-1, (self.n_numeric, 2)).unbind(-1)
            return mean, self.max_logvar * torch.tanh(raw_logvar / self.max_logvar)
        return raw, None

    def forward(self, h: Tensor) -> MaskedPrediction:
        hidden = self.trunk(h)
        # [n_out, n]: every output is a contiguous row (the logits of a field are consecutive rows)
        out_t = torch.addmm(self.output.bias[:, None], self.output.weight, hidden.t())
        # split (not slices): its backward is one concatenation, not a zero-filled full-size tensor per slice
        num_t, logits_t = out_t.split([self.n_numeric_out, self.n_logits], dim=0)
        mean, logvar = self._numeric_from(num_t.t())
        return MaskedPrediction(mean, logvar, logits_t.t())

    # ---- losses
    def numeric_nll(self, pred: MaskedPrediction, target: Tensor) -> Tensor:
        """Per-field numeric loss ``[n, d_num]``."""
        logvar = None if pred.logvar is None else pred.logvar.float()
        return self._numeric_loss(pred.mean.float(), logvar, target.float())

    def _numeric_loss(self, mean: Tensor, logvar: Tensor | None, target: Tensor) -> Tensor:
        err2 = (target - mean).square()
        if logvar is None:
            return err2
        return 0.5 * (logvar + err2 * torch.exp(-logvar)) + _HALF_LOG_2PI

    def categorical_nll(self, pred: MaskedPrediction, target: Tensor) -> Tensor:
        """Per-field cross-entropy ``[n, d_cat]`` (``target`` ids in ``[0, cardinality)``): the logits of each block
        of similar fields are gathered as padded rows, padding set to -inf, one ``logsumexp`` per block."""
        logits_t = pred.logits.t().float().contiguous()  # [S, n]; already contiguous from forward()
        n = logits_t.shape[1]
        padded = logits_t.index_select(0, self.pad_rows)
        if self.pad_fill.numel():
            padded.index_fill_(0, self.pad_fill, float("-inf"))
        parts = padded.split([k * w for _, k, w in self.blocks], dim=0)
        lse = torch.cat([torch.logsumexp(part.view(k, w, n), dim=1) for part, (_, k, w) in zip(parts, self.blocks)],
                        dim=0).index_select(0, self.block_inverse)  # [d_cat, n]
        flat = (target.t() + self.logit_offsets[:, None]) * n + torch.arange(n, device=target.device)
        return (lse - logits_t.view(-1).take(flat)).t()

    def field_losses(self, pred: MaskedPrediction, numeric: Tensor, categorical: Tensor) -> Tensor:
        """Every field's loss ``[n, d_num + d_cat]`` (numeric fields first, as in ``EncodedFeatures``)."""
        parts = []
        if self.n_numeric:
            parts.append(self.numeric_nll(pred, numeric))
        if self.cardinalities:
            parts.append(self.categorical_nll(pred, categorical))
        return torch.cat(parts, dim=1)

    # ---- one field at a time (per-field surprise): only that field's outputs are computed
    def hidden(self, h: Tensor) -> Tensor:
        return self.trunk(h)

    def numeric_field_loss(self, hidden: Tensor, field: Tensor, target: Tensor) -> Tensor:
        """Loss of numeric field ``field[i]`` for row ``i`` (``hidden`` ``[m, d_hidden]``, ``field``/``target``
        ``[m]``), computing only the two (or one) outputs that field needs."""
        k = 2 if self.numeric_loss == "gaussian" else 1
        rows = (field.unsqueeze(1) * k + torch.arange(k, device=field.device)).flatten()  # [m * k]
        w = self.output.weight.index_select(0, rows).view(-1, k, self.d_hidden)
        b = self.output.bias.index_select(0, rows).view(-1, k)
        raw = (torch.einsum("mh,mkh->mk", hidden, w) + b).float()
        if k == 2:
            mean, logvar = raw[:, 0], self.max_logvar * torch.tanh(raw[:, 1] / self.max_logvar)
        else:
            mean, logvar = raw[:, 0], None
        return self._numeric_loss(mean, logvar, target.to(mean.dtype))

    def categorical_field_loss(self, hidden: Tensor, field: int, target: Tensor) -> Tensor:
        """Cross-entropy of categorical field ``field`` for every row of ``hidden`` (only its logits computed)."""
        start = self.n_numeric_out + int(self.logit_offsets[field])
        stop = start + self.cardinalities[field]
        logits = F.linear(hidden, self.output.weight[start:stop], self.output.bias[start:stop])
        return F.cross_entropy(logits, target, reduction="none")


# --------------------------------------------------------------------------------------------- persistence
def save_model(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` (class and config) and ``weights.safetensors`` (the state dict) into ``directory``.

    Works for any registered module with ``to_config()`` (the encoder, the heads, the objectives).
    """
    from safetensors.torch import save_file

    name = type(model).__name__
    if _REGISTRY.get(name) is not type(model) or not hasattr(model, "to_config"):
        raise TypeError(f"{name} is not a registered model (see obsad.models.register_model)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # Tied or shared tensors would make safetensors refuse; give every entry its own storage.
    state = {k: v.clone() for k, v in state.items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "class": name})
        canonicalize_safetensors(tmp)  # same weights, same bytes
    write_json({"format": FORMAT, "version": VERSION, "class": name, "config": model.to_config(),
                "n_parameters": int(sum(p.numel() for p in model.parameters()))}, directory / CONFIG_FILE)
    return directory


def _resolve_class(name: str) -> type:
    if name not in _REGISTRY:
        # Objectives (obsad.train) and the log pipeline's models (obsad.logs.model) register themselves on import.
        import importlib

        for module in ("obsad.train.objectives", "obsad.logs.model"):
            importlib.import_module(module)
            if name in _REGISTRY:
                break
    if name not in _REGISTRY:
        raise ValueError(f"unknown model class {name!r} in {CONFIG_FILE}")
    return _REGISTRY[name]


def load_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the module saved by :func:`save_model` (in eval mode).

    Raises ``ValueError`` when a file is missing, unreadable or corrupt, when the config is not an obsad model,
    or when the weights do not match the architecture the config describes (names, shapes or dtypes).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise ValueError(f"{p} is missing: not a saved obsad model directory")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{cfg_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{cfg_path} is not an obsad model config")
    if meta.get("version") != VERSION:
        raise ValueError(f"{cfg_path}: unsupported version {meta.get('version')!r} (this obsad reads {VERSION})")
    cls = _resolve_class(str(meta.get("class")))
    try:
        model = cls.from_config(meta["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{cfg_path}: invalid config for {cls.__name__}: {exc}") from exc
    try:
        state = load_file(str(w_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{w_path} is not a readable safetensors file: {exc}") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{w_path} does not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in expected.items():
        if getattr(model, "_resizable_state", None) and k in model._resizable_state():
            continue
        if state[k].shape != v.shape or state[k].dtype != v.dtype:
            raise ValueError(f"{w_path}: {k} has shape {list(state[k].shape)} {state[k].dtype}, the config "
                             f"expects {list(v.shape)} {v.dtype}")
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{w_path}: {k} has non-finite values")
    model.load_state_dict(state)
    return model.to(map_location).eval()
