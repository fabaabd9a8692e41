"""Alert quality in production, from analyst feedback that arrives late and for a fraction of the alerts.

A detector's alerts are logged as they are raised (:class:`AlertLog`); analysts close some of them days later, and
now and then an incident the detector missed is found another way, or a normal event is audited
(:class:`VerdictLog`). :func:`daily_quality` turns both into one row per calendar day, with the uncertainty that a
handful of labels a day means.

The logs. :meth:`AlertLog.append` keeps the flagged rows of one scored batch (``FittedPipeline.score``'s frame):
``event_uid``, ``event_time`` (the event's own time), ``alert_time`` (when the batch was scored, ``scored_at``),
``score``, ``percentile``, ``view``, ``top_features``, ``model_version``, ``batch``; and the batch record: how many
events were scored (the denominator of the alert rate and of the false-positive rate), counted per 15-minute slot
of event time, so that days can be cut in any time zone by alert time or by event time. Each append writes two
Parquet files (:func:`obsad.io.write_parquet`, atomic), named by ``scored_at`` (UTC) and a sequence number, so names
sort in time order and never replace an earlier file: the alerts, then the batch record. The batch record commits
the append: alerts whose batch record is missing (a crash between the two writes) are not read.

Verdicts. ``true_positive`` / ``false_positive`` close an alert; ``missed`` is an incident the detector did not
alert on (found another way), ``benign`` an audited event that was not alerted and is normal. A verdict says what
the event *was* (an incident: ``true_positive``, ``missed``; normal: ``false_positive``, ``benign``); whether it was
alerted comes from the alert log, so a ``missed`` verdict on an event that was in fact alerted counts as a true
positive, and a ``true_positive`` / ``false_positive`` verdict on an event with no alert (in the window) is not
counted. Several verdicts for one event: the one with the latest ``verdict_time`` wins (ties: the one recorded
last), so an analyst can revise a verdict. Windows are half-open, ``[start, end)``: a verdict whose ``verdict_time``
is ``now`` or later is not known yet and is not counted (nor are alerts and batch records from ``now`` on), so the
numbers of a past day can be recomputed exactly as they were known then.

The day of an alert is the local calendar day (``tz``) of its ``alert_time`` (``on="alert"``, what the analysts'
queue saw) or of its ``event_time`` (``on="event"``, what the model was judged on; the scored counts follow from the
15-minute slots; events without a time are left out). ``missed`` / ``benign`` verdicts have no alert: they fall on
the day of their ``event_time``, or of their ``verdict_time`` when that is not given. An event alerted twice
(scored again) is one alert, on the day it was first raised. Days end at local midnight (23 or 25 hours long on a
daylight-saving change) and the last day ends at ``now``.

The estimators (per day, or per window in :func:`rolling_quality`). ``A`` alerts, ``N`` events scored, ``L``
alerts with a verdict, of which ``TP`` true and ``FP`` false positives, ``M`` missed incidents reported:

- ``alert_rate = A / N``;
- ``precision = TP / L``, an estimate for all ``A`` alerts when the reviewed alerts are a random sample of them;
- ``recall = TP / (TP + M)``: recall on what is labelled, the share of the known incidents that were alerted. It
  estimates the detector's recall when a caught incident is as likely to be labelled as a missed one; when alerts
  are reviewed at a lower rate than misses are reported (a share ``L / A`` of the alerts reviewed, every miss
  reported), it is biased low, and ``recall_scaled = TP^ / (TP^ + M)`` with ``TP^ = A * precision`` (the true
  positives among all alerts) is the estimate; when misses go unreported both are biased high;
- ``fpr = FP^ / Neg^``: false alarms among normal events, with ``FP^ = A * (1 - precision)`` (the false positives
  among all alerts, scaled from the reviewed share) and ``Neg^ = N - TP^ - M`` (the events scored, less the
  incidents estimated); incidents nobody reported are counted as negatives, a small error when they are rare;
- ``f1 = 2 TP / (2 TP + FP + M)``, the harmonic mean of ``precision`` and ``recall``.

``benign`` verdicts are counted but enter no estimate: with incidents rare, an audit of non-alerted events finds
too few of them to estimate the misses from, and reported misses are not a random sample.

Intervals (``level``, 95 % by default) are Wilson score intervals (or exact Clopper-Pearson,
``interval="clopper-pearson"``) of the proportion: ``precision`` of ``TP`` out of ``L``, ``recall`` of ``TP`` out
of ``TP + M``, ``alert_rate`` of ``A`` out of ``N``. The scaled estimates carry two uncertainties, the review
sample's and the binomial one of a rate: their interval is the interval (same method) of the scaled count (``FP^``
out of ``Neg^``, ``TP^`` out of ``TP^ + M``) taken at the ends of the precision interval (conservative). A day with
no labelled alert has NaN (not 0) precision, false-positive rate and F1, and, when it had alerts, NaN recall:
nothing is known of them (a day with no alert and a missed incident has recall 0). The counts are grouped with
pandas; nothing loops over alerts or verdicts.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..io import json_safe, write_parquet

__all__ = ["ALERT_COLUMNS", "BATCH_COLUMNS", "INTERVALS", "QUALITY_COLUMNS", "VERDICTS", "VERDICT_COLUMNS", "AlertLog",
           "AlertQualityError", "QualitySummary", "VerdictLog", "check_verdicts", "daily_quality", "latest_verdicts",
           "proportion_interval", "quality_summary", "rolling_quality", "simulate_analyst"]

#: The verdict values: what the event was (an incident or normal) and whether the detector alerted on it.
VERDICTS = ("true_positive", "false_positive", "missed", "benign")
_INCIDENT = ("true_positive", "missed")
INTERVALS = ("wilson", "clopper-pearson")
ON = ("alert", "event")
#: The columns of :meth:`AlertLog.read`, in order.
ALERT_COLUMNS = ["event_uid", "event_time", "alert_time", "score", "percentile", "view", "top_features",
                 "model_version", "batch"]
#: The columns of :meth:`AlertLog.batches`: one row per append and 15-minute slot of event time.
BATCH_COLUMNS = ["batch", "scored_at", "model_version", "slot", "scored", "alerts"]
#: The columns of :func:`check_verdicts` and :meth:`VerdictLog.read`.
VERDICT_COLUMNS = ["event_uid", "verdict", "verdict_time", "event_time"]
#: The columns of :func:`daily_quality` and :func:`rolling_quality` (index: ``day``).
QUALITY_COLUMNS = ["start", "end", "scored", "alerts", "alert_rate", "alert_rate_low", "alert_rate_high", "labelled",
                   "review_share", "tp", "fp", "missed", "benign", "precision", "precision_low", "precision_high",
                   "recall", "recall_low", "recall_high", "recall_scaled", "recall_scaled_low", "recall_scaled_high",
                   "fpr", "fpr_low", "fpr_high", "f1", "model_versions"]
_SLOT = "15min"
_COUNTS = ["scored", "alerts", "labelled", "tp", "fp", "missed", "benign"]
_NAME = re.compile(r"^(\d{8}T\d{12}Z)-(\d{4,})$")


class AlertQualityError(ValueError):
    """A problem with the alerts, verdicts or options that the user can fix (a ``ValueError``: ``obsad`` prints its
    one-line message with exit code 2)."""


# ------------------------------------------------------------------------------------------------ times
def _instant(value, name: str) -> pd.Timestamp:
    """A timezone-aware instant (UTC), now when ``value`` is None. A naive time is refused: whose midnight?"""
    if value is None:
        return pd.Timestamp.now(tz="UTC").as_unit("us")
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise AlertQualityError(f"{name} must be a time, got {value!r}") from None
    if ts is pd.NaT:
        raise AlertQualityError(f"{name} must be a time, got {value!r}")
    if ts.tzinfo is None:
        raise AlertQualityError(f"{name} must be timezone-aware (e.g. pd.Timestamp.now(tz='UTC')), got {value!r}")
    return ts.tz_convert("UTC").as_unit("us")


def _check_tz(tz: str) -> str:
    try:
        pd.Timestamp(0, tz="UTC").tz_convert(tz)
    except (KeyError, ValueError, TypeError):  # zoneinfo's and pytz's unknown-zone errors are KeyErrors
        raise AlertQualityError(f"unknown time zone {tz!r} (an IANA name such as 'Europe/Berlin')") from None
    return tz


def _utc_column(values: pd.Series, name: str, *, naive: str) -> pd.Series:
    """A column of times -> ``datetime64[us, UTC]``. Numbers are epoch milliseconds (OCSF's ``time``); strings are
    ISO 8601. ``naive="utc"``: times without a zone are UTC (event times); ``naive="refuse"``: they are refused."""
    s = pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        if getattr(s.dtype, "tz", None) is None:
            if naive == "refuse" and s.notna().any():
                raise AlertQualityError(f"{name} must be timezone-aware; got naive times (localize them first)")
            s = s.dt.tz_localize("UTC")
        return s.dt.tz_convert("UTC").dt.as_unit("us")
    if pd.api.types.is_bool_dtype(s.dtype):
        raise AlertQualityError(f"{name} must hold times, got booleans")
    if pd.api.types.is_numeric_dtype(s.dtype):
        return pd.to_datetime(s, unit="ms", utc=True).dt.as_unit("us")
    text = s.astype("string")
    present = text.notna()
    if naive == "refuse":
        zoned = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)\s*$", regex=True, na=False)
        bad = np.flatnonzero((present & ~zoned).to_numpy())
        if len(bad):
            raise AlertQualityError(f"{name}: times without a time zone at rows {_rows(s.index[bad])}")
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = np.flatnonzero((present & parsed.isna()).to_numpy())
    if len(bad):
        raise AlertQualityError(f"{name}: unreadable times at rows {_rows(s.index[bad])} "
                                f"({_values(s.iloc[bad])})")
    return parsed.dt.as_unit("us")


def _local_day(times: pd.Series, tz: str) -> pd.Series:
    """The local calendar day (naive midnight) of each UTC instant; NaT stays NaT."""
    return times.dt.tz_convert(tz).dt.tz_localize(None).dt.floor("D").dt.as_unit("us")


def _midnights(days: pd.DatetimeIndex, tz: str) -> pd.DatetimeIndex:
    """Local midnights of naive days as instants (a midnight skipped by a clock change starts at the change)."""
    return days.tz_localize(tz, nonexistent="shift_forward", ambiguous=np.ones(len(days), dtype=bool))


def _rows(index, limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in list(index[:limit]))
    return f"[{shown}{', ...' if len(index) > limit else ''}] ({len(index)} in all)"


def _values(values: pd.Series, limit: int = 5) -> str:
    uniq = pd.unique(values.to_numpy(dtype=object))[:limit]
    return ", ".join(repr(v) for v in uniq)


def _stamp(ts: pd.Timestamp) -> str:
    return ts.tz_convert("UTC").strftime("%Y%m%dT%H%M%S%fZ")


def _next_name(stamp: str, *folders: Path) -> str:
    """``<stamp>-<seq>``, the sequence one past any file of that stamp in ``folders``: names sort in time order and
    an append never replaces an earlier file (one writer per log directory)."""
    seq = 0
    for folder in folders:
        for path in folder.glob(f"{stamp}-*.parquet"):
            match = _NAME.match(path.stem)
            if match:
                seq = max(seq, int(match.group(2)) + 1)
    return f"{stamp}-{seq:04d}"


def _read_all(paths: Iterable[Path], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in (pd.read_parquet(p) for p in paths) if len(f)]  # a loop over files, not rows
    if not frames:
        return _empty(columns)
    return pd.concat(frames, ignore_index=True)[columns]


def _empty(columns: list[str]) -> pd.DataFrame:
    kinds = {"event_time": "time", "alert_time": "time", "scored_at": "time", "slot": "time", "verdict_time": "time",
             "score": "float", "percentile": "float", "scored": "int", "alerts": "int"}
    data = {}
    for c in columns:
        kind = kinds.get(c, "str")
        data[c] = (pd.Series([], dtype="datetime64[us, UTC]") if kind == "time" else
                   pd.Series([], dtype=np.float64) if kind == "float" else
                   pd.Series([], dtype=np.int64) if kind == "int" else pd.Series([], dtype="string"))
    return pd.DataFrame(data)


def _between(frame: pd.DataFrame, column: str, start, end) -> pd.DataFrame:
    keep = np.ones(len(frame), dtype=bool)
    if start is not None:
        keep &= (frame[column] >= _instant(start, "start")).to_numpy()
    if end is not None:
        keep &= (frame[column] < _instant(end, "end")).to_numpy()
    return frame.loc[keep].reset_index(drop=True)


def _uids(values: pd.Series) -> pd.Series:
    """Event ids as strings, so that alerts and verdicts join whatever type an export gave them."""
    return pd.Series(values, copy=False).astype("string")


# ------------------------------------------------------------------------------------------------ the alert log
class AlertLog:
    """An append-only store of alerts and of how many events each scored batch held (module docstring).

    ``directory`` holds ``alerts/`` and ``batches/``, one Parquet file of each per :meth:`append`. One process
    appends to a log at a time; any number may read it.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"AlertLog({str(self.directory)!r})"

    @property
    def _alerts_dir(self) -> Path:
        return self.directory / "alerts"

    @property
    def _batches_dir(self) -> Path:
        return self.directory / "batches"

    def append(self, scores: pd.DataFrame, *, model_version: str, scored_at=None) -> str:
        """Keep the flagged rows of ``scores`` (``FittedPipeline.score``'s frame: ``event_uid``, ``score``,
        ``is_anomaly``, and ``time``, ``percentile``, ``view``, ``top_features`` when present) and count the rows
        scored. ``scored_at``: when they were scored (timezone-aware; default now) -- the alerts' ``alert_time``.
        Returns the batch name (its files' stem)."""
        if not isinstance(scores, pd.DataFrame):
            raise TypeError(f"scores must be a DataFrame, got {type(scores).__name__}")
        scored_at = _instant(scored_at, "scored_at")
        version = str(model_version).strip() if model_version is not None else ""
        if not version:
            raise AlertQualityError("model_version must be a non-empty string (e.g. the package's manifest hash)")
        missing = [c for c in ("event_uid", "score", "is_anomaly") if c not in scores.columns]
        if missing:
            raise AlertQualityError(f"scores lack the column(s) {', '.join(missing)}: pass the frame that "
                                    "FittedPipeline.score returns")
        flagged = _flags(scores["is_anomaly"])
        n = len(scores)
        times = (_utc_column(scores["time"], "scores['time']", naive="utc") if "time" in scores.columns
                 else pd.Series(pd.NaT, index=scores.index, dtype="datetime64[us, UTC]"))
        rows = np.flatnonzero(flagged)
        uid = _uids(scores["event_uid"]).iloc[rows]
        if uid.isna().any():
            bad = scores.index[rows[uid.isna().to_numpy()]]
            raise AlertQualityError(f"scores: flagged rows without an event_uid (verdicts could not reach them): "
                                    f"rows {_rows(bad)}")
        name = _next_name(_stamp(scored_at), self._alerts_dir, self._batches_dir)

        def column(col: str, default, kind: str) -> np.ndarray | pd.Series:
            if col not in scores.columns:
                return pd.Series([default] * len(rows), dtype=kind)
            values = scores[col].iloc[rows].reset_index(drop=True)
            if kind == "string":
                return values.astype("string").fillna(default)
            return pd.to_numeric(values, errors="coerce").astype(np.float64)

        alerts = pd.DataFrame({
            "event_uid": uid.reset_index(drop=True),
            "event_time": times.iloc[rows].reset_index(drop=True),
            "alert_time": pd.Series([scored_at] * len(rows), dtype="datetime64[us, UTC]"),
            "score": column("score", np.nan, "float64"),
            "percentile": column("percentile", np.nan, "float64"),
            "view": column("view", "", "string"),
            "top_features": column("top_features", "", "string"),
            "model_version": pd.Series([version] * len(rows), dtype="string"),
            "batch": pd.Series([name] * len(rows), dtype="string"),
        })
        slots = pd.DataFrame({"slot": times.dt.floor(_SLOT).reset_index(drop=True), "alert": flagged})
        per_slot = slots.groupby("slot", dropna=False, sort=True)["alert"].agg(["size", "sum"]).reset_index()
        if n == 0:  # still record the batch: zero events scored is a fact too
            per_slot = pd.DataFrame({"slot": pd.Series([pd.NaT], dtype="datetime64[us, UTC]"), "size": [0],
                                     "sum": [0]})
        batch = pd.DataFrame({
            "batch": pd.Series([name] * len(per_slot), dtype="string"),
            "scored_at": pd.Series([scored_at] * len(per_slot), dtype="datetime64[us, UTC]"),
            "model_version": pd.Series([version] * len(per_slot), dtype="string"),
            "slot": per_slot["slot"].astype("datetime64[us, UTC]"),
            "scored": per_slot["size"].to_numpy(dtype=np.int64),
            "alerts": per_slot["sum"].to_numpy(dtype=np.int64),
        })
        write_parquet(alerts, self._alerts_dir / f"{name}.parquet")
        write_parquet(batch, self._batches_dir / f"{name}.parquet")  # last: commits the append
        return name

    def _committed(self) -> list[str]:
        if not self._batches_dir.is_dir():
            return []
        return sorted(p.stem for p in self._batches_dir.glob("*.parquet") if _NAME.match(p.stem))

    def read(self, start=None, end=None) -> pd.DataFrame:
        """Every committed alert with ``start <= alert_time < end`` (timezone-aware bounds, None = open), in the
        order raised; columns :data:`ALERT_COLUMNS`, times ``datetime64[us, UTC]``."""
        names = self._committed()
        paths = [self._alerts_dir / f"{n}.parquet" for n in names]
        frame = _read_all([p for p in paths if p.is_file()], ALERT_COLUMNS)
        frame = frame.sort_values("alert_time", kind="stable", ignore_index=True)
        return _between(frame, "alert_time", start, end)

    def batches(self, start=None, end=None) -> pd.DataFrame:
        """The batch records with ``start <= scored_at < end``: one row per append and 15-minute slot of event time
        (``slot``, NaT for events without a time), with ``scored`` events and ``alerts``; columns
        :data:`BATCH_COLUMNS`. ``batches().groupby("batch")`` gives one row per append."""
        paths = [self._batches_dir / f"{n}.parquet" for n in self._committed()]
        frame = _read_all(paths, BATCH_COLUMNS)
        frame = frame.sort_values("scored_at", kind="stable", ignore_index=True)
        return _between(frame, "scored_at", start, end)


def _flags(values: pd.Series) -> np.ndarray:
    s = pd.Series(values)
    if s.isna().any():
        raise AlertQualityError(f"scores['is_anomaly'] is missing at rows {_rows(s.index[s.isna().to_numpy()])}")
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(s.dtype) and s.isin([0, 1]).all():
        return s.to_numpy() == 1
    raise AlertQualityError(f"scores['is_anomaly'] must be booleans, got {s.dtype} ({_values(s)})")


# ------------------------------------------------------------------------------------------------ verdicts
def check_verdicts(verdicts: pd.DataFrame, *, recorded_at=None) -> pd.DataFrame:
    """``verdicts`` checked and in canonical form (columns :data:`VERDICT_COLUMNS`): ``event_uid`` (string),
    ``verdict`` (one of :data:`VERDICTS`), ``verdict_time`` (timezone-aware; ``recorded_at``, default now, where the
    column is absent), ``event_time`` (optional: where a ``missed`` / ``benign`` verdict falls; numbers are epoch
    ms). Bad values are refused with an :class:`AlertQualityError` naming the rows."""
    if not isinstance(verdicts, pd.DataFrame):
        raise TypeError(f"verdicts must be a DataFrame, got {type(verdicts).__name__}")
    missing = [c for c in ("event_uid", "verdict") if c not in verdicts.columns]
    if missing:
        raise AlertQualityError(f"verdicts lack the column(s) {', '.join(missing)} (expected event_uid, verdict, "
                                "verdict_time and optionally event_time)")
    uid = _uids(verdicts["event_uid"])
    if uid.isna().any():
        raise AlertQualityError(f"verdicts without an event_uid at rows {_rows(verdicts.index[uid.isna().to_numpy()])}")
    verdict = verdicts["verdict"]
    bad = ~verdict.isin(VERDICTS).to_numpy()
    if bad.any():
        raise AlertQualityError(f"verdicts: values not in {', '.join(VERDICTS)} at rows {_rows(verdicts.index[bad])}: "
                                f"{_values(verdict[bad])}")
    n = len(verdicts)
    if "verdict_time" in verdicts.columns:
        when = _utc_column(verdicts["verdict_time"], "verdict_time", naive="refuse")
        if when.isna().any():
            raise AlertQualityError(f"verdicts without a verdict_time at rows "
                                    f"{_rows(verdicts.index[when.isna().to_numpy()])}")
    else:
        when = pd.Series([_instant(recorded_at, "recorded_at")] * n, index=verdicts.index,
                         dtype="datetime64[us, UTC]")
    event_time = (_utc_column(verdicts["event_time"], "event_time", naive="utc") if "event_time" in verdicts.columns
                  else pd.Series(pd.NaT, index=verdicts.index, dtype="datetime64[us, UTC]"))
    frame = pd.DataFrame({"event_uid": uid, "verdict": verdict.astype("string"), "verdict_time": when,
                          "event_time": event_time}).reset_index(drop=True)
    return frame.astype({"verdict_time": "datetime64[us, UTC]", "event_time": "datetime64[us, UTC]"})


def latest_verdicts(verdicts: pd.DataFrame, now=None) -> pd.DataFrame:
    """One verdict per event as known at ``now`` (default: now): verdicts from ``now`` on dropped (windows are
    half-open, ``[start, now)``), then the latest ``verdict_time`` per event wins (ties: the later row, i.e. the one
    recorded last)."""
    frame = check_verdicts(verdicts)
    now = _instant(now, "now")
    known = frame.loc[(frame["verdict_time"] < now).to_numpy()]
    known = known.sort_values("verdict_time", kind="stable")
    return known.drop_duplicates("event_uid", keep="last").reset_index(drop=True)


class VerdictLog:
    """An append-only store of analyst verdicts: one Parquet file per :meth:`record`, named by the recording time,
    so that :meth:`read` returns them in the order recorded (which breaks ties between equal verdict times)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"VerdictLog({str(self.directory)!r})"

    def record(self, verdicts: pd.DataFrame, *, recorded_at=None) -> str:
        """Check ``verdicts`` (:func:`check_verdicts`) and store them; returns the file's stem."""
        recorded_at = _instant(recorded_at, "recorded_at")
        frame = check_verdicts(verdicts, recorded_at=recorded_at)
        name = _next_name(_stamp(recorded_at), self.directory)
        write_parquet(frame, self.directory / f"{name}.parquet")
        return name

    def read(self) -> pd.DataFrame:
        """Every verdict recorded, in recording order (columns :data:`VERDICT_COLUMNS`); :func:`latest_verdicts`
        resolves them as known at a given time."""
        if not self.directory.is_dir():
            return _empty(VERDICT_COLUMNS)
        paths = sorted((p for p in self.directory.glob("*.parquet") if _NAME.match(p.stem)), key=lambda p: p.stem)
        return _read_all(paths, VERDICT_COLUMNS)


# ------------------------------------------------------------------------------------------------ a simulated analyst
def simulate_analyst(alerts: pd.DataFrame, truth_uids, *, scored: pd.DataFrame | None = None,
                     review_fraction: float = 0.3, audit_fraction: float = 0.001, report_fraction: float = 0.5,
                     delay_hours: tuple[float, float] = (12.0, 1.0), seed: int = 0) -> pd.DataFrame:
    """Verdicts an analyst team would return, for the book's examples; deterministic from ``seed``.

    Each alert (``alerts``: ``event_uid``, ``alert_time``, optionally ``event_time``, as :meth:`AlertLog.read`
    gives) is reviewed with probability ``review_fraction`` and marked ``true_positive`` when its event is in
    ``truth_uids`` (the events that really are incidents), else ``false_positive``. With ``scored`` (the scored
    events: ``event_uid`` and ``time``), the events that were not alerted are audited with probability
    ``audit_fraction`` (``missed`` or ``benign`` by the truth), and the incidents among them not audited are reported
    as ``missed`` with probability ``report_fraction`` (found another way). A verdict comes after a log-normal delay
    ``delay_hours = (median, spread)`` (``spread``: the standard deviation of the log; 1.0 makes one verdict in
    forty take over seven times the median) after the alert, or after the event for those not alerted.

    Returns :data:`VERDICT_COLUMNS`, sorted by ``verdict_time``.
    """
    for name, value in (("review_fraction", review_fraction), ("audit_fraction", audit_fraction),
                        ("report_fraction", report_fraction)):
        if not 0.0 <= float(value) <= 1.0:
            raise AlertQualityError(f"{name} must be in [0, 1], got {value}")
    median, spread = (float(v) for v in delay_hours)
    if not (median > 0 and spread >= 0 and math.isfinite(median) and math.isfinite(spread)):
        raise AlertQualityError(f"delay_hours must be (median > 0, spread >= 0) in hours, got {delay_hours}")
    missing = [c for c in ("event_uid", "alert_time") if c not in alerts.columns]
    if missing:
        raise AlertQualityError(f"alerts lack the column(s) {', '.join(missing)} (pass AlertLog.read())")
    truth = pd.Index(_uids(pd.Series(list(truth_uids), dtype=object)).dropna().unique())
    rng = np.random.default_rng(seed)

    uid = _uids(alerts["event_uid"]).reset_index(drop=True)
    alert_time = _utc_column(alerts["alert_time"], "alert_time", naive="refuse").reset_index(drop=True)
    event_time = pd.Series(pd.NaT, index=uid.index, dtype="datetime64[us, UTC]")
    if "event_time" in alerts.columns:
        event_time = _utc_column(alerts["event_time"], "event_time", naive="utc").reset_index(drop=True)
    reviewed = rng.random(len(uid)) < review_fraction
    delay = _delays(rng, len(uid), median, spread)
    parts = [pd.DataFrame({
        "event_uid": uid[reviewed],
        "verdict": np.where(uid[reviewed].isin(truth).to_numpy(), "true_positive", "false_positive"),
        "verdict_time": (alert_time + delay)[reviewed],
        "event_time": event_time[reviewed],
    })]
    if scored is not None:
        time_col = "time" if "time" in scored.columns else "event_time"
        if "event_uid" not in scored.columns or time_col not in scored.columns:
            raise AlertQualityError("scored must have event_uid and time columns (FittedPipeline.score's frame)")
        s_uid = _uids(scored["event_uid"]).reset_index(drop=True)
        s_time = _utc_column(scored[time_col], "scored['time']", naive="utc").reset_index(drop=True)
        quiet = (~s_uid.isin(pd.Index(uid)) & s_uid.notna()).to_numpy()
        incident = s_uid.isin(truth).to_numpy()
        draw_audit, draw_report = rng.random(len(s_uid)), rng.random(len(s_uid))
        s_delay = _delays(rng, len(s_uid), median, spread)
        audited = quiet & (draw_audit < audit_fraction)
        reported = quiet & ~audited & incident & (draw_report < report_fraction)
        told = audited | reported
        parts.append(pd.DataFrame({
            "event_uid": s_uid[told],
            "verdict": np.where(incident[told], "missed", "benign"),
            "verdict_time": (s_time + s_delay)[told],
            "event_time": s_time[told],
        }))
    out = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    out = out.astype({"event_uid": "string", "verdict": "string", "verdict_time": "datetime64[us, UTC]",
                      "event_time": "datetime64[us, UTC]"})
    out = out.dropna(subset=["verdict_time"])  # an event without a time cannot be given a verdict time
    return out.sort_values("verdict_time", kind="stable", ignore_index=True)[VERDICT_COLUMNS]


def _delays(rng: np.random.Generator, n: int, median: float, spread: float) -> pd.Series:
    hours = median * np.exp(spread * rng.standard_normal(n))
    return pd.Series(pd.to_timedelta(np.round(hours * 3.6e9).astype(np.int64), unit="us"))


# ------------------------------------------------------------------------------------------------ intervals
def proportion_interval(k, n, level: float = 0.95, method: str = "wilson") -> tuple[np.ndarray, np.ndarray]:
    """The ``level`` confidence interval of the proportion ``k / n``, element-wise: the Wilson score interval or the
    exact Clopper-Pearson one. ``k`` may be a non-integer (an estimated count); NaN where ``n <= 0`` or unknown. The
    interval always contains ``k / n``."""
    if method not in INTERVALS:
        raise AlertQualityError(f"interval must be one of {', '.join(INTERVALS)}, got {method!r}")
    if not 0.0 < float(level) < 1.0:
        raise AlertQualityError(f"level must be strictly between 0 and 1, got {level}")
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    k, n = np.broadcast_arrays(k, n)
    ok = np.isfinite(k) & np.isfinite(n) & (n > 0)
    nn = np.where(ok, n, 1.0)
    kk = np.clip(np.where(ok, k, 0.0), 0.0, nn)
    p = kk / nn
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "wilson":
            z = float(stats.norm.ppf(0.5 + float(level) / 2.0))
            denom = 1.0 + z * z / nn
            centre = (p + z * z / (2.0 * nn)) / denom
            half = z * np.sqrt(p * (1.0 - p) / nn + z * z / (4.0 * nn * nn)) / denom
            low, high = centre - half, centre + half
        else:
            a = (1.0 - float(level)) / 2.0
            low = stats.beta.ppf(a, np.maximum(kk, 1e-12), nn - kk + 1.0)
            high = stats.beta.ppf(1.0 - a, kk + 1.0, np.maximum(nn - kk, 1e-12))
    low = np.where(kk <= 0, 0.0, np.minimum(np.clip(low, 0.0, 1.0), p))
    high = np.where(kk >= nn, 1.0, np.maximum(np.clip(high, 0.0, 1.0), p))
    return np.where(ok, low, np.nan), np.where(ok, high, np.nan)


# ------------------------------------------------------------------------------------------------ daily counts
@dataclass
class _Counts:
    """Per local day (naive midnights, every day of the range): the counts, and which model versions were live."""

    counts: pd.DataFrame
    versions: pd.DataFrame


def _as_inputs(alerts, verdicts, batches):
    if isinstance(alerts, AlertLog):
        if batches is None:
            batches = alerts.batches()
        alerts = alerts.read()
    if isinstance(verdicts, VerdictLog):
        verdicts = verdicts.read()
    if not isinstance(alerts, pd.DataFrame):
        raise TypeError(f"alerts must be an AlertLog or a DataFrame, got {type(alerts).__name__}")
    if verdicts is None:
        verdicts = _empty(VERDICT_COLUMNS)
    return alerts, verdicts, batches


def _daily_counts(alerts, verdicts, batches, *, now: pd.Timestamp, tz: str, on: str, n_days: int | None) -> _Counts:
    if on not in ON:
        raise AlertQualityError(f"on must be 'alert' (the day an alert was raised) or 'event' (the day of the event), "
                                f"got {on!r}")
    alerts, verdicts, batches = _as_inputs(alerts, verdicts, batches)
    need = ["event_uid", "alert_time"] + (["event_time"] if on == "event" else [])
    missing = [c for c in need if c not in alerts.columns]
    if missing:
        raise AlertQualityError(f"alerts lack the column(s) {', '.join(missing)} (pass AlertLog.read())")

    # alerts known at `now`, each event once (its first alert)
    a_time = _utc_column(alerts["alert_time"], "alert_time", naive="refuse").reset_index(drop=True)
    a = pd.DataFrame({"event_uid": _uids(alerts["event_uid"]).reset_index(drop=True), "alert_time": a_time})
    if on == "event":
        a["when"] = _utc_column(alerts["event_time"], "event_time", naive="utc").reset_index(drop=True)
    else:
        a["when"] = a_time
    a["model_version"] = (alerts["model_version"].astype("string").reset_index(drop=True)
                          if "model_version" in alerts.columns else pd.Series(pd.NA, index=a.index, dtype="string"))
    a = a.loc[(a["alert_time"] < now).to_numpy() & a["event_uid"].notna().to_numpy()]
    a = a.sort_values("alert_time", kind="stable").drop_duplicates("event_uid", keep="first")
    a["day"] = _local_day(a["when"], tz)

    # verdicts known at `now`, the latest per event
    v = latest_verdicts(verdicts, now)
    incident = v["verdict"].isin(_INCIDENT).to_numpy()
    at = pd.Index(v["event_uid"]).get_indexer(pd.Index(a["event_uid"]))  # each alert's verdict, -1 for none
    a["labelled"] = at >= 0
    a["tp"] = (at >= 0) & incident[np.maximum(at, 0)] if len(v) else np.zeros(len(a), dtype=bool)
    a["fp"] = (at >= 0) & ~a["tp"].to_numpy(dtype=bool)
    quiet = v.loc[~v["event_uid"].isin(pd.Index(a["event_uid"])).to_numpy()
                  & v["verdict"].isin(["missed", "benign"]).to_numpy()]
    q_when = quiet["event_time"].where(quiet["event_time"].notna(), quiet["verdict_time"])
    q = pd.DataFrame({"day": _local_day(q_when, tz), "missed": (quiet["verdict"] == "missed").to_numpy(dtype=bool),
                      "benign": (quiet["verdict"] == "benign").to_numpy(dtype=bool)})

    per_alert = a.groupby("day").agg(alerts=("labelled", "size"), labelled=("labelled", "sum"), tp=("tp", "sum"),
                                     fp=("fp", "sum"))
    per_quiet = q.groupby("day").agg(missed=("missed", "sum"), benign=("benign", "sum"))

    # events scored per day, from the batch records known at `now`
    scored = None
    versions_from = a[["day", "model_version"]]
    if batches is not None:
        b_need = ["scored", "scored_at"] + (["slot"] if on == "event" else [])
        missing = [c for c in b_need if c not in batches.columns]
        if missing:
            raise AlertQualityError(f"batches lack the column(s) {', '.join(missing)} (pass AlertLog.batches())")
        at = _utc_column(batches["scored_at"], "scored_at", naive="refuse").reset_index(drop=True)
        when = _utc_column(batches["slot"], "slot", naive="utc").reset_index(drop=True) if on == "event" else at
        b = pd.DataFrame({"day": _local_day(when, tz),
                          "scored": pd.to_numeric(batches["scored"], errors="coerce").fillna(0).to_numpy(np.int64),
                          "model_version": (batches["model_version"].astype("string").reset_index(drop=True)
                                            if "model_version" in batches.columns
                                            else pd.Series(pd.NA, index=at.index, dtype="string"))})
        b = b.loc[(at < now).to_numpy()]
        scored = b.groupby("day")["scored"].sum()
        versions_from = pd.concat([versions_from, b[["day", "model_version"]]], ignore_index=True)

    # the range of days: `n_days` ending today, or from the first day with data
    last = _local_day(pd.Series([now - pd.Timedelta(microseconds=1)]), tz).iloc[0]  # the day holding `now`'s past
    if n_days is not None:
        first = last - pd.Timedelta(days=int(n_days) - 1)
    else:
        seen = [x.index.min() for x in (per_alert, per_quiet) if len(x)]
        if scored is not None and len(scored):
            seen.append(scored.index.min())
        first = min([d for d in seen if pd.notna(d)] + [last])
    days = pd.date_range(first, last, freq="D", unit="us", name="day")
    counts = pd.DataFrame(index=days)
    counts["scored"] = (scored.reindex(days, fill_value=0).astype(np.float64) if scored is not None
                        else np.full(len(days), np.nan))
    for frame, cols in ((per_alert, ["alerts", "labelled", "tp", "fp"]), (per_quiet, ["missed", "benign"])):
        for c in cols:
            counts[c] = frame[c].reindex(days, fill_value=0).to_numpy(dtype=np.int64) if len(frame) else 0

    live = versions_from.dropna().drop_duplicates()
    live = live.loc[live["day"].isin(days).to_numpy()]
    versions = pd.crosstab(live["day"], live["model_version"]).reindex(days, fill_value=0) > 0
    versions = versions.reindex(columns=sorted(versions.columns))
    return _Counts(counts=counts[_COUNTS], versions=versions)


def _version_names(present: pd.DataFrame) -> pd.Series:
    """Per row, the names of the versions present, comma-joined (one join per distinct combination)."""
    if present.shape[1] == 0:
        return pd.Series("", index=present.index, dtype="string")
    names = np.asarray(present.columns, dtype=object)
    combos, inverse = np.unique(present.to_numpy(dtype=bool), axis=0, return_inverse=True)
    joined = np.array([",".join(names[row]) for row in combos], dtype=object)  # one per combination
    return pd.Series(joined[inverse.reshape(-1)], index=present.index, dtype="string")


def _quality(counts: pd.DataFrame, *, level: float, interval: str) -> pd.DataFrame:
    """The estimators of the module docstring, row by row (vectorised over rows)."""
    out = counts.copy()
    n_scored = counts["scored"].to_numpy(np.float64)
    n_alerts = counts["alerts"].to_numpy(np.float64)
    lab, tp, fp = (counts[c].to_numpy(np.float64) for c in ("labelled", "tp", "fp"))
    missed = counts["missed"].to_numpy(np.float64)

    def ratio(k, n):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, k / np.where(n > 0, n, 1.0), np.nan)

    def interval_of(k, n):
        return proportion_interval(k, n, level, interval)

    out["alert_rate"] = ratio(n_alerts, n_scored)
    out["alert_rate_low"], out["alert_rate_high"] = interval_of(n_alerts, n_scored)
    out["review_share"] = ratio(lab, n_alerts)
    precision = ratio(tp, lab)
    p_low, p_high = interval_of(tp, lab)
    out["precision"], out["precision_low"], out["precision_high"] = precision, p_low, p_high

    # recall needs the alerts judged: a day whose alerts nobody reviewed says nothing of it
    judged = (n_alerts == 0) | (lab > 0)
    known = tp + missed
    recall = np.where(judged, ratio(tp, known), np.nan)
    r_low, r_high = interval_of(tp, known)
    out["recall"] = recall
    out["recall_low"], out["recall_high"] = np.where(judged, r_low, np.nan), np.where(judged, r_high, np.nan)

    # scaled from the reviewed share: TP^ = A p, FP^ = A (1 - p); with no alert, both are exactly 0
    def tp_hat(p):
        return np.where(n_alerts > 0, n_alerts * np.nan_to_num(p, nan=0.0), 0.0)

    scaled_ok = judged & (known > 0)
    rs = ratio(tp_hat(precision), tp_hat(precision) + missed)
    rs_low = interval_of(tp_hat(p_low), tp_hat(p_low) + missed)[0]
    rs_high = interval_of(tp_hat(p_high), tp_hat(p_high) + missed)[1]
    out["recall_scaled"] = np.where(scaled_ok, rs, np.nan)
    out["recall_scaled_low"] = np.where(scaled_ok, rs_low, np.nan)
    out["recall_scaled_high"] = np.where(scaled_ok, rs_high, np.nan)

    def negatives(p):
        return n_scored - tp_hat(p) - missed

    def fp_hat(p):
        return np.where(n_alerts > 0, n_alerts * (1.0 - np.nan_to_num(p, nan=0.0)), 0.0)

    fpr_ok = judged & np.isfinite(n_scored) & (negatives(precision) > 0)
    out["fpr"] = np.where(fpr_ok, ratio(fp_hat(precision), negatives(precision)), np.nan)
    fpr_low = interval_of(fp_hat(p_high), negatives(p_high))[0]  # the most precise end: fewest false positives
    fpr_high = interval_of(fp_hat(p_low), negatives(p_low))[1]
    out["fpr_low"] = np.where(fpr_ok, fpr_low, np.nan)
    out["fpr_high"] = np.where(fpr_ok, fpr_high, np.nan)

    f1_ok = (lab > 0) & (known > 0)
    out["f1"] = np.where(f1_ok, ratio(2.0 * tp, 2.0 * tp + fp + missed), np.nan)
    for c in ("alerts", "labelled", "tp", "fp", "missed", "benign"):
        out[c] = counts[c].to_numpy(np.int64)
    return out


