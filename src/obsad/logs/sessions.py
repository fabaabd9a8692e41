"""Sessions: the lines of one HDFS block or one nova instance, in order, and time-ordered splits of them.

Anomaly labels are per session, and the sequence model reads a session's events in order, so the log table (one row
per line, many sessions interleaved) is regrouped into one row per session holding its events as an array.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..splits import time_split


def _sortable(keys: pd.Series):
    """Keys as a plain numpy array (fast to sort), and how to turn picked keys back into the caller's type."""
    if isinstance(keys.dtype, pd.DatetimeTZDtype):
        tz = keys.dtype.tz

        def restore(picked):
            return pd.Series(picked).dt.tz_localize("UTC").dt.tz_convert(tz)

        return keys.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(), restore
    numpy_dtype = getattr(keys.dtype, "numpy_dtype", None)  # nullable Int64 and the like
    values = keys.to_numpy(dtype=numpy_dtype) if numpy_dtype is not None else keys.to_numpy()
    return values, pd.Series


def session_sequences(session_id, order_key, values, *, name: str | None = None) -> pd.DataFrame:
    """Group ``values`` by ``session_id`` into one ordered array per session.

    Within a session, lines are ordered by ``order_key`` (a timestamp or the line number); ties keep their input
    order, which matters for HDFS, whose timestamps have one-second resolution: pass ``line_no`` when the file
    order is the truth. Lines with no session are left out. Returns one row per session, earliest first:
    ``session_id``, ``start`` (its first ``order_key``), ``n_events`` and the value arrays in a column named
    ``name`` (default: the name of ``values``, else ``"values"``).
    """
    sessions = pd.Series(session_id).reset_index(drop=True)
    keys = pd.Series(order_key).reset_index(drop=True)
    vals = pd.Series(values).reset_index(drop=True)
    if not len(sessions) == len(keys) == len(vals):
        raise ValueError(f"session_id, order_key and values differ in length: {len(sessions)}, {len(keys)}, "
                         f"{len(vals)}")
    column = name or (values.name if isinstance(values, pd.Series) and values.name is not None else "values")
    has_session = sessions.notna().to_numpy()
    if keys[has_session].isna().any():
        raise ValueError(f"{int(keys[has_session].isna().sum())} lines of a session have no order key; "
                         "order by line_no instead")

    codes, uniques = pd.factorize(sessions[has_session], sort=False)
    key_values, restore = _sortable(keys[has_session])
    value_array = vals[has_session].to_numpy()
    # Two stable sorts = sort by (session, order_key), ties in input order.
    order = np.argsort(key_values, kind="stable")
    order = order[np.argsort(codes[order], kind="stable")]
    sorted_codes = codes[order]
    first = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) if len(order) else np.array([], int)
    arrays = np.split(value_array[order], first[1:]) if len(first) else []

    out = pd.DataFrame({
        "session_id": pd.array(np.asarray(uniques)[sorted_codes[first]], dtype="string[pyarrow]"),
        "start": restore(key_values[order][first]),
        "n_events": np.diff(np.r_[first, len(order)]).astype(np.int64),
        column: pd.Series(arrays, dtype=object),
    })
    return out.sort_values("start", kind="stable").reset_index(drop=True)


def split_sessions(sessions: pd.DataFrame | pd.Series,
                   fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> pd.Series:
    """Label each session ``train``/``val``/``test`` by its start: the earliest 70 % train, the next 15 % val, ...

    A random split of sessions leaks. Neighbouring sessions share their period: the same jobs and releases, so the
    same templates and parameter values, and the same load, so the same interleavings and timings; an incident
    touches many sessions at once. Shuffled into both sides, these make the test look like the training data and
    flatter the detector; splitting by start time is what deployment sees (train on the past, score the future).
    A session is one row, so it is never in two splits; sessions starting at the same instant share a split.
    ``sessions`` is the frame of :func:`session_sequences` (its ``start`` column) or a Series of start times.
    """
    starts = sessions["start"] if isinstance(sessions, pd.DataFrame) else pd.Series(sessions)
    return time_split(starts, fractions)
