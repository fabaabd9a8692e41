"""Session-level detection for the log pipeline: calibrated rules on the Transformer's session scores, and the
count-vector baselines they must beat.

A session (an HDFS block, an OpenStack instance) is scored by how surprised the next-template model was
(:func:`obsad.logs.model.score_sessions`: mean / max NLL, perplexity, top-k miss rate, unseen-template rate).
:class:`SessionRule` turns one of those columns into an alarm with a threshold taken, like every detector in
:mod:`obsad.detect`, as a percentile (99.5) of *normal validation* sessions' scores — never tuned on test labels —
and adds the unseen-template rule: a session whose share of templates never seen in training exceeds
``unseen_rate_limit`` (5 %) is flagged whatever its score, because the model has nothing to say about them.

The baselines ignore order: a vector of template counts per session (:func:`template_counts`), scored by
Isolation Forest or by the distance to the nearest training sessions. They find sessions with an unusual *mix*
of events; only a sequence model can find a usual mix in an unusual *order*.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from ..detect.base import BaseDetector

__all__ = ["SessionRule", "template_counts"]


def template_counts(sequences, n_templates: int, *, log: bool = True) -> np.ndarray:
    """``[n_sessions, n_templates + 1]`` float32 count vectors: column ``t`` counts template ``t``, the last column
    the templates unseen in training (id ``-1``). ``log``: ``log1p`` of the counts, so that a long session does
    not dominate a distance by its length alone. Vectorised: one ``bincount`` over all sessions."""
    n_templates = int(n_templates)
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    if lengths.sum() == 0:
        return np.zeros((len(lengths), n_templates + 1), dtype=np.float32)
    ids = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences if len(s)])
    if ids.size and (ids.max() >= n_templates or ids.min() < -1):
        raise ValueError(f"template ids must be in [-1, {n_templates - 1}], got {ids.min()}..{ids.max()}")
    column = np.where(ids < 0, n_templates, ids)
    session = np.repeat(np.arange(len(lengths)), lengths)
    flat = np.bincount(session * (n_templates + 1) + column, minlength=len(lengths) * (n_templates + 1))
    counts = flat.reshape(len(lengths), n_templates + 1).astype(np.float32)
    return np.log1p(counts) if log else counts


class SessionRule(BaseDetector):
    """An alarm on one column of the session scores, calibrated on normal sessions, plus the unseen-template rule.

    ``fit(normal_scores)`` sets ``threshold_`` to the ``threshold_percentile`` percentile of ``normal_scores[column]``
    (a table from :func:`obsad.logs.model.score_sessions`, normal validation sessions only), through the same
    calibration as every :mod:`obsad.detect` detector. ``predict(scores)`` flags ``score > threshold_`` or
    ``unseen_rate > unseen_rate_limit`` (``None`` switches that rule off).
    """

    def __init__(self, column: str = "mean_nll", threshold_percentile: float = 99.5,
                 unseen_rate_limit: float | None = 0.05):
        super().__init__(threshold_percentile=threshold_percentile)
        self.column = column
        self.unseen_rate_limit = unseen_rate_limit

    def _values(self, scores: pd.DataFrame, column: str) -> np.ndarray:
        if not isinstance(scores, pd.DataFrame):
            raise TypeError(f"scores must be a DataFrame of session scores, got {type(scores).__name__}")
        if column not in scores.columns:
            raise ValueError(f"session scores have no {column!r} column (columns: {', '.join(scores.columns)})")
        return scores[column].to_numpy(dtype=np.float64)

    def _fit(self, X, y=None) -> np.ndarray:
        values = self._values(X, self.column)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError("no normal session scores to calibrate the threshold on")
        return values

    def _score(self, X) -> np.ndarray:
        return self._values(X, self.column)

    def predict(self, scores: pd.DataFrame) -> np.ndarray:
        """Boolean flags: above the threshold, or too many templates unseen in training."""
        flagged = self.score_samples(scores) > self.threshold_
        if self.unseen_rate_limit is not None:
            flagged |= self._values(scores, "unseen_rate") > float(self.unseen_rate_limit)
        return flagged

    def percentile_of(self, scores: pd.DataFrame) -> np.ndarray:
        """Where each session's score falls among the normal calibration sessions' (0..100)."""
        return super().percentile_of(self.score_samples(scores))

    def to_state(self) -> dict:
        check_is_fitted(self, "threshold_")
        return {"column": self.column, "threshold_percentile": float(self.threshold_percentile),
                "unseen_rate_limit": self.unseen_rate_limit, "threshold_": self.threshold_,
                "reference_": [float(v) for v in self.train_scores_]}

    @classmethod
    def from_state(cls, state: dict) -> "SessionRule":
        rule = cls(state["column"], float(state["threshold_percentile"]), state["unseen_rate_limit"])
        reference = np.asarray(state["reference_"], dtype=np.float64)
        rule.training_scores_, rule.train_scores_ = reference, np.sort(reference)
        rule.threshold_ = float(state["threshold_"])
        return rule
