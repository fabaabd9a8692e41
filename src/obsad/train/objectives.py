"""Self-supervised objectives for the encoder: augmentations, masking, losses.

Every objective is an ``nn.Module`` that owns the encoder (attribute ``encoder``, a
:class:`~obsad.models.TabularResNet`) and its head(s), and implements the interface the trainer uses::

    out = objective({"numeric": float [b, d_num], "categorical": long [b, d_cat]})
    out.loss.backward()            # scalar
    log(out.metrics)               # dict[str, float], already detached

- :class:`ContrastiveObjective` — SimCLR / NT-Xent between two views of each event made by
  :class:`FieldAugmentation` (per-field noise, replacement from the field's own distribution, field dropout);
  identical input rows in a batch are never negatives of one another.
- :class:`MaskedFeatureObjective` — mask a fraction of the fields of each event and reconstruct them from the
  others (Gaussian NLL for numerics, cross-entropy for categoricals); :meth:`~MaskedFeatureObjective.per_field_surprise`
  scores how unlikely each field is given all the others — the per-field anomaly signal.

**Randomness.** Every random draw (augmentations, masks, dropout) comes from the *global* torch RNG (no private
generator), so ``torch.manual_seed`` makes a run reproducible and restoring ``torch.get_rng_state()`` (and the CUDA
states) on resume continues the exact same stream. On CUDA the augmentation's draws use the CUDA generator of the
batch's device.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.tabular import MaskedFeatureHead, ProjectionHead, TabularResNet, register_model

__all__ = [
    "ObjectiveOutput",
    "FieldAugmentation",
    "duplicate_groups",
    "nt_xent",
    "ContrastiveObjective",
    "MaskedFeatureObjective",
]


@dataclass
class ObjectiveOutput:
    """What one objective step returns: the scalar ``loss`` to backpropagate and detached ``metrics`` to log."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def _as_tensor(x: Any, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(device=device or x.device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------- augmentation
