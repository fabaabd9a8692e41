"""Measuring detectors with held-apart labels: one row per detector, the same measures for all.

- AUROC: the chance that a random anomaly outranks a random normal event (threshold-free; 0.5 is chance);
- AUPRC (average precision): precision over all recall levels; chance level is the anomaly share, so it is the
  measure that shows whether the top of the ranking is clean when anomalies are rare;
- F1, precision, recall and flagged share at the detector's OWN calibrated threshold (``threshold_``), never
  at a threshold tuned on the test labels;
- recall per scenario at that threshold: which kinds of anomaly a detector catches;
- explanation accuracy (:func:`explanation_hits`) next to the accuracy of a blind guess
  (:func:`explanation_chance`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score


def detection_row(name: str, y, scores, threshold: float, scenario=None) -> dict:
    """One table row: AUROC, AUPRC, F1/precision/recall/flagged at ``threshold``, recall per scenario."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in shape: {y.shape} vs {s.shape}")
    if y.all() or not y.any():
        raise ValueError("labels need both anomalous and normal events")
    flagged = s > float(threshold)
    row = {
        "detector": name,
        "AUROC": roc_auc_score(y, s),
        "AUPRC": average_precision_score(y, s),
        "F1": f1_score(y, flagged, zero_division=0),
        "precision": precision_score(y, flagged, zero_division=0),
        "recall": recall_score(y, flagged, zero_division=0),
        "flagged": float(flagged.mean()),
    }
    if scenario is not None:
        scenario = np.asarray(scenario, dtype=object)
        for name_ in sorted({x for x in scenario[y] if x}):
            row[f"recall:{name_}"] = float(flagged[scenario == name_].mean())
    return row


def scenario_auroc(y, scores, scenario) -> dict[str, float]:
    """AUROC of each scenario's events against all normal events (how well the ranking separates that kind)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    scenario = np.asarray(scenario, dtype=object)
    normal = s[~y]
    out = {}
    for name in sorted({x for x in scenario[y] if x}):
        pos = s[scenario == name]
        labels = np.r_[np.zeros(len(normal)), np.ones(len(pos))]
        out[name] = float(roc_auc_score(labels, np.r_[normal, pos]))
    return out


def explanation_hits(top_fields: Sequence[Sequence[str]], true_fields: Sequence[Sequence[str]], k: int = 3) -> np.ndarray:
    """Per event: is at least one of its first ``k`` explanation fields among the scenario's true fields?"""
    if len(top_fields) != len(true_fields):
        raise ValueError(f"{len(top_fields)} explanations for {len(true_fields)} events")
    return np.array([bool(set(list(top)[:k]) & set(truth)) for top, truth in zip(top_fields, true_fields)], dtype=bool)


def explanation_chance(true_fields: Sequence[Sequence[str]], columns: Sequence[str], k: int = 3) -> np.ndarray:
    """Per event, the hit rate of a blind guess: ``k`` of ``columns`` drawn at random include a true field.

    ``1 - C(n - m, k) / C(n, k)`` with ``n`` columns of which ``m`` are true. A scenario that changes twenty
    fields is easy to "explain"; this is the level an explanation's accuracy must be read against.
    """
    from math import comb

    names = set(columns)
    n = len(names)
    k = min(int(k), n)
    if n == 0:
        raise ValueError("no columns to draw an explanation from")
    m = np.array([len(names & set(t)) for t in true_fields], dtype=np.int64)
    return np.array([1.0 - comb(n - mi, k) / comb(n, k) for mi in m], dtype=np.float64)


def table(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows of :func:`detection_row` as a frame indexed by detector (missing per-scenario recalls are 0)."""
    frame = pd.DataFrame(list(rows)).set_index("detector")
    recall_cols = [c for c in frame.columns if c.startswith("recall:")]
    frame[recall_cols] = frame[recall_cols].fillna(0.0)
    return frame
