"""Entities over time windows: collective anomalies are ordinary events in an unusual number or mix.

One failed logon is normal; three hundred from one address in an hour is a brute force. A slow request is
normal; every request of one endpoint being twice as slow as last week is a leak. No single event shows these,
so this detector scores *an entity over a time window* against *that entity's own history*, then gives every
event the score of the most unusual window it belongs to.

- **Views.** Each entity column is a view: the columns the encoder typed ``ip`` or ``high_cardinality`` (addresses,
  users, hosts) and the ``categorical`` / ``text`` columns with ``min_distinct`` .. ``max_distinct`` values
  (services, endpoints as URL templates, event types). Chosen from the fitted encoder's column roles, never by
  name. Each event belongs to one window per view in which it has a value. A view that only coarsens another
  (on the same events, each of its values is a union of the other's: an event class over its event types, a
  country over its cities) is dropped at fit time: its windows are mixes of the finer view's windows, which
  see the same events more specifically, and each extra view is one more chance of a false alarm. Only views
  keyed by raw values are compared: a template can take in a value never seen in training.
- **Baselines.** Per view and entity value, from training events: the mean and variance of every dimension of
  the event vectors (the embedding, then the encoded numeric fields less the time-derived ones and the
  missing-value indicators: a producer that stops sending a field is a schema change, not an anomaly of every
  entity it reports on), shrunk towards the global mean and
  variance with ``prior_events`` pseudo-events (a rarely seen entity leans on the population); and its usual
  activity level (below). Unseen entities use the population baseline.
- **Window statistics.** For a window of ``n`` events of entity ``e`` with mean vector ``m``, per dimension
  ``t = (m - mean_e) / sqrt(var_e / min(n, max_weight))`` (how many standard errors the window's mean moved;
  beyond ``max_weight`` events a window counts as ``max_weight``, so a busy window's tiny drift is not
  "significant"), capped at ``max_t``. Four statistics: *embedding shift* (root-mean-square ``t`` over the
  embedding), *field shift* (largest ``|t|`` over the numeric fields; the field is the explanation), *rate*
  (the activity level ``log(1 + n) - log(1 + max(N, N_typical))``, with ``N`` the events of the view in the
  same time bucket and ``N_typical`` its training median, minus the entity's usual: in a busy hour a share of
  the traffic, so that a Monday morning, when every entity is busier, is not a rate anomaly of each of them) and *drift* (per field, the EWMA of the signed ``t`` over the
  entity's consecutive windows, standardised: a small shift that persists hour after hour).
- **Calibration.** Each statistic of each view becomes ``z = (s - median) / (q99 - median)`` over calibration
  windows (a later, held-out period when given: the baselines' own training windows would look too normal); a
  window's score is its largest ``z``, an event's score the largest over its views. The threshold is a
  percentile of calibration events' scores.
- **Credit.** A field shift is credited to the events that made it: an event keeps the field-shift score in
  proportion to how far its own value lies beyond its entity's mean in the direction of the shift (full score
  from ``credit_scale`` standard deviations). Without it, every event of a coarse entity's window (all GET
  requests of an hour) inherits the alarm raised by the one service that misbehaved. Likewise a window keeps
  its drift in proportion to how far its own ``t`` continues it (full from ``credit_scale``): the hours after
  a one-off spike, back to normal, no longer echo the spike through the EWMA's memory; and an event keeps
  its window's drift from half (at its entity's mean) to whole (``credit_scale`` standard deviations into the
  drift): a new service mixed into an event type's hours drifts the type's mean, and the type's ordinary
  events no longer carry that drift whole.
- **Scoring the training events again** (one file both fitted on and scored): a training hour is recognised
  (same entity, same hour, same number of events) and compared with its entity's history *without itself*,
  from the stored sums.

The scored batch must hold whole windows: score a day's file, not a handful of events (streaming would keep a
rolling buffer per window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from ..features import values as V
from ..features.text import template_array
from .base import BaseDetector, max_by_group, require_fitted, row_max

STATISTICS = ("embedding_shift", "field_shift", "rate", "drift")
_MEMORY = ("n", "s1", "s2", "lc_sum", "n_win", "g_lc", "typical_bucket", "train_keys", "train_counts")
ENTITY_ROLES = ("ip", "high_cardinality")
GROUPING_ROLES = ("categorical", "text")


@dataclass
class WindowView:
    """The fitted state of one entity column."""

    column: str
    template_masks: list[str] | None  # text columns group by template (None: by value)
    entities: pd.Index  # known entity values; the baseline row len(entities) is the population
    mean: np.ndarray  # [E + 1, d]
    var: np.ndarray  # [E + 1, d]
    rate_mean: np.ndarray  # [E + 1] usual log(1 + events per active window)
    median: np.ndarray | None = None  # [4] calibration per statistic (STATISTICS)
    scale: np.ndarray | None = None  # [4]
    inv_sd: np.ndarray | None = None  # [E + 1, d] float32 1 / sqrt(var), cached for scoring
    mean32: np.ndarray | None = None  # [E + 1, d] float32 mean, cached for scoring
    entity_ids: dict | None = None  # {entity: baseline row}, cached for scoring (unique entities only)
    key_memo: tuple | None = None  # (dtype, {raw value: (key, baseline row)}), cached for scoring (_memo_keys)
    memory: dict | None = None  # the training sums and windows, to leave a training window out of its baseline


@dataclass
class _Population:
    """What an entity's baseline is shrunk towards, and the floor of its variance."""

    mean: np.ndarray  # [d]
    var: np.ndarray  # [d]


@dataclass
class _Windows:
    """The windows of one view in one batch: ids per event row and per-window statistics."""

    rows: np.ndarray  # event rows with a value and a time
    window_of_row: np.ndarray  # window index per entry of rows
    entity: np.ndarray  # [n_windows] baseline row
    value: np.ndarray  # [n_windows] entity value (str)
    start_ms: np.ndarray  # [n_windows]
    count: np.ndarray  # [n_windows]
    stats: np.ndarray  # [n_windows, 3]
    field_t: np.ndarray | None = None  # [n_windows, n_fields] evidence per numeric field: max(|t|, drift)
    credit: np.ndarray | None = None  # [len(rows)] each event's share of its window's field shift, in [0, 1]
    bucket_events: np.ndarray | None = None  # [n_windows] events of the view in the window's time bucket
    pair_ids: np.ndarray | None = None  # [n_windows] entity code << 32 | time bucket, ascending (entity, then time)
    level: np.ndarray | None = None  # [n_windows] activity level (see _level)
    drift_credit: np.ndarray | None = None  # [len(rows)] each event's share of its window's drift, in [0, 1]