def _frame(counts: pd.DataFrame, versions: pd.DataFrame, starts: pd.DatetimeIndex, ends: pd.DatetimeIndex,
           tz: str, *, level: float, interval: str) -> pd.DataFrame:
    out = _quality(counts, level=level, interval=interval)
    out["start"] = starts
    out["end"] = ends
    out["model_versions"] = _version_names(versions).to_numpy()
    out.index = _midnights(pd.DatetimeIndex(counts.index), tz).rename("day")
    return out[QUALITY_COLUMNS]


def _check_options(level: float, interval: str) -> None:
    proportion_interval(0, 1, level, interval)  # raises on a bad level or method


def daily_quality(alerts, verdicts=None, batches: pd.DataFrame | None = None, *, now=None, tz: str = "UTC",
                  days: int | None = None, on: str = "alert", level: float = 0.95,
                  interval: str = "wilson") -> pd.DataFrame:
    """One row per local calendar day in ``tz`` with the alert quality known at ``now`` (module docstring).

    ``alerts``: an :class:`AlertLog` (its batch records are then the ``batches``) or :meth:`AlertLog.read`'s frame;
    ``verdicts``: a :class:`VerdictLog`, a frame of verdicts (:func:`check_verdicts`), or None; ``batches``:
    :meth:`AlertLog.batches`' frame, without which ``scored``, ``alert_rate`` and ``fpr`` are NaN. ``now``
    (timezone-aware, default now): alerts, batches and verdicts from it on are not known yet; the last day ends at
    it.
    ``days``: the number of days ending today (default: from the first day with data). ``on``: ``"alert"`` or
    ``"event"`` time decides an alert's day.

    Index ``day`` (local midnight, timezone-aware); columns :data:`QUALITY_COLUMNS`: ``start`` / ``end`` of the day
    (``end`` = ``now`` on the last), the counts ``scored``, ``alerts``, ``labelled``, ``tp``, ``fp``, ``missed``,
    ``benign``, the estimates with ``_low`` / ``_high`` interval ends, ``review_share`` (labelled / alerts),
    ``model_versions`` (comma-joined versions live that day).
    """
    _check_options(level, interval)
    tz = _check_tz(tz)
    now = _instant(now, "now")
    if days is not None and int(days) < 1:
        raise AlertQualityError(f"days must be >= 1, got {days}")
    c = _daily_counts(alerts, verdicts, batches, now=now, tz=tz, on=on, n_days=days)
    day_index = pd.DatetimeIndex(c.counts.index)
    starts = _midnights(day_index, tz)
    ends = _midnights(day_index + pd.Timedelta(days=1), tz)
    ends = ends.where(ends <= now, now.tz_convert(tz))  # the last day ends now
    return _frame(c.counts, c.versions, starts, ends, tz, level=level, interval=interval)


