"""Investigating a flagged event: which of its fields make it unusual, next to what normal events look like.

An alert says *that* an event is unusual; whoever answers it needs *why*, in the event's own fields, and what to
look at next. :class:`Investigator` answers from a fitted pipeline (:class:`~obsad.pipeline.FittedPipeline`) and
nothing else: its encoder (which raw columns exist and how each is read), its reference sample (raw events, row for
row with their embeddings and encoded values) and its views. Nothing here knows a column name or a scenario; every
number comes from the package's own reference.

Each raw field the encoder uses gets three pieces of evidence, each a tail probability ``p`` under the reference
(reported in bits, ``-log2 p``), so that fields of different kinds and sizes compare on one scale:

- **surprise** — how rare the value is in the reference. Numbers (every numeric output of the encoder: values, text
  lengths, address frequencies, missing flags): the two-sided empirical tail. Categories (every categorical output:
  the value, a text template, a network prefix, a port range, the encoder's rare bucket): the share of reference
  events whose value is *at most as common* as this one. Not the plain frequency: that would make a typical value of
  a field with hundreds of values (a user name) rarer than any value of a field with three (a status), and put the
  many-valued fields first for every event; the share of as-rare events is about 1 for a typical value of any field.
  Timestamps: the hour of the day, by the same rule (the day of the week is left out: a reference shorter than a
  week would make every event of a weekday it lacks the most surprising).
- **local** — how far the value lies from the event's nearest reference events (its neighbours in the embedding),
  against how far reference events lie from *their own* neighbours (measured once, leaving each one out, on a seeded
  sample of the reference): numbers by ``|x - median|`` over the neighbours' own robust spread (MAD, floored at its
  typical size in the reference), categories by the share of neighbours with another value less the share two
  neighbours differ by (a value the neighbours split on is no evidence), timestamps by the hours from the
  neighbours' mean time of day.
- **window** — for an alert the window view decided, the fields of its own explanation: each numeric field by its
  window shift ``t`` (two-sided normal tail), the entity column by the tail of the window's score among the view's
  calibration scores.

A field read through several encoder outputs takes its smallest ``p`` times their number (Bonferroni). The three
combine by Fisher's method (``-2 sum ln p`` is chi-square with 6 degrees of freedom when the event is like the
reference): ``evidence`` is ``-log2`` of that probability, and fields rank by it. Every ``p`` is floored at
``1 / (n_reference + 1)``: an empirical test cannot show more than its sample holds.

Everything is computed for many events at once: the frequency tables, sorted reference values and neighbour
deviations once per investigator, the neighbours of all requested events in one search, the evidence as arrays
over (events, fields). :meth:`Investigator.rank` returns only that ranking (:class:`FieldEvidence`);
:meth:`Investigator.investigate` adds, per event, the raw fields of the event and of its neighbours, the per-field
table and a recommendation written from those numbers. :func:`attribution_accuracy` measures the ranking against
labelled signatures (the fields a scenario changed) next to the pipeline's own ``top_features`` and a blind guess
(``bench/bench_investigate.py``).

The neighbours are the nearest events of the package's reference sample, which is the training data: normal by
the model's definition, not by anyone's check. A training period that held an earlier incident of the same kind
gives that incident's events as neighbours, and the local evidence then points at what differs between the two
incidents; the surprise (rare in the reference as a whole) and the window view's evidence still point at the
incident's own fields.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FIELD_TABLE_COLUMNS", "AttributionAccuracy", "FieldEvidence", "Investigation", "InvestigationError",
           "Investigator", "attribution_accuracy"]

#: Columns of :attr:`Investigation.fields`, in order.
FIELD_TABLE_COLUMNS = ["rank", "field", "kind", "value", "typical", "delta", "delta_robust", "differs", "shared",
                       "frequency", "surprise", "local", "window", "evidence"]
_LN2 = math.log(2.0)
_CHUNK = 2048
_TWO_PI = 2.0 * math.pi


class InvestigationError(ValueError):
    """A request the investigator cannot answer (rows out of range, no reference events, labels without fields)."""


# --------------------------------------------------------------------------------------------------- helpers
def _json_value(value: Any) -> Any:
    """A JSON-safe copy of one table value; ``None`` for missing."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value.tolist()]
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _records(frame: pd.DataFrame, rows: np.ndarray) -> list[dict]:
    """Rows of a raw event table as ``{column: value}`` dicts, JSON-safe, missing values left out (read column by
    column: one conversion per column, not per cell)."""
    rows = np.asarray(rows, dtype=np.int64)
    out: list[dict] = [{} for _ in range(len(rows))]
    if not len(rows):
        return out
    sub = frame.iloc[rows]
    for name in sub.columns:
        col = sub[name]
        present = np.flatnonzero(col.notna().to_numpy())
        if not len(present):
            continue
        values = col.to_numpy(dtype=object)
        key = str(name)
        for i in present.tolist():
            v = _json_value(values[i])
            if v is not None:
                out[i][key] = v
    return out


def _bits(p: np.ndarray) -> np.ndarray:
    return -np.log2(p)


def _fisher_bits(total_bits: np.ndarray, n_tests: int = 3) -> np.ndarray:
    """``-log2`` of Fisher's combined p-value for ``n_tests`` p-values whose bits sum to ``total_bits``.

    ``-2 sum ln p`` is chi-square with ``2 n`` degrees of freedom; its survival function at ``2 s`` is
    ``exp(-s) sum_{i < n} s^i / i!``, with ``s = -sum ln p``."""
    s = np.asarray(total_bits, dtype=np.float64) * _LN2
    series = np.zeros_like(s)
    term = np.ones_like(s)
    for i in range(n_tests):
        if i:
            term = term * s / i
        series = series + term
    return np.maximum(s - np.log(series), 0.0) / _LN2


