"""How far do a few analyst labels go? The pieces of the label-efficiency study (notebook 08, Part 4).

- :func:`simulated_analyst`: the labels a team really has. An analyst works the unsupervised detector's alert
  queue of the *earlier* period and labels what they look at (most of the budget), plus a few events picked at
  random (the rest): a small, biased sample in which the scenarios that raise alerts are over-represented and
  quiet ones may be missing altogether.
- :class:`TreeClassifier`: the strongest simple competitor with few labels, scikit-learn's
  ``HistGradientBoostingClassifier`` on the encoded raw features (native categorical splits for fields with at
  most 255 ids, training-frequency encoding above that), balanced class weights, and leaves allowed to be as
  small as a tenth of the labels (its default of 20 events per leaf cannot split 10 labels at all).
- :func:`rank_scores` / :func:`calibrated_threshold`: every method's anomaly score is thresholded the same way,
  at a percentile of its scores over the earlier period's events not labelled as anomalies;
- :func:`stack_scores`: the unsupervised score and a classifier's, combined by a logistic regression on the
  same labels.
- :func:`evaluate_run`: AUPRC of the anomaly score, F1 at the calibrated threshold, macro-F1 and recall per
  class of the predicted class, on the later period only. Accuracy is never reported: predicting ``normal`` for
  everything scores 99 % on these data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, recall_score

from obsad.detect.baselines import FrequencyEncoder

__all__ = ["TreeClassifier", "calibrated_threshold", "class_names_of", "evaluate_run", "majority_run", "rank_scores",
           "simulated_analyst", "stack_scores"]

#: HistGradientBoosting's categorical splits accept ids below its number of bins.
_MAX_CATEGORICAL_IDS = 255


def simulated_analyst(truth: np.ndarray, alert_scores: np.ndarray, alert_threshold: float, budget: int, *,
                      alert_share: float = 0.8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows an analyst labels, and the labels (``truth`` at those rows: class names, ``normal`` for the rest).

    ``alert_share`` of the ``budget`` are alerts (events with ``alert_scores > alert_threshold``) drawn at random
    from the queue; the rest, and any shortfall when the queue is shorter, are drawn at random from all events.
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    truth = np.asarray(truth, dtype=object)
    if budget > len(truth):
        raise ValueError(f"budget {budget} exceeds the {len(truth)} events there are to label")
    rng = np.random.default_rng(seed)
    alerts = np.flatnonzero(np.asarray(alert_scores) > alert_threshold)
    n_alerts = min(len(alerts), int(round(alert_share * budget)))
    picked = rng.choice(alerts, n_alerts, replace=False) if n_alerts else np.empty(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(truth)), picked, assume_unique=False)
    picked = np.r_[picked, rng.choice(rest, budget - n_alerts, replace=False)].astype(np.int64)
    return picked, truth[picked]


def rank_scores(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The share of ``reference`` scores below each score, in [0, 1]: puts different detectors on one scale."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    return np.searchsorted(ref, np.asarray(scores, dtype=np.float64), side="right") / max(len(ref), 1)


def calibrated_threshold(scores: np.ndarray, labelled_anomaly: np.ndarray, percentile: float = 99.5) -> float:
    """The ``percentile`` of the scores of the events not labelled as anomalies (the alarm budget)."""
    return float(np.percentile(np.asarray(scores)[~np.asarray(labelled_anomaly, dtype=bool)], percentile))


def stack_scores(reference: list[np.ndarray], labelled: list[np.ndarray], labelled_anomaly: np.ndarray,
                 scores: list[list[np.ndarray]], seed: int = 0) -> list[np.ndarray]:
    """Several detectors' scores combined by a logistic regression fitted on the labelled events.

    Each detector's score becomes the log-odds of its rank among its ``reference`` scores (the earlier period's);
    the regression (L2, balanced classes) learns from the labels how much to trust each detector, e.g. that the
    unsupervised detector's alerts of a kind the analyst has closed before are false alarms. ``labelled``: each
    detector's scores of the labelled events, ``labelled_anomaly`` their labels (anomaly or not); ``scores``:
    the sets to combine, each a list with one array per detector (e.g. the earlier period, the later period).
    With only one kind of label, the mean of the log-odds.
    """
    from sklearn.linear_model import LogisticRegression

    def log_odds(arrays):
        ranks = [np.clip(rank_scores(ref, a), 0.5 / len(ref), 1 - 0.5 / len(ref)) for ref, a in zip(reference, arrays)]
        return np.column_stack([np.log(r / (1 - r)) for r in ranks])

    y = np.asarray(labelled_anomaly, dtype=bool)
    if y.all() or not y.any():
        return [log_odds(s).mean(axis=1) for s in scores]
    model = LogisticRegression(C=1.0, class_weight="balanced", random_state=seed).fit(log_odds(labelled), y)
    return [log_odds(s) @ model.coef_[0] for s in scores]


@dataclass
class TreeClassifier:
    """Gradient-boosted trees on encoded raw features, sized for a few labels (see the module docstring)."""

    max_iter: int = 100
    learning_rate: float = 0.1
    seed: int = 0

    def fit(self, features, rows: np.ndarray, y: np.ndarray) -> "TreeClassifier":
        from sklearn.ensemble import HistGradientBoostingClassifier

        cards = np.asarray(features.cardinalities, dtype=np.int64)
        self.native_ = cards <= _MAX_CATEGORICAL_IDS
        self.frequency_ = FrequencyEncoder().fit(features)
        X = self._matrix(features, rows)
        n = len(rows)
        mask = np.r_[np.zeros(features.numeric.shape[1], dtype=bool), np.ones(int(self.native_.sum()), dtype=bool),
                     np.zeros(int((~self.native_).sum()), dtype=bool)]
        self.model_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate, min_samples_leaf=max(1, min(20, n // 10)),
            class_weight="balanced", categorical_features=mask if mask.any() else None, random_state=self.seed)
        self.model_.fit(X, np.asarray(y))
        return self

    def _matrix(self, features, rows=None) -> np.ndarray:
        take = slice(None) if rows is None else rows
        cat = features.categorical[take]
        freq = self.frequency_.transform(cat)
        parts = [features.numeric[take].astype(np.float64), cat[:, self.native_].astype(np.float64),
                 freq[:, ~self.native_]]
        return np.concatenate(parts, axis=1)

    def predict_proba(self, features) -> np.ndarray:
        """``[n, n_classes]`` in the order of the class ids given to ``fit`` that were present."""
        return self.model_.predict_proba(self._matrix(features))

    @property
    def classes_(self) -> np.ndarray:
        return self.model_.classes_


def evaluate_run(true_class: np.ndarray, predicted_class: np.ndarray | None, anomaly_score: np.ndarray,
                 threshold: float, classes: list[str], normal_class: str = "normal") -> dict:
    """Measures on the later period: ``AUPRC``, ``F1`` (anomaly vs normal at ``threshold``), ``caught:<class>``
    (share of each anomalous class above the threshold), ``macro-F1`` and ``recall:<class>`` of the predicted
    class over ``classes`` (``None``: a method that names no class)."""
    true_class = np.asarray(true_class, dtype=object)
    y = true_class != normal_class
    score = np.asarray(anomaly_score, dtype=np.float64)
    flagged = score > threshold
    out = {"AUPRC": float(average_precision_score(y, score)) if y.any() else float("nan"),
           "F1": float(f1_score(y, flagged, zero_division=0)),
           "flagged": float(flagged.mean())}
    for c in classes:  # which kinds of anomaly the alarms catch, whatever class they are given
        if c != normal_class and (true_class == c).any():
            out[f"caught:{c}"] = float(flagged[true_class == c].mean())
    if predicted_class is not None:
        predicted_class = np.asarray(predicted_class, dtype=object)
        out["macro-F1"] = float(f1_score(true_class, predicted_class, labels=classes, average="macro",
                                         zero_division=0))
        recalls = recall_score(true_class, predicted_class, labels=classes, average=None, zero_division=0)
        out.update({f"recall:{c}": float(r) for c, r in zip(classes, recalls)})
    return out


def class_names_of(ids: np.ndarray, classes: list[str]) -> np.ndarray:
    return np.asarray(classes, dtype=object)[np.asarray(ids, dtype=np.int64)]


def majority_run(true_class: np.ndarray, classes: list[str], normal_class: str = "normal") -> dict:
    """The majority-class baseline: ``normal`` for everything, one constant score."""
    n = len(true_class)
    return evaluate_run(true_class, np.full(n, normal_class, dtype=object), np.zeros(n), 0.0, classes, normal_class)

