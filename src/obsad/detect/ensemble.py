"""Rank ensemble: combine detectors whose scores live on different scales.

Each member is fitted on its own input (e.g. k-NN on embeddings, Isolation Forest on the encoded matrix). A
score is turned into its percentile rank (0..1) among that member's own TRAINING scores, so every member speaks
the same unit ("more unusual than x % of training events"); the ensemble score is the (weighted) mean of the
ranks, in [0, 1]. Its threshold is calibrated like every detector's: a percentile of its training scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import BaseDetector, require_fitted


class RankEnsemble(BaseDetector):
    """Weighted mean of per-member percentile ranks.

    ``fit(Xs)`` / ``score_samples(Xs)`` take a list with one input per member (same rows, in the same order);
    a single array is given to every member. Members are fitted in place (``detectors_`` is the same list).
    """

    def __init__(self, detectors: Sequence[BaseDetector], weights: Sequence[float] | None = None,
                 threshold_percentile: float = 99.5):
        self.detectors = detectors
        self.weights = weights
        self.threshold_percentile = threshold_percentile

    def _inputs(self, Xs) -> list:
        m = len(self.detectors)
        if isinstance(Xs, (list, tuple)):
            if len(Xs) != m:
                raise ValueError(f"expected {m} inputs (one per detector), got {len(Xs)}")
            return list(Xs)
        return [Xs] * m

    def _weights(self) -> np.ndarray:
        m = len(self.detectors)
        if m == 0:
            raise ValueError("RankEnsemble needs at least one detector")
        w = np.ones(m) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        if w.shape != (m,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be one non-negative number per detector, not all zero")
        return w / w.sum()

    def _combine(self, ranks: list[np.ndarray]) -> np.ndarray:
        n = {r.shape[0] for r in ranks}
        if len(n) != 1:
            raise ValueError(f"all inputs must have the same number of rows, got {sorted(n)}")
        return np.stack(ranks, axis=1) @ self.weights_

    def _fit(self, Xs, y=None) -> np.ndarray:
        self.weights_ = self._weights()
        inputs = self._inputs(Xs)
        for det, X in zip(self.detectors, inputs):
            det.fit(X)
        self.detectors_ = list(self.detectors)
        return self._combine([d.percentile_of(d.training_scores_) / 100.0 for d in self.detectors_])

    def _score(self, Xs) -> np.ndarray:
        inputs = self._inputs(Xs)
        return self._combine([d.percentile_of(d.score_samples(X)) / 100.0 for d, X in zip(self.detectors_, inputs)])

    def member_ranks(self, Xs) -> np.ndarray:
        """Per-member percentile ranks ``[n, n_detectors]`` (0..1): which member finds an event unusual."""
        require_fitted(self, "detectors_")
        inputs = self._inputs(Xs)
        return np.stack([d.percentile_of(d.score_samples(X)) / 100.0 for d, X in zip(self.detectors_, inputs)], 1)


class MaxZCombiner(BaseDetector):
    """Combine views that each catch different anomalies: the largest of their calibrated scores.

    A point anomaly shows in the event view, a burst only in the window view; a mean of ranks would dilute
    either. Each member's score is put on a robust scale fitted on calibration scores (``z = (s - median) /
    (q99 - median)``: 1 means "as high as the top 1 % of calibration events"), and the combined score is the
    largest ``z``. Unlike percentile ranks, ``z`` keeps growing beyond the calibration maximum, so a huge burst
    still outranks a mild one. Works on score matrices ``[n, n_members]`` (columns in a fixed member order),
    so each member can be fitted and run on its own input.
    """

    def __init__(self, threshold_percentile: float = 99.5):
        self.threshold_percentile = threshold_percentile

    def _z(self, scores) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] != self.median_.shape[0]:
            raise ValueError(f"expected scores [n, {self.median_.shape[0]}], got shape {s.shape}")
        return (s - self.median_) / self.scale_

    def _fit(self, scores, y=None) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or s.shape[0] < 2:
            raise ValueError(f"expected calibration scores [n >= 2, n_members], got shape {s.shape}")
        self.median_ = np.median(s, axis=0)
        self.scale_ = np.maximum(np.quantile(s, 0.99, axis=0) - self.median_, 1e-9)
        return self._z(s).max(axis=1)

    def _score(self, scores) -> np.ndarray:
        return self._z(scores).max(axis=1)

    def member_z(self, scores) -> np.ndarray:
        """Calibrated score of every member ``[n, n_members]``; ``argmax`` says which view flagged an event."""
        require_fitted(self, "median_")
        return self._z(scores)

    def to_state(self) -> dict:
        """The fitted combiner as a JSON-able dict."""
        require_fitted(self, "median_")
        return {"threshold_percentile": float(self.threshold_percentile), "median_": self.median_.tolist(),
                "scale_": self.scale_.tolist(), "threshold_": float(self.threshold_),
                "train_scores_": self.train_scores_.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "MaxZCombiner":
        """Rebuild a fitted combiner from :meth:`to_state` output."""
        det = cls(threshold_percentile=float(state["threshold_percentile"]))
        det.median_ = np.asarray(state["median_"], dtype=np.float64)
        det.scale_ = np.asarray(state["scale_"], dtype=np.float64)
        if det.median_.ndim != 1 or det.median_.shape != det.scale_.shape or (det.scale_ <= 0).any():
            raise ValueError("combiner state: median_ and scale_ must be equal-length vectors, scales > 0")
        det.train_scores_ = np.sort(np.asarray(state["train_scores_"], dtype=np.float64))
        det.threshold_ = float(state["threshold_"])
        return det
