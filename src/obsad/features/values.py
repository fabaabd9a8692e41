"""How any column, whatever its dtype, is read: as float64 numbers, as epoch milliseconds, or as canonical strings.

Real exports drift: a status code is an ``int64`` in one file and the string ``"200"`` in the next, a boolean
arrives as ``"true"``, an object column mixes numbers, strings and nested dicts. Role inference and encoding only
ever look at a column through the three readers below, so the same value reads the same whatever its dtype:

- :func:`to_float` — numbers (strings parsed, booleans as 0/1, datetimes as epoch ms), NaN for missing;
- :func:`to_epoch_ms` — instants in UTC milliseconds (datetime dtypes, ISO strings, epoch numbers);
- :func:`factorize` — integer codes (-1 = missing) plus the distinct values as *canonical strings*
  (``200``, ``200.0`` and ``"200"`` all read ``"200"``; ``True`` reads ``"true"``; dicts/lists read as sorted JSON).

Everything is vectorised; the only per-value Python work is on the distinct values of odd ``object`` columns.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..encodings import codes_of, dictionary_codes, known_codes, shared_encodings  # noqa: F401 (re-exported)

KIND_NUMBER = "number"
KIND_STRING = "string"
KIND_BOOL = "bool"
KIND_DATETIME = "datetime"
KIND_MIXED = "mixed"  # object column holding several Python types (dicts, lists, numbers and strings, ...)

_UNIT_TO_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
#: Up to this many values, distinct strings are numbered in a Python dict and millisecond times read from their
#: int64 storage: the same codes and numbers as Arrow's dictionary encoding and casts, without their per-call
#: cost (which is what one event pays). ``_SHORTCUTS = False`` always takes the Arrow path (see
#: tests/test_small_batches.py).
_SMALL = 64
_SHORTCUTS = True


#: The kind of each dtype that decides a column's kind by itself (all but object and categorical columns, whose
#: values decide): a scoring batch asks for ~150 columns' kinds, each ~5 µs of dtype tests otherwise.
_KIND_OF_DTYPE: dict[Any, str] = {}


def column_kind(s: pd.Series) -> str:
    """Classify a column by how its values should be read (see module docstring)."""
    dt = s.dtype
    if _SHORTCUTS:
        known = _KIND_OF_DTYPE.get(dt)
        if known is not None:
            return known
    kind = _kind_of_dtype(dt)
    if kind is not None:
        if _SHORTCUTS:
            _KIND_OF_DTYPE[dt] = kind
        return kind
    return _kind_of_values(s)


def _kind_of_dtype(dt) -> str | None:
    """:func:`column_kind` where the dtype alone decides it, else None."""
    if isinstance(dt, pd.CategoricalDtype) or (isinstance(dt, np.dtype) and dt.kind == "O"):
        return None
    if isinstance(dt, pd.ArrowDtype):
        t = dt.pyarrow_dtype
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return KIND_DATETIME
        if pa.types.is_boolean(t):
            return KIND_BOOL
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_duration(t):
            return KIND_NUMBER
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return KIND_STRING
        return KIND_MIXED
    if pd.api.types.is_bool_dtype(dt):
        return KIND_BOOL
    if pd.api.types.is_datetime64_any_dtype(dt):
        return KIND_DATETIME
    if pd.api.types.is_timedelta64_dtype(dt) or pd.api.types.is_numeric_dtype(dt):
        return KIND_NUMBER
    if isinstance(dt, pd.StringDtype):
        return KIND_STRING
    return None


def _kind_of_values(s: pd.Series) -> str:
    """:func:`column_kind` of a column whose dtype does not decide it (object, categorical): what its values are."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        return column_kind(pd.Series(np.asarray(s.astype(object)), dtype=object))
    inferred = pd.api.types.infer_dtype(s, skipna=True)
    if inferred in ("string", "empty"):
        return KIND_STRING
    if inferred in ("integer", "floating", "mixed-integer-float", "decimal"):
        return KIND_NUMBER
    if inferred == "boolean":
        return KIND_BOOL
    if inferred in ("datetime64", "datetime", "date"):
        return KIND_DATETIME
    return KIND_MIXED