def rolling_quality(alerts, verdicts=None, batches: pd.DataFrame | None = None, *, now=None, tz: str = "UTC",
                    days: int = 7, periods: int | None = None, on: str = "alert", level: float = 0.95,
                    interval: str = "wilson") -> pd.DataFrame:
    """The same estimates over trailing windows of ``days`` calendar days, one per day: each window ends at the end
    of its ``day`` (the last one at ``now``) and starts ``days - 1`` local midnights earlier. ``periods``: how many
    windows, ending today (default: from the first day with data). Columns as :func:`daily_quality`; the counts are
    the windows' sums, the estimates recomputed from them (not averages of daily estimates)."""
    _check_options(level, interval)
    tz = _check_tz(tz)
    now = _instant(now, "now")
    if int(days) < 1:
        raise AlertQualityError(f"days must be >= 1, got {days}")
    if periods is not None and int(periods) < 1:
        raise AlertQualityError(f"periods must be >= 1, got {periods}")
    span = None if periods is None else int(periods) + int(days) - 1
    c = _daily_counts(alerts, verdicts, batches, now=now, tz=tz, on=on, n_days=span)
    summed = c.counts.rolling(int(days), min_periods=1).sum()
    present = c.versions.astype(np.int64).rolling(int(days), min_periods=1).max() > 0
    if periods is not None:
        summed, present = summed.iloc[-int(periods):], present.iloc[-int(periods):]
    day_index = pd.DatetimeIndex(summed.index)
    starts = _midnights(day_index - pd.Timedelta(days=int(days) - 1), tz)
    ends = _midnights(day_index + pd.Timedelta(days=1), tz)
    ends = ends.where(ends <= now, now.tz_convert(tz))
    return _frame(summed, present, starts, ends, tz, level=level, interval=interval)


