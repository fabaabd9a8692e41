"""Per-field surprise: which field of an event is unlikely given all its other fields.

The masked-feature model of Part 4 predicts any hidden field from the visible ones. Hiding one raw column at a
time (all the encoder outputs of that column together) and reading its loss gives a surprise per column in
nats (:meth:`obsad.train.MaskedFeatureObjective.per_field_surprise`). Columns differ wildly in how predictable
they are (``class_name`` is nearly certain, a latency never is), so each column's surprise is put on a common
scale learned from training events: ``z = (surprise - median) / (q99 - median)``, so ``z = 1`` means "as
surprising as the 1 % most surprising training values of that column". The event score is the mean of its
``top`` largest ``z``; the columns behind them are the explanation.
"""

from __future__ import annotations

import numpy as np

from .base import BaseDetector, require_fitted


def _column_groups(features) -> tuple[list[str], list[list[int]]]:
    """Raw source columns and, for each, the indices of its encoder outputs (numeric first, then categorical)."""
    names = list(features.numeric_names) + list(features.categorical_names)
    sources = [features.sources.get(name, name) for name in names]
    columns = list(dict.fromkeys(sources))
    where = {c: i for i, c in enumerate(columns)}
    groups: list[list[int]] = [[] for _ in columns]
    for j, src in enumerate(sources):
        groups[where[src]].append(j)
    return columns, groups


class FieldSurpriseDetector(BaseDetector):
    """Event score from per-column surprise of a masked-feature model (``MaskedFeatureObjective``).

    ``fit(features)`` takes :class:`~obsad.features.EncodedFeatures` of (unlabelled) training events; at most
    ``calibration_max`` of them (a seeded sample) set the per-column scales and the threshold, because each
    event costs one encoder pass per raw column. ``min_scale`` (nats) keeps a column that is almost always
    predicted perfectly from turning rounding noise into huge ``z``.
    """

    def __init__(self, model, top: int = 3, calibration_max: int = 20_000, min_scale: float = 0.25,
                 batch_size: int = 16_384, seed: int = 0, threshold_percentile: float = 99.5):
        self.model = model
        self.top = top
        self.calibration_max = calibration_max
        self.min_scale = min_scale
        self.batch_size = batch_size
        self.seed = seed
        self.threshold_percentile = threshold_percentile

    # ------------------------------------------------------------------ per column
    def column_surprise(self, features) -> np.ndarray:
        """Raw surprise in nats per raw column ``[n, n_columns]`` (summed over the column's encoder outputs)."""
        columns, groups = _column_groups(features)
        if hasattr(self, "columns_") and columns != self.columns_:
            raise ValueError("features do not have the columns this detector was fitted on")
        per_output = self.model.per_field_surprise(features.numeric, features.categorical, groups=groups,
                                                   batch_size=self.batch_size).numpy().astype(np.float64)
        out = np.zeros((per_output.shape[0], len(groups)), dtype=np.float64)
        for g, members in enumerate(groups):
            out[:, g] = per_output[:, members].sum(axis=1)
        return out

    def column_z(self, features) -> np.ndarray:
        """Per-column surprise on the training scale ``[n, n_columns]`` (1 = a training 99th percentile)."""
        require_fitted(self, "scale_")
        return (self.column_surprise(features) - self.median_) / self.scale_

    def event_score(self, z: np.ndarray) -> np.ndarray:
        """The event score from per-column ``z`` (:meth:`column_z`): the mean of its ``top`` largest."""
        k = max(1, min(int(self.top), z.shape[1]))
        return np.sort(z, axis=1)[:, -k:].mean(axis=1)

    # ------------------------------------------------------------------ detector API
    def _fit(self, features, y=None) -> np.ndarray:
        if int(self.top) < 1:
            raise ValueError(f"top must be >= 1, got {self.top}")
        self.columns_, _ = _column_groups(features)
        n = len(features)
        if n == 0:
            raise ValueError("no training events")
        rows = np.arange(n)
        if n > self.calibration_max:
            rows = np.sort(np.random.default_rng(self.seed).choice(n, size=int(self.calibration_max), replace=False))
        sample = features.take(rows)
        raw = self.column_surprise(sample)
        self.median_ = np.median(raw, axis=0)
        self.scale_ = np.maximum(np.quantile(raw, 0.99, axis=0) - self.median_, float(self.min_scale))
        self.calibration_rows_ = rows
        return self.event_score((raw - self.median_) / self.scale_)

    def _score(self, features) -> np.ndarray:
        return self.event_score(self.column_z(features))

    def explain(self, features, n_top: int = 3, z: np.ndarray | None = None) -> list[list[str]]:
        """The ``n_top`` most surprising raw columns of each event (most surprising first)."""
        z = self.column_z(features) if z is None else z
        k = max(1, min(int(n_top), z.shape[1]))
        order = np.argsort(-z, axis=1, kind="stable")[:, :k]
        names = np.asarray(self.columns_, dtype=object)
        return [list(row) for row in names[order]]