def _alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker / Vose alias table of a distribution ``p`` over ``K`` outcomes: draw column ``k`` uniformly, keep
    it with probability ``prob[k]``, else take ``alias[k]``. Exact, O(1) per draw."""
    k = len(p)
    q = p * k
    prob = np.ones(k)
    alias = np.arange(k)
    small = [i for i in range(k) if q[i] < 1.0]
    large = [i for i in range(k) if q[i] >= 1.0]
    while small and large:
        s, big = small.pop(), large.pop()
        prob[s], alias[s] = q[s], big
        q[big] = q[big] + q[s] - 1.0
        (small if q[big] < 1.0 else large).append(big)
    return prob, alias  # leftovers (rounding) keep prob 1


class FieldAugmentation(nn.Module):
    """Two views of an event for contrastive learning, field by field, vectorised over the batch.

    For each (row, field), independently:

    - numeric fields get Gaussian noise of ``numeric_noise`` times the field's own standard deviation (none for
      fitted columns with at most two values, such as missing or private flags: they state facts);
    - categorical fields are, with probability ``categorical_replace_prob``, replaced by a value drawn from the
      field's own empirical distribution (SCARF-style corruption: the replacement is plausible on its own, so the
      encoder must learn which *combinations* are normal);
    - any field is, with probability ``field_dropout``, set to missing (categorical id 0, numeric 0, the
      encoder's centre value). For a categorical field replacement and dropout are exclusive (one uniform draw
      decides both), so ``categorical_replace_prob + field_dropout <= 1``.

    ``protected_numeric`` / ``protected_categorical`` (indices, or names when :meth:`fit` is given the names) are
    never changed: fields whose change would make the event a different kind of event (the class, the
    activity...) and would otherwise teach the encoder to ignore them.

    :meth:`fit` records each numeric field's standard deviation and, for each categorical field, an alias table
    of its observed values and their frequencies: replacements for the whole batch cost a few gathers, exact
    draws from the field's distribution, and only values the field actually took in the training data. The
    fitted state lives in buffers, saved with the objective's state dict. Unfitted, the augmentation uses the
    batch itself: the batch's standard deviations, and replacements copied from random rows of the same column
    (the batch's empirical marginal).

    One uniform per (row, field) and one normal per numeric value are drawn per view, from the global torch RNG.
    """

    FITTED_BUFFERS = ("numeric_std", "alias_prob", "alias_values", "n_values", "numeric_free", "categorical_free")

    def __init__(
        self,
        numeric_noise: float = 0.1,
        categorical_replace_prob: float = 0.2,
        field_dropout: float = 0.1,
        protected_numeric: Iterable[int | str] = (),
        protected_categorical: Iterable[int | str] = (),
    ) -> None:
        super().__init__()
        for name, p in (("categorical_replace_prob", categorical_replace_prob), ("field_dropout", field_dropout)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if categorical_replace_prob + field_dropout > 1.0:
            raise ValueError("categorical_replace_prob + field_dropout must be <= 1")
        if numeric_noise < 0:
            raise ValueError(f"numeric_noise must be >= 0, got {numeric_noise}")
        self.numeric_noise = float(numeric_noise)
        self.categorical_replace_prob = float(categorical_replace_prob)
        self.field_dropout = float(field_dropout)
        self.protected_numeric = list(protected_numeric)
        self.protected_categorical = list(protected_categorical)
        self.register_buffer("fitted", torch.tensor(False))
        self.register_buffer("numeric_std", torch.empty(0))
        self.register_buffer("alias_prob", torch.empty(0, 0))
        self.register_buffer("alias_values", torch.empty(0, 0, 2, dtype=torch.long))
        self.register_buffer("n_values", torch.empty(0))
        self.register_buffer("numeric_free", torch.empty(0, dtype=torch.bool))
        self.register_buffer("categorical_free", torch.empty(0, dtype=torch.bool))

    def to_config(self) -> dict[str, Any]:
        return {"numeric_noise": self.numeric_noise, "categorical_replace_prob": self.categorical_replace_prob,
                "field_dropout": self.field_dropout, "protected_numeric": list(self.protected_numeric),
                "protected_categorical": list(self.protected_categorical)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "FieldAugmentation":
        return cls(**config)

    @staticmethod
    def _free(protected: Sequence[int | str], n: int, names: Sequence[str] | None, what: str) -> Tensor:
        free = torch.ones(n, dtype=torch.bool)
        for p in protected:
            if isinstance(p, str):
                if names is None:
                    raise ValueError(f"protected {what} field {p!r} given by name: pass {what}_names to fit()")
                if p not in names:
                    raise ValueError(f"protected {what} field {p!r} is not one of the {what} columns")
                free[list(names).index(p)] = False
            else:
                j = int(p)
                if not 0 <= j < n:
                    raise ValueError(f"protected {what} index {j} out of range [0, {n})")
                free[j] = False
        return free

    def fit(self, numeric: Any, categorical: Any, numeric_names: Sequence[str] | None = None,
            categorical_names: Sequence[str] | None = None) -> "FieldAugmentation":
        """Record per-field statistics from training data (arrays or tensors ``[n, d_num]``, ``[n, d_cat]``)."""
        num = _as_tensor(numeric, torch.float32, torch.device("cpu"))
        cat = _as_tensor(categorical, torch.long, torch.device("cpu"))
        if num.dim() != 2 or cat.dim() != 2 or num.shape[0] != cat.shape[0] or num.shape[0] == 0:
            raise ValueError("fit needs numeric [n, d_num] and categorical [n, d_cat] with the same n > 0")
        if cat.numel() and cat.min() < 0:
            raise ValueError("categorical ids must be >= 0")
        device = self.fitted.device
        d_cat = cat.shape[1]
        std = num.std(0, unbiased=False) if num.shape[1] else torch.empty(0)
        # Columns with at most two values (missing flags, private/public flags) are facts, not measurements:
        # noise would only blur them, so their noise scale is zero.
        for j in range(num.shape[1]):
            if torch.unique(num[:, j]).numel() <= 2:
                std[j] = 0.0
        tables = []
        for j in range(d_cat):
            values, counts = np.unique(cat[:, j].numpy(), return_counts=True)
            prob, alias = _alias_table(counts / counts.sum())
            tables.append((values, prob, values[alias]))
        width = max((len(t[0]) for t in tables), default=0)
        alias_prob = torch.zeros(d_cat, width)
        alias_values = torch.zeros(d_cat, width, 2, dtype=torch.long)  # [..., 0]: the column's value, 1: its alias
        for j, (values, prob, other) in enumerate(tables):
            k = len(values)
            alias_prob[j, :k] = torch.from_numpy(prob)
            alias_values[j, :k, 0] = torch.from_numpy(values)
            alias_values[j, :k, 1] = torch.from_numpy(other)
        self.numeric_std = std.to(device)
        self.alias_prob, self.alias_values = alias_prob.to(device), alias_values.to(device)
        self.n_values = torch.tensor([float(len(t[0])) for t in tables], device=device)
        self.numeric_free = self._free(self.protected_numeric, num.shape[1], numeric_names, "numeric").to(device)
        self.categorical_free = self._free(self.protected_categorical, d_cat, categorical_names,
                                           "categorical").to(device)
        self.fitted = torch.tensor(True, device=device)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401 - torch hook
        # The fitted buffers' shapes depend on the data: take the saved shapes before the strict copy.
        for name in self.FITTED_BUFFERS:
            key = prefix + name
            if key in state_dict:
                old = getattr(self, name)
                setattr(self, name, torch.empty_like(state_dict[key], device=old.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def observed_values(self, j: int) -> Tensor:
        """The ids categorical field ``j`` took in the data :meth:`fit` saw (the only possible replacements)."""
        return self.alias_values[j, : int(self.n_values[j]), 0].clone()

    def _masks(self, d_num: int, d_cat: int, device: torch.device) -> tuple[Tensor, Tensor]:
        if self.is_fitted:
            if self.numeric_free.numel() != d_num or self.categorical_free.numel() != d_cat:
                raise ValueError(f"the augmentation was fitted on {self.numeric_free.numel()} numeric and "
                                 f"{self.categorical_free.numel()} categorical fields, got {d_num} and {d_cat}")
            return self.numeric_free, self.categorical_free
        return (self._free(self.protected_numeric, d_num, None, "numeric").to(device),
                self._free(self.protected_categorical, d_cat, None, "categorical").to(device))

    def _draw(self, x: Tensor, cols: Tensor, categorical: Tensor) -> Tensor:
        """Replacement ids for the entries of columns ``cols`` from uniforms ``x`` in [0, 1) (one per entry)."""
        if not self.is_fitted:  # a random row of the batch, same column
            rows = (x * categorical.shape[0]).long().clamp_(max=categorical.shape[0] - 1)
            return categorical[rows, cols]
        # alias method: column k = floor(x * K_j), the fractional part is the coin
        n_values = self.n_values.index_select(0, cols)
        scaled = x * n_values
        col = scaled.long()
        coin = scaled - col
        col = torch.minimum(col, n_values.long() - 1)
        flat = col + cols * self.alias_prob.shape[1]
        use_alias = coin >= self.alias_prob.view(-1).take(flat)
        return self.alias_values.view(-1).take(flat * 2 + use_alias)

    def forward(self, numeric: Tensor, categorical: Tensor) -> tuple[Tensor, Tensor]:
        """One random view ``(numeric, categorical)`` of the batch (inputs are not modified)."""
        b, d_num = numeric.shape
        d_cat = categorical.shape[1]
        num_free, cat_free = self._masks(d_num, d_cat, numeric.device)
        p_rep, p_drop = self.categorical_replace_prob, self.field_dropout
        if d_num and self.numeric_noise > 0:
            std = self.numeric_std if self.is_fitted else numeric.std(0, unbiased=False)
            numeric = torch.addcmul(numeric, torch.randn_like(numeric), (self.numeric_noise * std) * num_free)
        if not (p_drop > 0 or (d_cat and p_rep > 0)):
            return numeric, categorical
        u = torch.rand(b, d_num + d_cat, device=numeric.device)
        if d_num and p_drop > 0:
            numeric = numeric.masked_fill((u[:, :d_num] < p_drop) & num_free, 0.0)
        if d_cat:
            uc = u[:, d_num:]
            if p_rep > 0:
                # u < p_rep: replace, and u / p_rep is again uniform on [0, 1): it picks the replacement
                where = ((uc < p_rep) & cat_free).nonzero(as_tuple=True)
                drawn = self._draw(uc[where] * (1.0 / p_rep), where[1], categorical)
                categorical = categorical.index_put(where, drawn)
            if p_drop > 0:
                drop = (uc >= p_rep) & (uc < p_rep + p_drop) & cat_free
                categorical = categorical.masked_fill(drop, 0)
        return numeric, categorical


# --------------------------------------------------------------------------------------------- NT-Xent
_HASH_MULT = None


def duplicate_groups(numeric: Tensor, categorical: Tensor) -> Tensor:
    """Group id per row ``[b]`` (long): rows with identical inputs share an id, every other row has its own.

    A 64-bit multiplicative hash of each row (numeric values by their bit pattern, -0.0 read as 0.0), then an
    exact check against one representative per hash value: a hash collision can only *split* a group, never
    merge two different rows.
    """
    global _HASH_MULT
    b = numeric.shape[0]
    bits = (numeric.float() + 0.0).contiguous().view(torch.int32).to(torch.long)
    x = torch.cat([bits, categorical.to(torch.long)], dim=1)
    k = x.shape[1]
    if _HASH_MULT is None or _HASH_MULT.numel() < k:
        g = torch.Generator().manual_seed(0x0B5AD)
        _HASH_MULT = torch.randint(1, 2**62, (max(k, 256),), generator=g) | 1
    mult = _HASH_MULT[:k].to(x.device)
    h = (x * mult).sum(1)  # wraps modulo 2**64: exact integer arithmetic, identical rows hash identically
    uniq, inverse = torch.unique(h, return_inverse=True)
    if uniq.numel() == b:  # no two rows hash alike: no duplicates (the common case)
        return torch.arange(b, device=x.device)
    rep = torch.full((b,), b, dtype=torch.long, device=x.device).scatter_reduce(
        0, inverse, torch.arange(b, device=x.device), reduce="amin", include_self=True)
    first = rep[inverse]
    same = (x == x[first]).all(1)
    return torch.where(same, first, torch.arange(b, device=x.device))


_SIM_BUFFERS = threading.local()


def _reusable_buffer(n: int, like: Tensor) -> Tensor | None:
    """The ``[n, n]`` similarity buffer of the last CPU step, if no live graph still needs it.

    A fresh 4 MB matrix per step costs a thousand page faults on CPU (the allocator hands large blocks back to
    the OS); reusing it is safe once the step that wrote it has run its backward or been freed.
    """
    if like.device.type != "cpu":
        return None  # the CUDA caching allocator already reuses memory
    cache = getattr(_SIM_BUFFERS, "entries", None)
    entry = cache.get((like.dtype, n)) if cache else None
    if entry is None:
        return None
    buf, owner = entry
    ctx = owner()
    return buf if ctx is None or ctx.done else None


def _remember_buffer(buf: Tensor, ctx) -> None:
    if buf.device.type == "cpu":
        if getattr(_SIM_BUFFERS, "entries", None) is None:
            _SIM_BUFFERS.entries = {}
        _SIM_BUFFERS.entries[(buf.dtype, buf.shape[0])] = (buf, weakref.ref(ctx))


class _NTXentFunction(torch.autograd.Function):
    """Per-row NT-Xent on unit vectors ``z [n, d]``, with a fused softmax and a symmetric backward.

    Forward: ``E = exp(z z^T / T)`` with the excluded entries (the diagonal, duplicates) at 0, built in place;
    ``loss_i = log sum_j E_ij - z_i . z_p(i) / T``. As ``z`` has unit rows, every logit lies in ``[-1/T, 1/T]``,
    so for ``T >= 0.025`` no max-shift is needed (``exp(40)`` is far from float32's limits) and ``E`` is
    symmetric; the backward is then one product with ``E``::

        dL/dz = (d * (E z) + E (d * z) - (g + g[p]) * z[p]) / T,   d = g / sum_j E_ij

    (``g`` the incoming gradient per row, ``p`` the positive of each row, an involution). Lower temperatures
    subtract each row's maximum, which breaks the symmetry, and use two products.
    """

    @staticmethod
    def forward(ctx, z: Tensor, positive: Tensor, exclude: Tensor | None, inv_t: float, needs_grad: bool):
        buf = _reusable_buffer(z.shape[0], z)
        e = torch.mm(z * inv_t, z.t()) if buf is None else torch.mm(z * inv_t, z.t(), out=buf)
        ctx.done = not needs_grad  # without a backward to come, the buffer is free once this returns
        _remember_buffer(e, ctx)
        if exclude is None:
            e.fill_diagonal_(float("-inf"))
        else:
            e.masked_fill_(exclude, float("-inf"))
        symmetric = inv_t <= 40.0
        if symmetric:
            shift = None
        else:
            shift = e.amax(1)
            e.sub_(shift[:, None])
        e.exp_()
        total = e.sum(1)
        pos_logit = (z * z.index_select(0, positive)).sum(1) * inv_t
        if shift is not None:
            pos_logit = pos_logit - shift
        loss = total.log() - pos_logit
        pos_prob = pos_logit.exp() / total
        ctx.save_for_backward(z, e, total, positive)
        ctx.inv_t = inv_t
        ctx.symmetric = symmetric
        ctx.mark_non_differentiable(pos_prob)
        return loss, pos_prob

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_prob: Tensor):
        z, e, total, positive = ctx.saved_tensors
        d = (grad_loss / total)[:, None]
        z_pos = z.index_select(0, positive)
        g_pair = (grad_loss + grad_loss.index_select(0, positive))[:, None]
        if ctx.symmetric:
            dim = z.shape[1]
            prod = torch.mm(e, torch.cat([z, d * z], dim=1))
            grad_z = torch.addcmul(prod[:, dim:], d, prod[:, :dim])
        else:
            # G = d * E (row-scaled softmax); (G + G^T) z = d * (E z) + E^T (d * z)
            grad_z = torch.addcmul(torch.mm(e.t(), d * z), d, torch.mm(e, z))
        grad_z.sub_(g_pair * z_pos).mul_(ctx.inv_t)
        ctx.done = True  # its similarity buffer may now be reused
        return grad_z, None, None, None, None


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1, groups: Tensor | None = None,
            reduction: str = "mean", return_positive_prob: bool = False):
    """NT-Xent (SimCLR) loss between two views ``z1``, ``z2`` ``[b, d]`` (normalised here).

    Each of the ``2b`` embeddings has its other view as positive and the ``2b - 2`` other embeddings as
    negatives, at temperature ``temperature``. ``groups`` (``[b]``, e.g. :func:`duplicate_groups`) removes from
    the denominator every embedding of a row in the same group (a duplicate event is not a negative).
    ``reduction``: ``"mean"`` or ``"none"`` (``[2b]``, view 1 rows then view 2 rows). With
    ``return_positive_prob`` also returns the mean softmax probability of the positive (a detached float).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be [b, d], got {list(z1.shape)} and {list(z2.shape)}")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    n = 2 * b
    idx = torch.arange(n, device=z.device)
    positive = (idx + b) % n
    exclude = None
    if groups is not None:
        groups = groups.to(z.device)
        if groups.shape != (b,):
            raise ValueError(f"groups must be [{b}], got {list(groups.shape)}")
        if torch.unique(groups).numel() < b:
            g2 = torch.cat([groups, groups])
            exclude = g2[:, None] == g2[None, :]
            exclude[idx, positive] = False
    if z.dtype not in (torch.float32, torch.float64):
        z = z.float()  # a softmax over 2b entries wants (at least) float32
    needs_grad = torch.is_grad_enabled() and z.requires_grad
    with torch.autocast(z.device.type, enabled=False):
        loss, pos_prob = _NTXentFunction.apply(z, positive, exclude, 1.0 / float(temperature), needs_grad)
    if reduction == "mean":
        loss = loss.mean()
    elif reduction != "none":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if return_positive_prob:
        return loss, float(pos_prob.mean())
    return loss


def _batch(batch: dict[str, Tensor], encoder: TabularResNet) -> tuple[Tensor, Tensor]:
    try:
        numeric, categorical = batch["numeric"], batch["categorical"]
    except (KeyError, TypeError) as exc:
        raise ValueError("a batch is a dict with 'numeric' [b, d_num] and 'categorical' [b, d_cat]") from exc
    device = _device_of(encoder)
    return _as_tensor(numeric, torch.float32, device), _as_tensor(categorical, torch.long, device)


# --------------------------------------------------------------------------------------------- objectives
@register_model
class ContrastiveObjective(nn.Module):
    """SimCLR on events: two :class:`FieldAugmentation` views per event, NT-Xent on a :class:`ProjectionHead`.

    ``temperature=0.1``: SimCLR's range for batches of a few hundred (0.1–0.5); a low temperature weighs the
    hardest negatives most, which is what separates near-identical events of different users or services. The
    representation for detection is ``encoder(...)``, before the projection head. Exact duplicate events in a
    batch (frequent in logs: retries, heartbeats) are removed from each other's denominators. Fit the
    augmentation on the training features first (``objective.augmentation.fit(numeric, categorical)``);
    unfitted, it falls back to the statistics of each batch.
    """

    def __init__(self, encoder: TabularResNet, temperature: float = 0.1, proj_dim: int = 32,
                 augmentation: FieldAugmentation | None = None, projection: ProjectionHead | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.encoder = encoder
        self.temperature = float(temperature)
        self.augmentation = augmentation if augmentation is not None else FieldAugmentation()
        self.projection = projection if projection is not None else ProjectionHead(encoder.d_model, proj_dim)
        if self.projection.d_model != encoder.d_model:
            raise ValueError("the projection head's d_model differs from the encoder's")

    def to_config(self) -> dict[str, Any]:
        return {"encoder": self.encoder.to_config(), "temperature": self.temperature,
                "augmentation": self.augmentation.to_config(), "projection": self.projection.to_config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ContrastiveObjective":
        return cls(TabularResNet.from_config(config["encoder"]), temperature=config["temperature"],
                   augmentation=FieldAugmentation.from_config(config["augmentation"]),
                   projection=ProjectionHead.from_config(config["projection"]))

    def _resizable_state(self) -> set[str]:
        return {f"augmentation.{k}" for k in FieldAugmentation.FITTED_BUFFERS}

    def views(self, numeric: Tensor, categorical: Tensor) -> tuple[Tensor, Tensor]:
        """Both augmented views stacked: ``[2b, d_num]``, ``[2b, d_cat]`` (view 1 rows, then view 2 rows).

        The batch is stacked twice and augmented in one pass (independent draws per row: two independent views).
        """
        return self.augmentation(torch.cat([numeric, numeric]), torch.cat([categorical, categorical]))

    def forward(self, batch: dict[str, Tensor]) -> ObjectiveOutput:
        numeric, categorical = _batch(batch, self.encoder)
        b = numeric.shape[0]
        if b < 2:
            raise ValueError("contrastive learning needs at least 2 events per batch")
        groups = duplicate_groups(numeric, categorical)
        num2, cat2 = self.views(numeric, categorical)
        z = self.projection(self.encoder(num2, cat2))
        loss, pos_prob = nt_xent(z[:b], z[b:], self.temperature, groups, return_positive_prob=True)
        n_dup = int((groups != torch.arange(b, device=groups.device)).sum())
        return ObjectiveOutput(loss, {"loss": float(loss.detach()), "positive_prob": pos_prob,
                                      "duplicates": float(n_dup)})


@register_model
class MaskedFeatureObjective(nn.Module):
    """Masked-feature modelling: hide a fraction of each event's fields, predict them from the others.

    Each (row, field) is *selected* with probability ``mask_prob``. A selected field is hidden — a numeric value
    replaced by 0 and flagged to the encoder (its learned ``[MASK]`` vector), a categorical id by the field's
    ``[MASK]`` id (the encoder must be built with ``mask_token=True``) — except, with probability
    ``replace_prob``, when it is instead replaced by the same field's value in another random event of the batch,
    unflagged (BERT's random-token corruption). The :class:`MaskedFeatureHead` predicts every field; the loss is
    the mean, over the **selected** fields only, of the Gaussian negative log-likelihood (or squared error) of
    numerics and the cross-entropy of categoricals, all in nats. The replaced fields teach the model that a field
    may disagree with the others and must then be predicted from the others — what
    :meth:`per_field_surprise` relies on to point at a corrupted field rather than at the fields it misleads.
    Fields are ordered numeric first, then categorical, as in ``EncodedFeatures.feature_names``.
    """

    def __init__(self, encoder: TabularResNet, mask_prob: float = 0.2, numeric_loss: str = "gaussian",
                 head_hidden: int | None = None, head: MaskedFeatureHead | None = None,
                 replace_prob: float = 0.2) -> None:
        super().__init__()
        if not encoder.mask_token:
            raise ValueError("MaskedFeatureObjective needs an encoder built with mask_token=True")
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        if not 0.0 <= replace_prob < 1.0:
            raise ValueError(f"replace_prob must be in [0, 1), got {replace_prob}")
        self.encoder = encoder
        self.mask_prob = float(mask_prob)
        self.replace_prob = float(replace_prob)
        self.head = head if head is not None else MaskedFeatureHead(
            encoder.d_model, encoder.n_numeric, encoder.cardinalities, d_hidden=head_hidden,
            numeric_loss=numeric_loss)
        if (self.head.d_model, self.head.n_numeric, self.head.cardinalities) != \
                (encoder.d_model, encoder.n_numeric, encoder.cardinalities):
            raise ValueError("the head's sizes differ from the encoder's")

    def to_config(self) -> dict[str, Any]:
        return {"encoder": self.encoder.to_config(), "mask_prob": self.mask_prob, "replace_prob": self.replace_prob,
                "head": self.head.to_config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MaskedFeatureObjective":
        return cls(TabularResNet.from_config(config["encoder"]), mask_prob=config["mask_prob"],
                   replace_prob=config.get("replace_prob", 0.0), head=MaskedFeatureHead.from_config(config["head"]))

    @property
    def n_fields(self) -> int:
        return self.encoder.n_fields

    def sample_mask(self, n: int, device: torch.device | None = None) -> Tensor:
        """A random selection ``[n, n_fields]`` (True = to predict), each entry with probability ``mask_prob``."""
        return torch.rand(n, self.n_fields, device=device or _device_of(self)) < self.mask_prob

    def _encode_masked(self, numeric: Tensor, categorical: Tensor, mask: Tensor) -> Tensor:
        d_num = self.encoder.n_numeric
        m_num, m_cat = mask[:, :d_num], mask[:, d_num:]
        numeric = numeric.masked_fill(m_num, 0.0)
        categorical = torch.where(m_cat, self.encoder.mask_ids, categorical)
        return self.encoder(numeric, categorical, numeric_mask=m_num)

    def _check_mask(self, mask: Tensor, n: int, what: str = "mask") -> Tensor:
        if mask.shape != (n, self.n_fields):
            raise ValueError(f"{what} must be [{n}, {self.n_fields}], got {list(mask.shape)}")
        return mask.to(dtype=torch.bool)

    def field_losses(self, numeric: Tensor, categorical: Tensor, mask: Tensor,
                     target_numeric: Tensor | None = None, target_categorical: Tensor | None = None) -> Tensor:
        """Loss of every field ``[n, n_fields]`` when the fields in ``mask`` are hidden from the encoder.

        Targets default to the inputs; passing them separately lets a test (or an analysis) change what is
        predicted without changing what the encoder sees.
        """
        mask = self._check_mask(mask, numeric.shape[0]).to(numeric.device)
        pred = self.head(self._encode_masked(numeric, categorical, mask))
        return self.head.field_losses(pred, numeric if target_numeric is None else target_numeric,
                                      categorical if target_categorical is None else target_categorical)

    def masked_loss(self, numeric: Tensor, categorical: Tensor, mask: Tensor,
                    target_numeric: Tensor | None = None, target_categorical: Tensor | None = None,
                    loss_mask: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Hide the fields in ``mask`` and return the mean loss over the fields in ``loss_mask`` (default: the
        hidden ones) and metrics. Fields outside ``loss_mask`` contribute exactly nothing."""
        mask = self._check_mask(mask, numeric.shape[0]).to(numeric.device)
        selected = mask if loss_mask is None else self._check_mask(loss_mask, numeric.shape[0], "loss_mask")
        losses = self.field_losses(numeric, categorical, mask, target_numeric, target_categorical)
        masked = torch.where(selected, losses, losses.new_zeros(()))
        count = selected.sum()
        loss = masked.sum() / count.clamp_min(1)
        d_num = self.encoder.n_numeric
        with torch.no_grad():
            n_num, n_cat = selected[:, :d_num].sum(), selected[:, d_num:].sum()
            metrics = {
                "loss": float(loss),
                "numeric_loss": float(masked[:, :d_num].sum() / n_num.clamp_min(1)),
                "categorical_loss": float(masked[:, d_num:].sum() / n_cat.clamp_min(1)),
                "masked_fraction": float(count) / max(1, selected.numel()),
            }
        return loss, metrics

    def corrupt(self, numeric: Tensor, categorical: Tensor, replaced: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs with the fields in ``replaced`` taken from random other rows of the batch (same column)."""
        b, d_num = numeric.shape
        rows = torch.randint(0, b, (b, self.n_fields), device=numeric.device)
        numeric = torch.where(replaced[:, :d_num], numeric.gather(0, rows[:, :d_num]), numeric)
        categorical = torch.where(replaced[:, d_num:], categorical.gather(0, rows[:, d_num:]), categorical)
        return numeric, categorical

    def forward(self, batch: dict[str, Tensor], mask: Tensor | None = None) -> ObjectiveOutput:
        """One step's loss. With an explicit ``mask`` exactly those fields are hidden and scored (no replacement)."""
        numeric, categorical = _batch(batch, self.encoder)
        if mask is not None:
            loss, metrics = self.masked_loss(numeric, categorical, mask)
            return ObjectiveOutput(loss, metrics)
        selected = self.sample_mask(numeric.shape[0], numeric.device)
        hidden, num_in, cat_in = selected, numeric, categorical
        if self.replace_prob > 0:
            replaced = selected & (torch.rand(selected.shape, device=selected.device) < self.replace_prob)
            hidden = selected & ~replaced
            num_in, cat_in = self.corrupt(numeric, categorical, replaced)
        loss, metrics = self.masked_loss(num_in, cat_in, hidden, target_numeric=numeric,
                                         target_categorical=categorical, loss_mask=selected)
        return ObjectiveOutput(loss, metrics)

    @torch.no_grad()
    def per_field_surprise(self, numeric: Any, categorical: Any, groups: Sequence[Sequence[int]] | None = None,
                           batch_size: int = 16384) -> Tensor:
        """How unlikely each field is given all the others: ``[n, n_fields]`` losses in nats (CPU float32).

        For every field, its loss when that field alone is masked and every other field is visible. With
        ``groups`` (lists of field indices covering every field once), the fields of a group are masked
        together, ``len(groups)`` encoder passes per event instead of ``n_fields``. Vectorised: each event is
        repeated once per group in ``[rows * groups]`` chunks of about ``batch_size`` encoder rows, and only the
        outputs a field needs are computed. Runs in eval mode (no dropout); the module's mode is restored.
        """
        device = _device_of(self)
        numeric = _as_tensor(numeric, torch.float32, device)
        categorical = _as_tensor(categorical, torch.long, device)
        n = numeric.shape[0]
        d_num, n_f = self.encoder.n_numeric, self.n_fields
        if groups is None:
            groups = [[j] for j in range(n_f)]
        field_group = torch.full((n_f,), -1, dtype=torch.long)
        for g, members in enumerate(groups):
            for j in members:
                if not 0 <= int(j) < n_f or field_group[int(j)] >= 0:
                    raise ValueError(f"groups must cover every field index in [0, {n_f}) exactly once")
                field_group[int(j)] = g
        if (field_group < 0).any():
            raise ValueError(f"groups must cover every field index in [0, {n_f}) exactly once")
        n_g = len(groups)
        group_mask = torch.zeros(n_g, n_f, dtype=torch.bool)
        group_mask[field_group, torch.arange(n_f)] = True
        group_mask, field_group = group_mask.to(device), field_group.to(device)
        out = torch.empty(n, n_f, dtype=torch.float32)
        rows = max(1, int(batch_size) // n_g)
        was_training = self.training
        self.eval()
        try:
            for s in range(0, n, rows):
                num, cat = numeric[s:s + rows], categorical[s:s + rows]
                m = num.shape[0]
                mask = group_mask[:, None, :].expand(n_g, m, n_f).reshape(n_g * m, n_f)
                h = self._encode_masked(num.repeat(n_g, 1), cat.repeat(n_g, 1), mask)
                hidden = self.head.hidden(h).view(n_g, m, -1)
                if d_num:
                    hid = hidden.index_select(0, field_group[:d_num]).reshape(d_num * m, -1)
                    fields = torch.arange(d_num, device=device).repeat_interleave(m)
                    loss = self.head.numeric_field_loss(hid, fields, num.T.reshape(-1))
                    out[s:s + m, :d_num] = loss.view(d_num, m).T.float().cpu()
                for j in range(n_f - d_num):
                    loss = self.head.categorical_field_loss(hidden[int(field_group[d_num + j])], j, cat[:, j])
                    out[s:s + m, d_num + j] = loss.float().cpu()
        finally:
            self.train(was_training)
        return out