# ------------------------------------------------------------------------------------------------ the health check
@dataclass
class QualitySummary:
    """The alert quality of the latest window (``days`` days ending at ``end`` = ``now``): the counts, the estimates
    and their ``level`` intervals as ``(low, high)``; NaN where nothing is known (``to_dict`` writes None)."""

    start: pd.Timestamp
    end: pd.Timestamp
    days: int
    tz: str
    scored: float
    alerts: int
    alert_rate: float
    alert_rate_interval: tuple[float, float]
    labelled: int
    review_share: float
    tp: int
    fp: int
    missed: int
    benign: int
    precision: float
    precision_interval: tuple[float, float]
    recall: float
    recall_interval: tuple[float, float]
    recall_scaled: float
    recall_scaled_interval: tuple[float, float]
    fpr: float
    fpr_interval: tuple[float, float]
    f1: float
    model_versions: list[str] = field(default_factory=list)
    level: float = 0.95
    interval: str = "wilson"

    def to_dict(self) -> dict:
        """A JSON-ready dict: times as ISO 8601 strings, NaN as None."""
        out = asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        return json_safe(out)

    def summary(self) -> str:
        def pct(x, lo_hi) -> str:
            if not math.isfinite(x):
                return "unknown"
            return f"{x:.1%} [{lo_hi[0]:.1%}, {lo_hi[1]:.1%}]"

        def small(x, lo_hi) -> str:
            return "unknown" if not math.isfinite(x) else f"{x:.3g} [{lo_hi[0]:.3g}, {lo_hi[1]:.3g}]"

        scored = "unknown" if not math.isfinite(self.scored) else f"{int(self.scored):,}"
        f1 = "unknown" if not math.isfinite(self.f1) else f"{self.f1:.3f}"
        rate = small(self.alert_rate, self.alert_rate_interval)
        recall, scaled = pct(self.recall, self.recall_interval), pct(self.recall_scaled, self.recall_scaled_interval)
        lines = [
            (f"alert quality, {self.days} day(s) {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} "
             f"({self.tz}); {self.level:.0%} {self.interval} intervals"),
            f"  alerts {self.alerts:,} of {scored} events scored: rate {rate}",
            (f"  labelled {self.labelled:,} alerts ({self.tp} TP, {self.fp} FP); {self.missed} missed and "
             f"{self.benign} benign reported"),
            f"  precision {pct(self.precision, self.precision_interval)}; recall (labelled) {recall}, scaled {scaled}",
            f"  false-positive rate {small(self.fpr, self.fpr_interval)}; F1 {f1}",
            f"  model versions: {', '.join(self.model_versions) or 'none'}",
        ]
        return "\n".join(lines)