def canonical(value: Any) -> str | None:
    """The canonical string of one Python value (None for missing). Used only on distinct values."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return None
        if math.isfinite(v) and v == round(v) and abs(v) < 2**63:
            return str(int(v))
        return repr(v)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist(), sort_keys=True, default=str, ensure_ascii=False)
    if value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def canonical_numbers(u: np.ndarray) -> np.ndarray:
    """Canonical strings of an array of distinct numbers: integral values print without a decimal point,
    others in numpy's shortest round-trip form (``0.5``, ``1e+20``)."""
    if u.dtype.kind in "iu":
        return u.astype(str).astype(object)
    f = np.asarray(u, dtype=np.float64)
    out = np.empty(len(f), dtype=object)
    with np.errstate(invalid="ignore"):
        integral = np.isfinite(f) & (f == np.round(f)) & (np.abs(f) < 2.0**62)
    if integral.any():
        out[integral] = f[integral].astype(np.int64).astype(str)
    if not integral.all():
        out[~integral] = f[~integral].astype(str)
    return out


def _numeric_values(s: pd.Series) -> np.ndarray:
    """float64 view of a numeric-dtype column, NaN for missing (timedeltas in seconds)."""
    if pd.api.types.is_timedelta64_dtype(s.dtype):
        return s.dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    if isinstance(s.dtype, pd.ArrowDtype) and pa.types.is_duration(s.dtype.pyarrow_dtype):
        return pd.to_timedelta(s.astype(object)).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    return s.to_numpy(dtype=np.float64, na_value=np.nan)


def to_float(s: pd.Series, kind: str | None = None) -> tuple[np.ndarray, int]:
    """Read a column as float64 (NaN = missing). Returns ``(values, n_unparsed)``.

    Strings are parsed with :func:`pandas.to_numeric` (``"true"``/``"false"`` read 1/0); present values that do
    not parse become NaN and are counted in ``n_unparsed`` so a caller can report dtype drift.
    """
    kind = kind or column_kind(s)
    if kind == KIND_NUMBER:
        return _numeric_values(s), 0
    if kind == KIND_BOOL:
        try:
            return s.to_numpy(dtype=np.float64, na_value=np.nan), 0
        except (TypeError, ValueError):
            return s.astype(object).map({True: 1.0, False: 0.0}).to_numpy(dtype=np.float64, na_value=np.nan), 0
    if kind == KIND_DATETIME:
        return to_epoch_ms(s, kind=kind)[0], 0
    present = s.notna().to_numpy()
    if kind == KIND_MIXED:
        s = pd.Series([canonical(v) for v in s.to_numpy(dtype=object)], index=s.index, dtype=object)
    try:
        x = pd.to_numeric(s, errors="coerce")
        x = x.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):  # pragma: no cover - defensive
        x = np.array([_parse_float(v) for v in s.to_numpy(dtype=object)], dtype=np.float64)
    failed = present & np.isnan(x)
    if failed.any():
        x = np.array(x, dtype=np.float64, copy=True)
        lowered = s[failed].astype(str).str.strip().str.lower()
        boolish = lowered.map({"true": 1.0, "false": 0.0}).to_numpy(dtype=np.float64, na_value=np.nan)
        x[np.flatnonzero(failed)] = boolish
        failed = present & np.isnan(x)
    return x, int(failed.sum())


def _parse_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def guess_epoch_unit(x: np.ndarray) -> str:
    """Epoch unit from magnitude: seconds (~1e9), ms (~1e12), µs (~1e15) or ns (~1e18) around the 21st century."""
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return "ms"
    m = float(np.median(np.abs(finite)))
    if m >= 1e17:
        return "ns"
    if m >= 1e14:
        return "us"
    if m >= 1e11:
        return "ms"
    return "s"


