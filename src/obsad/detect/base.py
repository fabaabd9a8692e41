"""The one API every detector shares (scikit-learn / PyOD style).

- hyper-parameters in ``__init__`` (no work there), ``fit(X, y=None) -> self``;
- ``score_samples(X)``: float64, HIGHER = MORE ANOMALOUS;
- ``threshold_``: calibrated at fit time, without any ``contamination`` guess, as the
  ``threshold_percentile`` (default 99.5) percentile of the *training* scores, so on fresh data from the training
  distribution about ``100 - threshold_percentile`` % of events are flagged;
- ``predict(X)``: ``score_samples(X) > threshold_`` (bool), ``decision_function(X) = score_samples(X) - threshold_``;
- ``percentile_of(scores)``: where scores fall among the training scores (0..100), to say how unusual an event is.

Training scores are computed out of sample wherever the method would otherwise score a point against itself
(a k-NN detector excludes each reference point's self-match), or the threshold would be too low.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError


def require_fitted(estimator, attribute: str) -> None:
    """scikit-learn's ``NotFittedError`` unless ``attribute`` is set: ``check_is_fitted(estimator, attribute)``
    without its generic machinery, which costs more than the rest of a service's one-event k-NN search."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
                             "appropriate arguments before using this estimator.")


def as_float32(X) -> np.ndarray:
    """``X`` as a C-contiguous float32 ``[n, d]`` array (what FAISS and torch want)."""
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array [n, d], got shape {X.shape}")
    return X


def row_max(values: np.ndarray) -> np.ndarray:
    """``values.max(axis=1)`` of a tall, narrow array (a few columns): one ``np.maximum`` per column, over all rows
    at once. numpy reduces each short row on its own (~3x slower for four columns); the same values, NaN included
    (both propagate it)."""
    if values.shape[1] == 0 or values.shape[1] > 8:
        return values.max(axis=1)
    out = values[:, 0].copy()
    for j in range(1, values.shape[1]):
        np.maximum(out, values[:, j], out=out)
    return out


def max_by_group(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Per row, the max of ``values[:, j]`` over outputs ``j`` of each group (vectorised over rows)."""
    out = np.zeros((values.shape[0], n_groups), dtype=np.float64)
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    reduced = np.maximum.reduceat(values[:, order], starts, axis=1)
    out[:, g[starts]] = reduced
    return out


class BaseDetector(BaseEstimator, ABC):
    """Base class: subclasses implement ``_fit(X, y) -> training scores`` and ``_score(X) -> scores``."""

    def __init__(self, threshold_percentile: float = 99.5):
        self.threshold_percentile = threshold_percentile

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def _fit(self, X, y=None) -> np.ndarray:
        """Fit on ``X`` and return the (out-of-sample) training scores."""

    @abstractmethod
    def _score(self, X) -> np.ndarray:
        """Scores of ``X`` (higher = more anomalous)."""

    # ------------------------------------------------------------------ shared
    def fit(self, X, y=None):
        """Fit on (unlabelled) ``X``; ``y`` is ignored by unsupervised detectors. Calibrates ``threshold_``."""
        if not 0.0 < float(self.threshold_percentile) <= 100.0:
            raise ValueError(f"threshold_percentile must be in (0, 100], got {self.threshold_percentile}")
        scores = np.asarray(self._fit(X, y), dtype=np.float64)
        self._calibrate(scores)
        return self

    def _calibrate(self, train_scores: np.ndarray) -> None:
        scores = np.asarray(train_scores, dtype=np.float64)
        if scores.size == 0:
            raise ValueError("no training scores to calibrate the threshold on")
        self.training_scores_ = scores  # in training-row order (out of sample where it matters)
        s = np.sort(scores)
        self.train_scores_ = s  # sorted, for percentile_of
        self.threshold_ = float(np.percentile(s, self.threshold_percentile))

    def calibrate(self, X):
        """Re-set ``threshold_`` (and the percentile reference) from the scores of ``X``: a later period believed
        normal, e.g. the validation sessions, when the training scores are too optimistic a reference."""
        self._calibrate(self.score_samples(X))
        return self

    def score_samples(self, X) -> np.ndarray:
        """Anomaly scores, float64, higher = more anomalous."""
        require_fitted(self, "threshold_")
        return np.asarray(self._score(X), dtype=np.float64)

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - threshold_``: positive = flagged."""
        return self.score_samples(X) - self.threshold_

    def predict(self, X) -> np.ndarray:
        """Boolean flags: ``score_samples(X) > threshold_``."""
        return self.score_samples(X) > self.threshold_

    def percentile_of(self, scores) -> np.ndarray:
        """Percentile (0..100) of each score among the training scores: the share of training scores ``<=`` it."""
        require_fitted(self, "train_scores_")
        s = np.asarray(scores, dtype=np.float64)
        ranks = np.searchsorted(self.train_scores_, s, side="right")
        return 100.0 * ranks / self.train_scores_.size