def quality_summary(alerts, verdicts=None, batches: pd.DataFrame | None = None, *, now=None, tz: str = "UTC",
                    days: int = 7, on: str = "alert", level: float = 0.95,
                    interval: str = "wilson") -> QualitySummary:
    """The latest trailing window of :func:`rolling_quality` (``days`` days ending at ``now``) as a
    :class:`QualitySummary`, for a health check."""
    row = rolling_quality(alerts, verdicts, batches, now=now, tz=tz, days=days, periods=1, on=on, level=level,
                          interval=interval).iloc[-1]

    def pair(name: str) -> tuple[float, float]:
        return float(row[f"{name}_low"]), float(row[f"{name}_high"])

    versions = str(row["model_versions"]) if pd.notna(row["model_versions"]) else ""
    return QualitySummary(
        start=row["start"], end=row["end"], days=int(days), tz=tz, scored=float(row["scored"]),
        alerts=int(row["alerts"]), alert_rate=float(row["alert_rate"]), alert_rate_interval=pair("alert_rate"),
        labelled=int(row["labelled"]), review_share=float(row["review_share"]), tp=int(row["tp"]),
        fp=int(row["fp"]), missed=int(row["missed"]), benign=int(row["benign"]), precision=float(row["precision"]),
        precision_interval=pair("precision"), recall=float(row["recall"]), recall_interval=pair("recall"),
        recall_scaled=float(row["recall_scaled"]), recall_scaled_interval=pair("recall_scaled"),
        fpr=float(row["fpr"]), fpr_interval=pair("fpr"), f1=float(row["f1"]),
        model_versions=[v for v in versions.split(",") if v], level=float(level), interval=interval)