def to_epoch_ms(s: pd.Series, *, kind: str | None = None, unit: str | None = None) -> tuple[np.ndarray, int]:
    """Read a column as UTC epoch milliseconds (float64, NaN = missing). Returns ``(values, n_unparsed)``.

    Datetime dtypes: tz-aware values are converted to UTC, naive values are taken as UTC. Strings: ISO 8601
    (``2024-03-01T10:00:00.123Z``, offsets allowed). Numbers: epoch in ``unit`` (guessed from magnitude if None).
    """
    kind = kind or column_kind(s)
    if kind == KIND_DATETIME and _SHORTCUTS and _ms_unit(s.dtype):  # read the int64 storage (any size)
        ms = np.asarray(s.array.asi8)
        missing = ms == np.iinfo(np.int64).min  # NaT
        if np.all((np.abs(ms) < 2 ** 53) | missing):  # exact in float64, as Arrow's (safe) cast requires
            return np.where(missing, np.nan, ms.astype(np.float64)), 0
    if kind == KIND_DATETIME:
        arr = pa.array(s, from_pandas=True)
        if pa.types.is_date(arr.type):
            arr = pc.cast(arr, pa.timestamp("ms"))
        if not pa.types.is_timestamp(arr.type):  # pragma: no cover - defensive
            arr = pa.array(pd.to_datetime(s.astype(object), utc=True, errors="coerce"), from_pandas=True)
        ms = pc.cast(pc.cast(arr, pa.timestamp("ms", tz=arr.type.tz), safe=False), pa.int64())
        return pc.cast(ms, pa.float64()).to_numpy(zero_copy_only=False), 0
    if kind in (KIND_NUMBER, KIND_BOOL):
        x, _ = to_float(s, kind)
        unit = unit or guess_epoch_unit(x)
        return x * _UNIT_TO_MS[unit], 0
    present = s.notna().to_numpy()
    if kind == KIND_MIXED:
        s = pd.Series([canonical(v) for v in s.to_numpy(dtype=object)], index=s.index, dtype=object)
    parsed = pd.to_datetime(s, utc=True, format="ISO8601", errors="coerce")
    x = to_epoch_ms(parsed, kind=KIND_DATETIME)[0]
    failed = present & np.isnan(x)
    if failed.any():
        x = np.array(x, dtype=np.float64, copy=True)
        # numbers-as-strings in a time column: epoch values
        num, _ = to_float(s[failed], KIND_STRING)
        if np.isfinite(num).any():
            u = unit or guess_epoch_unit(num)
            x[np.flatnonzero(failed)] = num * _UNIT_TO_MS[u]
        failed = present & np.isnan(x)
    return x, int(failed.sum())


def _ms_unit(dtype) -> bool:
    """A time-zone-aware datetime dtype stored in milliseconds (what :func:`obsad.ocsf.load_events` gives)."""
    return isinstance(dtype, pd.DatetimeTZDtype) and dtype.unit == "ms"


