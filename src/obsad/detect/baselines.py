"""Baselines the embedding detectors must beat: Isolation Forest, frequency-encoded features, best single field.

- :class:`IsolationForestDetector` wraps scikit-learn's ``IsolationForest`` (score = ``-score_samples``).
- :func:`encoded_matrix` / :class:`FrequencyEncoder`: a careful dense matrix from
  :class:`obsad.features.EncodedFeatures` for tree and neighbour baselines: the numeric block as is, and each
  categorical id replaced by ``log(1 + count)`` of that id in the *training* data (unseen ids -> 0). Raw ordinal
  ids would be a strawman: id 7 is not "between" ids 6 and 8.
- :class:`BestSingleField` is an OPTIMISTIC baseline: it uses labels (on a validation set) to pick the single
  column and direction with the best AUROC. A detector that does not beat it is not worth its complexity; one
  that does has beaten an oracle-chosen rule.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.ensemble import IsolationForest

from .base import BaseDetector, as_float32


class IsolationForestDetector(BaseDetector):
    """Isolation Forest; score = ``-IsolationForest.score_samples`` (higher = more anomalous).

    Training scores are in-sample (each tree sees a small subsample, so a point's own influence is slight).
    """

    def __init__(self, n_estimators: int = 200, max_samples="auto", seed: int = 0, n_jobs: int | None = None,
                 threshold_percentile: float = 99.5):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.seed = seed
        self.n_jobs = n_jobs
        self.threshold_percentile = threshold_percentile

    def _fit(self, X, y=None) -> np.ndarray:
        X = as_float32(X)
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                                       random_state=self.seed, n_jobs=self.n_jobs)
        self.forest_.fit(X)
        self.n_features_in_ = X.shape[1]
        return -self.forest_.score_samples(X)

    def _score(self, X) -> np.ndarray:
        return -self.forest_.score_samples(as_float32(X))


def _categorical(features) -> np.ndarray:
    cat = features.categorical if hasattr(features, "categorical") else features
    cat = np.asarray(cat)
    if cat.ndim != 2:
        raise ValueError(f"expected categorical ids [n, d_cat], got shape {cat.shape}")
    if cat.size and cat.min() < 0:
        raise ValueError("categorical ids must be non-negative")
    return cat.astype(np.int64, copy=False)


class FrequencyEncoder:
    """Categorical ids -> ``log(1 + training count)`` per column; ids unseen at fit time map to 0.

    Accepts an :class:`~obsad.features.EncodedFeatures` (its ``categorical`` block) or an int array ``[n, d_cat]``.
    """

    def fit(self, features) -> "FrequencyEncoder":
        cat = _categorical(features)
        self.log_counts_ = [np.log1p(np.bincount(cat[:, j])).astype(np.float32) for j in range(cat.shape[1])]
        self.n_columns_ = cat.shape[1]
        return self

    def transform(self, features) -> np.ndarray:
        if not hasattr(self, "log_counts_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("FrequencyEncoder is not fitted; call fit first")
        cat = _categorical(features)
        if cat.shape[1] != self.n_columns_:
            raise ValueError(f"expected {self.n_columns_} categorical columns, got {cat.shape[1]}")
        out = np.zeros(cat.shape, dtype=np.float32)
        for j, table in enumerate(self.log_counts_):  # one vectorised lookup per column
            col = cat[:, j]
            seen = col < table.size
            out[seen, j] = table[col[seen]]
        return out

    def fit_transform(self, features) -> np.ndarray:
        return self.fit(features).transform(features)


def encoded_matrix(features, frequency_encoder: FrequencyEncoder | None = None) -> np.ndarray:
    """Dense float32 ``[n, d_num + d_cat]``: the numeric block, then categorical frequencies.

    Without ``frequency_encoder`` the frequencies are fitted on ``features`` itself (the training data); for
    validation / test data pass the encoder fitted on training data, so they are read with training counts.
    """
    enc = frequency_encoder if frequency_encoder is not None else FrequencyEncoder().fit(features)
    numeric = np.asarray(features.numeric, dtype=np.float32)
    return np.ascontiguousarray(np.hstack([numeric, enc.transform(features)]))


def column_aurocs(X, y) -> np.ndarray:
    """AUROC of every column of ``X`` as a score for binary ``y`` (vectorised Mann-Whitney, ties averaged)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("labels need both classes to compute an AUROC")
    ranks = rankdata(X, axis=0)
    return (ranks[y].sum(axis=0) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


class BestSingleField(BaseDetector):
    """Score = the single column (and direction) with the best validation AUROC. OPTIMISTIC: it uses labels.

    ``fit(X, y)`` requires labels (1/True = anomalous), normally a validation set. ``direction``: ``"auto"``
    (pick high or low by AUROC), ``"high"`` (large values anomalous) or ``"low"``. Fitted: ``column_`` (index),
    ``column_name_`` (when ``X`` is a DataFrame), ``direction_``, ``auroc_`` (of the chosen, oriented score).
    The threshold is calibrated on the scores of the negative (normal) rows of the fit data.
    """

    def __init__(self, direction: str = "auto", threshold_percentile: float = 99.5):
        self.direction = direction
        self.threshold_percentile = threshold_percentile

    def _fit(self, X, y=None) -> np.ndarray:
        if y is None:
            raise ValueError("BestSingleField needs labels y (it is an optimistic, label-using baseline)")
        if self.direction not in ("auto", "high", "low"):
            raise ValueError(f"direction must be 'auto', 'high' or 'low', got {self.direction!r}")
        self.column_name_ = None
        if hasattr(X, "columns"):
            names = list(X.columns)
        else:
            names = None
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(bool)
        auc = column_aurocs(X, y)
        if self.direction == "high":
            oriented, sign = auc, np.ones_like(auc)
        elif self.direction == "low":
            oriented, sign = 1.0 - auc, -np.ones_like(auc)
        else:
            sign = np.where(auc >= 0.5, 1.0, -1.0)
            oriented = np.where(auc >= 0.5, auc, 1.0 - auc)
        j = int(np.argmax(oriented))
        self.column_ = j
        self.column_name_ = names[j] if names is not None else None
        self.direction_ = "high" if sign[j] > 0 else "low"
        self.auroc_ = float(oriented[j])
        self.column_aurocs_ = auc
        self._sign = float(sign[j])
        self.n_features_in_ = X.shape[1]
        return self._sign * X[~y, j]

    def _score(self, X) -> np.ndarray:
        return self._sign * np.asarray(X, dtype=np.float64)[:, self.column_]