def window_vectors(z: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """What the detector averages per window, in float32: the unit-length embedding, then the numeric fields
    (``n_embedding = z.shape[1]``, ``field_names`` = the numeric fields' names)."""
    z = np.asarray(z, dtype=np.float32)
    numeric = np.asarray(numeric, dtype=np.float32)
    out = np.empty((len(z), z.shape[1] + numeric.shape[1]), dtype=np.float32)
    norm = np.sqrt(np.einsum("ij,ij->i", z, z)) + np.float32(1e-12)
    np.divide(z, norm[:, None], out=out[:, :z.shape[1]])
    out[:, z.shape[1]:] = numeric
    return out


def time_column(encoder) -> tuple[str, str | None]:
    """The timestamp column windows are cut from (the encoder's most complete one) and its epoch unit."""
    stamps = [st for st in encoder.columns_ if st["role"] == "timestamp"]
    if not stamps:
        raise ValueError("the encoder found no timestamp column: windows need event times")
    best = min(stamps, key=lambda st: st.get("missing_rate") or 0.0)
    return best["column"], best.get("unit")


def event_times(events: pd.DataFrame, column: str, unit: str | None = None) -> np.ndarray:
    """Event times in epoch milliseconds (NaN where missing or unparsable; all NaN without the column)."""
    if column not in events.columns:
        return np.full(len(events), np.nan)
    return V.to_epoch_ms(events[column], unit=unit)[0]


#: Up to this many events (or distinct keys), the per-view steps take their small-batch form: sums added event by
#: event, keys looked up in a dict. Same results (same additions in the same order, same matches); a sparse
#: matrix or a pandas index costs ~0.1 ms to set up, per view and per call, whatever the size. A view without
#: windows (no event has its column) skips the arithmetic on empty arrays. ``_SHORTCUTS = False`` takes the
#: general path everywhere (tests/test_small_batches.py checks that both agree).
_SMALL = 64
_FEW_KEYS = 1024  # distinct entity keys looked up in a dict up to this many (a pandas index costs ~80 µs to set up)
_SHORTCUTS = True


def _group_sums(group: np.ndarray, values: np.ndarray, n_groups: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Per-group column sums: row ``i`` of ``values`` (or row ``rows[i]`` when given) is added to group ``group[i]``.

    A sparse indicator matrix times ``values``: one pass, no sort, no copy of the selected rows (ten times
    faster than sorting and ``reduceat``). The matrix is stored by column (CSC): the product then reads the rows
    of ``values`` once each, in order, and adds each to its groups, three times faster than by row (CSR), which
    gathers every group's rows from all over ``values`` (100k events x 35 views: 94 -> 30 ms); either way each
    group's rows are added from zero in ascending order, so the sums are the same to the bit. The sums have the
    dtype of ``values``. A few rows (in ascending order) are added one by one instead: the same additions in the
    same order, without the matrix's set-up cost.
    """
    if len(group) == 0:
        return np.zeros((n_groups, values.shape[1]), dtype=values.dtype)
    if _SHORTCUTS and len(group) <= _SMALL and (rows is None or bool(np.all(rows[1:] > rows[:-1]))):
        out = np.zeros((n_groups, values.shape[1]), dtype=values.dtype)
        np.add.at(out, group, values if rows is None else values[rows])
        return out
    columns = np.arange(len(group)) if rows is None else rows
    width = len(group) if rows is None else values.shape[0]
    indicator = sp.csc_matrix((np.ones(len(group), dtype=values.dtype), (group, columns)), shape=(n_groups, width))
    return np.asarray(indicator @ values)


def _factorize(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes (-1 = missing) and distinct values (objects, in order of appearance) of a column, on its own (Arrow)
    storage: ``Series.factorize``, minus the pandas wrappers around Arrow's dictionary encoding for text."""
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow" and len(series):
        return _factorize_arrow(series.array.__arrow_array__())
    codes, uniques = series.factorize(use_na_sentinel=True)
    return codes, np.asarray(uniques.astype(object), dtype=object)


def _factorize_arrow(arrow) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_factorize` of an Arrow string (chunked) array: Arrow's dictionary encoding."""
    if isinstance(arrow, pa.ChunkedArray) and arrow.num_chunks == 1:
        arrow = arrow.chunk(0)  # the array the encoder sees too (obsad.features.values.shared_encodings)
    if isinstance(arrow, pa.ChunkedArray):
        encoded = pc.dictionary_encode(arrow).combine_chunks()
        codes, dictionary = V.codes_of(encoded.indices), encoded.dictionary
    else:
        codes, dictionary = V.dictionary_codes(arrow)
    return codes.astype(np.intp, copy=False), np.asarray(dictionary.to_numpy(zero_copy_only=False), dtype=object)


def _column_values(events: pd.DataFrame, column: str):
    """A column's array (pandas extension array or numpy), without building a Series (~10 µs a column, ~35
    columns a call): the frame's own column getter where this pandas has it, else through the Series."""
    loc = events.columns.get_loc(column)
    getter = getattr(events, "_get_column_array", None)
    if isinstance(loc, int) and getter is not None:
        return getter(loc)
    return events[column].array  # pragma: no cover - another pandas, or duplicate column names


def _factorize_values(values) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_factorize` of a column's array (:func:`_column_values`): Arrow text by dictionary encoding, a
    nullable integer column by numpy (its valid values in order of appearance: the codes and distinct values the
    masked array's own ``factorize`` gives, as Python ints, without its ~60 µs of set-up), others as a Series."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow" and len(values):
        arrow = values.__arrow_array__()
        if arrow.null_count == len(arrow):  # nothing to encode (a column this batch does not have)
            return np.full(len(arrow), -1, dtype=np.intp), np.empty(0, dtype=object)
        return _factorize_arrow(arrow)
    if isinstance(values, pd.arrays.IntegerArray):
        valid = ~np.asarray(values.isna(), dtype=bool)
        codes = np.full(len(values), -1, dtype=np.intp)
        if not valid.any():
            return codes, np.empty(0, dtype=object)
        data = values.to_numpy(dtype=np.int64, na_value=0)
        codes[valid], uniques = pd.factorize(data[valid])
        return codes, np.asarray(uniques.astype(object), dtype=object)
    return _factorize(pd.Series(values, copy=False))


def _keys_of(uniques: np.ndarray, dtype, template_masks: list[str] | None) -> np.ndarray:
    """The entity key (str, objects) of each distinct value: integers without ``.0``, text as its template. A
    value's key depends on that value only (not on the others of the batch)."""
    if pd.api.types.is_float_dtype(dtype) and len(uniques):
        x = uniques.astype(np.float64)
        whole = np.isfinite(x) & (x == np.round(x)) & (np.abs(x) < 2.0 ** 63)  # an int64 holds it
        keys = np.where(whole, np.round(np.where(whole, x, 0)).astype(np.int64).astype(str), x.astype(str))
    else:
        keys = uniques.astype(str)
    if template_masks is not None and len(keys):
        keys = template_array(pa.array(keys.astype(str), type=pa.string()), template_masks)[0]
        keys = np.asarray(keys.to_numpy(zero_copy_only=False), dtype=object)
    return np.asarray(keys, dtype=object)


def _as_keys(series: pd.Series, template_masks: list[str] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows with a value, their entity code, and the entity key (str) of each code: integers without ``.0``,
    text as its template. Keys are computed once per distinct value, not per row."""
    codes, uniques = _factorize(series)
    rows = np.flatnonzero(codes >= 0)
    codes = codes[rows] if len(rows) < len(codes) else codes
    keys = _keys_of(uniques, series.dtype, template_masks)
    merged, distinct = pd.factorize(keys)  # templating can map several values to one key
    return rows, merged[codes].astype(np.int64), np.asarray(distinct, dtype=object)


#: Raw values whose key and baseline row a view remembers between calls (:func:`_memo_keys`); past it, the memo
#: starts afresh from the batch's values, so a service fed ever new values holds at most this many per view.
_MEMO_SIZE = 8192


def _memo_keys(view: WindowView, values) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None:
    """:func:`_as_keys` and :func:`_baseline_rows` of a column of a few distinct values, from a memo per view:
    ``{raw value: (key, baseline row)}``, both fixed by the fitted view (the key of a value depends on that
    value alone). Templating (Arrow compiles each mask's regex per call) and the baseline lookup then run for
    values not seen before only. Returns ``(rows, codes, distinct keys, baseline row per key)``; past ``_FEW_KEYS``
    values, the keys from the same factorisation and no baseline rows (None); None for values of mixed types
    (object columns), whose equality is not the key's.

    Thread safety: new entries are added with one ``dict.update`` (keys are str, int or float: hashed and compared
    in C, so the update runs under the interpreter lock from start to end and a reader sees the dict before or
    after it), or the memo is replaced whole (one attribute assignment) when the dtype changes or it is full; two
    threads that miss at once both compute the same entries. (Copying the memo on every miss, as before, cost
    ~1 ms a batch of new events.)
    """
    dtype = values.dtype
    if isinstance(dtype, np.dtype) and dtype.kind == "O":  # 1, 1.0 and True are one dict key but three entity keys
        return None
    codes, uniques = _factorize_values(values)
    rows = np.flatnonzero(codes >= 0)
    codes = codes[rows] if len(rows) < len(codes) else codes
    if len(uniques) > _FEW_KEYS:  # many values: _as_keys on this factorisation (baseline rows: None, by the caller)
        merged, distinct = pd.factorize(_keys_of(uniques, dtype, view.template_masks))
        return rows, merged[codes].astype(np.int64), np.asarray(distinct, dtype=object), None
    tag = str(dtype)
    memo = view.key_memo
    table = memo[1] if memo is not None and memo[0] == tag else {}
    raw = uniques.tolist()
    found = list(map(table.get, raw))
    missing = [i for i, f in enumerate(found) if f is None] if None in found else []
    if missing:
        if view.template_masks is not None and len(missing) < len(raw):
            # every value templated, not only the new ones: the encoder templates this column's values next
            # and takes this very result from the call's shared templates (obsad.features.text.shared_templates)
            keys = _keys_of(uniques, dtype, view.template_masks)[missing]
        else:
            keys = _keys_of(uniques[missing], dtype, view.template_masks)
        new = dict(zip([raw[i] for i in missing], zip(keys.tolist(), _baseline_rows(view, keys).tolist())))
        for i in missing:
            found[i] = new[raw[i]]
        if memo is not None and memo[0] == tag and len(table) + len(new) <= _MEMO_SIZE:
            table.update(new)
        else:
            view.key_memo = (tag, new)
    keys, known_rows = zip(*found) if found else ((), ())
    keys = list(keys)
    known = np.fromiter(known_rows, dtype=np.int64, count=len(found))
    if len(set(keys)) == len(keys):  # one key per value: the codes stand
        return rows, codes.astype(np.int64), np.array(keys, dtype=object), known
    merged, distinct = pd.factorize(np.array(keys, dtype=object))  # templating can map several values to one key
    first = np.full(len(distinct), -1, dtype=np.int64)
    first[merged[::-1]] = np.arange(len(merged))[::-1]
    return rows, merged[codes].astype(np.int64), np.asarray(distinct, dtype=object), known[first]


def _rows_as_lists(codes: np.ndarray, names: list[str]) -> np.ndarray:
    """Each row of ``codes`` ``[n, width]`` (positions in ``names``, -1 = none) as the list of its names (an object
    array of lists), built once per distinct row. Rows are told apart by one packed integer each (digits
    ``-1 .. len(names) - 1``) where it fits in 62 bits: a 1-d unique, ~20x cheaper than ``np.unique(axis=0)``
    on a few thousand rows."""
    n, width = codes.shape
    if n == 0:
        return np.empty(0, dtype=object)
    base = len(names) + 1
    if base ** width < 2 ** 62:
        packed = np.zeros(n, dtype=np.int64)
        for j in range(width):
            packed = packed * base + (codes[:, j] + 1)
        _, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
        combos = codes[first]
    else:
        combos, inverse = np.unique(codes, axis=0, return_inverse=True)
    as_lists = np.empty(len(combos), dtype=object)
    as_lists[:] = [[names[c] for c in row if c >= 0] for row in combos]
    return as_lists[inverse.reshape(-1)]


def distinct_pairs(codes: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (entity code, time offset) pairs as ``code << 32 | offset``, ascending, and each row's pair
    number: ``np.unique(codes << 32 | offset, return_inverse=True)``. When the grid of codes x offsets is not much
    larger than the rows (the usual case: a few hundred entities over a day of hours), counted on the grid
    instead of sorted (no sort: linear in the rows)."""
    codes = np.asarray(codes, dtype=np.int64)
    offset = np.asarray(offset, dtype=np.int64)
    if len(codes) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    n_codes, n_offsets = int(codes.max()) + 1, int(offset.max()) + 1
    if n_codes * n_offsets > max(4 * len(codes), 1 << 16):
        pair_ids, inverse = np.unique(codes * (1 << 32) + offset, return_inverse=True)
        return pair_ids, inverse.astype(np.int64, copy=False).reshape(-1)
    cell = codes * n_offsets + offset
    present = np.bincount(cell, minlength=n_codes * n_offsets) > 0
    number = np.cumsum(present) - 1
    occupied = np.flatnonzero(present)
    return (occupied // n_offsets) * (1 << 32) + occupied % n_offsets, number[cell]


def _scoring_baselines(view: WindowView) -> tuple[np.ndarray, np.ndarray]:
    """A view's baseline means and 1/sd in float32, as scoring reads them (computed once, kept on the view)."""
    if view.inv_sd is None:
        view.inv_sd = (1.0 / np.sqrt(view.var)).astype(np.float32)
        view.mean32 = view.mean.astype(np.float32)
    return view.mean32, view.inv_sd


def _calibrated_z(stats: np.ndarray, median: np.ndarray, scale: np.ndarray, window_of_row: np.ndarray,
                  credit: np.ndarray | None, drift_credit: np.ndarray | None) -> np.ndarray:
    """Each event's calibrated window statistics ``[events, 4]`` (``window_of_row``: its window), the field shift's
    and the drift's positive parts scaled by the event's credit (None: not scaled)."""
    z = ((stats - median) / scale)[window_of_row]
    if credit is not None:
        field = z[:, 1]
        z[:, 1] = np.where(field > 0, field * credit, field)
    if drift_credit is not None:
        drift = z[:, 3]
        z[:, 3] = np.where(drift > 0, drift * drift_credit, drift)
    return z


#: Up to this many events, :meth:`EntityWindowDetector.view_scores` computes all views on their windows end to end
#: (``_view_scores_together``: one pass of each step instead of ~35, what a small batch's time goes to); above,
#: view by view, where the per-view steps are a small share and the training-window check can send every view
#: through its own baselines anyway (60k events: 10 % slower end to end).
_TOGETHER_MAX_EVENTS = 4096


def _counts32(count: np.ndarray) -> np.ndarray:
    """Windows' event counts (at least 1) as a float32 column, to divide their float32 sums by: the quotient of a
    float32 by a count (exact in float32) is the float64 quotient rounded to float32, bit for bit (double
    rounding through 53 bits is harmless for one division of 24-bit numbers), without a float64 copy of the
    means (statistics read them in float32)."""
    return np.maximum(count, 1.0).astype(np.float32)[:, None]


def _window_means(assigned: list[_Windows], vectors: np.ndarray) -> list[np.ndarray | None]:
    """Each view's window means (its events' vectors summed per window, over the window's events) from one sparse
    product over the windows of all views: the same sums as one product per view (each window's rows are added
    in ascending order either way), one matrix set-up instead of one per view."""
    sizes = np.array([len(w.count) for w in assigned], dtype=np.int64)
    first = np.r_[0, np.cumsum(sizes)]
    used = [j for j, w in enumerate(assigned) if len(w.rows)]
    if not used:
        return [None] * len(assigned)
    group = np.concatenate([assigned[j].window_of_row + first[j] for j in used])
    rows = np.concatenate([assigned[j].rows for j in used])
    sums = _group_sums(group, vectors, int(first[-1]), rows=rows)
    return [sums[first[j]:first[j + 1]] / _counts32(w.count) if len(w.rows) else None
            for j, w in enumerate(assigned)]


def coarser_views(groupings: list[tuple[np.ndarray, np.ndarray]]) -> set[int]:
    """Which groupings only coarsen another: ``groupings[j] = (rows, codes)``, the events a view has values for
    and each one's entity code. View ``b`` is coarser than ``a`` when both cover the same rows and ``a``'s code
    determines ``b``'s (each ``a`` entity lies within one ``b`` entity) with more distinct entities; of two
    identical groupings the later one is returned. Exact on the training events (a single event that breaks the
    nesting keeps both views)."""
    by_rows: dict[tuple, list[int]] = {}
    for j, (rows, _) in enumerate(groupings):
        by_rows.setdefault((len(rows), hash(np.ascontiguousarray(rows, dtype=np.int64).tobytes())), []).append(j)
    coarser = set()
    for members in by_rows.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                (rows_a, code_a), (rows_b, code_b) = groupings[a], groupings[b]
                if not np.array_equal(rows_a, rows_b):
                    continue
                code_a, code_b = np.asarray(code_a, dtype=np.int64), np.asarray(code_b, dtype=np.int64)
                n_a, n_b = len(np.unique(code_a)), len(np.unique(code_b))
                n_pairs = len(np.unique(code_a * (int(code_b.max()) + 1) + code_b))
                if n_pairs == n_a and n_a >= n_b:  # a refines b (or equals it: keep the first)
                    coarser.add(b)
                elif n_pairs == n_b and n_b > n_a:
                    coarser.add(a)
    return coarser


def _baseline_rows(view: WindowView, keys: np.ndarray) -> np.ndarray:
    """The baseline row of each entity key: its position among the view's entities, ``len(entities)`` (the
    population) when unseen. Keys are compared as the entities were stored (numpy text); a few keys are looked up
    in a cached dict, many through the pandas index."""
    names = keys.astype(str)
    n_known = len(view.entities)
    if _SHORTCUTS and len(names) <= _FEW_KEYS and view.entities.is_unique:
        if view.entity_ids is None:
            view.entity_ids = {name: i for i, name in enumerate(view.entities)}
        ids = view.entity_ids
        return np.fromiter((ids.get(name, n_known) for name in names.tolist()), dtype=np.int64, count=len(names))
    known = view.entities.get_indexer(pd.Index(names, dtype=object))
    return np.where(known < 0, n_known, known)


class EntityWindowDetector(BaseDetector):
    """Score entity windows against each entity's history; each event gets its most unusual window's score.

    ``X`` is a tuple ``(events, vectors)``: the flat event table (raw values of the entity columns and the
    time column) and float vectors ``[n, d]`` per event — the embedding followed by the encoded numeric fields,
    with ``n_embedding`` the number of embedding dimensions and ``field_names`` naming the others. ``encoder``
    (a fitted :class:`~obsad.features.FeatureEncoder`) supplies the column roles and the time column.
    ``fit(X, calibration=X_later)`` calibrates on a later period when one is given.
    """

    def __init__(self, encoder, n_embedding: int, field_names, window: str = "1h", min_distinct: int = 5,
                 max_distinct: int = 5000, max_entities: int = 5_000, prior_events: float = 20.0,
                 prior_windows: float = 5.0, min_var_ratio: float = 0.05, max_t: float = 50.0,
                 max_weight: float = 25.0, drift_smoothing: float = 0.2, drift_clip: float = 10.0,
                 credit_scale: float | None = 1.0, threshold_percentile: float = 99.5,
                 keep_coarser_views: bool = False, fill_rate_fields: bool = False):
        self.encoder = encoder
        self.n_embedding = n_embedding
        self.field_names = field_names
        self.window = window
        self.min_distinct = min_distinct
        self.max_distinct = max_distinct
        self.max_entities = max_entities
        self.prior_events = prior_events
        self.prior_windows = prior_windows
        self.min_var_ratio = min_var_ratio
        self.max_t = max_t
        self.max_weight = max_weight
        self.drift_smoothing = drift_smoothing
        self.drift_clip = drift_clip
        self.credit_scale = credit_scale
        self.threshold_percentile = threshold_percentile
        self.keep_coarser_views = keep_coarser_views
        self.fill_rate_fields = fill_rate_fields

    # ------------------------------------------------------------------ choosing views and time
    def _choose(self) -> tuple[list[tuple[str, list[str] | None]], str, str | None]:
        states = self.encoder.columns_
        views = []
        for st in states:
            role, n_unique = st["role"], st.get("n_unique") or 0
            if role == "text":  # grouped by template: what counts is the number of templates
                n_unique = len(st.get("vocab") or [])
            if role in ENTITY_ROLES or (role in GROUPING_ROLES and self.min_distinct <= n_unique <= self.max_distinct):
                views.append((st["column"], list(st.get("masks") or []) if role == "text" else None))
        column, unit = time_column(self.encoder)
        return views, column, unit

    def _times(self, events: pd.DataFrame) -> np.ndarray:
        if self.time_column_ not in events.columns:
            raise ValueError(f"events have no {self.time_column_!r} column (the time the windows are cut from)")
        return event_times(events, self.time_column_, self.time_unit_)

    # ------------------------------------------------------------------ windows of one view
    def _windows(self, view: WindowView, events: pd.DataFrame, vectors: np.ndarray, ms: np.ndarray,
                 fitting: bool = False) -> _Windows:
        assigned = self._assign(view, events, ms, fitting=fitting)
        return assigned if fitting else self._statistics(view, assigned, vectors)

    @staticmethod
    def _keys(view: WindowView, events: pd.DataFrame, ms: np.ndarray, fitting: bool = False):
        """The view's timed events: (rows, entity code per row, distinct entity keys, baseline row per key or None
        when not looked up yet)."""
        known = None
        if view.column in events.columns:
            memo = _memo_keys(view, _column_values(events, view.column)) if _SHORTCUTS and not fitting else None
            if memo is None:
                rows, codes, distinct = _as_keys(events[view.column], view.template_masks)
            else:
                rows, codes, distinct, known = memo
        else:
            rows, codes, distinct = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=object)
        timed = ~np.isnan(ms[rows])
        return rows[timed], codes[timed], distinct, known

    def _assign(self, view: WindowView, events: pd.DataFrame, ms: np.ndarray, fitting: bool = False) -> _Windows:
        """Which window each event of the view falls in, and what the windows are (entity, start, size, level):
        everything that needs only the events' values and times, not their vectors (so it can run while the
        vectors are being computed). ``fitting``: no baseline lookup (the baselines do not exist yet)."""
        return self._windows_of(view, ms, *self._keys(view, events, ms, fitting), fitting=fitting)

    def _windows_of(self, view: WindowView, ms: np.ndarray, rows: np.ndarray, codes: np.ndarray,
                    distinct: np.ndarray, known: np.ndarray | None, fitting: bool = False) -> _Windows:
        """:meth:`_assign` from the view's :meth:`_keys`."""
        if _SHORTCUTS and not len(rows):
            return self._no_windows(view, fitting)
        win = np.floor(ms[rows] / self.window_ms_).astype(np.int64)
        offset = win - (win.min() if len(win) else 0)
        # windows = distinct (entity, window) pairs, numbered in (entity, time) order: the sorted distinct pairs
        pair_ids, window_of_row = distinct_pairs(codes, offset)
        n_windows = len(pair_ids)
        count = np.bincount(window_of_row, minlength=n_windows).astype(np.float64)
        first_row = np.full(n_windows, -1, dtype=np.int64)
        first_row[window_of_row[::-1]] = np.arange(len(rows))[::-1]
        value = distinct[codes[first_row]] if n_windows else np.empty(0, dtype=object)
        start = win[first_row] * self.window_ms_ if n_windows else np.empty(0, dtype=np.int64)
        bucket_events = np.bincount(offset)[offset[first_row]].astype(np.float64) if n_windows else np.zeros(0)
        if fitting:
            return _Windows(rows, window_of_row, np.empty(0, dtype=np.int64), value, start, count,
                            np.empty((0, len(STATISTICS))), bucket_events=bucket_events, pair_ids=pair_ids)
        level = self._level(count, bucket_events, float(view.memory["typical_bucket"][0]))
        known = _baseline_rows(view, distinct) if known is None else known  # once per distinct key
        entity = known[codes[first_row]] if n_windows else np.empty(0, dtype=np.int64)
        return _Windows(rows, window_of_row, entity, value, start, count, np.empty((0, len(STATISTICS))),
                        bucket_events=bucket_events, pair_ids=pair_ids, level=level)

    def _no_windows(self, view: WindowView, fitting: bool = False) -> _Windows:
        """:meth:`_assign` of a view none of whose events has a value and a time (the empty arrays it builds)."""
        empty_int = np.empty(0, dtype=np.int64)
        count, bucket_events = np.zeros(0), np.zeros(0)
        level = None if fitting else self._level(count, bucket_events, float(view.memory["typical_bucket"][0]))
        return _Windows(empty_int, empty_int.copy(), empty_int.copy(), np.empty(0, dtype=object), empty_int.copy(),
                        count, np.empty((0, len(STATISTICS))), bucket_events=bucket_events, pair_ids=empty_int.copy(),
                        level=level)

    def _statistics(self, view: WindowView, w: _Windows, vectors: np.ndarray,
                    mean: np.ndarray | None = None) -> _Windows:
        """The window statistics of :meth:`_assign`'s windows from the events' ``vectors`` (``mean``: the windows'
        mean vectors, when already computed)."""
        rows, window_of_row, entity, start, count = w.rows, w.window_of_row, w.entity, w.start_ms, w.count
        level, pair_ids, n_windows = w.level, w.pair_ids, len(w.count)
        if _SHORTCUTS and n_windows == 0:
            return self._no_statistics(w, vectors)
        if mean is None:
            mean = _group_sums(window_of_row, vectors, n_windows, rows=rows) / _counts32(count)
        base_mean, base_inv_sd, rate_mean = self._baselines(view, entity, start, count, window_of_row, rows, vectors, level)
        stats, evidence, credit, drift_credit = self._window_statistics(
            mean, base_mean, base_inv_sd, rate_mean, count, level, pair_ids >> 32, window_of_row, rows, vectors)
        return _Windows(rows, window_of_row, entity, w.value, start, count, stats, evidence, credit, w.bucket_events,
                        pair_ids, level, drift_credit=drift_credit)

    def _window_statistics(self, mean, base_mean, base_inv_sd, rate_mean, count, level, group, window_of_row, rows,
                           vectors):
        """The four statistics of windows ``[n_windows, 4]``, the evidence per field, and each event's field and
        drift credit (None without numeric fields or ``credit_scale``), from the windows' means and baselines;
        ``group``: each window's entity, windows sorted by it, then by time (the EWMA runs per group)."""
        n_windows = len(count)
        signed = self._t(mean, base_mean, base_inv_sd, count)
        t = np.abs(signed)
        d_emb = int(self.n_embedding)
        emb = np.sqrt(np.mean(t[:, :d_emb] ** 2, axis=1)) if d_emb else np.zeros(n_windows)
        field_t = t[:, d_emb:]
        if field_t.shape[1]:
            field = field_t.max(axis=1)
            # windows are sorted by entity, then time (pair_ids): an EWMA per entity over its windows
            trend = self._drift(signed[:, d_emb:], group)
            if self.credit_scale is not None:  # a window carries a drift only if it continues it itself
                trend = np.abs(trend) * np.clip(np.sign(trend) * signed[:, d_emb:] / float(self.credit_scale), 0, 1)
            else:
                trend = np.abs(trend)
            drift = trend.max(axis=1)
            drift_column = trend.argmax(axis=1)
            evidence = np.maximum(field_t, trend)
        else:
            field, drift, evidence = np.zeros(n_windows), np.zeros(n_windows), field_t
        rate = level - rate_mean
        stats = np.stack([emb, field, rate, drift], axis=1)
        credit = drift_credit = None
        if field_t.shape[1] and self.credit_scale is not None:
            credit = self._field_credit(signed, field_t.argmax(axis=1), window_of_row, rows, vectors, base_mean,
                                        base_inv_sd)
            drift_credit = self._field_credit(signed, drift_column, window_of_row, rows, vectors, base_mean,
                                              base_inv_sd, at_mean=0.5)
        return stats, evidence, credit, drift_credit

    def _no_statistics(self, w: _Windows, vectors: np.ndarray) -> _Windows:
        """:meth:`_statistics` of a view without windows: the empty arrays (and dtypes) its arithmetic yields."""
        n_fields = vectors.shape[1] - int(self.n_embedding)
        evidence = np.empty((0, n_fields)) if n_fields else np.empty((0, 0), dtype=np.float32)
        credit = np.empty(0, dtype=np.float32) if n_fields and self.credit_scale is not None else None
        return _Windows(w.rows, w.window_of_row, w.entity, w.value, w.start_ms, w.count, np.empty((0, len(STATISTICS))),
                        evidence, credit, w.bucket_events, w.pair_ids, w.level,
                        drift_credit=None if credit is None else credit.copy())

    @staticmethod
    def _level(count: np.ndarray, bucket_events: np.ndarray, typical: float) -> np.ndarray:
        """A window's activity level: ``log(1 + n) - log(1 + max(N, typical))``, with ``N`` the view's events in
        that time bucket and ``typical`` their training median.

        In a busier hour than usual (a Monday morning, when every entity is busier) the count is taken as a
        share of the hour's traffic, so the entities that only follow the crowd do not move; in a quieter or a
        partial hour (a night, a file of a few events) it is compared with a typical hour, so an entity alone in
        a tiny batch is not "all of the traffic"."""
        return np.log1p(count) - np.log1p(np.maximum(bucket_events, typical))

    def _field_credit(self, signed, field, window_of_row, rows, vectors, base_mean, base_inv_sd,
                      at_mean: float = 0.0) -> np.ndarray:
        """How much each event moved its window's field shift (or drift): its own value of the window's field
        ``field`` (index among the numeric fields, per window), in its entity's standard deviations, in the
        direction of the window's shift, mapped linearly from ``at_mean`` (an event at its entity's mean) to 1
        (``credit_scale`` standard deviations or more) and clipped to [0, 1].

        A coarse entity (an event type, a port) mixes many sources; when one of them misbehaves, the window's
        mean moves and every event of the window would inherit the alarm. Credit keeps the score on the events
        that moved the mean and takes it off those sitting at their entity's usual value. Field shift is credited
        with ``at_mean=0``: one wild source is what moves a single window. Drift with ``at_mean=0.5``: a drift is
        many events each a little off, so an event at its usual value keeps half of it, one a standard deviation
        into the drift all of it, one a standard deviation against it none (a new service mixed into the hour of
        an event type drifts its mean; the type's other events no longer inherit the drift whole). A rate anomaly
        is carried by every event of the window alike and is not credited.
        """
        column = int(self.n_embedding) + field
        # per window first, then spread to its events; every gather a 1-d take at flat positions (numpy's
        # two-array indexing a[rows, cols] costs twice as much)
        at_window = np.arange(len(column)) * signed.shape[1] + column
        direction, mean, inv_sd = (a.reshape(-1).take(at_window) for a in (signed, base_mean, base_inv_sd))
        x = vectors.reshape(-1).take(rows * vectors.shape[1] + column.take(window_of_row))
        own = (x - mean.take(window_of_row)) * inv_sd.take(window_of_row)
        moved = np.sign(direction).take(window_of_row) * own / float(self.credit_scale)
        return np.clip(at_mean + (1.0 - at_mean) * moved, 0.0, 1.0).astype(np.float32)

    def _drift(self, signed: np.ndarray, group: np.ndarray) -> np.ndarray:
        """Exponentially weighted mean of each field's ``t`` over each entity's consecutive windows, standardised
        and signed (``EWMA / sqrt(lambda / (2 - lambda))``), ``[n_windows, n_fields]``.

        A shift of a few standard errors that persists window after window builds up, noise averages out, and a
        single wild window (clipped at ``drift_clip``) is the field-shift statistic's business, not this one's;
        ``lambda = drift_smoothing`` sets the memory (0.2: about five windows), so the evidence also fades once
        an episode ends. Windows must be sorted by ``group`` (the entity), then time. Vectorised over entities:
        one step per window position (every entity's k-th window at once), so an entity's drift depends on its
        own windows only, bit for bit, whatever else the batch holds (a Spark task holding one entity computes
        the same numbers). The steps are as many as the most windows one entity has in the batch.
        """
        n = signed.shape[0]
        if n == 0:
            return np.zeros_like(signed, dtype=np.float64)
        lam = float(self.drift_smoothing)
        if not 0.0 < lam <= 1.0:
            raise ValueError(f"drift_smoothing must be in (0, 1], got {lam}")
        x = np.clip(signed.astype(np.float64), -float(self.drift_clip), float(self.drift_clip))
        new = np.r_[True, group[1:] != group[:-1]]
        position = np.arange(n) - np.maximum.accumulate(np.where(new, np.arange(n), 0))  # k-th window of its group
        by_position = np.argsort(position, kind="stable")
        ends = np.cumsum(np.bincount(position))
        ewma = np.empty_like(x)
        first = by_position[:ends[0]]
        ewma[first] = lam * x[first]
        for lo, hi in zip(ends[:-1], ends[1:]):  # z_k = (1 - lam) z_{k-1} + lam x_k, for every entity at once
            rows = by_position[lo:hi]
            ewma[rows] = (1.0 - lam) * ewma[rows - 1] + lam * x[rows]
        return ewma / np.sqrt(lam / (2.0 - lam))

    def _baselines(self, view: WindowView, entity: np.ndarray, start: np.ndarray, count: np.ndarray,
                   window_of_row: np.ndarray, rows: np.ndarray, vectors: np.ndarray, level: np.ndarray):
        """Each window's baseline: its entity's mean, 1/sd (float32) and usual log-rate, with the window itself
        left out when it is one of the training windows (same entity, same hour, same number of events).

        Scoring the baseline's own events then compares each hour with the *rest* of the entity's history, as
        for new data: a brute force whose address was never seen elsewhere is compared with the population, not
        with itself.
        """
        mean32, inv_sd = _scoring_baselines(view)
        base_mean, base_inv_sd = mean32[entity], inv_sd[entity]
        rate_mean = view.rate_mean[entity]
        memory = view.memory
        if memory is None or not len(entity) or not len(memory["train_keys"]):
            return base_mean, base_inv_sd, rate_mean
        key = entity.astype(np.int64) * (1 << 32) + np.round(start / self.window_ms_).astype(np.int64)
        keys = memory["train_keys"]
        pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        own = (keys[pos] == key) & (memory["train_counts"][pos] == count) & (entity < len(view.entities))
        if not own.any():
            return base_mean, base_inv_sd, rate_mean
        m = np.flatnonzero(own)
        local = np.full(len(count), -1, dtype=np.int64)
        local[m] = np.arange(len(m))
        mine = local[window_of_row] >= 0
        x = vectors[rows[mine]].astype(np.float64)
        s1_w = _group_sums(local[window_of_row][mine], x, len(m))
        s2_w = _group_sums(local[window_of_row][mine], x * x, len(m))
        e = entity[m]
        prior = float(self.prior_events)
        pop = self.population_
        n = np.maximum(memory["n"][e] - count[m], 0.0)
        mean_loo = (memory["s1"][e] - s1_w + prior * pop.mean) / (n + prior)[:, None]
        var_loo = (memory["s2"][e] - s2_w + prior * (pop.var + pop.mean ** 2)) / (n + prior)[:, None] - mean_loo ** 2
        var_loo = np.maximum(var_loo, float(self.min_var_ratio) * pop.var) + 1e-6
        base_mean, base_inv_sd = base_mean.copy(), base_inv_sd.copy()
        base_mean[m] = mean_loo.astype(np.float32)
        base_inv_sd[m] = (1.0 / np.sqrt(var_loo)).astype(np.float32)
        prior_w = float(self.prior_windows)
        rate_mean = rate_mean.copy()
        rate_mean[m] = ((memory["lc_sum"][e] - level[m] + prior_w * memory["g_lc"][0])
                        / (memory["n_win"][e] - 1.0 + prior_w))
        return base_mean, base_inv_sd, rate_mean

    def _t(self, mean: np.ndarray, base_mean: np.ndarray, base_inv_sd: np.ndarray, count: np.ndarray) -> np.ndarray:
        """How many standard errors each window mean moved from its baseline ``[n_windows, d]``, signed and capped
        at ``max_t``; a window counts as at most ``max_weight`` events."""
        weight = np.sqrt(np.minimum(count, float(self.max_weight))).astype(np.float32)[:, None]
        t = mean.astype(np.float32, copy=False) - base_mean
        t *= base_inv_sd
        t *= weight
        cap = np.float32(self.max_t)
        return np.clip(t, -cap, cap, out=t)

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, calibration=None):
        """Learn per-entity baselines from ``X = (events, vectors)``; calibrate on ``calibration`` (or ``X``)."""
        if not 0.0 < float(self.threshold_percentile) <= 100.0:
            raise ValueError(f"threshold_percentile must be in (0, 100], got {self.threshold_percentile}")
        events, vectors = self._check_input(X, fitted=False)
        self.window_ms_ = float(pd.Timedelta(self.window).total_seconds() * 1000.0)
        if self.window_ms_ <= 0:
            raise ValueError(f"window must be a positive duration, got {self.window!r}")
        chosen, self.time_column_, self.time_unit_ = self._choose()
        ms = self._times(events)
        g_mean = vectors.mean(axis=0, dtype=np.float64)
        g_var = vectors.var(axis=0, dtype=np.float64) + 1e-6
        self.population_ = _Population(g_mean, g_var)
        self.views_: list[WindowView] = []
        found = []
        for column, masks in chosen:
            view = WindowView(column, masks, pd.Index([], dtype=object), g_mean[None], g_var[None], np.zeros(1))
            w = self._windows(view, events, vectors, ms, fitting=True)
            if len(w.rows):
                found.append((column, masks, w))
        # only views keyed by raw values are compared: a template view's key can take in a value never seen in
        # training (a new process path under a known command-line template) that the raw view would see as new
        by_value = [j for j, (_, masks, _) in enumerate(found) if masks is None]
        groupings = [(w.rows, w.pair_ids[w.window_of_row] >> 32) for _, _, w in (found[j] for j in by_value)]
        coarser = set() if self.keep_coarser_views else {by_value[j] for j in coarser_views(groupings)}
        self.dropped_views_ = [found[j][0] for j in sorted(coarser)]
        for column, masks, w in (v for j, v in enumerate(found) if j not in coarser):
            keys = w.value[w.window_of_row]  # entity value per row
            codes, uniques = pd.factorize(keys)
            counts = np.bincount(codes, minlength=len(uniques))
            keep = np.argsort(-counts, kind="stable")[: int(self.max_entities)]
            slot = np.full(len(uniques), len(keep), dtype=np.int64)
            slot[keep] = np.arange(len(keep))
            row_slot = slot[codes]
            n_e = np.bincount(row_slot, minlength=len(keep) + 1).astype(np.float64)
            x = vectors[w.rows].astype(np.float64)
            s1 = _group_sums(row_slot, x, len(keep) + 1)
            s2 = _group_sums(row_slot, x * x, len(keep) + 1)
            buckets = np.unique(w.start_ms, return_index=True)[1]  # one window per time bucket
            typical = float(np.median(w.bucket_events[buckets]))
            lc = self._level(w.count, w.bucket_events, typical)
            win_slot = slot[pd.Index(uniques).get_indexer(pd.Index(w.value.astype(object)))]
            g_lc = float(lc.mean())
            lc_sum = np.bincount(win_slot, weights=lc, minlength=len(keep) + 1)
            n_win = np.bincount(win_slot, minlength=len(keep) + 1)
            entities = pd.Index(np.asarray(uniques, dtype=object)[keep].astype(str), dtype=object)
            window_key = win_slot.astype(np.int64) * (1 << 32) + np.round(w.start_ms / self.window_ms_).astype(np.int64)
            order = np.argsort(window_key, kind="stable")
            memory = {"n": n_e, "s1": s1, "s2": s2, "lc_sum": lc_sum, "n_win": n_win.astype(np.float64),
                      "g_lc": np.array([g_lc]), "typical_bucket": np.array([typical]), "train_keys": window_key[order],
                      "train_counts": w.count[order].astype(np.int64)}
            self.views_.append(self._view_from_sums(column, masks, entities, memory))
        if not self.views_:
            raise ValueError("no entity column with values: nothing to group events by")
        self.n_features_in_ = int(self.n_embedding) + len(self.field_names)
        self.fields_ = [self.field_names[i - int(self.n_embedding)]
                        for i in self._kept_dims(self.n_features_in_)[int(self.n_embedding):]]
        cal_events, cal_vectors = (events, vectors) if calibration is None else self._check_input(calibration)
        cal_ms = self._times(cal_events)
        for view in self.views_:
            stats = self._windows(view, cal_events, cal_vectors, cal_ms).stats
            if len(stats) < 20:  # too few later windows: calibrate on the training windows
                stats = self._windows(view, events, vectors, ms).stats
            med = np.median(stats, axis=0) if len(stats) else np.zeros(len(STATISTICS))
            q99 = np.quantile(stats, 0.99, axis=0) if len(stats) else np.ones(len(STATISTICS))
            view.median, view.scale = med, np.maximum(q99 - med, 1e-6)
        self._calibrate(self.best_view_score(self._view_scores(cal_events, cal_vectors)[0]))
        return self

    def _fit(self, X, y=None) -> np.ndarray:  # fit() is overridden; kept for the abstract interface
        self.fit(X)
        return self.training_scores_

    # ------------------------------------------------------------------ score / explain
    def _view_from_sums(self, column: str, masks, entities: pd.Index, memory: dict) -> WindowView:
        """A view's baselines from its training sums: per entity, mean and variance shrunk towards the population
        with ``prior_events`` pseudo-events (variance floored at ``min_var_ratio`` of the population's), and the
        usual log-rate shrunk with ``prior_windows``; the last row is the population itself (unseen entities)."""
        pop, prior, prior_w = self.population_, float(self.prior_events), float(self.prior_windows)
        n = memory["n"]
        mean = (memory["s1"] + prior * pop.mean) / (n + prior)[:, None]
        var = (memory["s2"] + prior * (pop.var + pop.mean ** 2)) / (n + prior)[:, None] - mean ** 2
        var = np.maximum(var, float(self.min_var_ratio) * pop.var) + 1e-6
        mean[-1], var[-1] = pop.mean, pop.var
        g_lc = float(memory["g_lc"][0])
        rate_mean = (memory["lc_sum"] + prior_w * g_lc) / (memory["n_win"] + prior_w)
        rate_mean[-1] = g_lc
        return WindowView(column, masks, entities, mean, var, rate_mean, memory=memory)

    def _kept_dims(self, d: int) -> np.ndarray:
        """Dimensions used: the embedding and every numeric field except those derived from a timestamp and,
        unless ``fill_rate_fields``, the missing-value indicators.

        Hour-of-day and day-of-week are the same for every event of a window, so a window's mean of them only
        says when the window is, not that the entity changed. A field's fill rate says what a producer sends:
        when a producer stops sending a field, every entity it reports on "moves" at once, a schema change for
        the drift monitor (which names the field), not an anomaly of each entity. The embedding still sees
        which fields an event has."""
        roles = getattr(self.encoder, "roles_", {})
        sources = getattr(self.encoder, "sources_", {})
        names = list(self.field_names)
        if d != int(self.n_embedding) + len(names):
            raise ValueError(f"vectors have {d} dimensions; expected n_embedding={self.n_embedding} + "
                             f"{len(names)} field_names")
        fields = [i for i, name in enumerate(names) if roles.get(sources.get(name, name)) != "timestamp"]
        if not self.fill_rate_fields:
            fields = [i for i in fields if names[i] != f"{sources.get(names[i], names[i])}.missing"]
        return np.r_[np.arange(int(self.n_embedding)), int(self.n_embedding) + np.asarray(fields, dtype=np.int64)]

    def _check_input(self, X, fitted: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
        if not (isinstance(X, tuple) and len(X) == 2):
            raise TypeError("X must be a tuple (events DataFrame, vectors [n, d])")
        events, vectors = X
        if not isinstance(events, pd.DataFrame):
            raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(events):
            raise ValueError(f"vectors must be [n_events={len(events)}, d], got shape {vectors.shape}")
        if fitted and hasattr(self, "n_features_in_") and vectors.shape[1] != self.n_features_in_:
            raise ValueError(f"vectors have {vectors.shape[1]} dimensions, the detector was fitted on "
                             f"{self.n_features_in_}")
        kept = self._kept_dims(vectors.shape[1])
        if len(kept) == vectors.shape[1]:
            return events, np.ascontiguousarray(vectors)
        return events, np.take(vectors, kept, axis=1)

    def assign(self, events: pd.DataFrame) -> list[_Windows]:
        """The windows of every view for ``events`` (what needs only their values and times). Pass the result
        to :meth:`view_scores` as ``assigned``: a caller can compute it while the vectors are being computed."""
        require_fitted(self, "views_")
        if not isinstance(events, pd.DataFrame):
            raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
        ms = self._times(events)
        # an empty column gives no windows in _assign itself, after a factorisation that costs next to nothing
        # (Arrow's null count): cheaper than testing every block of the frame first
        # views keyed on templated text last: by then the encoder (templating the same values on another
        # thread) has usually templated them (obsad.features.text.shared_templates)
        order = sorted(range(len(self.views_)), key=lambda i: self.views_[i].template_masks is not None)
        assigned: list = [None] * len(self.views_)
        if _SHORTCUTS and len(events) <= _TOGETHER_MAX_EVENTS:
            keyed = {i: self._keys(self.views_[i], events, ms) for i in order}
            for i, w in self._assign_together(keyed, ms).items():
                assigned[i] = w
            return assigned
        for i in order:
            assigned[i] = self._assign(self.views_[i], events, ms)
        return assigned

    def _assign_together(self, keyed: dict, ms: np.ndarray) -> dict[int, _Windows]:
        """:meth:`_assign` of many views at once (``keyed``: view index -> :meth:`_keys`), each step one pass over
        the timed events of every view, not one per view: entity codes numbered across views, so that the
        (entity, time bucket) cells of all views form one grid, numbered in (view, entity, time) order, which is
        each view's own window order. The same windows, view by view, as :meth:`_assign`; a grid too sparse to
        count on falls back to it."""
        out: dict[int, _Windows] = {}
        live = []
        for i, (rows, codes, distinct, known) in keyed.items():
            if not len(rows):
                out[i] = self._no_windows(self.views_[i])
            else:
                live.append(i)
        if not live:
            return out
        parts = [keyed[i] for i in live]
        n_rows = np.array([len(p[0]) for p in parts], dtype=np.int64)
        n_keys = np.array([len(p[2]) for p in parts], dtype=np.int64)
        row_start = np.r_[0, np.cumsum(n_rows)]
        key_start = np.r_[0, np.cumsum(n_keys)]
        view_of_row = np.repeat(np.arange(len(live)), n_rows)
        rows = np.concatenate([p[0] for p in parts])
        codes = np.concatenate([p[1] for p in parts]).astype(np.int64, copy=False) + key_start[:-1][view_of_row]
        win = np.floor(ms[rows] / self.window_ms_).astype(np.int64)
        offset = win - np.minimum.reduceat(win, row_start[:-1])[view_of_row]
        n_offsets = int(offset.max()) + 1
        n_cells = int(key_start[-1]) * n_offsets
        if n_cells > max(4 * len(rows), 1 << 16):  # a sparse grid: view by view (distinct_pairs sorts there)
            for i in live:
                out[i] = self._windows_of(self.views_[i], ms, *keyed[i])
            return out
        cell = codes * n_offsets + offset
        present = np.bincount(cell, minlength=n_cells) > 0
        number = np.cumsum(present) - 1
        occupied = np.flatnonzero(present)
        window_of_row = number[cell]
        n_windows = len(occupied)
        code_of_window, offset_of_window = np.divmod(occupied, n_offsets)
        view_of_window = np.searchsorted(key_start, code_of_window, side="right") - 1
        window_start = np.searchsorted(view_of_window, np.arange(len(live) + 1))
        count = np.bincount(window_of_row, minlength=n_windows).astype(np.float64)
        first_row = np.full(n_windows, -1, dtype=np.int64)
        first_row[window_of_row[::-1]] = np.arange(len(rows))[::-1]
        first_code = codes[first_row]
        value = np.concatenate([p[2] for p in parts]).astype(object, copy=False)[first_code]
        start = win[first_row] * self.window_ms_
        per_bucket = np.bincount(view_of_row * n_offsets + offset, minlength=len(live) * n_offsets)
        bucket_events = per_bucket[view_of_window * n_offsets + offset_of_window].astype(np.float64)
        typical = np.array([float(self.views_[i].memory["typical_bucket"][0]) for i in live])
        level = self._level(count, bucket_events, typical[view_of_window])
        known = np.concatenate([p[3] if p[3] is not None else _baseline_rows(self.views_[i], p[2])
                                for i, p in zip(live, parts)])
        entity = known[first_code]
        pair_ids = (code_of_window - key_start[:-1][view_of_window]) * (1 << 32) + offset_of_window
        for j, i in enumerate(live):
            r0, r1, w0, w1 = row_start[j], row_start[j + 1], window_start[j], window_start[j + 1]
            out[i] = _Windows(parts[j][0], window_of_row[r0:r1] - w0, entity[w0:w1], value[w0:w1], start[w0:w1],
                              count[w0:w1], np.empty((0, len(STATISTICS))), bucket_events=bucket_events[w0:w1],
                              pair_ids=pair_ids[w0:w1], level=level[w0:w1])
        return out

    def view_scores(self, X, assigned: list[_Windows] | None = None) -> tuple[np.ndarray, list[_Windows]]:
        """Per-event score of each view ``[n, n_views]`` (``-inf`` where the event has no value) and the windows;
        ``assigned``: :meth:`assign` of the same events, when already computed."""
        require_fitted(self, "views_")
        return self._view_scores(*self._check_input(X), assigned=assigned)

    def _view_scores(self, events: pd.DataFrame, vectors: np.ndarray,
                     assigned: list[_Windows] | None = None) -> tuple[np.ndarray, list[_Windows]]:
        if assigned is None:
            assigned = self.assign(events)
        if len(assigned) != len(self.views_):
            raise ValueError(f"assigned has {len(assigned)} views, the detector has {len(self.views_)}")
        out = np.full((len(events), len(self.views_)), -np.inf)
        windows = []
        if any(len(w.rows) and w.rows[-1] >= len(events) for w in assigned):
            raise ValueError("assigned was computed on other events (row positions beyond these events)")
        if _SHORTCUTS and len(events) <= _TOGETHER_MAX_EVENTS:
            return self._view_scores_together(assigned, vectors, out)
        means = _window_means(assigned, vectors) if _SHORTCUTS else [None] * len(assigned)
        for j, (view, w) in enumerate(zip(self.views_, assigned)):
            w = self._statistics(view, w, vectors, mean=means[j])
            if len(w.rows) or not _SHORTCUTS:
                out[w.rows, j] = row_max(self._event_z(view, w))
            windows.append(w)
        return out, windows

    def _scoring_tables(self) -> dict:
        """Every view's baselines stacked into one table (float32 mean and 1/sd, usual log-rate: one gather for
        the windows of all views) with each view's first row, and its training windows' keys shifted by that row
        (``key + first << 32``: ascending across views). Fitted state only: built on first use and kept with
        the views it was built from (rebuilt when they change); two threads may both build it, one table wins."""
        cached = getattr(self, "_tables", None)
        views = self.views_
        if cached is not None and len(cached["views"]) == len(views) \
                and all(a is b for a, b in zip(cached["views"], views)):
            return cached
        first = np.r_[0, np.cumsum([len(v.mean) for v in views])].astype(np.int64)
        keys, counts = [], []
        for j, v in enumerate(views):
            if v.memory is not None and len(v.memory["train_keys"]):
                keys.append(np.asarray(v.memory["train_keys"], dtype=np.int64) + (int(first[j]) << 32))
                counts.append(np.asarray(v.memory["train_counts"]))
        tables = {"views": list(views), "first": first,
                  "mean32": np.concatenate([_scoring_baselines(v)[0] for v in views]),
                  "inv_sd": np.concatenate([_scoring_baselines(v)[1] for v in views]),
                  "rate_mean": np.concatenate([v.rate_mean for v in views]),
                  "train_keys": np.concatenate(keys) if keys else np.empty(0, dtype=np.int64),
                  "train_counts": np.concatenate(counts) if counts else np.empty(0, dtype=np.int64)}
        self._tables = tables
        return tables

    def _view_scores_together(self, assigned: list[_Windows], vectors: np.ndarray,
                              out: np.ndarray) -> tuple[np.ndarray, list[_Windows]]:
        """:meth:`_statistics` and :meth:`_event_z` of all views at once, on their windows end to end (~35 views:
        one pass of each numpy step instead of one per view; the per-view steps cost ~10 µs each whatever the
        size). Every step is per window, per event or per entity (the EWMA: entities of different views are
        different groups), so each view gets exactly what it gets alone; a view whose windows are training
        windows takes :meth:`_baselines` alone (leave-one-out)."""
        views = self.views_
        windows = [self._no_statistics(w, vectors) if not len(w.count) else None for w in assigned]
        used = [j for j, w in enumerate(assigned) if len(w.count)]
        if not used:
            return out, windows
        tables = self._scoring_tables()
        parts = [assigned[j] for j in used]
        n_win = np.array([len(w.count) for w in parts], dtype=np.int64)
        n_row = np.array([len(w.rows) for w in parts], dtype=np.int64)
        wfirst, rfirst = np.r_[0, np.cumsum(n_win)], np.r_[0, np.cumsum(n_row)]
        rows = np.concatenate([w.rows for w in parts])
        window_of_row = np.concatenate([w.window_of_row + wfirst[k] for k, w in enumerate(parts)])
        count = np.concatenate([w.count for w in parts])
        level = np.concatenate([w.level for w in parts])
        start = np.concatenate([w.start_ms for w in parts])
        entity = np.concatenate([w.entity + tables["first"][j] for j, w in zip(used, parts)])
        group = np.concatenate([(w.pair_ids >> 32) + (k << 32) for k, w in enumerate(parts)])  # entity, per view
        # one sparse product over the windows of all views (each window's rows added in ascending order)
        mean = _group_sums(window_of_row, vectors, len(count), rows=rows) / _counts32(count)
        base_mean, base_inv_sd = tables["mean32"][entity], tables["inv_sd"][entity]
        rate_mean = tables["rate_mean"][entity]
        keys = tables["train_keys"]
        if len(keys):  # windows that may be training windows (same entity, hour and size): those views alone
            key = entity * (1 << 32) + np.round(start / self.window_ms_).astype(np.int64)
            pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
            maybe = (keys[pos] == key) & (tables["train_counts"][pos] == count)
            for k in np.unique(np.searchsorted(wfirst, np.flatnonzero(maybe), side="right") - 1):
                w, a, b = parts[k], wfirst[k], wfirst[k + 1]
                base_mean[a:b], base_inv_sd[a:b], rate_mean[a:b] = self._baselines(
                    views[used[k]], w.entity, w.start_ms, w.count, w.window_of_row, w.rows, vectors, w.level)
        stats, evidence, credit, drift_credit = self._window_statistics(
            mean, base_mean, base_inv_sd, rate_mean, count, level, group, window_of_row, rows, vectors)
        view_of_window = np.repeat(np.asarray(used, dtype=np.int64), n_win)
        median = np.stack([views[j].median for j in used])[np.repeat(np.arange(len(used)), n_win)]
        scale = np.stack([views[j].scale for j in used])[np.repeat(np.arange(len(used)), n_win)]
        z = _calibrated_z(stats, median, scale, window_of_row, credit, drift_credit)  # _event_z, all views at once
        out[rows, view_of_window[window_of_row]] = row_max(z)
        for k, (j, w) in enumerate(zip(used, parts)):
            a, b, ra, rb = wfirst[k], wfirst[k + 1], rfirst[k], rfirst[k + 1]
            windows[j] = _Windows(w.rows, w.window_of_row, w.entity, w.value, w.start_ms, w.count, stats[a:b],
                                  evidence[a:b], None if credit is None else credit[ra:rb], w.bucket_events,
                                  w.pair_ids, w.level, drift_credit=None if credit is None else drift_credit[ra:rb])
        return out, windows

    @staticmethod
    def _event_z(view: WindowView, w: _Windows, rows: np.ndarray | None = None) -> np.ndarray:
        """Calibrated statistics of each event's window ``[len(rows), 4]`` (all of the view's events when
        ``rows``, positions into ``w.rows``, is None), the field shift's positive part scaled by the event's credit."""
        rows = np.arange(len(w.rows)) if rows is None else rows
        if not len(w.stats):
            return np.empty((len(rows), len(STATISTICS)))
        return _calibrated_z(w.stats, view.median, view.scale, w.window_of_row[rows],
                             None if w.credit is None else w.credit[rows],
                             None if w.drift_credit is None else w.drift_credit[rows])

    def _score(self, X) -> np.ndarray:
        return self.best_view_score(self.view_scores(X)[0])

    @staticmethod
    def best_view_score(per_view: np.ndarray) -> np.ndarray:
        """Events' scores from :meth:`view_scores`: the largest over views (0 for an event in no view)."""
        best = per_view.max(axis=1) if per_view.shape[1] else np.zeros(per_view.shape[0])
        return np.where(np.isfinite(best), best, 0.0)

    def _explain_vocabulary(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Column names an explanation can use, the code of each view's column, of each field's source column
        (one per distinct source) and, per numeric field, the index of its source among those."""
        sources = getattr(self.encoder, "sources_", {})
        field_sources = [sources.get(name, name) for name in self.fields_]
        distinct = list(dict.fromkeys(field_sources))
        vocabulary = list(dict.fromkeys([v.column for v in self.views_] + distinct))
        code = {c: i for i, c in enumerate(vocabulary)}
        view_code = np.array([code[v.column] for v in self.views_], dtype=np.int64)
        field_code = np.array([code[c] for c in distinct], dtype=np.int64)
        where = {c: i for i, c in enumerate(distinct)}
        field_group = np.array([where[c] for c in field_sources], dtype=np.int64)
        return vocabulary, view_code, field_code, field_group

    def explain(self, X, n_fields: int = 2) -> pd.DataFrame:
        """Why each event scores: its most unusual window (view, entity value, start, size, statistic, field).

        ``fields`` lists the raw columns to look at: the entity column, then the ``n_fields`` numeric fields
        whose window mean moved most (their source columns).
        """
        events, vectors = self._check_input(X)
        per_view, windows = self._view_scores(events, vectors)
        return self.explain_scored(events.index, per_view, windows, n_fields=n_fields)

    def explain_scored(self, index: pd.Index, per_view: np.ndarray, windows: list[_Windows], *,
                       rows: np.ndarray | None = None, n_fields: int = 2) -> pd.DataFrame:
        """:meth:`explain` from the output of :meth:`view_scores` (no second scoring pass), for the batch
        positions ``rows`` only (all when None): explaining the flagged few is what scoring a large batch needs."""
        n_batch = per_view.shape[0]
        rows = np.arange(n_batch) if rows is None else np.asarray(rows, dtype=np.int64)
        n = len(rows)
        sub = per_view[rows]
        best_view = np.argmax(sub, axis=1) if sub.shape[1] else np.zeros(n, dtype=np.int64)
        score = sub[np.arange(n), best_view] if sub.shape[1] else np.zeros(n)
        view_col = np.array([v.column for v in self.views_], dtype=object)
        entity = np.full(n, None, dtype=object)
        start = np.full(n, np.nan)
        size = np.zeros(n, dtype=np.int64)
        statistic = np.full(n, None, dtype=object)
        vocabulary, view_code, field_code, field_group = self._explain_vocabulary()
        codes = np.full((n, 1 + max(int(n_fields), 0)), -1, dtype=np.int64)
        for j, (view, w) in enumerate(zip(self.views_, windows)):
            mine = np.flatnonzero((best_view == j) & np.isfinite(score))
            if not len(mine) or not len(w.rows):
                continue
            at = np.searchsorted(w.rows, rows[mine])  # positions in w.rows (sorted batch rows)
            win = w.window_of_row[at]
            z = self._event_z(view, w, at)
            entity[mine] = w.value[win]
            start[mine] = w.start_ms[win]
            size[mine] = w.count[win].astype(np.int64)
            statistic[mine] = np.asarray(STATISTICS, dtype=object)[np.argmax(z, axis=1)]
            codes[mine, 0] = view_code[j]
            if n_fields and len(field_code):
                needed = np.zeros(len(w.count), dtype=bool)  # only the windows some event is explained by
                needed[win] = True
                used = np.flatnonzero(needed)
                back = (np.cumsum(needed) - 1)[win]
                t = w.field_t[used]
                per_source = max_by_group(t, field_group, len(field_code))
                per_source[:, field_code == view_code[j]] = -np.inf  # the entity column is already named
                k = min(int(n_fields), per_source.shape[1])
                top = np.argsort(-per_source, axis=1, kind="stable")[:, :k]
                chosen = np.where(np.isfinite(np.take_along_axis(per_source, top, axis=1)), field_code[top], -1)
                codes[mine, 1:1 + k] = chosen[back]
        # one frame from its columns (a column set at a time cost ~0.1 ms each)
        return pd.DataFrame({"window_score": np.where(np.isfinite(score), score, 0.0),
                             "view": np.where(np.isfinite(score), view_col[best_view], None),
                             "entity": entity,
                             "window_start": pd.to_datetime(start, unit="ms", utc=True),
                             "window_events": size,
                             "statistic": statistic,
                             "fields": _rows_as_lists(codes, vocabulary)}, index=index[rows])

    # ------------------------------------------------------------------ persistence (JSON + arrays, no pickle)
    _PARAMS = ("n_embedding", "window", "min_distinct", "max_distinct", "max_entities", "prior_events",
               "prior_windows", "min_var_ratio", "max_t", "max_weight", "drift_smoothing", "drift_clip",
               "credit_scale", "threshold_percentile", "keep_coarser_views", "fill_rate_fields")

    def to_state(self, prefix: str = "window") -> tuple[dict, dict[str, np.ndarray]]:
        """The fitted detector as a JSON-able dict and named float/int arrays (for a model package)."""
        require_fitted(self, "views_")
        state = {
            "params": {name: getattr(self, name) for name in self._PARAMS},
            "field_names": list(self.field_names),
            "time_column": self.time_column_,
            "time_unit": self.time_unit_,
            "threshold_": float(self.threshold_),
            "views": [{"column": v.column, "template_masks": v.template_masks, "entities": list(v.entities)}
                      for v in self.views_],
            "dropped_views": list(getattr(self, "dropped_views_", [])),
        }
        arrays = {f"{prefix}/train_scores_sorted": np.asarray(self.train_scores_, dtype=np.float64),
                  f"{prefix}/population_mean": self.population_.mean, f"{prefix}/population_var": self.population_.var}
        for i, v in enumerate(self.views_):
            for name in ("median", "scale"):
                arrays[f"{prefix}/{i}/{name}"] = np.ascontiguousarray(getattr(v, name), dtype=np.float64)
            for name in _MEMORY:
                arrays[f"{prefix}/{i}/memory/{name}"] = np.ascontiguousarray(v.memory[name])
        return state, arrays

    @classmethod
    def from_state(cls, encoder, state: dict, arrays: dict[str, np.ndarray],
                   prefix: str = "window") -> "EntityWindowDetector":
        """Rebuild a fitted detector from :meth:`to_state` output (``KeyError``/``ValueError`` if inconsistent)."""
        # a package written before ``fill_rate_fields`` existed used the missing-value indicators
        params = {"fill_rate_fields": True, **state["params"]}
        det = cls(encoder, field_names=list(state["field_names"]), **params)
        det.window_ms_ = float(pd.Timedelta(det.window).total_seconds() * 1000.0)
        det.time_column_, det.time_unit_ = state["time_column"], state.get("time_unit")
        det.n_features_in_ = int(det.n_embedding) + len(det.field_names)
        kept = det._kept_dims(det.n_features_in_)
        det.fields_ = [det.field_names[i - int(det.n_embedding)] for i in kept[int(det.n_embedding):]]
        det.population_ = _Population(np.asarray(arrays[f"{prefix}/population_mean"], dtype=np.float64),
                                      np.asarray(arrays[f"{prefix}/population_var"], dtype=np.float64))
        if det.population_.mean.shape != (len(kept),) or det.population_.var.shape != (len(kept),):
            raise ValueError("window view: the population baseline does not match the fields")
        det.dropped_views_ = list(state.get("dropped_views", []))
        det.views_ = []
        for i, v in enumerate(state["views"]):
            memory = {name: np.asarray(arrays[f"{prefix}/{i}/memory/{name}"]) for name in _MEMORY}
            n_entities = len(v["entities"])
            if memory["s1"].shape != (n_entities + 1, len(kept)) or memory["s2"].shape != memory["s1"].shape \
                    or memory["n"].shape != (n_entities + 1,) or memory["lc_sum"].shape != (n_entities + 1,) \
                    or memory["n_win"].shape != (n_entities + 1,) \
                    or memory["train_keys"].shape != memory["train_counts"].shape:
                raise ValueError(f"window view {i} ({v['column']}): arrays do not match its entities and fields")
            view = det._view_from_sums(v["column"], v["template_masks"], pd.Index(v["entities"], dtype=object), memory)
            view.median = np.asarray(arrays[f"{prefix}/{i}/median"], dtype=np.float64)
            view.scale = np.asarray(arrays[f"{prefix}/{i}/scale"], dtype=np.float64)
            if view.median.shape != (len(STATISTICS),) or view.scale.shape != (len(STATISTICS),):
                raise ValueError(f"window view {i} ({v['column']}): calibration arrays have the wrong shape")
            det.views_.append(view)
        det.train_scores_ = np.sort(np.asarray(arrays[f"{prefix}/train_scores_sorted"], dtype=np.float64))
        det.threshold_ = float(state["threshold_"])
        return det