def _encode_few(arr: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Arrow's ``dictionary_encode`` of a few strings: codes (-1 = null) and distinct values in order of first
    appearance, numbered in a dict."""
    seen: dict[str, int] = {}
    codes = [-1 if v is None else seen.setdefault(v, len(seen)) for v in arr.to_pylist()]
    return np.asarray(codes, dtype=np.int64), pa.array(list(seen), type=arr.type)


def _arrow(values) -> pa.Array:
    if _SHORTCUTS and isinstance(values, pd.Series) and isinstance(values.dtype, pd.StringDtype) \
            and values.dtype.storage == "pyarrow":  # its own storage, when one large_string chunk (~2 µs, not ~15)
        stored = values.array.__arrow_array__()
        if stored.num_chunks == 1 and stored.type == pa.large_string():
            return stored.chunk(0)
    arr = pa.array(values, type=pa.large_string(), from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def arrow_strings(s: pd.Series, kind: str | None = None) -> pa.Array:
    """The column as an Arrow ``large_string`` array of canonical strings (nulls for missing).

    Zero-copy for Arrow-backed string columns (the pandas 3 default); other kinds go through :func:`factorize`.
    """
    kind = kind or column_kind(s)
    if kind == KIND_STRING:
        try:
            return _arrow(s)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            kind = KIND_MIXED
    codes, uniques = factorize(s, kind)
    if len(s) == 0:
        return pa.array([], type=pa.large_string())
    return uniques.take(pa.array(codes, mask=codes < 0))


def factorize(s: pd.Series, kind: str | None = None, *, as_numbers: bool = False) -> tuple[np.ndarray, pa.Array]:
    """Integer codes (int64, -1 = missing) and the distinct values as canonical strings (Arrow ``large_string``).

    Two distinct raw values may share a canonical string (``1`` and ``"1"`` in one object column); callers that
    count aggregate by string. ``as_numbers=True`` reads string values that parse as numbers as those numbers,
    so a code column fitted as integers still matches when it arrives as ``"200"`` or ``"200.0"``.
    """
    kind = kind or column_kind(s)
    if kind == KIND_MIXED:
        s = pd.Series([canonical(v) for v in s.to_numpy(dtype=object)], index=s.index, dtype=object)
        kind = KIND_STRING
    if kind == KIND_DATETIME:
        ms, _ = to_epoch_ms(s, kind=kind)
        codes, u = pd.factorize(ms, use_na_sentinel=True)
        strs = pd.to_datetime(u, unit="ms", utc=True).strftime("%Y-%m-%dT%H:%M:%S.%f")
        return codes.astype(np.int64, copy=False), _arrow(np.asarray(strs, dtype=object))
    if kind == KIND_BOOL:
        codes, u = pd.factorize(to_float(s, kind)[0], use_na_sentinel=True)
        return codes.astype(np.int64, copy=False), _arrow([canonical(bool(v)) for v in u])
    if kind == KIND_NUMBER:
        x = _numeric_values(s)
        codes, u = pd.factorize(x, use_na_sentinel=True)
        return codes.astype(np.int64, copy=False), _arrow(canonical_numbers(np.asarray(u)))
    try:
        arr = _arrow(s)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return factorize(s, KIND_MIXED, as_numbers=as_numbers)
    if _SHORTCUTS and len(arr) <= _SMALL:
        codes, uniques = _encode_few(arr)
    else:
        codes, uniques = dictionary_codes(arr)
    if as_numbers and len(uniques):
        strs = np.asarray(uniques.to_numpy(zero_copy_only=False), dtype=object)
        num = pd.to_numeric(pd.Series(strs, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(num)
        if ok.any():
            strs = strs.copy()
            strs[ok] = canonical_numbers(num[ok])
            uniques = _arrow(strs)
    return codes, uniques


def all_missing_columns(df: pd.DataFrame, keys: list) -> set:
    """The keys (of ``keys``) of ``df``'s columns whose every value is missing (none when ``df`` has no rows).

    Read from the frame's blocks (one missing-value test per block of same-typed columns): selecting a column
    builds a Series (about 10 µs each, the whole budget of a one-event transform of a wide, mostly empty table).
    Where those internals are missing (another pandas), each column is read as a Series instead: the same
    answer, more slowly."""
    if not len(df):
        return set()
    columns = df.columns.tolist()
    empty = np.zeros(len(columns), dtype=bool)
    try:
        for block in df._mgr.blocks:
            values = block.values
            if isinstance(values, pd.arrays.ArrowExtensionArray):  # Arrow counts its nulls: no mask to build
                empty[block.mgr_locs.as_array] = values.__arrow_array__().null_count == len(values)
                continue
            missing = np.asarray(pd.isna(values), dtype=bool)
            empty[block.mgr_locs.as_array] = missing.all(axis=-1) if missing.ndim == 2 else missing.all()
    except AttributeError:  # pragma: no cover - another pandas: the public, slower way
        return {key for key in keys if df[key].count() == 0}
    return {key for key, e in zip(columns, empty.tolist()) if e} & set(keys)
