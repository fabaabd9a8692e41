"""Retraining that really retrains: when to, how (on a recent window, with the poisoned-baseline mitigation), and
whether the new model may replace the old one (champion against challenger on the same labelled events).

- :class:`RetrainPolicy` decides from measured signals (:class:`RetrainSignals`: a drift test's result, the
  precision of reviewed alerts with the number of reviews behind it, new labels, the model's age), and says which
  rule fired and why (:class:`RetrainDecision`).
- :func:`retrain` runs the real :func:`obsad.pipeline.fit_pipeline` on the most recent ``last`` of the events, and
  with ``trim_fraction > 0`` the mitigation below.
- **The poisoned baseline.** A k-NN detector calls an event normal when it has close neighbours in the reference.
  If the training window already holds an attack, the attack's events are in the reference, and the same attack
  seen again finds them: its score collapses. The detector's own training scores leave each event out of its own
  neighbourhood, but not its accomplices: an attack of more than ``k`` similar events vouches for itself.
  :func:`out_of_sample_scores` scores every training event against the training events *farther away in time*
  than ``exclusion`` (default 12 hours), so that a burst shorter than that cannot be its own neighbour, and takes
  the larger of that and the window view's calibrated score (a collective attack whose events look ordinary one
  by one is seen there); :func:`trimmed_reference` drops the highest-scoring ``fraction`` of the window from the
  reference and rebuilds the detectors with :func:`obsad.pipeline.assemble_pipeline` on the same trained network
  (no retraining). What it cannot remove: an attack that lasts the whole window (it has neighbours at every
  time), or one that neither view finds unusual; there, only a vetted reference helps (``assemble_pipeline`` on
  events analysts cleared). :func:`poisoned_baseline_experiment` measures both the damage and the recovery.
- :func:`read_shadow_log` reads what ``obsad serve --shadow --shadow-log`` wrote; :func:`compare_on_labelled`
  (or :func:`compare_models`, scoring both itself) compares champion and challenger on exactly the same labelled
  events, each at its own threshold, with a paired bootstrap interval of the difference;
  :func:`promotion_decision` promotes only when the challenger is better by a margin the labels can support.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import json_safe
from .drift import DriftResult, clopper_pearson

__all__ = [
    "ModelComparison",
    "PoisoningResult",
    "PromotionDecision",
    "RetrainDecision",
    "RetrainPolicy",
    "RetrainSignals",
    "compare_models",
    "compare_on_labelled",
    "out_of_sample_scores",
    "package_age_days",
    "poisoned_baseline_experiment",
    "promotion_decision",
    "read_shadow_log",
    "retrain",
    "trim_rows",
    "trimmed_reference",
]

#: assemble_pipeline's options that fit_pipeline passes through; a rebuilt reference reuses them.
ASSEMBLE_OPTIONS = ("k", "metric", "reference_max", "exact_max", "n_probe", "threshold_percentile", "window",
                    "calibration_fraction")
METRICS = ("f1", "auprc", "precision", "recall")


def _utc(value) -> _dt.datetime:
    """A tz-aware UTC datetime from a datetime (naive = UTC), a pandas Timestamp or an ISO string."""
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


# ================================================================================================ policy
@dataclass
class RetrainSignals:
    """What was measured about the model in production; ``None`` = not measured (its rule is skipped).

    ``drift``: a :class:`~obsad.monitor.drift.DriftResult` (or its ``to_dict()``); ``precision``: the share of
    reviewed alerts that analysts confirmed, ``precision_labels`` the number of reviewed alerts behind it;
    ``new_labels``: labelled events gathered since the model was fitted; ``model_age_days``: days since it was
    fitted (:func:`package_age_days` reads it from a package).
    """

    drift: DriftResult | dict | None = None
    precision: float | None = None
    precision_labels: int = 0
    new_labels: int | None = None
    model_age_days: float | None = None

    def to_dict(self) -> dict:
        drift = self.drift.to_dict() if isinstance(self.drift, DriftResult) else self.drift
        if isinstance(drift, dict):  # the verdict, not the per-field table
            drift = {key: drift.get(key) for key in ("drift", "p_value", "statistic", "method", "alpha",
                                                     "window_size")}
        return json_safe({"drift": drift, "precision": self.precision, "precision_labels": self.precision_labels,
                           "new_labels": self.new_labels, "model_age_days": self.model_age_days})


@dataclass
class RetrainDecision:
    """``retrain``: whether any rule fired; ``reasons``: one sentence per rule that fired; ``signals``: the
    measured values used; ``checks``: every rule with its outcome (``fired``, ``ok``, ``not measured`` or
    ``ignored``), value, limit and a note."""

    retrain: bool
    reasons: list[str]
    signals: dict
    checks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return json_safe(asdict(self))

    def checks_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.checks, columns=["rule", "outcome", "value", "limit", "note"])


def package_age_days(package: str | os.PathLike, now=None) -> float:
    """Days since a model package was written (its manifest's ``created``), at ``now`` (default: the current
    time, UTC)."""
    manifest = json.loads((Path(package) / "manifest.json").read_text(encoding="utf-8"))
    created = _utc(manifest["created"])
    now = _dt.datetime.now(_dt.UTC) if now is None else _utc(now)
    return (now - created).total_seconds() / 86400.0


class RetrainPolicy:
    """Retrain when a measured signal says the model is stale.

    Rules (each skipped when its signal was not measured, or its limit is ``None``):

    - **drift**: the drift test's p-value below ``drift_alpha`` (default 0.01). Drift is tested on every window
      (hourly, daily): at the test's usual 0.05 one window in twenty alarms by chance, and a retraining is not
      free; the policy acts on stronger evidence. A test without a p-value (``ks_fraction``) counts by its flag.
    - **precision**: fewer than ``min_precision`` (default 0.5) of the reviewed alerts confirmed, counted only
      when at least ``min_labels`` (default 30) reviews back it: with 30 reviews a precision of 0.5 is known to
      about ±0.18 (95 % Clopper-Pearson, given in the check's note); with 5 it could be anything.
    - **new labels**: at least ``new_labels`` (default 500) labelled events gathered since the model was fitted:
      enough to fit a model that learns from them (``obsad fit --labels``) and to compare a challenger on.
    - **age**: the model older than ``max_age_days`` (default 30): the organisation changes (people, services,
      software versions) faster than a test on one window notices.
    """

    def __init__(self, max_age_days: float | None = 30.0, min_precision: float | None = 0.5, min_labels: int = 30,
                 drift_alpha: float | None = 0.01, new_labels: int | None = 500):
        self.max_age_days = max_age_days
        self.min_precision = min_precision
        self.min_labels = min_labels
        self.drift_alpha = drift_alpha
        self.new_labels = new_labels

    def _check(self) -> None:
        if self.drift_alpha is not None and not 0.0 < float(self.drift_alpha) < 1.0:
            raise ValueError(f"drift_alpha must be in (0, 1), got {self.drift_alpha}")
        if self.min_precision is not None and not 0.0 < float(self.min_precision) <= 1.0:
            raise ValueError(f"min_precision must be in (0, 1], got {self.min_precision}")
        if int(self.min_labels) < 1:
            raise ValueError(f"min_labels must be >= 1, got {self.min_labels}")
        if self.max_age_days is not None and float(self.max_age_days) <= 0:
            raise ValueError(f"max_age_days must be > 0, got {self.max_age_days}")
        if self.new_labels is not None and int(self.new_labels) < 1:
            raise ValueError(f"new_labels must be >= 1, got {self.new_labels}")

    def decide(self, signals: RetrainSignals | Mapping[str, Any]) -> RetrainDecision:
        """The decision for ``signals`` (a :class:`RetrainSignals` or a mapping with its field names)."""
        self._check()
        if not isinstance(signals, RetrainSignals):
            known = {f.name for f in fields(RetrainSignals)}
            unknown = sorted(set(signals) - known)
            if unknown:
                raise ValueError(f"unknown signal(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
            signals = RetrainSignals(**dict(signals))
        checks = [self._drift(signals.drift), self._precision(signals.precision, signals.precision_labels),
                  self._labels(signals.new_labels), self._age(signals.model_age_days)]
        reasons = [c["note"] for c in checks if c["outcome"] == "fired"]
        return RetrainDecision(retrain=bool(reasons), reasons=reasons, signals=signals.to_dict(), checks=checks)

    # ------------------------------------------------------------------ the rules
    @staticmethod
    def _row(rule: str, outcome: str, value, limit, note: str) -> dict:
        return {"rule": rule, "outcome": outcome, "value": value, "limit": limit, "note": note}

    def _drift(self, drift) -> dict:
        if drift is None or self.drift_alpha is None:
            return self._row("drift", "not measured", None, self.drift_alpha, "no drift test given")
        d = drift.to_dict() if isinstance(drift, DriftResult) else dict(drift)
        p = d.get("p_value")
        alpha = float(self.drift_alpha)
        if p is None:  # a rule without a p-value: its own verdict
            fired = bool(d.get("drift"))
            note = (f"drift test ({d.get('method')}) without a p-value says "
                    f"{'drift' if fired else 'no drift'}")
            return self._row("drift", "fired" if fired else "ok", None, alpha, note)
        p = float(p)
        if p < alpha:
            return self._row("drift", "fired", p, alpha,
                             f"embedding drift: p = {p:.3g} < {alpha:g} ({d.get('method')} test, "
                             f"{d.get('window_size')} events)")
        return self._row("drift", "ok", p, alpha, f"no drift at {alpha:g}: p = {p:.3g}")

    def _precision(self, precision, n_labels) -> dict:
        if precision is None or self.min_precision is None:
            return self._row("precision", "not measured", None, self.min_precision, "no reviewed alerts given")
        precision, n = float(precision), int(n_labels or 0)
        if not 0.0 <= precision <= 1.0:
            raise ValueError(f"precision must be in [0, 1], got {precision}")
        limit = float(self.min_precision)
        if n < int(self.min_labels):
            return self._row("precision", "ignored", precision, limit,
                             f"alert precision {precision:.2f} from only {n} reviewed alert(s) (< {self.min_labels}): "
                             "too few to act on")
        low, high = clopper_pearson(round(precision * n), n)
        interval = f"95 % interval {low:.2f}-{high:.2f}"
        if precision < limit:
            return self._row("precision", "fired", precision, limit,
                             f"alert precision {precision:.2f} < {limit:g} over {n} reviewed alerts ({interval})")
        return self._row("precision", "ok", precision, limit,
                         f"alert precision {precision:.2f} over {n} reviewed alerts ({interval})")

    def _labels(self, new_labels) -> dict:
        if new_labels is None or self.new_labels is None:
            return self._row("new labels", "not measured", None, self.new_labels, "no label count given")
        n, limit = int(new_labels), int(self.new_labels)
        if n >= limit:
            return self._row("new labels", "fired", n, limit,
                             f"{n} new labelled events since the model was fitted (>= {limit})")
        return self._row("new labels", "ok", n, limit, f"{n} new labelled events (< {limit})")

    def _age(self, age_days) -> dict:
        if age_days is None or self.max_age_days is None:
            return self._row("age", "not measured", None, self.max_age_days, "model age not given")
        age, limit = float(age_days), float(self.max_age_days)
        if age > limit:
            return self._row("age", "fired", age, limit, f"model is {age:.1f} days old (> {limit:g})")
        return self._row("age", "ok", age, limit, f"model is {age:.1f} days old")


# ================================================================================================ retraining
def _assemble_options(pipeline, overrides: Mapping[str, Any]) -> dict:
    """The options ``pipeline`` was assembled with (what its state records), updated with ``overrides``."""
    state, config = pipeline.detector_state, pipeline.config
    options = {"k": int(state["k"]), "metric": str(state["metric"]), "n_probe": int(state.get("n_probe", 4)),
               "threshold_percentile": float(state["threshold_percentile"]),
               "reference_max": int(config.get("reference_max", 50_000)), "window": config.get("window")}
    options.update({key: value for key, value in overrides.items() if key in ASSEMBLE_OPTIONS})
    unknown = sorted(set(overrides) - set(ASSEMBLE_OPTIONS))
    if unknown:
        raise TypeError(f"unknown assemble option(s): {', '.join(unknown)}")
    return options


def _training_record(pipeline) -> dict:
    return {key: pipeline.config[key] for key in ("protected_categorical", "train_config", "train_steps")
            if key in pipeline.config}


def _event_times_ms(pipeline, events: pd.DataFrame) -> np.ndarray | None:
    """Epoch milliseconds of the events from the pipeline's timestamp column; None without one."""
    from ..detect.windows import event_times, time_column

    try:
        column, unit = time_column(pipeline.encoder)
    except ValueError:
        return None
    return event_times(events, column, unit)


def _knn_scores(reference: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    from ..detect import KNNDetector

    det = KNNDetector.from_reference(reference, np.zeros(1), 0.0, k=k, metric=metric)
    return det.score_samples(queries)


def out_of_sample_scores(pipeline, events: pd.DataFrame, *, exclusion: str | pd.Timedelta = "12h",
                         views: str = "all", features=None, seed: int = 0) -> tuple[np.ndarray, str]:
    """Scores of ``events`` (the pipeline's training events) that no event of the same burst can lower, and how
    they were computed: what :func:`trimmed_reference` trims by.

    The event view (k-NN): time is cut into blocks of length ``exclusion``; the events of a block are scored
    against the events of the blocks more than one block away (so every reference event is at least ``exclusion``
    away in time, and at most three blocks are left out), a seeded sample of at most the pipeline's
    ``reference_max`` of them. An attack shorter than ``exclusion`` is then scored against the rest of the window,
    where it has no accomplice. (The k-NN detector's own training scores are leave-one-out: each event's match with
    itself is dropped, which protects against a lone event but not against a burst of more than ``k`` similar
    ones.) Without usable time (fewer than 90 % of the events timed, or a window too short for a block to have more
    than ``k`` events away from it) the event view falls back to leave-one-out.

    With ``views="all"`` (the default) and a pipeline that has a window view, each event's score is the larger of
    the two views' calibrated scores (the pipeline's own combiner), the window view scoring the event's windows
    against their entity's history. A collective attack whose events look ordinary one by one (a port scan: many
    small failed connections) is then found by the view that sees it. The window view's scores are in sample (an
    entity's history holds the very hours being scored), which errs towards trimming less. ``views="event"``: the
    event view alone.

    Returns ``(scores, method)``: ``method`` is ``"time-excluded"`` or ``"leave-one-out"``, with
    ``" + window view"`` when the window view took part.
    """
    from ..detect import KNNDetector

    if views not in ("all", "event"):
        raise ValueError(f"views must be 'all' or 'event', got {views!r}")
    length = pd.Timedelta(exclusion)
    if length <= pd.Timedelta(0):
        raise ValueError(f"exclusion must be a positive duration, got {exclusion!r}")
    n = len(events)
    features = pipeline.encoder.transform(events) if features is None else features
    z = pipeline.embed(features)
    k, metric = int(pipeline.detector_state["k"]), str(pipeline.detector_state["metric"])
    reference_max = int(pipeline.config.get("reference_max", 50_000))
    rng = np.random.default_rng(seed)
    ms = _event_times_ms(pipeline, events)
    timed = ~np.isnan(ms) if ms is not None else np.zeros(n, dtype=bool)
    scores, method = None, "leave-one-out"
    if timed.sum() >= 0.9 * n and n > k + 1:
        block = np.full(n, -10, dtype=np.int64)  # untimed events: a block of their own, far from every other
        block[timed] = np.floor((ms[timed] - ms[timed].min()) / (length.total_seconds() * 1000.0)).astype(np.int64)
        eligible = np.sort(rng.choice(n, size=reference_max, replace=False)) if n > reference_max else np.arange(n)
        scores = np.empty(n, dtype=np.float64)
        for b in np.unique(block):
            rows = np.flatnonzero(block == b)
            far = eligible[(np.abs(block[eligible] - b) > 1) & timed[eligible]]
            if len(far) <= k:
                scores = None
                break
            scores[rows] = _knn_scores(z[far], z[rows], k, metric)
        method = "time-excluded" if scores is not None else method
    if scores is None:
        det = KNNDetector(k=k, metric=metric, reference_max=reference_max, seed=seed).fit(z)
        scores = np.asarray(det.training_scores_, dtype=np.float64)
    window = pipeline.window
    if views == "all" and window is not None and window.time_column_ in events.columns and n:
        per_view, _ = window.view_scores((events, pipeline.window_vectors(z, features)), assigned=window.assign(events))
        members = np.column_stack([scores, window.best_view_score(per_view)])
        scores = pipeline.combiner.member_z(members).max(axis=1)
        method += " + window view"
    return scores, method


def trim_rows(scores, fraction: float) -> np.ndarray:
    """Row positions of the highest-scoring ``fraction`` of ``scores`` (ties: the earlier row first), sorted."""
    s = np.asarray(scores, dtype=np.float64)
    if not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n_drop = math.floor(float(fraction) * len(s) + 0.5)
    order = np.argsort(-np.nan_to_num(s, nan=np.inf), kind="stable")
    return np.sort(order[:n_drop])


def trimmed_reference(pipeline, events: pd.DataFrame, fraction: float, *, exclusion: str | pd.Timedelta = "12h",
                      views: str = "all", scores: np.ndarray | None = None, seed: int | None = None,
                      **assemble_options):
    """``pipeline`` rebuilt without the highest-scoring ``fraction`` of its training ``events``.

    The events are scored by :func:`out_of_sample_scores` (or ``scores``, row for row), the top ``fraction`` is
    dropped, and :func:`obsad.pipeline.assemble_pipeline` rebuilds everything that is fitted on events (k-NN
    reference, window view, calibrated threshold) from the rest, with the same feature encoder and the same trained
    network: nothing is retrained. ``config["reference_trim"]`` records what was done.

    Why: an attack inside the training window sits in the k-NN reference and makes the same attack look normal
    later (its own events are its nearest neighbours). Scored against the rest of the window (and by the window
    view, ``views="all"``), such a burst stands out and is dropped. The cost: ordinary rare events in the dropped
    share leave the reference too, so similar events are flagged more often later (the threshold is calibrated on
    the kept events): up to ``fraction`` more of the stream. Keep ``fraction`` near the share of a window an
    undetected incident could occupy (1-2 %).
    """
    from ..pipeline import assemble_pipeline

    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
    seed = int(pipeline.config.get("seed", 0)) if seed is None else int(seed)
    options = _assemble_options(pipeline, assemble_options)
    features = pipeline.encoder.transform(events)
    method = "given"
    if scores is None:
        scores, method = out_of_sample_scores(pipeline, events, exclusion=exclusion, views=views, features=features,
                                              seed=seed)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(events),):
        raise ValueError(f"scores must have one value per event ({len(events)}), got shape {scores.shape}")
    dropped = trim_rows(scores, fraction)
    keep = np.setdiff1d(np.arange(len(events)), dropped)
    trim = {"fraction": float(fraction), "n_trimmed": len(dropped), "n_kept": len(keep),
            "scores": method, "exclusion": str(pd.Timedelta(exclusion)),
            "score_cut": float(scores[dropped].min()) if len(dropped) else None}
    rebuilt = assemble_pipeline(events.iloc[keep], pipeline.encoder, pipeline.objective, features=features.take(keep),
                                seed=seed, training={**_training_record(pipeline), "reference_trim": trim}, **options)
    for key in ("training_window", "retrain"):
        if key in pipeline.config:
            rebuilt.config[key] = pipeline.config[key]
    return rebuilt


def retrain(events: pd.DataFrame, *, seed: int = 0, last: str | pd.Timedelta | None = None,
            time_column: str = "time", trim_fraction: float = 0.0, exclusion: str | pd.Timedelta = "12h",
            progress: bool = False, **fit_options):
    """A challenger: :func:`obsad.pipeline.fit_pipeline` (encoder, network, detectors: everything refitted) on
    the events of the last ``last`` (e.g. ``"14D"``; default: all) before the latest event, then, with
    ``trim_fraction > 0``, :func:`trimmed_reference` on the same events.

    ``config["training_window"]`` records the window (``start``, ``end`` in UTC ISO 8601, ``n_events``), which
    :class:`~obsad.monitor.registry.ModelRegistry` keeps with the version. ``fit_options`` go to ``fit_pipeline``
    (``target_steps``, ``epochs``, ``window``, ``k``, ...).
    """
    from ..pipeline import fit_pipeline

    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
    if not 0.0 <= float(trim_fraction) < 1.0:
        raise ValueError(f"trim_fraction must be in [0, 1), got {trim_fraction}")
    if time_column not in events.columns:
        raise ValueError(f"retrain needs the events' times: no column {time_column!r}")
    times = pd.to_datetime(events[time_column], utc=True, errors="coerce")
    if times.isna().all():
        raise ValueError(f"no usable time in column {time_column!r}")
    window = events
    if last is not None:
        span = pd.Timedelta(last)
        if span <= pd.Timedelta(0):
            raise ValueError(f"last must be a positive duration, got {last!r}")
        recent = (times >= times.max() - span).to_numpy()
        window = events[recent]
        times = times[recent]
    record = {"start": times.min().isoformat(), "end": times.max().isoformat(), "n_events": len(window)}
    fitted = fit_pipeline(window, seed=seed, progress=progress, **fit_options)
    fitted.config["training_window"] = record
    fitted.config["retrain"] = {"last": None if last is None else str(pd.Timedelta(last)),
                                "trim_fraction": float(trim_fraction)}
    if trim_fraction > 0:
        options = {key: value for key, value in fit_options.items() if key in ASSEMBLE_OPTIONS}
        fitted = trimmed_reference(fitted, window, trim_fraction, exclusion=exclusion, seed=seed, **options)
    return fitted


# ============================================================================================== champion vs challenger
_SIDES = ("champion", "challenger")


def read_shadow_log(directory: str | os.PathLike, *, champion: str | None = None,
                    challenger: str | None = None) -> pd.DataFrame:
    """The shadow log of ``obsad serve --shadow ... --shadow-log DIR`` as one frame, oldest first.

    Columns: ``time`` (UTC), ``request_id``, ``slot``, ``event_uid``, ``views``, then for each of ``champion`` and
    ``challenger``: ``<side>_version``, ``<side>_score``, ``<side>_is_anomaly``, ``<side>_view``. ``champion`` /
    ``challenger`` keep only the records of those model versions (after a reload the log holds several). A line
    still being written (no newline yet) is left out.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"shadow log {root}: not a directory")
    files = sorted(root.glob("shadow-*.jsonl"))
    columns = ["time", "request_id", "slot", "event_uid", "views"] + [
        f"{side}_{key}" for side in _SIDES for key in ("version", "score", "is_anomaly", "view")]
    text = []
    for path in files:
        data = path.read_text(encoding="utf-8")
        complete = data[:data.rfind("\n") + 1]  # a live writer's unfinished line is not read
        if complete:
            text.append(complete)
    if not text:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    from io import StringIO

    raw = pd.read_json(StringIO("".join(text)), lines=True, dtype=False)
    parts = [raw[["time", "request_id", "slot", "event_uid", "views"]].reset_index(drop=True)]
    for side in _SIDES:
        sub = pd.DataFrame(raw[side].tolist()).reindex(columns=["version", "score", "is_anomaly", "view"])
        parts.append(sub.add_prefix(f"{side}_"))
    frame = pd.concat(parts, axis=1)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    for side in _SIDES:
        frame[f"{side}_score"] = pd.to_numeric(frame[f"{side}_score"], errors="coerce").astype("float64")
        frame[f"{side}_is_anomaly"] = frame[f"{side}_is_anomaly"].astype(bool)
    if champion is not None:
        frame = frame[frame["champion_version"] == champion]
    if challenger is not None:
        frame = frame[frame["challenger_version"] == challenger]
    return frame.sort_values("time", kind="stable").reset_index(drop=True)[columns]


def _verdicts(verdicts, normal_label: str) -> pd.Series:
    """Analysts' verdicts -> a boolean Series (True = anomalous) indexed by event uid, one per uid."""
    if isinstance(verdicts, pd.Series):
        series = verdicts.copy()
        series.index = series.index.astype(str)
    elif isinstance(verdicts, pd.DataFrame):
        if "event_uid" not in verdicts.columns:
            raise ValueError("verdicts need an 'event_uid' column")
        if "anomalous" in verdicts.columns:
            values = verdicts["anomalous"]
        elif "label" in verdicts.columns:
            values = verdicts["label"].astype(str) != normal_label
        else:
            raise ValueError("verdicts need an 'anomalous' (bool) or a 'label' column")
        series = pd.Series(values.to_numpy(), index=verdicts["event_uid"].astype(str).to_numpy())
    else:
        raise TypeError(f"verdicts must be a DataFrame or a Series, got {type(verdicts).__name__}")
    if series.isna().any():
        raise ValueError("verdicts hold missing values")
    series = series.astype(bool)
    conflicting = series.groupby(level=0).nunique() > 1
    if conflicting.any():
        shown = ", ".join(conflicting[conflicting].index[:3])
        raise ValueError(f"conflicting verdicts for {int(conflicting.sum())} event(s) ({shown})")
    return series[~series.index.duplicated(keep="first")]


def _weighted_metrics(y: np.ndarray, score: np.ndarray, flag: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 (of ``flag``) and average precision (of ``score``) under each row of ``weights``
    (``[b, n]``: how many times each event is drawn; a row of ones gives the plain values). Vectorised over rows."""
    w = weights.astype(np.float64)
    yf = y.astype(np.float64)
    ff = flag.astype(np.float64)
    tp = w @ (yf * ff)
    fp = w @ ((1.0 - yf) * ff)
    fn = w @ (yf * (1.0 - ff))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1 = np.where(tp + fn > 0, f1, np.nan)
    # average precision: precision at each distinct score (ties as one threshold), weighted by the positives there
    s = np.where(np.isfinite(score), score, -np.inf)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted, w_sorted = s[order], yf[order], w[:, order]
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    end_of = ends[np.searchsorted(ends, np.arange(len(s_sorted)))]
    cum_tp = np.cumsum(w_sorted * y_sorted, axis=1)[:, end_of]
    cum_all = np.cumsum(w_sorted, axis=1)[:, end_of]
    positives = (w_sorted * y_sorted).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        at = np.where(cum_all > 0, cum_tp / cum_all, 0.0)
        auprc = np.where(positives > 0, (w_sorted * y_sorted * at).sum(axis=1) / positives, np.nan)
    return {"precision": precision, "recall": recall, "f1": f1, "auprc": auprc}


@dataclass
class ModelComparison:
    """Champion and challenger on the same labelled events.

    ``champion`` / ``challenger``: ``version``, ``precision``, ``recall``, ``f1`` (each at the model's own
    threshold), ``auprc``, ``flagged`` (share of the labelled events flagged). ``difference``: per metric,
    challenger minus champion: ``estimate``, ``low``, ``high`` (the ``confidence`` paired bootstrap interval: the
    same resampled events for both models) and ``p_better`` (share of resamples where the challenger is ahead).
    """

    n_labelled: int
    n_anomalous: int
    n_unmatched: int
    champion: dict
    challenger: dict
    difference: dict
    confidence: float
    n_boot: int
    seed: int

    def to_dict(self) -> dict:
        return json_safe(asdict(self))

    def table(self) -> pd.DataFrame:
        """One row per model and one for the difference (with its interval)."""
        rows = [{"model": side, **{m: getattr(self, side)[m] for m in METRICS}} for side in _SIDES]
        rows.append({"model": "challenger - champion", **{m: self.difference[m]["estimate"] for m in METRICS}})
        rows.append({"model": f"{self.confidence:.0%} interval",
                     **{m: f"[{self.difference[m]['low']:+.3f}, {self.difference[m]['high']:+.3f}]" for m in METRICS}})
        return pd.DataFrame(rows).set_index("model")


def compare_on_labelled(scores: pd.DataFrame, verdicts, *, n_boot: int = 2000, confidence: float = 0.95,
                        seed: int = 0, normal_label: str = "normal") -> ModelComparison:
    """Compare champion and challenger on the labelled events both scored.

    ``scores``: :func:`read_shadow_log`'s frame (or any frame with ``event_uid``, ``champion_score``,
    ``champion_is_anomaly``, ``challenger_score``, ``challenger_is_anomaly``; the latest record of an event counts).
    ``verdicts``: a frame with ``event_uid`` and ``anomalous`` (bool) or ``label`` (anything but ``normal_label``
    is anomalous), or a boolean Series indexed by event uid. Both models are judged on exactly the events in both,
    each at its own threshold (its ``is_anomaly``); the interval of each difference is a paired bootstrap:
    ``n_boot`` resamples of those events, each model measured on the same resample.
    """
    need = ["event_uid"] + [f"{side}_{key}" for side in _SIDES for key in ("score", "is_anomaly")]
    missing = [c for c in need if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lack column(s) {', '.join(missing)}")
    for side in _SIDES:
        column = f"{side}_version"
        if column in scores.columns and scores[column].nunique() > 1:
            raise ValueError(f"the scores hold {scores[column].nunique()} {side} versions; keep one "
                             f"(read_shadow_log(..., {side}=VERSION))")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    truth = _verdicts(verdicts, normal_label)
    scored = scores[scores["event_uid"].notna()].copy()
    scored["event_uid"] = scored["event_uid"].astype(str)
    scored = scored.drop_duplicates("event_uid", keep="last")
    joined = scored.merge(truth.rename("_truth"), left_on="event_uid", right_index=True, how="inner")
    y = joined["_truth"].to_numpy(dtype=bool)
    if len(y) == 0:
        raise ValueError("no labelled event was scored by both models")
    if y.all() or not y.any():
        raise ValueError(f"the {len(y)} labelled events scored by both models need both anomalous and normal ones")
    n = len(y)
    rng = np.random.default_rng(seed)
    measured = {}
    for side in _SIDES:
        s = joined[f"{side}_score"].to_numpy(dtype=np.float64)
        f = joined[f"{side}_is_anomaly"].to_numpy(dtype=bool)
        measured[side] = (s, f)
    point = {side: _weighted_metrics(y, *measured[side], np.ones((1, n))) for side in _SIDES}
    chunk = max(1, 2_000_000 // n)
    diffs = {m: [] for m in METRICS}
    done = 0
    while done < int(n_boot):
        b = min(chunk, int(n_boot) - done)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=b)
        per_side = {side: _weighted_metrics(y, *measured[side], weights) for side in _SIDES}
        for m in METRICS:
            diffs[m].append(per_side["challenger"][m] - per_side["champion"][m])
        done += b
    tail = (1.0 - float(confidence)) / 2.0 * 100.0
    difference = {}
    for m in METRICS:
        d = np.concatenate(diffs[m])
        d = d[np.isfinite(d)]
        low, high = (np.percentile(d, [tail, 100.0 - tail]) if len(d) else (np.nan, np.nan))
        difference[m] = {"estimate": float(point["challenger"][m][0] - point["champion"][m][0]),
                         "low": float(low), "high": float(high),
                         "p_better": float(np.mean(d > 0)) if len(d) else float("nan")}
    sides = {}
    for side in _SIDES:
        version = joined[f"{side}_version"].iloc[0] if f"{side}_version" in joined.columns else None
        sides[side] = {"version": version, **{m: float(point[side][m][0]) for m in METRICS},
                       "flagged": float(measured[side][1].mean())}
    return ModelComparison(n_labelled=n, n_anomalous=int(y.sum()), n_unmatched=int(len(truth) - n),
                           champion=sides["champion"], challenger=sides["challenger"], difference=difference,
                           confidence=float(confidence), n_boot=int(n_boot), seed=int(seed))


def compare_models(champion, challenger, events: pd.DataFrame, labelled, *, views: str = "all",
                   **options) -> ModelComparison:
    """Score ``events`` with both pipelines and :func:`compare_on_labelled`.

    ``labelled``: booleans row for row with ``events`` (True = anomalous), or verdicts by event uid as
    :func:`compare_on_labelled` takes them (matched to the events' ``metadata.uid``).
    """
    if isinstance(labelled, (pd.DataFrame, pd.Series)) and not (
            isinstance(labelled, pd.Series) and len(labelled) == len(events) and labelled.dtype == bool
            and labelled.index.equals(events.index)):
        if "metadata.uid" not in events.columns:
            raise ValueError("verdicts by event uid need the events' 'metadata.uid'")
        uids = events["metadata.uid"].astype(str).to_numpy()
        verdicts = labelled
    else:
        y = np.asarray(labelled)
        if y.shape != (len(events),):
            raise ValueError(f"labelled must have one value per event ({len(events)}), got shape {y.shape}")
        uids = np.arange(len(events)).astype(str)
        verdicts = pd.Series(y.astype(bool), index=uids)
    frame = pd.DataFrame({"event_uid": uids})
    for side, pipeline in (("champion", champion), ("challenger", challenger)):
        scored = pipeline.score(events, explain="none", views=views)
        frame[f"{side}_score"] = scored["score"].to_numpy(dtype=np.float64)
        frame[f"{side}_is_anomaly"] = scored["is_anomaly"].to_numpy(dtype=bool)
        frame[f"{side}_version"] = _pipeline_version(pipeline)
    return compare_on_labelled(frame, verdicts, **options)


def _pipeline_version(pipeline) -> str | None:
    """The served version of a saved pipeline (first 16 hex digits of its manifest's SHA-256), else None."""
    import hashlib

    if getattr(pipeline, "path", None) is None:
        return None
    try:
        return hashlib.sha256((Path(pipeline.path) / "manifest.json").read_bytes()).hexdigest()[:16]
    except OSError:
        return None


@dataclass
class PromotionDecision:
    """``promote``: whether the challenger replaces the champion; ``reason``: why, in one sentence; ``metric``,
    ``min_gain`` and the interval the rule read."""

    promote: bool
    reason: str
    metric: str
    min_gain: float
    estimate: float
    low: float
    high: float
    n_anomalous: int

    def to_dict(self) -> dict:
        return json_safe(asdict(self))


def promotion_decision(comparison: ModelComparison, *, metric: str = "f1", min_gain: float = 0.01,
                       min_anomalous: int = 10) -> PromotionDecision:
    """Promote only if the challenger is better on the labelled events, beyond chance and by a margin worth a change.

    "Better": the lower end of the paired bootstrap interval of challenger minus champion in ``metric`` (``f1`` at
    each model's own threshold, the default, or ``auprc``, ``precision``, ``recall``) above ``min_gain`` (default
    0.01: one point). With few labels the interval is wide and a lead of a few points is not enough: the champion,
    which is known to work, stays. With many labels the paired interval of two similar models is narrow (they
    agree on most events), and a gain of a fraction of a point can be certain yet not worth a deployment: that is
    what ``min_gain`` is for (0 promotes any certain gain). Fewer than ``min_anomalous`` labelled anomalies: no
    promotion (nothing to tell the models apart with).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if float(min_gain) < 0:
        raise ValueError(f"min_gain must be >= 0, got {min_gain}")
    d = comparison.difference[metric]
    common = {"metric": metric, "min_gain": float(min_gain), "estimate": d["estimate"], "low": d["low"],
              "high": d["high"], "n_anomalous": comparison.n_anomalous}
    level = f"{comparison.confidence:.0%}"
    if comparison.n_anomalous < int(min_anomalous):
        return PromotionDecision(False, f"only {comparison.n_anomalous} labelled anomalies (< {min_anomalous}): "
                                        "too few to tell the models apart; the champion stays", **common)
    span = (f"{metric} {d['estimate']:+.3f}, {level} interval [{d['low']:+.3f}, {d['high']:+.3f}] on "
            f"{comparison.n_labelled} labelled events")
    low, high = d["low"], d["high"]
    if np.isfinite(low) and low > float(min_gain):
        return PromotionDecision(True, f"challenger better: {span}, all above {min_gain:+g}", **common)
    if np.isfinite(high) and high < 0:
        verdict = "challenger worse"
    elif np.isfinite(low) and low > 0:
        verdict = f"challenger better, but not surely by the required {min_gain:g}"
    else:
        verdict = "challenger not clearly better"
    return PromotionDecision(False, f"{verdict}: {span}; the champion stays", **common)


# ================================================================================================ poisoned baseline
@dataclass
class PoisoningResult:
    """Detection on the same test events with three references: ``clean`` (the window without the attack),
    ``poisoned`` (with it) and ``trimmed`` (poisoned, then :func:`trimmed_reference`).

    ``table``: one row per (reference, detector): ``AUROC``, ``AUPRC``, ``F1``, ``precision``, ``recall``,
    ``flagged`` (each at the detector's own threshold). ``n_attack``: attack events in the poisoned window;
    ``attack_trimmed``: how many of them the trimming removed, out of ``n_trimmed`` events removed; ``scores``:
    how the trimming scored them; ``retrained``: what was fitted for each reference; ``by_group`` (with
    ``test_groups``): the AUROC of each group's test anomalies against all normal test events, one column per group;
    ``trimmed_rows``: the rows trimmed, as positions in the poisoned window (``clean_events`` then
    ``attack_events``: a position ``>= len(clean_events)`` is an attack event).
    """

    table: pd.DataFrame
    n_attack: int
    n_trimmed: int
    attack_trimmed: int
    trim_fraction: float
    scores: str
    retrained: dict
    by_group: pd.DataFrame | None = None
    trimmed_rows: np.ndarray | None = None
    vetted_rows: np.ndarray | None = None
    attack_vetted: int | None = None

    def summary(self, metric: str = "AUROC") -> pd.DataFrame:
        """Per detector: ``metric`` with each reference, the drop (clean - poisoned) and the share of it each
        mitigation recovered ((trimmed - poisoned) / (clean - poisoned); undefined without a drop)."""
        mitigations = [m for m in ("trimmed", "vetted") if m in self.table.index.get_level_values("reference")]
        wide = self.table[metric].unstack("reference")[["clean", "poisoned", *mitigations]]
        wide["drop"] = wide["clean"] - wide["poisoned"]
        for m in mitigations:
            with np.errstate(invalid="ignore", divide="ignore"):
                wide[f"recovered ({m})"] = np.where(wide["drop"] > 0, (wide[m] - wide["poisoned"]) / wide["drop"],
                                                    np.nan)
        return wide

    def to_dict(self) -> dict:
        rows = self.table.reset_index().to_dict(orient="records")
        groups = None if self.by_group is None else self.by_group.reset_index().to_dict(orient="records")
        return json_safe({"table": rows, "by_group": groups, "n_attack": self.n_attack, "n_trimmed": self.n_trimmed,
                           "attack_trimmed": self.attack_trimmed, "trim_fraction": self.trim_fraction,
                           "attack_vetted": self.attack_vetted,
                           "scores": self.scores, "retrained": self.retrained})


def poisoned_baseline_experiment(clean_events: pd.DataFrame, attack_events: pd.DataFrame, test_events: pd.DataFrame,
                                 test_labels, *, seed: int = 0, trim_fraction: float = 0.01,
                                 exclusion: str | pd.Timedelta = "12h", views: str = "all",
                                 clean_network: bool = False, test_groups=None, progress: bool = False,
                                 vetted_by=None, **fit_options) -> PoisoningResult:
    """How much an attack inside the training window costs detection, and how much trimming recovers.

    The poisoned window is ``clean_events`` plus ``attack_events``. One network is trained on it
    (:func:`obsad.pipeline.fit_pipeline` with ``fit_options``), as it would be in production, where nobody knows
    the window is poisoned; the three references are then built with that encoder and network
    (:func:`~obsad.pipeline.assemble_pipeline`: k-NN reference, window view, thresholds): (a) ``clean_events``,
    (b) the poisoned window, (c) (b) trimmed by :func:`trimmed_reference` (``trim_fraction``, ``exclusion``,
    ``views``). So the difference between them is the
    reference's share of the poisoning: what a k-NN detector looks up. ``clean_network=True`` fits a second
    network on ``clean_events`` for (a), which adds the network's own share (its training saw the attack).
    Isolation Forest (200 trees, seeded) is fitted on the embeddings of each reference's events.

    ``test_labels``: booleans row for row with ``test_events`` (True = anomalous). Detectors measured: the whole
    pipeline (``pipeline``: its calibrated combined score), its event view alone (``k-NN``) and ``IsolationForest``.
    ``test_groups`` (optional, row for row with ``test_events``: e.g. the kind of each anomaly) adds the AUROC per
    group (:attr:`PoisoningResult.by_group`): the attack that recurs is the one the poisoned reference hides, and in
    a test set with other kinds of anomalies its drop is diluted.

    ``vetted_by`` (optional): the model in service before the window (the champion, fitted on an older, vetted
    period). A fourth reference, ``vetted``, drops from the poisoned window the events that model flags (its own
    calibrated threshold), then rebuilds like ``trimmed``. Trimming by the window's own scores cannot see an attack
    that recurs for days (its attempts vouch for each other whatever the time gap); the incumbent, which never saw
    the attack, can.
    """
    from ..detect import IsolationForestDetector
    from ..detect.evaluation import detection_row, scenario_auroc
    from ..pipeline import assemble_pipeline, fit_pipeline

    y = np.asarray(test_labels).astype(bool)
    if y.shape != (len(test_events),):
        raise ValueError(f"test_labels must have one value per test event ({len(test_events)}), got shape {y.shape}")
    groups = None
    if test_groups is not None:
        groups = np.asarray(pd.Series(test_groups).fillna("").astype(str), dtype=object)
        if groups.shape != (len(test_events),):
            raise ValueError(f"test_groups must have one value per test event ({len(test_events)})")
        groups = np.where(y, groups, "")
    if len(attack_events) == 0:
        raise ValueError("attack_events is empty: nothing poisons the window")
    poisoned = pd.concat([clean_events, attack_events], ignore_index=True)
    is_attack = np.r_[np.zeros(len(clean_events), dtype=bool), np.ones(len(attack_events), dtype=bool)]
    fitted = fit_pipeline(poisoned, seed=seed, progress=progress, **fit_options)
    options = _assemble_options(fitted, {key: v for key, v in fit_options.items() if key in ASSEMBLE_OPTIONS})
    training = _training_record(fitted)
    if clean_network:
        clean = fit_pipeline(clean_events, seed=seed, progress=progress, **fit_options)
    else:
        clean = assemble_pipeline(clean_events, fitted.encoder, fitted.objective, seed=seed, training=training,
                                  **options)
    features = fitted.encoder.transform(poisoned)
    scores, method = out_of_sample_scores(fitted, poisoned, exclusion=exclusion, views=views, features=features,
                                          seed=seed)
    dropped = trim_rows(scores, trim_fraction)
    trimmed = trimmed_reference(fitted, poisoned, trim_fraction, exclusion=exclusion, scores=scores, seed=seed,
                                **{key: v for key, v in fit_options.items() if key in ASSEMBLE_OPTIONS})
    keep = np.setdiff1d(np.arange(len(poisoned)), dropped)
    variants = {"clean": (clean, clean_events), "poisoned": (fitted, poisoned), "trimmed": (trimmed,
                                                                                           poisoned.iloc[keep])}
    vetted_out = None
    if vetted_by is not None:
        incumbent = vetted_by.score(poisoned, explain="none")
        flagged = incumbent["is_anomaly"].to_numpy()
        vetted_out = np.flatnonzero(flagged)
        vetted = trimmed_reference(fitted, poisoned, float(flagged.mean()), scores=incumbent["score"].to_numpy(),
                                   seed=seed, **{key: v for key, v in fit_options.items() if key in ASSEMBLE_OPTIONS})
        variants["vetted"] = (vetted, poisoned.iloc[np.flatnonzero(~flagged)])
    rows, group_rows = [], []
    for name, (pipeline, reference_events) in variants.items():
        z_test = pipeline.embed(pipeline.encoder.transform(test_events))
        z_ref = pipeline.embed(pipeline.encoder.transform(reference_events))
        forest = IsolationForestDetector(seed=seed).fit(z_ref)
        measured = {"pipeline": (pipeline.score(test_events, explain="none")["score"].to_numpy(), pipeline.threshold),
                    "k-NN": (pipeline.detector.score_samples(z_test), pipeline.detector.threshold_),
                    "IsolationForest": (forest.score_samples(z_test), forest.threshold_)}
        for detector, (s, threshold) in measured.items():
            rows.append({"reference": name, **detection_row(detector, y, s, threshold)})
            if groups is not None:
                group_rows.append({"reference": name, "detector": detector, **scenario_auroc(y, s, groups)})
    table = pd.DataFrame(rows).set_index(["reference", "detector"])
    by_group = pd.DataFrame(group_rows).set_index(["reference", "detector"]) if groups is not None else None
    keep_cols = ["AUROC", "AUPRC", "F1", "precision", "recall", "flagged"]
    retrained = {"clean": "network trained on the clean window" if clean_network else
                 "reference only (network trained on the poisoned window)",
                 "poisoned": "everything (fit_pipeline on the poisoned window)",
                 "trimmed": "reference only (same network, trimmed window)"}
    if vetted_out is not None:
        retrained["vetted"] = "reference only (same network, the window less what the incumbent flags)"
    return PoisoningResult(table=table[keep_cols], n_attack=int(is_attack.sum()), n_trimmed=len(dropped),
                           attack_trimmed=int(is_attack[dropped].sum()), trim_fraction=float(trim_fraction),
                           scores=method, retrained=retrained, by_group=by_group, trimmed_rows=dropped,
                           vetted_rows=vetted_out,
                           attack_vetted=None if vetted_out is None else int(is_attack[vetted_out].sum()))