def _row_mode(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of non-negative integer ``codes`` (``-1`` = missing, ignored unless the whole row is), the most
    common code (ties: the smallest) and how many entries of the row hold it."""
    m, k = codes.shape
    if m == 0 or k == 0:
        return np.full(m, -1, dtype=np.int64), np.zeros(m, dtype=np.int64)
    s = np.sort(codes, axis=1)
    new = np.ones_like(s, dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    run_id = np.cumsum(new, axis=1) - 1  # run number within the row
    flat = run_id + (np.arange(m) * k)[:, None]
    counts = np.bincount(flat.ravel(), minlength=m * k).reshape(m, k)
    counts_at = np.take_along_axis(counts, run_id, axis=1)
    score = np.where(s >= 0, counts_at, 0)  # a missing value is the mode only when nothing else is there
    best = np.argmax(score, axis=1)
    mode = s[np.arange(m), best]
    n = counts_at[np.arange(m), best]
    return mode.astype(np.int64), n.astype(np.int64)


def _fmt(x: float) -> str:
    """A number for a sentence: integers as integers, others with four significant digits."""
    if x is None or not np.isfinite(x):
        return "n/a"
    if float(x) == round(float(x)) and abs(x) < 1e15:
        return f"{round(float(x)):,}"
    return f"{x:.4g}"


def _share(x: float) -> str:
    if x >= 0.01 or x == 0:
        return f"{100 * x:.0f}%"
    return f"{100 * x:.2g}%"


def _hours(ms: np.ndarray) -> np.ndarray:
    return np.mod(ms, 86_400_000.0) / 3_600_000.0


# --------------------------------------------------------------------------------------------------- results
@dataclass
class Investigation:
    """One investigated event: its raw fields, its nearest reference events, the per-field table, the window
    view's explanation and a recommendation built from those numbers.

    ``fields`` has one row per raw field the encoder uses, most telling first (:data:`FIELD_TABLE_COLUMNS`):
    ``value`` (the event's), ``typical`` (the neighbours' median number or most common value), ``delta`` (numbers:
    ``value - typical`` on the original scale; timestamps: hours from the neighbours' mean hour), ``delta_robust``
    (numbers: the same in the encoder's robust units), ``differs`` and ``shared`` (categories: whether the value
    differs from the neighbours' most common one and the share of neighbours that have it), ``frequency``
    (categories: the share of reference events with exactly this value), ``surprise``, ``local``, ``window`` and
    ``evidence`` in bits (see the module docstring) and ``rank`` (1 = most telling).
    """

    row: int
    event_uid: str | None
    view: str
    score: float
    percentile: float
    threshold: float
    is_anomaly: bool
    event: dict
    neighbours: list[dict]
    fields: pd.DataFrame
    window: dict | None
    recommendation: str

    @property
    def top_fields(self) -> list[str]:
        return self.fields["field"].tolist()

    def to_dict(self) -> dict:
        """Everything as plain JSON types (NaN as ``None``)."""
        table = [{name: _json_value(v) for name, v in rec.items()} for rec in self.fields.to_dict(orient="records")]
        return {
            "row": int(self.row), "event_uid": _json_value(self.event_uid), "view": self.view,
            "score": _json_value(float(self.score)), "percentile": _json_value(float(self.percentile)),
            "threshold": _json_value(float(self.threshold)), "is_anomaly": bool(self.is_anomaly),
            "event": _json_value(self.event), "neighbours": _json_value(self.neighbours), "fields": table,
            "window": _json_value(self.window), "recommendation": self.recommendation,
        }

    def summary(self, n_fields: int = 5) -> str:
        """A few lines of text: the alert, the most telling fields, the closest normal event, the recommendation."""
        uid = f" {self.event_uid}" if self.event_uid else ""
        lines = [(f"event{uid} (row {self.row}): score {self.score:.3g} vs threshold {self.threshold:.3g} "
                  f"({'flagged' if self.is_anomaly else 'not flagged'}, percentile {self.percentile:.2f}), "
                  f"decided by the {self.view} view")]
        for rec in self.fields.head(int(n_fields)).itertuples(index=False):
            lines.append(f"  {rec.rank:>2}. {rec.field} = {_short(rec.value)} (neighbours: {_short(rec.typical)}); "
                         f"evidence {rec.evidence:.1f} bits (surprise {rec.surprise:.1f}, local {rec.local:.1f}, "
                         f"window {rec.window:.1f})")
        if self.neighbours:
            first = self.neighbours[0]
            lines.append(f"  nearest reference event: row {first['reference_row']} at distance "
                         f"{first['distance']:.4g}")
        lines.append("  " + self.recommendation)
        return "\n".join(lines)


def _short(value: Any, width: int = 48) -> str:
    text = "missing" if value is None or (isinstance(value, float) and not np.isfinite(value)) else str(value)
    if isinstance(value, float) and np.isfinite(value):
        text = _fmt(value)
    return text if len(text) <= width else text[:width - 1] + "…"


@dataclass
class FieldEvidence:
    """The ranking of many events at once (what :meth:`Investigator.rank` returns): per requested row, per field
    (``columns``), the bits of each piece of evidence and the combined evidence; ``order`` sorts each row's fields,
    most telling first."""

    rows: np.ndarray
    columns: list[str]
    surprise: np.ndarray
    local: np.ndarray
    window: np.ndarray
    evidence: np.ndarray
    order: np.ndarray
    neighbours: np.ndarray
    distances: np.ndarray
    views: np.ndarray

    def top(self, k: int = 3) -> list[list[str]]:
        """The ``k`` most telling fields of each row."""
        names = np.asarray(self.columns, dtype=object)
        return [list(names[o]) for o in self.order[:, :int(k)]]


@dataclass
class AttributionAccuracy:
    """How often the true field is among the top ``k``: per scenario and overall, for the investigator and the
    pipeline's ``top_features``, beside a blind guess (``chance``: ``k`` columns drawn at random).

    ``table``: index ``scenario`` (and ``all``), columns ``events`` (flagged events of that scenario),
    ``investigator``, ``current``, ``chance``, ``window_decided`` (their share the window view decided);
    ``events``: one row per flagged scenario event with both explanations and hits."""

    k: int
    table: pd.DataFrame
    events: pd.DataFrame
    n_flagged: int
    n_columns: int

    @property
    def overall(self) -> float:
        return float(self.table.loc["all", "investigator"]) if "all" in self.table.index else float("nan")

    def to_dict(self) -> dict:
        return {"k": int(self.k), "n_flagged": int(self.n_flagged), "n_columns": int(self.n_columns),
                "scenarios": {str(name): {c: _json_value(v) for c, v in row.items()}
                              for name, row in self.table.iterrows()}}

    def summary(self) -> str:
        t = self.table
        n = int(t.loc["all", "events"]) if "all" in t.index else 0
        lines = [(f"top-{self.k} attribution over {n} flagged scenario events ({self.n_flagged} flagged in all; "
                  f"{self.n_columns} fields)")]
        lines.append(t.to_string(float_format=lambda x: f"{x:.3f}"))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- investigator
class Investigator:
    """Explain flagged events of a fitted pipeline field by field (see the module docstring).

    ``n_neighbours`` reference events are compared with each event; ``n_calibration`` reference events (a sample
    drawn with ``seed``) measure how far normal events lie from their own neighbours. :meth:`fit` builds the
    reference tables (called on first use); :meth:`investigate` returns one :class:`Investigation` per event,
    :meth:`rank` only the ranking, for many events at once.
    """

    def __init__(self, pipeline, n_neighbours: int = 10, n_calibration: int = 5000, seed: int = 0):
        self.pipeline = pipeline
        self.n_neighbours = n_neighbours
        self.n_calibration = n_calibration
        self.seed = seed

    # ------------------------------------------------------------------ reference tables
    def fit(self) -> Investigator:
        """Frequency tables, sorted reference values and the neighbour deviations of reference events."""
        p = self.pipeline
        if int(self.n_neighbours) < 1:
            raise InvestigationError(f"n_neighbours must be >= 1, got {self.n_neighbours}")
        if p.reference is None:
            raise InvestigationError("the pipeline keeps no reference events: nothing to compare an event with")
        enc = p.encoder
        ref_num = np.asarray(p.arrays["reference_numeric"], dtype=np.float32)
        ref_cat = np.asarray(p.arrays["reference_categorical"], dtype=np.int64)
        n_ref = ref_num.shape[0] if ref_num.ndim == 2 and ref_num.shape[1] else ref_cat.shape[0]
        if n_ref != len(p.reference):
            raise InvestigationError(f"the reference has {len(p.reference)} raw events but {n_ref} encoded rows")
        num_at = {name: i for i, name in enumerate(enc.numeric_names_)}
        cat_at = {name: i for i, name in enumerate(enc.categorical_names_)}
        columns, kinds = [], []
        num_tests, num_group, cat_tests, cat_group, hour_tests, main_numeric = [], [], [], [], [], []
        for st in enc.columns_:
            role = str(st["role"])
            outputs = list(st.get("numeric") or []) + list(st.get("categorical") or [])
            if role.startswith("drop") or role == "excluded" or not outputs:
                continue
            c = len(columns)
            columns.append(str(st["column"]))
            kinds.append(role if role in ("numeric", "timestamp") else "categorical")
            main_numeric.append(num_at.get(str(st["column"]), -1) if role == "numeric" else -1)
            cyclic = {f"{st['column']}.{s}" for s in ("hour_sin", "hour_cos", "dow_sin", "dow_cos")}
            for name in st.get("numeric") or []:
                if role == "timestamp" and name in cyclic:
                    continue
                num_tests.append(num_at[name])
                num_group.append(c)
            for name in st.get("categorical") or []:
                cat_tests.append(cat_at[name])
                cat_group.append(c)
            if role == "timestamp":
                sin, cos = num_at.get(f"{st['column']}.hour_sin"), num_at.get(f"{st['column']}.hour_cos")
                if sin is not None and cos is not None:
                    hour_tests.append((c, sin, cos))
        if not columns:
            raise InvestigationError("the encoder uses no column: nothing to investigate")
        self.columns_ = columns
        self.kinds_ = np.asarray(kinds, dtype=object)
        self.main_numeric_ = np.asarray(main_numeric, dtype=np.int64)
        self.num_tests_ = np.asarray(num_tests, dtype=np.int64)
        self.cat_tests_ = np.asarray(cat_tests, dtype=np.int64)
        self.hour_tests_ = hour_tests
        groups = np.r_[np.asarray(num_group, dtype=np.int64), np.asarray(cat_group, dtype=np.int64),
                       np.asarray([h[0] for h in hour_tests], dtype=np.int64)]
        self.test_group_ = groups
        n_per_column = np.bincount(groups, minlength=len(columns)).astype(np.float64)
        self.bonferroni_bits_ = np.log2(np.maximum(n_per_column, 1.0))
        self.n_reference_ = int(n_ref)
        self.max_bits_ = float(np.log2(n_ref + 1.0))
        self.ref_num_, self.ref_cat_ = ref_num, ref_cat
        # global surprise: sorted values (numbers), per-id tails (categories), per-hour tails (timestamps)
        self.sorted_num_ = np.sort(ref_num[:, self.num_tests_], axis=0) if len(self.num_tests_) else None
        self.cat_tail_ = [self._count_tails(np.bincount(ref_cat[:, j], minlength=int(card)))
                          for j, card in zip(self.cat_tests_, np.asarray(enc.cardinalities_)[self.cat_tests_])]
        self.hour_tail_ = []
        for _, sin, cos in hour_tests:
            hours, present = self._hour_of(ref_num[:, sin], ref_num[:, cos])
            counts = np.bincount(np.floor(hours[present]).astype(np.int64) % 24, minlength=24)
            self.hour_tail_.append(self._count_tails(counts))
        self._fit_local()
        self._frequencies = {}
        return self

    @staticmethod
    def _count_tails(counts: np.ndarray) -> np.ndarray:
        """Per value: (events whose value is at most as common + 1) / (events + 1)."""
        counts = np.asarray(counts, dtype=np.float64)
        ordered = np.sort(counts)
        cum = np.cumsum(ordered)
        at = np.searchsorted(ordered, counts, side="right") - 1
        total = np.where(at >= 0, cum[np.maximum(at, 0)], 0.0)
        return (total + 1.0) / (counts.sum() + 1.0)

    @staticmethod
    def _hour_of(sin: np.ndarray, cos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hour of the day (0..24) from the encoder's angle outputs, and whether a time was there at all."""
        present = (sin.astype(np.float64) ** 2 + cos.astype(np.float64) ** 2) > 0.5
        hours = np.mod(np.arctan2(sin, cos) * (24.0 / _TWO_PI), 24.0)
        return hours, present

    def _fit_local(self) -> None:
        """Deviations of reference events from their own neighbours (each one left out), sorted per test."""
        p = self.pipeline
        k = int(self.n_neighbours)
        emb = np.asarray(p.arrays["reference_embeddings"], dtype=np.float32)
        n = self.n_reference_
        rng = np.random.default_rng(int(self.seed))
        size = min(n, max(int(self.n_calibration), 1))
        sample = np.sort(rng.choice(n, size=size, replace=False)) if size < n else np.arange(n)
        _, nb = p.detector.kneighbors(emb[sample], k=min(k + 1, n))
        own = nb == sample[:, None]
        own[~own.any(axis=1), -1] = True  # no self-match found (an approximate index): drop the farthest
        first = np.argmax(own, axis=1)
        keep = np.ones_like(own)
        keep[np.arange(len(sample)), first] = False
        nb = nb[keep].reshape(len(sample), -1)
        # a number's distance from its neighbours is read in their own spread, floored at the typical spread of
        # reference neighbourhoods (ten equal values have none)
        self.spread_floor_ = np.ones(len(self.num_tests_))
        if len(self.num_tests_):
            spread = self._spread(self.ref_num_[:, self.num_tests_][self._neighbour_rows(nb)])
            typical = np.median(spread, axis=0)
            fallback = spread.mean(axis=0)
            self.spread_floor_ = np.where(typical > 0, typical, np.where(fallback > 0, fallback, 1.0))
        dev = np.concatenate([self._deviations(self.ref_num_[sample[lo:lo + _CHUNK]],
                                               self.ref_cat_[sample[lo:lo + _CHUNK]], nb[lo:lo + _CHUNK])
                              for lo in range(0, len(sample), _CHUNK)], axis=0)
        self.sorted_local_ = np.sort(dev, axis=0)
        self.n_local_ = len(sample)

    @staticmethod
    def _spread(vals: np.ndarray) -> np.ndarray:
        """Robust spread of the neighbours' values ``[m, k, t]`` -> ``[m, t]``: 1.4826 x the median absolute
        deviation (a standard deviation for normal values)."""
        med = np.median(vals, axis=1, keepdims=True)
        return 1.4826 * np.median(np.abs(vals - med), axis=1)

    # ------------------------------------------------------------------ evidence
    def _neighbour_rows(self, nb: np.ndarray) -> np.ndarray:
        """Neighbour rows with FAISS' ``-1`` (fewer found) replaced by the row's nearest one."""
        nb = np.asarray(nb, dtype=np.int64)
        if (nb >= 0).all():
            return nb
        first = np.where((nb >= 0).any(axis=1), nb[np.arange(len(nb)), np.argmax(nb >= 0, axis=1)], 0)
        return np.where(nb >= 0, nb, first[:, None])

    def _deviations(self, num: np.ndarray, cat: np.ndarray, nb: np.ndarray) -> np.ndarray:
        """Per event and test: how far its value lies from its neighbours ``nb`` (reference rows)."""
        nb = self._neighbour_rows(nb)
        parts = []
        if len(self.num_tests_):
            vals = self.ref_num_[:, self.num_tests_][nb]  # [m, k, t]
            dev = np.abs(num[:, self.num_tests_] - np.median(vals, axis=1))
            parts.append(dev / np.maximum(self._spread(vals), self.spread_floor_))
        if len(self.cat_tests_):
            ids = self.ref_cat_[:, self.cat_tests_][nb]  # [m, k, t]
            differ = (ids != cat[:, None, self.cat_tests_]).mean(axis=1)
            # less the disagreement among the neighbours themselves (the chance that two of them differ): a value
            # that its neighbours split on (two hosts behind one service) is no evidence
            same = (ids[:, :, None, :] == ids[:, None, :, :]).mean(axis=(1, 2))
            parts.append(differ - (1.0 - same))
        for _, sin, cos in self.hour_tests_:
            mean = np.arctan2(self.ref_num_[nb, sin].mean(axis=1), self.ref_num_[nb, cos].mean(axis=1))
            angle = np.arctan2(num[:, sin], num[:, cos])
            diff = np.abs(np.angle(np.exp(1j * (angle - mean))))  # circular, 0..pi
            _, present = self._hour_of(num[:, sin], num[:, cos])
            parts.append(np.where(present, diff * (24.0 / _TWO_PI), 0.0))
        return np.concatenate([np.asarray(x, dtype=np.float64).reshape(len(num), -1) for x in parts], axis=1)

    def _global_bits(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Per event and test: bits of its value's tail in the reference."""
        n = float(self.n_reference_)
        parts = []
        if len(self.num_tests_):
            out = np.empty((len(num), len(self.num_tests_)))
            for t, j in enumerate(self.num_tests_):
                ref = self.sorted_num_[:, t]
                x = num[:, j]
                below = np.searchsorted(ref, x, side="right")
                above = n - np.searchsorted(ref, x, side="left")
                out[:, t] = np.minimum(1.0, 2.0 * (np.minimum(below, above) + 1.0) / (n + 1.0))
            parts.append(out)
        if len(self.cat_tests_):
            out = np.empty((len(cat), len(self.cat_tests_)))
            for t, (j, tails) in enumerate(zip(self.cat_tests_, self.cat_tail_)):
                ids = np.clip(cat[:, j], 0, len(tails) - 1)
                out[:, t] = tails[ids]
            parts.append(out)
        for (_, sin, cos), tails in zip(self.hour_tests_, self.hour_tail_):
            hours, present = self._hour_of(num[:, sin], num[:, cos])
            p = tails[np.floor(hours).astype(np.int64) % 24]
            parts.append(np.where(present, p, 1.0)[:, None])
        return _bits(np.concatenate(parts, axis=1))

    def _local_bits(self, dev: np.ndarray) -> np.ndarray:
        """Per event and test: bits of the share of reference events at least as far from their neighbours."""
        out = np.empty_like(dev)
        n = float(self.n_local_)
        for t in range(dev.shape[1]):
            at_least = n - np.searchsorted(self.sorted_local_[:, t], dev[:, t] - 1e-9, side="left")
            out[:, t] = (at_least + 1.0) / (n + 1.0)
        return _bits(np.minimum(out, 1.0))

    def _per_column(self, bits: np.ndarray) -> np.ndarray:
        """Tests' bits -> fields' bits: the largest per field, less the Bonferroni correction, in [0, max]."""
        out = np.zeros((bits.shape[0], len(self.columns_)))
        order = np.argsort(self.test_group_, kind="stable")
        g = self.test_group_[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        out[:, g[starts]] = np.maximum.reduceat(bits[:, order], starts, axis=1)
        return np.clip(out - self.bonferroni_bits_, 0.0, self.max_bits_) + 0.0  # + 0.0: no -0.0

    def _window_bits(self, rows: np.ndarray, per_view: np.ndarray, windows: list, decided: np.ndarray) -> np.ndarray:
        """Per requested row and field: bits from the window view's explanation where the window view decided."""
        out = np.zeros((len(rows), len(self.columns_)))
        det = self.pipeline.window
        if det is None or not decided.any():
            return out
        col_at = {c: i for i, c in enumerate(self.columns_)}
        sources = getattr(det.encoder, "sources_", {})
        field_col = np.array([col_at.get(sources.get(f, f), -1) for f in det.fields_], dtype=np.int64)
        n_fields = np.bincount(field_col[field_col >= 0], minlength=len(self.columns_)).astype(np.float64)
        from scipy.special import log_ndtr

        sub = per_view[rows]
        best = np.argmax(sub, axis=1) if sub.shape[1] else np.zeros(len(rows), dtype=np.int64)
        score = sub[np.arange(len(rows)), best] if sub.shape[1] else np.full(len(rows), -np.inf)
        cal = np.asarray(det.train_scores_, dtype=np.float64)
        for j, (view, w) in enumerate(zip(det.views_, windows)):
            mine = np.flatnonzero(decided & (best == j) & np.isfinite(score))
            if not len(mine) or not len(w.rows):
                continue
            at = np.searchsorted(w.rows, rows[mine])
            win = w.window_of_row[at]
            if w.field_t is not None and w.field_t.shape[1] and (field_col >= 0).any():
                t = np.abs(np.asarray(w.field_t[win], dtype=np.float64))
                bits = -(_LN2 + log_ndtr(-t)) / _LN2  # two-sided normal tail
                kept = field_col >= 0
                per = np.zeros((len(mine), len(self.columns_)))
                np.maximum.at(per.T, field_col[kept], bits[:, kept].T)
                out[mine] = np.maximum(per - np.log2(np.maximum(n_fields, 1.0)), 0.0)
            entity = col_at.get(view.column)
            if entity is not None:
                above = len(cal) - np.searchsorted(cal, score[mine], side="left")
                out[mine, entity] = np.maximum(out[mine, entity], _bits((above + 1.0) / (len(cal) + 1.0)))
        return np.clip(out, 0.0, self.max_bits_)

    def _check(self, events: pd.DataFrame, rows) -> np.ndarray | None:
        if not hasattr(self, "columns_"):
            self.fit()
        if not isinstance(events, pd.DataFrame):
            raise InvestigationError(f"events must be a DataFrame, got {type(events).__name__}")
        if rows is None:
            return None
        rows = np.asarray(rows).reshape(-1)
        if rows.dtype == bool:
            if len(rows) != len(events):
                raise InvestigationError(f"a boolean row mask needs {len(events)} entries, got {len(rows)}")
            return np.flatnonzero(rows)
        if len(rows) and not np.issubdtype(rows.dtype, np.integer):
            raise InvestigationError(f"rows must be integer positions or a boolean mask, got {rows.dtype}")
        rows = rows.astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(events)):
            raise InvestigationError(f"rows must be positions in 0..{len(events) - 1}, got {rows.min()}..{rows.max()}")
        return rows

    def _scored(self, events: pd.DataFrame, scores: pd.DataFrame | None) -> pd.DataFrame:
        if scores is None:
            return self.pipeline.score(events, explain="none")
        if len(scores) != len(events) or not {"score", "is_anomaly", "view"} <= set(scores.columns):
            raise InvestigationError("scores must be pipeline.score(events) for these very events")
        return scores

    def _evidence(self, events: pd.DataFrame, rows: np.ndarray, scores: pd.DataFrame):
        """The ranking arrays, plus what the full investigation reuses (encoded values, window explanation)."""
        p = self.pipeline
        features = p.encoder.transform(events)
        want_window = p.window is not None and len(events) > 0 and len(rows) > 0
        if want_window:
            z = p.embed(features)
            framed = events
            if p.window.time_column_ not in events.columns:
                framed = events.assign(**{p.window.time_column_: pd.Series(np.nan, index=events.index)})
            per_view, windows = p.window.view_scores((framed, p.window_vectors(z, features)))
            zq = z[rows]
        else:
            per_view, windows = None, None
            zq = p.embed(features.take(rows)) if len(rows) else np.zeros((0, 1), dtype=np.float32)
        num = np.asarray(features.numeric[rows], dtype=np.float32)
        cat = np.asarray(features.categorical[rows], dtype=np.int64)
        k = min(int(self.n_neighbours), self.n_reference_)
        if len(rows):
            dist, nb = p.detector.kneighbors(zq, k=k)
        else:
            dist, nb = np.zeros((0, k)), np.zeros((0, k), dtype=np.int64)
        views = scores["view"].to_numpy(dtype=object)[rows]
        surprise = np.zeros((len(rows), len(self.columns_)))
        local = np.zeros_like(surprise)
        for lo in range(0, len(rows), _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            surprise[sl] = self._per_column(self._global_bits(num[sl], cat[sl]))
            local[sl] = self._per_column(self._local_bits(self._deviations(num[sl], cat[sl], nb[sl])))
        decided = views == "window"
        window = self._window_bits(rows, per_view, windows, decided) if want_window else np.zeros_like(surprise)
        evidence = _fisher_bits(surprise + local + window)
        # ties (equal evidence) by surprise, then by local deviation, then by column order
        order = np.lexsort((np.broadcast_to(np.arange(len(self.columns_)), evidence.shape), -local, -surprise,
                            -np.round(evidence, 9)), axis=1) if len(rows) else np.zeros((0, len(self.columns_)),
                                                                                        dtype=np.int64)
        ev = FieldEvidence(rows=rows, columns=list(self.columns_), surprise=surprise, local=local, window=window,
                           evidence=evidence, order=order.astype(np.int64), neighbours=nb, distances=dist,
                           views=views)
        return ev, num, (per_view, windows)

    def rank(self, events: pd.DataFrame, rows=None, *, scores: pd.DataFrame | None = None) -> FieldEvidence:
        """The fields of each requested event (positions ``rows``; default: the flagged ones), most telling first,
        with the bits behind the order. ``scores``: ``pipeline.score(events)`` when already computed."""
        rows = self._check(events, rows)
        scores = self._scored(events, scores)
        if rows is None:
            rows = np.flatnonzero(scores["is_anomaly"].to_numpy(dtype=bool))
        return self._evidence(events, rows, scores)[0]

    # ------------------------------------------------------------------ investigation
    def investigate(self, events: pd.DataFrame, rows=None, *,
                    scores: pd.DataFrame | None = None) -> list[Investigation]:
        """One :class:`Investigation` per requested event (positions ``rows`` in ``events``; default: the flagged
        ones). ``events`` should be the whole batch the events were scored in (the window view needs their
        windows); ``scores``: ``pipeline.score(events)`` when already computed."""
        rows = self._check(events, rows)
        scores = self._scored(events, scores)
        if rows is None:
            rows = np.flatnonzero(scores["is_anomaly"].to_numpy(dtype=bool))
        ev, num, (per_view, windows) = self._evidence(events, rows, scores)
        if not len(rows):
            return []
        table = self._raw_table(events, rows, ev, num)
        context = self._window_context(events, rows, scores, per_view, windows)
        dist_typical = self._typical_nearest()
        p = self.pipeline
        ref = p.reference
        out = []
        score_values = scores["score"].to_numpy(dtype=np.float64)
        pct = scores["percentile"].to_numpy(dtype=np.float64) if "percentile" in scores else np.full(len(scores), np.nan)
        flagged = scores["is_anomaly"].to_numpy(dtype=bool)
        uid = events["metadata.uid"] if "metadata.uid" in events.columns else None
        valid = ev.neighbours >= 0
        shown, where = np.unique(ev.neighbours[valid], return_inverse=True)
        shown_records = _records(ref, shown)
        slot = np.full(ev.neighbours.shape, -1, dtype=np.int64)
        slot[valid] = where.reshape(-1)
        event_records = _records(events, rows)
        for i, r in enumerate(rows.tolist()):
            neighbours = [{"rank": rank + 1, "reference_row": int(nr), "distance": float(d),
                           "fields": dict(shown_records[int(j)])}
                          for rank, (d, nr, j) in enumerate(zip(ev.distances[i].tolist(), ev.neighbours[i].tolist(),
                                                                slot[i].tolist())) if j >= 0]
            inv = Investigation(
                row=int(r), event_uid=None if uid is None else _json_value(uid.iat[r]), view=str(ev.views[i]),
                score=float(score_values[r]), percentile=float(pct[r]), threshold=float(p.threshold),
                is_anomaly=bool(flagged[r]), event=event_records[i], neighbours=neighbours, fields=table[i],
                window=context[i], recommendation="")
            inv.recommendation = self._recommend(inv, dist_typical)
            out.append(inv)
        return out

    def _typical_nearest(self) -> float:
        """The median distance of a reference event to its nearest other reference event (calibration sample)."""
        if not hasattr(self, "typical_nearest_"):
            p = self.pipeline
            emb = np.asarray(p.arrays["reference_embeddings"], dtype=np.float32)
            rng = np.random.default_rng(int(self.seed) + 1)
            n = self.n_reference_
            sample = np.sort(rng.choice(n, size=min(n, 2000), replace=False))
            dist, nb = p.detector.kneighbors(emb[sample], k=min(2, n))
            other = np.where(nb[:, 0] == sample, dist[:, -1], dist[:, 0])
            self.typical_nearest_ = float(np.median(other))
        return self.typical_nearest_

    def _frequency_table(self, column: str) -> pd.Series:
        """Counts of each canonical value of a reference column (computed once per column)."""
        from ..features import values as V

        table = self._frequencies.get(column)
        if table is None:
            codes, uniques = V.factorize(self.pipeline.reference[column])
            counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
            names = np.asarray(uniques.to_numpy(zero_copy_only=False), dtype=object)
            table = pd.Series(counts, index=pd.Index(names, dtype=object)).groupby(level=0).sum()
            self._frequencies[column] = table
        return table

    def _raw_table(self, events: pd.DataFrame, rows: np.ndarray, ev: FieldEvidence, num: np.ndarray) -> list:
        """The per-field table of each requested event, from the raw values (one pass per field, over all events)."""
        from ..features import values as V

        ref = self.pipeline.reference
        nb = self._neighbour_rows(ev.neighbours)
        m, n_cols = len(rows), len(self.columns_)
        k = nb.shape[1]
        value = np.empty((m, n_cols), dtype=object)
        typical = np.empty((m, n_cols), dtype=object)
        delta = np.full((m, n_cols), np.nan)
        robust = np.full((m, n_cols), np.nan)
        differs = np.full((m, n_cols), None, dtype=object)
        shared = np.full((m, n_cols), np.nan)
        frequency = np.full((m, n_cols), np.nan)
        n_ref = float(len(ref))
        for c, (column, kind) in enumerate(zip(self.columns_, self.kinds_)):
            mine = events[column].iloc[rows] if column in events.columns else pd.Series([None] * m, dtype=object)
            theirs = ref[column] if column in ref.columns else pd.Series([None] * len(ref), dtype=object)
            if kind == "numeric":
                x = V.to_float(mine)[0]
                y = V.to_float(theirs)[0][nb]
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: masked just below
                    med = np.nanmedian(y, axis=1)
                med = np.where(np.isnan(y).all(axis=1), np.nan, med)
                value[:, c] = x
                typical[:, c] = med
                delta[:, c] = x - med
                j = self.main_numeric_[c]
                if j >= 0:
                    robust[:, c] = num[:, j] - np.median(self.ref_num_[nb, j], axis=1)
            elif kind == "timestamp":
                ms = V.to_epoch_ms(mine)[0]
                ref_ms = V.to_epoch_ms(theirs)[0][nb]
                angle = _hours(ref_ms) * (_TWO_PI / 24.0)
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # no neighbour with a time: NaN
                    mean = np.mod(np.arctan2(np.nanmean(np.sin(angle), axis=1), np.nanmean(np.cos(angle), axis=1))
                                  * (24.0 / _TWO_PI), 24.0)
                value[:, c] = [None if np.isnan(t) else pd.Timestamp(int(t), unit="ms", tz="UTC").isoformat()
                               for t in ms.tolist()]
                typical[:, c] = [None if np.isnan(h) else f"{int(h):02d}:{round((h % 1) * 60) % 60:02d} UTC"
                                 for h in mean.tolist()]
                delta[:, c] = np.mod(_hours(ms) - mean + 12.0, 24.0) - 12.0
            else:
                both = pd.concat([mine.reset_index(drop=True), theirs.iloc[nb.ravel()].reset_index(drop=True)],
                                 ignore_index=True)
                codes, uniques = V.factorize(both)
                names = np.asarray(uniques.to_numpy(zero_copy_only=False), dtype=object)
                names = np.append(names, None)  # code -1 (missing) reads None
                own = codes[:m]
                other = codes[m:].reshape(m, k)
                mode, _ = _row_mode(other)
                value[:, c] = names[own]
                typical[:, c] = names[mode]
                differs[:, c] = own != mode
                shared[:, c] = (other == own[:, None]).mean(axis=1)
                counts = self._frequency_table(column)
                looked = counts.reindex(pd.Index(names[own], dtype=object)).to_numpy(dtype=np.float64)
                frequency[:, c] = np.where(np.isnan(looked), 0.0, looked) / max(n_ref, 1.0)
                missing = own < 0
                frequency[missing, c] = np.mean(theirs.isna().to_numpy()) if len(theirs) else np.nan
        out = []
        names = np.asarray(self.columns_, dtype=object)
        for i in range(m):
            o = ev.order[i]
            out.append(pd.DataFrame({
                "rank": np.arange(1, n_cols + 1), "field": names[o], "kind": self.kinds_[o], "value": value[i, o],
                "typical": typical[i, o], "delta": delta[i, o], "delta_robust": robust[i, o],
                "differs": differs[i, o], "shared": shared[i, o], "frequency": frequency[i, o],
                "surprise": ev.surprise[i, o], "local": ev.local[i, o], "window": ev.window[i, o],
                "evidence": ev.evidence[i, o]}, columns=FIELD_TABLE_COLUMNS))
        return out

    def _window_context(self, events: pd.DataFrame, rows: np.ndarray, scores: pd.DataFrame, per_view, windows) -> list:
        """Per requested row: the window view's explanation and how many events of the same entity (in the batch,
        and in the same window) are flagged. ``None`` without a window view or a window for the event."""
        det = self.pipeline.window
        if det is None or per_view is None:
            return [None] * len(rows)
        why = det.explain_scored(events.index, per_view, windows, rows=rows, n_fields=2)
        flagged = scores["is_anomaly"].to_numpy(dtype=bool)
        view_col = np.array([v.column for v in det.views_], dtype=object)
        sub = per_view[rows]
        best = np.argmax(sub, axis=1) if sub.shape[1] else np.zeros(len(rows), dtype=np.int64)
        finite = np.isfinite(sub[np.arange(len(rows)), best]) if sub.shape[1] else np.zeros(len(rows), dtype=bool)
        entity_events = np.zeros(len(rows), dtype=np.int64)
        entity_flagged = np.zeros(len(rows), dtype=np.int64)
        window_flagged = np.zeros(len(rows), dtype=np.int64)
        for j, w in enumerate(windows):
            mine = np.flatnonzero(finite & (best == j))
            if not len(mine) or not len(w.rows):
                continue
            codes, _ = pd.factorize(pd.Series(w.value, dtype=object))
            per_row = codes[w.window_of_row]
            n_codes = int(codes.max()) + 1 if len(codes) else 0
            total = np.bincount(per_row, minlength=n_codes)
            hot = np.bincount(per_row, weights=flagged[w.rows].astype(np.float64), minlength=n_codes)
            in_window = np.bincount(w.window_of_row, weights=flagged[w.rows].astype(np.float64),
                                    minlength=len(w.count))
            at = np.searchsorted(w.rows, rows[mine])
            entity_events[mine] = total[per_row[at]]
            entity_flagged[mine] = np.round(hot[per_row[at]]).astype(np.int64)
            window_flagged[mine] = np.round(in_window[w.window_of_row[at]]).astype(np.int64)
        out = []
        decided = scores["view"].to_numpy(dtype=object)[rows] == "window"
        for i in range(len(rows)):
            if not finite[i]:
                out.append(None)
                continue
            start = why["window_start"].iat[i]
            out.append({
                "decided": bool(decided[i]), "column": str(view_col[best[i]]), "entity": _json_value(why["entity"].iat[i]),
                "window_start": None if pd.isna(start) else pd.Timestamp(start).isoformat(),
                "window_events": int(why["window_events"].iat[i]), "window_flagged": int(window_flagged[i]),
                "statistic": _json_value(why["statistic"].iat[i]), "fields": list(why["fields"].iat[i]),
                "window_score": float(why["window_score"].iat[i]),
                "entity_events": int(entity_events[i]), "entity_flagged": int(entity_flagged[i]),
            })
        return out

    # ------------------------------------------------------------------ recommendation
    def _recommend(self, inv: Investigation, typical_nearest: float) -> str:
        """What stands out, by how much, whether it is one event or part of a burst, and what to check next:
        every clause is read off the investigation's numbers."""
        t = inv.fields
        evidence = t["evidence"].to_numpy(dtype=np.float64)
        # a field stands out when its evidence is beyond what searching all fields finds by chance (5 %, Bonferroni)
        bar = math.log2(max(len(t), 1)) + math.log2(20.0)
        n_strong = int((evidence >= bar).sum())
        n_top = max(min(n_strong, 3), 1)
        head = {name: t[name].to_numpy()[:n_top] for name in ("field", "kind", "value", "typical", "delta",
                                                              "delta_robust", "shared", "frequency", "evidence")}
        top = [dict(zip(head, values)) for values in zip(*head.values())]
        if inv.is_anomaly:
            parts = [(f"Flagged: score {inv.score:.3g} above the threshold {inv.threshold:.3g}, decided by the "
                      f"{inv.view} view.")]
        else:
            parts = [(f"Not flagged: score {inv.score:.3g} below the threshold {inv.threshold:.3g} (the "
                      f"{inv.view} view scores it highest).")]
        if not n_strong:
            parts.append(f"No field stands out beyond chance (the largest evidence, {evidence[0]:.1f} bits on "
                         f"{top[0]['field']}, is below {bar:.1f}): the combination of values, not one value, is "
                         f"unusual; compare the event with its nearest reference events field by field.")
        else:
            more = f" ({n_strong - len(top)} more fields above {bar:.1f} bits)" if n_strong > len(top) else ""
            parts.append("Stands out: " + "; ".join(self._describe(rec) for rec in top) + more + ".")
        if inv.neighbours and typical_nearest > 0:
            d = inv.neighbours[0]["distance"]
            parts.append(f"Its nearest reference event is {d / typical_nearest:.1f}x as far as reference events "
                         f"usually are from theirs ({d:.3g} vs {typical_nearest:.3g}).")
        w = inv.window
        if w is not None:
            parts.append(self._burst(w, inv.is_anomaly))
        parts.append("Next: " + self._next_step(top[0], w))
        return " ".join(parts)

    @staticmethod
    def _burst(w: dict, flagged: bool) -> str:
        """Whether the event's window and its entity's other events in the batch are flagged too."""
        who = f"{w['column']}={_short(w['entity'], 40)}"
        text = (f"The window view {'decided' if w['decided'] else 'did not decide'}: its most unusual window is "
                f"{who} from {w['window_start']}, {w['window_events']} events ({w['window_flagged']} flagged), "
                f"statistic {w['statistic']}.")
        in_window = w["window_events"] - 1
        others = w["entity_events"] - 1
        flagged_others = w["entity_flagged"] - int(flagged)
        if in_window >= 2 and (w["window_flagged"] - int(flagged)) / in_window >= 0.5:
            verdict = "a burst: triage the window's events together"
        elif others >= 2 and flagged_others / others >= 0.5:
            verdict = f"most of {who}'s events are flagged: one incident, triage them together"
        elif others > 0:
            verdict = f"the other events of {who} mostly look normal: this event is the exception"
        else:
            verdict = f"the only event of {who} in this batch"
        if others > 0:
            text += (f" {flagged_others} of the {others} other events of {who} in this batch are flagged "
                     f"({_share(flagged_others / others)}).")
        return text + f" So: {verdict}."

    @staticmethod
    def _describe(rec: dict) -> str:
        head = f"{rec['field']} = {_short(rec['value'])}"
        delta = rec["delta"]
        if rec["kind"] == "numeric":
            body = (f"{_fmt(delta)} from the neighbours' median {_fmt(rec['typical'])}" if np.isfinite(delta)
                    else f"neighbours' median {_short(rec['typical'])}")
            if np.isfinite(rec["delta_robust"]):
                body += f", {rec['delta_robust']:+.1f} robust units"
        elif rec["kind"] == "timestamp":
            body = (f"{delta:+.1f} h from the neighbours' mean time of day {rec['typical']}" if np.isfinite(delta)
                    else "no time")
        else:
            body = (f"shared by {_share(rec['shared'])} of the nearest reference events, whose usual value is "
                    f"{_short(rec['typical'], 32)}; {_share(rec['frequency'])} of all reference events have it")
        return f"{head} ({body}; {rec['evidence']:.1f} bits)"

    @staticmethod
    def _next_step(lead: dict, window: dict | None) -> str:
        field_name, value = lead["field"], _short(lead["value"])
        scope = ""
        if window is not None and window["column"] != field_name:
            scope = f" for {window['column']}={_short(window['entity'], 40)}"
        if lead["kind"] == "numeric":
            return (f"plot {field_name}{scope} over the last days against the neighbours' median "
                    f"{_fmt(lead['typical'])}: a step, a trend or a one-off?")
        if lead["kind"] == "timestamp":
            return (f"confirm that activity{scope} at {value} was planned (its nearest reference events happen "
                    f"around {lead['typical']}).")
        if lead["frequency"] == 0:
            return f"find out where {field_name} = {value} comes from: no reference event has it."
        return (f"list the events with {field_name} = {value}{scope}: {_share(lead['frequency'])} of reference events "
                f"have it, {_share(lead['shared'])} of this event's nearest ones.")


# --------------------------------------------------------------------------------------------------- accuracy
def attribution_accuracy(pipeline, events: pd.DataFrame, labels: pd.DataFrame, *, k: int = 3,
                         investigator: Investigator | None = None, scores: pd.DataFrame | None = None,
                         id_column: str = "metadata.uid") -> AttributionAccuracy:
    """Share of flagged labelled events whose signature (``labels["fields"]``: the columns the scenario changed)
    has a field among the investigator's top ``k``, per ``labels["scenario"]`` and overall; beside it the same for
    the pipeline's ``top_features`` and the rate of a blind guess (:func:`~obsad.detect.evaluation.explanation_chance`
    over the fields the encoder uses). Labels are matched to events by ``id_column`` (``labels["event_uid"]``)."""
    from ..detect.evaluation import explanation_chance, explanation_hits

    if not isinstance(labels, pd.DataFrame) or not {"event_uid", "scenario", "fields"} <= set(labels.columns):
        raise InvestigationError("labels must be a DataFrame with event_uid, scenario and fields columns")
    if id_column not in events.columns:
        raise InvestigationError(f"events have no {id_column!r} column to match the labels on")
    if int(k) < 1:
        raise InvestigationError(f"k must be >= 1, got {k}")
    inv = investigator if investigator is not None else Investigator(pipeline)
    if scores is None:
        scores = pipeline.score(events, n_top=int(k))
    by_uid = labels.drop_duplicates("event_uid").set_index("event_uid")
    uid = events[id_column]
    scenario = uid.map(by_uid["scenario"]).to_numpy(dtype=object)
    truth = uid.map(by_uid["fields"]).to_numpy(dtype=object)
    flagged = scores["is_anomaly"].to_numpy(dtype=bool)
    labelled = pd.notna(scenario) & (scenario != "")
    rows = np.flatnonzero(flagged & labelled)
    ranked = inv.rank(events, rows, scores=scores)
    mine = ranked.top(int(k))
    current = [[f for f in str(s).split(", ") if f] for s in scores["top_features"].to_numpy(dtype=object)[rows]]
    true_fields = [list(t) for t in truth[rows]]
    hit_mine = explanation_hits(mine, true_fields, k=int(k)) if len(rows) else np.zeros(0, dtype=bool)
    hit_current = explanation_hits(current, true_fields, k=int(k)) if len(rows) else np.zeros(0, dtype=bool)
    chance = explanation_chance(true_fields, inv.columns_, k=int(k)) if len(rows) else np.zeros(0)
    per_event = pd.DataFrame({
        "row": rows, "event_uid": uid.to_numpy(dtype=object)[rows], "scenario": scenario[rows].astype(str),
        "view": ranked.views, "investigator": [", ".join(x) for x in mine],
        "current": [", ".join(x) for x in current], "investigator_hit": hit_mine, "current_hit": hit_current,
        "chance": chance,
    })
    grouped = per_event.groupby("scenario")
    table = pd.DataFrame({
        "events": grouped.size(), "investigator": grouped["investigator_hit"].mean(),
        "current": grouped["current_hit"].mean(), "chance": grouped["chance"].mean(),
        "window_decided": grouped["view"].agg(lambda v: float(np.mean(v == "window"))),
    })
    table.loc["all"] = [len(per_event), hit_mine.mean() if len(rows) else np.nan,
                        hit_current.mean() if len(rows) else np.nan, chance.mean() if len(rows) else np.nan,
                        float(np.mean(ranked.views == "window")) if len(rows) else np.nan]
    table["events"] = table["events"].astype(int)
    table.index.name = "scenario"
    return AttributionAccuracy(k=int(k), table=table, events=per_event, n_flagged=int(flagged.sum()),
                               n_columns=len(inv.columns_))
