"""Encoding one event at a time, exactly as :meth:`FeatureEncoder.transform` encodes a one-row table.

A service answering single events cannot amortise the table machinery: building a one-row frame and reading
each of its columns back out costs milliseconds, while the event's own work is a few dictionary lookups. A
:class:`RecordEncoder` starts from the outputs of an event with every field missing (fixed per model) and
overwrites the columns the event has:

- numbers in a numeric column, times in a timestamp column and integers in a categorical one go through the
  same arithmetic and tables the transform applies to a column (:func:`~obsad.features.encoder._numeric_outputs`,
  ``_timestamp_outputs``, ``_int_data_ids``);
- any other value is encoded by its column's own transform on a one-value column, typed as the loader types it,
  and the result is remembered per (column, value): categories, addresses and templates repeat.

So every output comes from the encoder's own definitions; tests/test_single_event.py checks equality with
``transform`` on whole simulated exports.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import roles as R
from . import values as V
from .encoder import (_TRANSFORM, EncodedFeatures, FeatureEncoder, _int_code_table, _int_data_ids, _missing_outputs,
                      _numeric_outputs, _port_table, _timestamp_outputs)

#: Values remembered per column; a column that outgrows it (one value per event) starts afresh.
MEMO_SIZE = 4096
#: Roles whose outputs are remembered per value (numbers and times are computed: they rarely repeat).
_MEMO_ROLES = (R.CATEGORICAL, R.HIGH_CARDINALITY, R.IP, R.TEXT)
#: The loader's column dtypes whose values are one Python type, as :func:`plain_record` gives them.
_PYTHON_TYPE = {"str": str, "string": str, "Int64": int, "float64": float, "boolean": bool}


def one_value_column(value: Any) -> pd.Series:
    """``value`` as the one-event column :func:`obsad.ocsf.load_events` would give it."""
    from ..ocsf.load import _infer_series, _ms_series, _normalise_dtype

    if isinstance(value, np.datetime64):
        return _ms_series(np.array([value.astype("datetime64[ms]").astype(np.int64)]))
    column = _infer_series(np.array([value], dtype=object))
    return _normalise_dtype(column) if column.dtype == object else column


class RecordEncoder:
    """Encodes flat events (``{column: value}``, as :func:`obsad.ocsf.load.plain_record` gives them) one at a
    time with a fitted :class:`FeatureEncoder`. Threads may share one: its memo is a plain dict (a value may be
    computed twice, never wrongly)."""

    def __init__(self, encoder: FeatureEncoder, memo_size: int = MEMO_SIZE) -> None:
        encoder._check_fitted()
        self.encoder = encoder
        self.memo_size = int(memo_size)
        self.clip = float(encoder.clip)
        caches = getattr(encoder, "_caches", None)
        if caches is None:
            caches = encoder._caches = {s["column"]: {} for s in encoder.columns_}
        self._caches = caches
        d_num, d_cat = len(encoder.numeric_names_), len(encoder.categorical_names_)
        self._missing_num = np.empty(d_num, dtype=np.float32)
        self._missing_cat = np.empty(d_cat, dtype=np.int64)
        self._plans: dict[str, tuple[dict, int, int]] = {}
        self._memo: dict[str, dict] = {}
        i_num = i_cat = 0
        for st in encoder.columns_:
            if st["role"] not in _TRANSFORM:
                continue
            nums, cats = _missing_outputs(st, caches.setdefault(st["column"], {}), self.clip)
            self._missing_num[i_num:i_num + len(nums)] = np.asarray(nums, dtype=np.float64)
            self._missing_cat[i_cat:i_cat + len(cats)] = np.asarray(cats, dtype=np.int64)
            self._plans[st["column"]] = (st, i_num, i_cat)
            self._memo[st["column"]] = {}
            i_num += len(st["numeric"])
            i_cat += len(st["categorical"])
        if (i_num, i_cat) != (d_num, d_cat):
            raise RuntimeError("internal error: output widths disagree with the fitted state")

    def prewarm(self, frame: pd.DataFrame) -> int:
        """Remember the outputs of the values of ``frame`` (a table as :func:`obsad.ocsf.load_events` gives it, e.g.
        the package's reference events), most frequent first, up to the memo size per column: each column is
        encoded once, as a column (its outputs depend on each row's own value), so the first events a service sees
        find their addresses, hosts and categories remembered. Returns the number of values remembered."""
        n = 0
        for column, (st, _, _) in self._plans.items():
            if column not in frame.columns or st["role"] not in _MEMO_ROLES:
                continue
            values = frame[column]
            python_type = _PYTHON_TYPE.get(str(values.dtype))
            if python_type is None:
                continue
            counts = values.value_counts(dropna=True)
            distinct = counts.index[: self.memo_size]
            if not len(distinct):
                continue
            nums, cats, _ = _TRANSFORM[st["role"]](st, pd.Series(distinct, dtype=values.dtype),
                                                   self._caches[column], self.clip)
            memo = self._memo[column]
            for i, value in enumerate(distinct.tolist()):
                memo[(python_type, python_type(value))] = ([a[i] for a in nums], [a[i] for a in cats])
            n += len(distinct)
        return n

    @property
    def columns(self) -> frozenset[str]:
        """The columns an event is read for."""
        return frozenset(self._plans)

    def _outputs(self, st: dict, value: Any) -> tuple[list, list]:
        kind, role = type(value), st["role"]
        number = kind is int or kind is float
        if role == R.NUMERIC and number:
            return [a[0] for a in _numeric_outputs(st, np.array([float(value)]), self.clip)], []
        if role == R.TIMESTAMP and (number or kind is np.datetime64):
            if number:  # epoch numbers, in the column's unit (read from the magnitude where none was fitted)
                x = np.array([float(value)])
                ms = x * V._UNIT_TO_MS[st.get("unit") or V.guess_epoch_unit(x)]
            else:
                ms = np.array([float(value.astype("datetime64[ms]").astype(np.int64))])
            return [a[0] for a in _timestamp_outputs(st, ms)], []
        if role == R.CATEGORICAL and kind is int:  # integer codes and ports: the column's dense id table
            cache = self._caches[st["column"]]
            table = _port_table(cache, st["vocab"]) if st.get("port_ranges") else _int_code_table(cache, st["vocab"])
            if table is not None:
                return [], [_int_data_ids(table, np.array([value], dtype=np.int64), None)[0]]
        memo = self._memo[st["column"]]
        key = (kind, value)
        found = memo.get(key)
        if found is None:
            nums, cats, _ = _TRANSFORM[st["role"]](st, one_value_column(value), self._caches[st["column"]], self.clip)
            found = ([a[0] for a in nums], [a[0] for a in cats])
            if len(memo) >= self.memo_size:
                memo.clear()
            memo[key] = found
        return found

    def encode(self, record: dict[str, Any]) -> EncodedFeatures:
        """One event's model inputs (``numeric [1, d_num]``, ``categorical [1, d_cat]``); columns the model does
        not read are ignored, absent ones read as missing."""
        num = self._missing_num.copy()
        cat = self._missing_cat.copy()
        for column, value in record.items():
            plan = self._plans.get(column)
            if plan is None or value is None:
                continue
            st, j_num, j_cat = plan
            nums, cats = self._outputs(st, value)
            for j, v in enumerate(nums):
                num[j_num + j] = v
            for j, v in enumerate(cats):
                cat[j_cat + j] = v
        enc = self.encoder
        return EncodedFeatures(numeric=num[None, :], categorical=cat[None, :], numeric_names=enc.numeric_names_,
                               categorical_names=enc.categorical_names_, cardinalities=enc.cardinalities_,
                               sources=enc.sources_, report={"n_rows": 1})
