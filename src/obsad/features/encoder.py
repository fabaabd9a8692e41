"""The :class:`FeatureEncoder`: any flat event table in, a numeric block and categorical ids out.

``fit`` infers a role per column (:mod:`obsad.features.roles`) and learns that role's parameters; ``transform``
applies them column by column in sorted name order, on blocks of rows, as (column, block) tasks in parallel
threads (the heavy lifting — factorising, regex templating, arithmetic — runs in numpy/pyarrow code that
releases the GIL). Every output value depends only on its own row and the fitted state, so neither threads nor
blocks change a bit of the result. Per column, work is done once per *distinct* value where that is cheaper
(IP parsing, templating of text, frequencies), or as one lookup per row where that is (string categories
through one hashing pass into the small vocabulary, integer codes through a dense table: no hashing at all).
Each task writes its outputs into a column-major buffer; the row-major outputs are filled from it by a blocked
transpose, in parallel too.

Outputs per role (``c`` = the column name; numeric outputs, then categorical ones):

- ``numeric``: ``c`` (scaled) and ``c.missing`` if the column had missing values in training;
- ``timestamp``: ``c.hour_sin``, ``c.hour_cos``, ``c.dow_sin``, ``c.dow_cos`` (UTC), and ``c.missing`` likewise;
- ``categorical``: ``c``; for a port column of mostly one-off values (:mod:`obsad.features.roles`), ``c.range``
  instead: its IANA range (``<well-known>``, ``<registered>``, ``<dynamic>``) or, for a frequent well-known port,
  the port itself;
- ``ip``: ``c.private``, ``c.freq``; ``c.prefix16``, ``c.prefix24``;
- ``text``: ``c.length``; ``c.template``;
- ``high_cardinality``: ``c.freq``; ``c`` and, for domain-like values, ``c.domain``;
- ``drop_*`` / ``excluded``: nothing.

Categorical ids: 0 = missing, 1 = rare or unknown, 2.. = the vocabulary (values seen at least
``max(min_frequency, ceil(min_frequency_ratio × filled rows))`` times in training, the ``max_categories`` most
frequent, ties by value). A value never seen maps to 1, never
to an error. Numeric outputs are float32, finite, clipped to ``[-clip, clip]``.

The fitted state is plain JSON (:meth:`FeatureEncoder.to_dict`, :meth:`FeatureEncoder.save`); a loaded encoder
produces bit-identical outputs. No pickle.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from itertools import repeat
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from obsad.io import write_json

from . import roles as R
from . import text as T
from . import values as V

log = logging.getLogger(__name__)

FORMAT = "obsad.features.FeatureEncoder"
VERSION = 1
MISSING_ID = 0
UNKNOWN_ID = 1
N_RESERVED = 2
_IQR_TO_STD = 1.349  # IQR of a standard normal: robust scale reads like a standard deviation
_TWO_PI = 2.0 * np.pi
_DAY_MS = 86_400_000.0
_HOUR_MS = 3_600_000.0


# --------------------------------------------------------------------------------------------- output container
@dataclass
class EncodedFeatures:
    """Model inputs for ``n`` events.

    ``numeric`` float32 ``[n, d_num]`` (finite), ``categorical`` int64 ``[n, d_cat]`` (0 missing, 1 unknown/rare,
    2.. known), the output names, ``cardinalities`` (vocabulary size including the two reserved ids, one per
    categorical output: size an embedding with it), ``sources`` (output name -> input column, to name raw fields
    in explanations) and ``report`` (what the transform had to repair: missing columns, unparsable values,
    ignored columns).
    """

    numeric: np.ndarray
    categorical: np.ndarray
    numeric_names: list[str]
    categorical_names: list[str]
    cardinalities: list[int]
    sources: dict[str, str]
    report: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    @property
    def feature_names(self) -> list[str]:
        return list(self.numeric_names) + list(self.categorical_names)

    def take(self, rows) -> "EncodedFeatures":
        """The given rows (indices or a boolean mask), with the same names, sources and report."""
        return replace(self, numeric=self.numeric[rows], categorical=self.categorical[rows])

    def to_frame(self) -> pd.DataFrame:
        """All outputs side by side (numeric then categorical columns), for inspection."""
        num = pd.DataFrame(self.numeric, columns=self.numeric_names)
        cat = pd.DataFrame(self.categorical, columns=self.categorical_names)
        return pd.concat([num, cat], axis=1)


# --------------------------------------------------------------------------------------------------- helpers
def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _robust_center_scale(t: np.ndarray) -> tuple[float, float]:
    """Median and IQR/1.349 of finite ``t`` (std, then 1.0, when the IQR is zero)."""
    t = t[np.isfinite(t)]
    if t.size == 0:
        return 0.0, 1.0
    q25, med, q75 = (float(v) for v in np.percentile(t, [25, 50, 75]))
    scale = (q75 - q25) / _IQR_TO_STD
    if not (np.isfinite(scale) and scale > 1e-12):
        with np.errstate(all="ignore"):
            scale = float(np.std(t))
    if not (np.isfinite(scale) and scale > 1e-12):
        scale = 1.0
    return med, scale


def _ranked(keys: pa.Array, counts: np.ndarray, limit: int, min_count: int = 1) -> tuple[list[str], list[int]]:
    """Keys with their total count (equal keys summed, nulls skipped, count >= ``min_count``), most frequent
    first, ties by key (code-point order), at most ``limit``."""
    if len(keys) == 0 or limit <= 0:
        return [], []
    t = pa.table({"k": keys, "c": pa.array(np.asarray(counts, dtype=np.int64))})
    g = t.group_by("k").aggregate([("c", "sum")])
    g = g.filter(pc.and_(pc.is_valid(g["k"]), pc.greater_equal(g["c_sum"], min_count)))
    if g.num_rows == 0:
        return [], []
    order = pc.sort_indices(g, sort_keys=[("c_sum", "descending"), ("k", "ascending")])[:limit]
    g = g.take(order)
    return [str(k) for k in g["k"].to_pylist()], [int(c) for c in g["c_sum"].to_pylist()]


def _vocab(keys: pa.Array, counts: np.ndarray, min_frequency: int, max_categories: int) -> list[str]:
    return _ranked(keys, counts, max_categories, min_frequency)[0]


def _vocab_array(cache: dict, key: str, values: list[str]) -> pa.Array:
    arr = cache.get(key)
    if arr is None:
        arr = cache[key] = pa.array(values, type=pa.large_string())
    return arr


#: Exact shortcuts around fixed per-column costs of ``transform``: an all-missing column takes the outputs of a
#: missing value without being read, and a few keys are looked up in a cached dict. With ``False`` every column
#: takes the general path; tests/test_small_batches.py checks that both give the same arrays.
_SHORTCUTS = True
#: Keys are looked up one by one in a cached dict when there are at most this many (plus a quarter of the
#: vocabulary's size); more go through one Arrow hashing pass, which hashes the whole vocabulary (up to
#: ``max_frequency_values`` strings) on every call: a fixed cost that a small batch should not pay.
_SMALL_LOOKUP = 64
#: Up to this many rows, a string column's distinct values are looked up (then spread to the rows) rather than
#: every row: in a batch, few distinct values, and a vocabulary hashed once per distinct value set.
_MID_ROWS = 4096


def _few(keys, values: list) -> bool:
    """Whether looking ``keys`` up one by one costs less than hashing the vocabulary ``values`` once more."""
    return _SHORTCUTS and len(keys) <= _SMALL_LOOKUP + len(values) // 4


def _vocab_ids(cache: dict, key: str, values: list[str]) -> dict[str, int]:
    """{value: category id} of a vocabulary (the first position of a value, as Arrow's set lookup finds it)."""
    ids = cache.get(key + "/ids")
    if ids is None:
        ids = {}
        for i, v in enumerate(values):
            ids.setdefault(v, i + N_RESERVED)
        cache[key + "/ids"] = ids
    return ids


def _lookup(cache: dict, key: str, values: list[str], keys: pa.Array) -> np.ndarray:
    """Category id of each key: position in the vocabulary ``values`` + 2, or 1 when unknown (or a null key)."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    if keys.type != pa.large_string():
        keys = pc.cast(keys, pa.large_string())
    if _few(keys, values):
        ids = _vocab_ids(cache, key, values)
        return np.fromiter(map(ids.get, keys.to_pylist(), repeat(UNKNOWN_ID, len(keys))), dtype=np.int64,
                           count=len(keys))
    vocab = _vocab_array(cache, key, values)
    pos = V.codes_of(pc.index_in(keys, value_set=vocab))
    return np.where(pos >= 0, pos + N_RESERVED, UNKNOWN_ID)


def _lookup_rows(cache: dict, key: str, values: list[str], arr: pa.Array) -> np.ndarray:
    """Category id of each row of a string array: 0 for null, else as :func:`_lookup` — one hashing pass and
    one table gather, no data-dependent branches (a null is looked up as a value of its own: the value set
    ends with a null)."""
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    if _few(arr, values):
        ids = _vocab_ids(cache, key, values)
        return np.fromiter((MISSING_ID if k is None else ids.get(k, UNKNOWN_ID) for k in arr.to_pylist()),
                           dtype=np.int64, count=len(arr))
    known = V.known_codes(arr) if _SHORTCUTS else None
    if known is not None:  # the window view has encoded this column already: look up its few distinct values
        return _gather(_lookup(cache, key, values, known[1]), known[0], MISSING_ID)
    if _SHORTCUTS and len(values) > len(arr) and len(arr) <= _MID_ROWS:
        # a batch against a larger vocabulary: the batch's few distinct values looked up, then spread to rows
        # (where the vocabulary is no larger than the batch, hashing it with the rows costs less: ~30 µs
        # against ~40 for a thousand rows)
        encoded = pc.dictionary_encode(arr)
        return _gather(_lookup(cache, key, values, encoded.dictionary), V.codes_of(encoded.indices), MISSING_ID)
    tables = cache.get(key + "/rows")
    if tables is None:
        value_set = pa.array(list(values) + [None], type=pa.large_string())
        lut = np.empty(len(values) + 2, dtype=np.int64)  # index + 1: 0 not found, 1.. vocabulary, last null
        lut[0] = UNKNOWN_ID
        lut[1:-1] = np.arange(len(values), dtype=np.int64) + N_RESERVED
        lut[-1] = MISSING_ID
        tables = cache[key + "/rows"] = (value_set, lut)
    value_set, lut = tables
    if arr.type != pa.large_string():
        arr = pc.cast(arr, pa.large_string())
    return lut[V.codes_of(pc.index_in(arr, value_set=value_set)) + 1]


def _gather(per_unique: np.ndarray, codes: np.ndarray, missing_value) -> np.ndarray:
    """Spread per-distinct-value outputs back to rows (code -1 = missing -> ``missing_value``)."""
    lut = np.empty(len(per_unique) + 1, dtype=per_unique.dtype)
    lut[0] = missing_value
    lut[1:] = per_unique
    return lut[codes + 1]


_IPV4_PARTS = r"^(?P<a>\d{1,3})\.(?P<b>\d{1,3})\.(?P<c>\d{1,3})\.(?P<d>\d{1,3})$"
_IPV4_PY = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})", re.ASCII)  # with fullmatch: _IPV4_PARTS


def _parse_ipv4(uniques: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised IPv4 parse: (valid, a, b, c, non-public flag) per value (octets are 0 where not valid).

    Non-public: RFC 1918, loopback, link-local, CGNAT (100.64/10) and 0/8.
    """
    if _SHORTCUTS and len(uniques) <= _SMALL_LOOKUP:  # a few: Python's re (ASCII \d, whole string, as RE2's)
        octets = [None if v is None else _IPV4_PY.fullmatch(v) for v in uniques.to_pylist()]
        a, b, c, d = np.array([[int(g) for g in m.groups()] if m else [999] * 4 for m in octets],
                              dtype=np.int64).reshape(-1, 4).T
    else:
        ext = pc.extract_regex(uniques, pattern=_IPV4_PARTS)
        a, b, c, d = (pc.fill_null(pc.cast(pc.struct_field(ext, [i]), pa.int64()), 999).to_numpy(zero_copy_only=False)
                      for i in range(4))
    valid = (a <= 255) & (b <= 255) & (c <= 255) & (d <= 255)
    a, b, c = (np.where(valid, o, 0) for o in (a, b, c))
    private = valid & (
        (a == 10) | (a == 127) | (a == 0)
        | ((a == 172) & (b >= 16) & (b <= 31))
        | ((a == 192) & (b == 168))
        | ((a == 169) & (b == 254))
        | ((a == 100) & (b >= 64) & (b <= 127))
    )
    return valid, a, b, c, private.astype(np.float32)


def _ip_other(value: str) -> tuple[str, str, float] | None:
    """(network /32, site /48, non-public) of an IPv6 address (IPv4-mapped ones read as IPv4); None if invalid."""
    import ipaddress

    try:
        addr = ipaddress.ip_address(value.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        v4 = addr.ipv4_mapped
        o = str(v4).split(".")
        return f"{o[0]}.{o[1]}.0.0/16", f"{o[0]}.{o[1]}.{o[2]}.0/24", float(v4.is_private or v4.is_loopback)
    return (str(ipaddress.ip_network((addr, 32), strict=False)), str(ipaddress.ip_network((addr, 48), strict=False)),
            float(addr.is_private or addr.is_loopback or addr.is_link_local))


def _ip_others(uniques: pa.Array, valid: np.ndarray) -> dict[int, tuple[str, str, float]]:
    """Parts of the values that are not dotted IPv4 but contain a colon (IPv6), by position."""
    if _SHORTCUTS and len(uniques) <= _SMALL_LOOKUP:  # a few: Python's ``in`` (the same literal match)
        colon = np.array([v is not None and ":" in v for v in uniques.to_pylist()], dtype=bool) & ~valid
    else:
        colon = pc.fill_null(pc.match_substring(uniques, ":"), False).to_numpy(zero_copy_only=False) & ~valid
    out = {}
    for i in np.flatnonzero(colon):
        parts = _ip_other(uniques[int(i)].as_py())
        if parts is not None:
            out[int(i)] = parts
    return out


def _ip_keys(uniques: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Per distinct address: network key (``a.b.0.0/16``; ``/32`` for IPv6), subnet key (``a.b.c.0/24``;
    ``/48``) and the non-public flag. A value that is not an address gets null keys and flag 0."""
    n = len(uniques)
    if n == 0:
        empty = pa.array([], type=pa.large_string())
        return empty, empty, np.zeros(0, dtype=np.float32)
    valid, a, b, c, private = _parse_ipv4(uniques)
    sa, sb, sc = (a.astype(str).astype(object), b.astype(str).astype(object), c.astype(str).astype(object))
    k16 = np.where(valid, sa + "." + sb + ".0.0/16", None)
    k24 = np.where(valid, sa + "." + sb + "." + sc + ".0/24", None)
    for i, (p16, p24, flag) in _ip_others(uniques, valid).items():
        k16[i], k24[i], private[i] = p16, p24, flag
    return pa.array(k16, type=pa.large_string()), pa.array(k24, type=pa.large_string()), private


def _ip_lookup_tables(cache: dict, key: str, vocab: list[str], shift: tuple[int, ...]) -> tuple:
    """(int index of the IPv4 vocabulary keys, their vocabulary positions, {any key: position}, {int key: id}
    when the int keys are distinct) — cached."""
    tables = cache.get(key)
    if tables is None:
        ints, pos, other = [], [], {}
        for i, v in enumerate(vocab):
            octets = v.split("/")[0].split(".")
            if ":" not in v and len(octets) == 4:
                ints.append(sum(int(o) << s for o, s in zip(octets, shift)))
                pos.append(i)
            other[v] = i  # every key, for the values parsed in Python (IPv6, IPv4-mapped)
        index = pd.Index(np.asarray(ints, dtype=np.int64))
        ids = {k: p + N_RESERVED for k, p in zip(ints, pos)} if index.is_unique else None  # for a few keys
        tables = cache[key] = (index, np.asarray(pos, dtype=np.int64), other, ids)
    return tables


def _ip_ids(tables: tuple, int_keys: np.ndarray, valid: np.ndarray, others: dict, which: int) -> np.ndarray:
    index, pos, other, int_ids = tables
    ids = np.full(len(int_keys), UNKNOWN_ID, dtype=np.int64)
    if valid.any() and len(index):
        keys = int_keys[valid]
        if _SHORTCUTS and len(keys) <= _SMALL_LOOKUP and int_ids is not None:  # a few: a dict, no index set-up
            ids[valid] = [int_ids.get(k, UNKNOWN_ID) for k in keys.tolist()]
        else:
            hit = index.get_indexer(keys)
            ids[valid] = np.where(hit >= 0, pos[np.maximum(hit, 0)] + N_RESERVED, UNKNOWN_ID)
    for i, parts in others.items():
        j = other.get(parts[which])
        if j is not None:
            ids[i] = j + N_RESERVED
    return ids


# ----------------------------------------------------------------------------------------------- role codecs
# Each role has a fit function (profile, hints, encoder) -> JSON-able state, and a transform function
# (state, series, cache) -> (numeric outputs, categorical outputs, n_unparsed).


def _fit_numeric(p: R.ColumnProfile, hints: dict, enc: "FeatureEncoder") -> dict:
    x = p.floats
    finite = x[np.isfinite(x)]
    heavy = hints.get("log")
    if heavy is None:
        heavy = R.heavy_tail(finite, enc.heavy_tail_skew, enc.heavy_tail_ratio)[0]
    fill = float(np.median(finite)) if finite.size else 0.0
    t = _signed_log1p(finite) if heavy else finite
    center, scale = _robust_center_scale(t)
    indicator = bool(np.isnan(x).any())
    return {
        "log": bool(heavy), "fill": fill, "center": center, "scale": scale, "missing_indicator": indicator,
        "numeric": [p.name] + ([f"{p.name}.missing"] if indicator else []),
    }


def _tf_numeric(st: dict, s: pd.Series, cache: dict, clip: float):
    x, bad = V.to_float(s)
    return _numeric_outputs(st, x, clip), [], bad


def _numeric_outputs(st: dict, x: np.ndarray, clip: float) -> list[np.ndarray]:
    """A numeric column's outputs from its values as float64 (NaN = missing)."""
    miss = np.isnan(x)
    x = np.where(miss, st["fill"], x)
    if st["log"]:
        x = _signed_log1p(x)
    with np.errstate(invalid="ignore", over="ignore"):
        z = (x - st["center"]) / st["scale"]
    z = np.nan_to_num(z, nan=0.0, posinf=clip, neginf=-clip)
    np.clip(z, -clip, clip, out=z)
    out = [z.astype(np.float32)]
    if st["missing_indicator"]:
        out.append(miss.astype(np.float32))
    return out


def _fit_timestamp(p: R.ColumnProfile, hints: dict, enc: "FeatureEncoder") -> dict:
    ms, _ = V.to_epoch_ms(p.series, kind=p.kind, unit=hints.get("unit"))
    indicator = bool(np.isnan(ms).any())
    names = [f"{p.name}.{k}" for k in ("hour_sin", "hour_cos", "dow_sin", "dow_cos")]
    return {"unit": hints.get("unit"), "missing_indicator": indicator,
            "numeric": names + ([f"{p.name}.missing"] if indicator else [])}


def _cyclic(ms: np.ndarray) -> list[np.ndarray]:
    """Hour-of-day and day-of-week angles (UTC, Monday = 0, continuous) of epoch ms; NaN -> all zeros.

    The trigonometry runs on the present values only (a sparse time column costs what its filled rows cost)."""
    miss = np.isnan(ms)
    if not miss.any():
        return _cyclic_present(ms)
    rows = np.flatnonzero(~miss)
    out = []
    for values in _cyclic_present(ms[rows]):
        o = np.zeros(len(ms), dtype=np.float32)
        o[rows] = values
        out.append(o)
    return out


def _cyclic_present(ms: np.ndarray) -> list[np.ndarray]:
    day_ms = np.mod(ms, _DAY_MS)
    hours = day_ms / _HOUR_MS
    dow = np.mod(np.floor(ms / _DAY_MS) + 3.0, 7.0) + hours / 24.0  # 1970-01-01 was a Thursday (3)
    ah = hours * (_TWO_PI / 24.0)
    ad = dow * (_TWO_PI / 7.0)
    return [np.sin(ah).astype(np.float32), np.cos(ah).astype(np.float32),
            np.sin(ad).astype(np.float32), np.cos(ad).astype(np.float32)]


def _tf_timestamp(st: dict, s: pd.Series, cache: dict, clip: float):
    ms, bad = V.to_epoch_ms(s, unit=st.get("unit"))
    return _timestamp_outputs(st, ms), [], bad


def _timestamp_outputs(st: dict, ms: np.ndarray) -> list[np.ndarray]:
    """A timestamp column's outputs from its values as epoch milliseconds (float64, NaN = missing)."""
    out = _cyclic(ms)
    if st["missing_indicator"]:
        out.append(np.isnan(ms).astype(np.float32))
    return out


def _port_keys(values: np.ndarray, counts: np.ndarray, min_count: int) -> list[str | None]:
    """Vocabulary key of each distinct port number: the number itself for a well-known port seen ``min_count``
    times, else its IANA range label (None for a value that is no port number)."""
    keys: list[str | None] = []
    for v, c in zip(values.tolist(), counts.tolist()):
        if not (float(v).is_integer() and 0 <= v <= R.MAX_PORT):
            keys.append(None)
            continue
        label = next(lab for lab, lo, hi in R.PORT_RANGES if lo <= v <= hi)
        keys.append(str(int(v)) if label == R.PORT_RANGES[0][0] and c >= min_count else label)
    return keys


def _fit_port_ranges(p: R.ColumnProfile, enc: "FeatureEncoder") -> dict:
    x = p.floats
    values, counts = np.unique(x[np.isfinite(x)], return_counts=True)
    min_count = enc._min_count(p.n_present)
    keys = pa.array(_port_keys(values, counts, min_count), type=pa.large_string())
    vocab = _vocab(keys, counts, min_count, enc.max_categories)
    shown = ", ".join(vocab[:8]) + (", ..." if len(vocab) > 8 else "")
    return {"vocab": vocab, "as_numbers": True, "port_ranges": True, "categorical": [f"{p.name}.range"],
            "cardinalities": [len(vocab) + N_RESERVED], "reason_suffix": f"; {len(vocab)} known: {shown}"}


def _port_table(cache: dict, vocab: list[str]) -> tuple[int, np.ndarray]:
    """Dense id table over 0..65535 for a port-range state (see :func:`_int_code_ids`): each port reads its
    exact id when kept, else its range's id (1 when that range never made the vocabulary). Cached."""
    table = cache.get("ports")
    if table is None:
        pos = {v: i + N_RESERVED for i, v in enumerate(vocab)}
        lut = np.full(R.MAX_PORT + 2, UNKNOWN_ID, dtype=np.int64)  # lut[port + 1]; lut[0]: no port number
        for label, lo, hi in R.PORT_RANGES:
            lut[lo + 1:hi + 2] = pos.get(label, UNKNOWN_ID)
        for v, i in pos.items():
            if v.isascii() and v.isdigit() and int(v) <= R.MAX_PORT:
                lut[int(v) + 1] = i
        table = cache["ports"] = (0, lut)
    return table


def _tf_port_ranges(st: dict, s: pd.Series, cache: dict) -> np.ndarray:
    kind = V.column_kind(s)
    table = _port_table(cache, st["vocab"])
    if kind == V.KIND_NUMBER:
        return _int_code_ids(table, s, kind)
    # ports as strings (or any drifted dtype): parsed; a present value that is no number is unknown, not missing
    x, _ = V.to_float(s, kind)
    ids = _float_code_ids(table, x)
    ids[np.isnan(x) & s.notna().to_numpy()] = UNKNOWN_ID
    return ids


def _fit_categorical(p: R.ColumnProfile, hints: dict, enc: "FeatureEncoder") -> dict:
    if hints.get("port_ranges"):
        return _fit_port_ranges(p, enc)
    as_numbers = bool(hints.get("as_numbers", False)) or bool(hints.get("as_strings", False))
    if as_numbers and p.kind in (V.KIND_STRING, V.KIND_MIXED):
        codes, uniques = V.factorize(p.series, p.kind, as_numbers=True)
        counts = np.bincount(codes[codes >= 0], minlength=len(uniques)).astype(np.int64)
    else:
        _, uniques = p.factorized
        counts = p.counts
    vocab = _vocab(uniques, counts, enc._min_count(p.n_present), enc.max_categories)
    return {"vocab": vocab, "as_numbers": as_numbers, "categorical": [p.name],
            "cardinalities": [len(vocab) + N_RESERVED]}


def _int_code_table(cache: dict, vocab: list[str]) -> tuple[int, np.ndarray] | None:
    """Dense id table ``(low, lut)`` for a vocabulary whose number-like entries are all integers in a small
    range (codes): ``lut[v - low + 1]`` is the id of integer ``v``, ``lut[0]`` the unknown id. None when a number-like entry is not an integer
    or the range is wide — the caller then goes through :func:`obsad.features.values.factorize`. Cached.

    A number ``x`` reads ``canonical(x)``; that string is in the vocabulary iff ``x`` is an integer equal to one
    of the integer entries (entries that are not canonical numbers never equal a number's canonical string;
    integer strings have no ``.``/``e``, so a non-integral number never reads as one)."""
    if "int_codes" in cache:
        return cache["int_codes"]
    table = None
    ints, pos = [], []
    ok = True
    for i, v in enumerate(vocab):
        if re.fullmatch(r"-?\d+", v):
            iv = int(v)
            if str(iv) == v and abs(iv) <= 2**31:
                ints.append(iv)
                pos.append(i)
                continue
            ok = False
            break
        try:
            float(v)  # another number-like entry ("0.5", "1e+20", "inf"): not for the dense table
            ok = False
            break
        except ValueError:
            pass  # a plain string: no number reads as it
    if ok:
        low, high = (min(ints), max(ints)) if ints else (0, -1)
        if high - low <= 1 << 20:
            lut = np.full(high - low + 2, UNKNOWN_ID, dtype=np.int64)
            lut[np.asarray(ints, dtype=np.int64) - low + 1] = np.asarray(pos, dtype=np.int64) + N_RESERVED
            table = (low, lut)
    cache["int_codes"] = table
    return table


def _int_code_ids(table: tuple[int, np.ndarray], s: pd.Series, kind: str) -> np.ndarray:
    """Category ids of a numeric column through a dense :func:`_int_code_table` (missing -> 0), without
    data-dependent branches: integer dtypes are looked up as integers (masked ``Int64`` through its data and
    mask), anything else as float64 values of which only the integral ones inside the table's range can hit."""
    data = mask = None
    dtype = s.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        data = s.to_numpy()
    elif getattr(dtype, "kind", None) in ("i", "u") and hasattr(s.array, "_data") and hasattr(s.array, "_mask"):
        data, mask = s.array._data, s.array._mask  # pandas masked integer array
    if data is not None and data.dtype.kind == "u" and data.dtype.itemsize == 8:
        data = None  # uint64 beyond int64: the float path handles it
    if data is not None:
        return _int_data_ids(table, data.astype(np.int64, copy=False), mask)
    return _float_code_ids(table, V.to_float(s, kind)[0])


def _int_data_ids(table: tuple[int, np.ndarray], data: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """:func:`_int_code_ids` of int64 values (``mask``: True = missing, or None)."""
    low, lut = table
    high = low + len(lut) - 2
    inside = (data >= low) & (data <= high)
    k = (data - (low - 1)) * inside  # 1.. inside the table, 0 (unknown) outside; overflow only where inside=0
    out = lut[k]
    if mask is not None:
        out *= ~mask  # MISSING_ID is 0
    return out


def _float_code_ids(table: tuple[int, np.ndarray], x: np.ndarray) -> np.ndarray:
    """:func:`_int_code_ids` of float64 values (NaN = missing)."""
    low, lut = table
    with np.errstate(invalid="ignore", over="ignore"):
        off = x - low  # exact for every value that can hit: integers within 2**20 of ``low`` (|low| <= 2**31)
        ki = off.astype(np.int64)  # NaN/inf/huge give garbage that the checks below reject
        hit = (ki.astype(np.float64) == off) & (ki >= 0) & (ki < len(lut) - 1)
    out = lut[(ki + 1) * hit]
    out *= ~np.isnan(x)
    return out


def _tf_categorical(st: dict, s: pd.Series, cache: dict, clip: float):
    if st.get("port_ranges"):
        return [], [_tf_port_ranges(st, s, cache)], 0
    kind = V.column_kind(s)
    if kind == V.KIND_NUMBER:
        # integer codes: one table lookup per row instead of hashing values and printing the distinct ones
        table = _int_code_table(cache, st["vocab"])
        if table is not None:
            return [], [_int_code_ids(table, s, kind)], 0
    elif kind == V.KIND_STRING and not st["as_numbers"]:
        # strings: look each row up in the (small) vocabulary directly, no dictionary-encoding pass
        return [], [_lookup_rows(cache, "vocab", st["vocab"], V.arrow_strings(s, kind))], 0
    codes, uniques = V.factorize(s, kind, as_numbers=st["as_numbers"])
    return [], [_gather(_lookup(cache, "vocab", st["vocab"], uniques), codes, MISSING_ID)], 0


def _freq_state(uniques: pa.Array, counts: np.ndarray, n_missing: int, n_rows: int, cap: int) -> dict:
    values, value_counts = _ranked(uniques, counts, cap)
    return {"freq_values": values, "freq_counts": value_counts, "missing_count": int(n_missing),
            "n_fit": int(n_rows)}


def _freq(st: dict, cache: dict, uniques: pa.Array, codes: np.ndarray) -> np.ndarray:
    """log1p(training count) / log1p(training rows): 1 = in every event, 0 = never seen (or too rare to be kept
    among ``max_frequency_values``). A missing value counts as a value of its own."""
    denom = float(np.log1p(st["n_fit"])) or 1.0
    counts = cache.get("freq_counts")
    if counts is None:
        raw = np.append(np.asarray(st["freq_counts"], dtype=np.float64), 0.0)
        counts = cache["freq_counts"] = np.log1p(raw) / denom
    ids = _lookup(cache, "freq", st["freq_values"], uniques)  # 1 = unseen, 2.. = position + 2
    per = np.where(ids >= N_RESERVED, counts[np.maximum(ids - N_RESERVED, 0)], 0.0).astype(np.float32)
    return _gather(per, codes, np.float32(np.log1p(st["missing_count"]) / denom))


def _fit_ip(p: R.ColumnProfile, hints: dict, enc: "FeatureEncoder") -> dict:
    """IP addresses are split, not used whole: a busy network sees tens of thousands of addresses, almost all
    rare, and a new client address alone means little. What carries meaning is the network — the /16 (an
    organisation, a cloud region, a VPN pool) and the /24 (a subnet, an office) — and whether the address is
    internal. So: categorical /16 and /24 prefixes (capped vocabularies with a rare bucket), a non-public flag,
    and the frequency of the full address (first-time addresses read 0)."""
    _, uniques = p.factorized
    counts = p.counts
    p16, p24, _ = _ip_keys(uniques)
    st = {
        "vocab16": _vocab(p16, counts, enc._min_count(p.n_present), enc.max_categories),
        "vocab24": _vocab(p24, counts, enc._min_count(p.n_present), enc.max_categories),
    }
    st.update(_freq_state(uniques, counts, p.n_missing, p.n, enc.max_frequency_values))
    st["numeric"] = [f"{p.name}.private", f"{p.name}.freq"]
    st["categorical"] = [f"{p.name}.prefix16", f"{p.name}.prefix24"]
    st["cardinalities"] = [len(st["vocab16"]) + N_RESERVED, len(st["vocab24"]) + N_RESERVED]
    return st


def _tf_ip(st: dict, s: pd.Series, cache: dict, clip: float):
    codes, uniques = V.factorize(s)
    if len(uniques):
        valid, a, b, c, private = _parse_ipv4(uniques)
        others = _ip_others(uniques, valid)
        for i, (_, _, flag) in others.items():
            private[i] = flag
        t16 = _ip_lookup_tables(cache, "ip16", st["vocab16"], (8, 0))
        t24 = _ip_lookup_tables(cache, "ip24", st["vocab24"], (16, 8, 0))
        ids16 = _ip_ids(t16, (a << 8) | b, valid, others, 0)
        ids24 = _ip_ids(t24, (a << 16) | (b << 8) | c, valid, others, 1)
    else:
        ids16 = ids24 = np.zeros(0, dtype=np.int64)
        private = np.zeros(0, dtype=np.float32)
    c16 = _gather(ids16, codes, MISSING_ID)
    c24 = _gather(ids24, codes, MISSING_ID)
    priv = _gather(private, codes, np.float32(0.0))
    return [priv, _freq(st, cache, uniques, codes)], [c16, c24], 0


def _fit_text(p: R.ColumnProfile, hints: dict, enc: "FeatureEncoder") -> dict:
    codes, uniques = p.factorized
    templates, fired = p.templates
    vocab = _vocab(templates, p.counts, enc._min_count(p.n_present), enc.max_categories)
    n_templates = len(pc.unique(templates))
    lens = pc.utf8_length(uniques).to_numpy(zero_copy_only=False).astype(np.float64)
    per_row = np.log1p(lens[codes[codes >= 0]]) if len(uniques) else np.zeros(0)
    center, scale = _robust_center_scale(per_row)
    return {
        "masks": list(fired), "vocab": vocab, "length_center": center, "length_scale": scale,
        "factorize_first": bool(p.n_unique < 0.5 * max(p.n_present, 1)),
        "numeric": [f"{p.name}.length"], "categorical": [f"{p.name}.template"],
        "cardinalities": [len(vocab) + N_RESERVED],
        "reason_suffix": f"; {p.n_unique} values -> {n_templates} templates, {len(vocab)} kept",
    }


def _tf_text(st: dict, s: pd.Series, cache: dict, clip: float):
    # Everything is computed once per distinct value (templates, lengths, scaled lengths), then spread to rows:
    # dictionary-encoding a block is a single hashing pass, cheaper than even one regex pass over every row.
    # (``factorize_first`` in the state is kept for older files; the distinct-values path is used always.)
    codes, uniques = V.factorize(s)
    templ, _ = T.template_array(uniques, st["masks"])
    ids = _gather(_lookup(cache, "vocab", st["vocab"], templ), codes, MISSING_ID)
    center, scale = st["length_center"], st["length_scale"]
    lens = np.log1p(pc.utf8_length(uniques).to_numpy(zero_copy_only=False).astype(np.float64))
    z = np.clip((lens - center) / scale, -clip, clip).astype(np.float32)
    z_missing = np.float32(np.clip((np.float64(center) - center) / scale, -clip, clip))
    return [_gather(z, codes, z_missing)], [ids], 0


def _fit_high_cardinality(p: R.ColumnProfile, hints: dict, enc: "FeatureEncoder") -> dict:
    """Host names, user names, domains: the frequent values get their own ids (capped vocabulary), all others
    share the rare bucket — and since rarity itself is the anomaly signal (a user never seen, a host seen twice),
    a numeric frequency encoding (log training count, 0 for unseen) keeps the difference between "seen twice"
    and "seen ten thousand times" that the capped vocabulary loses. For domain-like columns (host names, e-mail
    addresses) the registered domain (:func:`obsad.features.text.registered_domain`) is a second categorical when
    it groups the values (at least two domains, at most half as many as values): a new host under a known domain and a
    never-seen domain are different events."""
    _, uniques = p.factorized
    counts = p.counts
    st = {"vocab": _vocab(uniques, counts, enc._min_count(p.n_present), enc.max_categories)}
    st.update(_freq_state(uniques, counts, p.n_missing, p.n, enc.max_frequency_values))
    domain = hints.get("domain")
    if domain is None:
        domain = T.domain_like_fraction(p.sample) >= 0.8
    st["domain_vocab"] = None
    st["numeric"] = [f"{p.name}.freq"]
    st["categorical"] = [p.name]
    st["cardinalities"] = [len(st["vocab"]) + N_RESERVED]
    if domain:
        doms = T.registered_domain(uniques)
        n_domains = len(pc.unique(doms))
        # worth an output only when it groups values (hosts under domains), not when it repeats them
        if 2 <= n_domains <= 0.5 * p.n_unique:
            st["domain_vocab"] = _vocab(doms, counts, enc._min_count(p.n_present), enc.max_categories)
            st["categorical"].append(f"{p.name}.domain")
            st["cardinalities"].append(len(st["domain_vocab"]) + N_RESERVED)
            st["reason_suffix"] = f"; domain-like: {n_domains} registered domains"
    return st


def _tf_high_cardinality(st: dict, s: pd.Series, cache: dict, clip: float):
    codes, uniques = V.factorize(s)
    cats = [_gather(_lookup(cache, "vocab", st["vocab"], uniques), codes, MISSING_ID)]
    if st.get("domain_vocab") is not None:
        doms = T.registered_domain(uniques)
        cats.append(_gather(_lookup(cache, "domain", st["domain_vocab"], doms), codes, MISSING_ID))
    return [_freq(st, cache, uniques, codes)], cats, 0


def _all_missing(s: pd.Series) -> bool:
    """Whether every value of a (non-empty) column is missing: such a column encodes exactly as an absent one."""
    return len(s) > 0 and s.count() == 0


def _missing_outputs(st: dict, cache: dict, clip: float) -> tuple[list, list]:
    """The outputs of one missing value of a column (numeric then categorical scalars): what its role's transform
    gives a missing value (every output depends on its own row only), computed once per column and cached."""
    out = cache.get("missing_outputs")
    if out is None:
        nums, cats, _ = _TRANSFORM[st["role"]](st, pd.Series([np.nan]), cache, clip)
        out = cache["missing_outputs"] = ([a[0] for a in nums], [a[0] for a in cats])
    return out


_FIT: dict[str, Callable] = {
    R.NUMERIC: _fit_numeric, R.TIMESTAMP: _fit_timestamp, R.CATEGORICAL: _fit_categorical,
    R.IP: _fit_ip, R.TEXT: _fit_text, R.HIGH_CARDINALITY: _fit_high_cardinality,
}
_TRANSFORM: dict[str, Callable] = {
    R.NUMERIC: _tf_numeric, R.TIMESTAMP: _tf_timestamp, R.CATEGORICAL: _tf_categorical,
    R.IP: _tf_ip, R.TEXT: _tf_text, R.HIGH_CARDINALITY: _tf_high_cardinality,
}
_COST = {R.TEXT: 10, R.IP: 5, R.HIGH_CARDINALITY: 2, R.TIMESTAMP: 2}  # rough transform cost per role, for scheduling
_PARTITION_ROLES = (R.CATEGORICAL, R.HIGH_CARDINALITY, R.TEXT, R.IP)
_REQUIRED = {
    R.NUMERIC: ("log", "fill", "center", "scale", "missing_indicator"),
    R.TIMESTAMP: ("unit", "missing_indicator"),
    R.CATEGORICAL: ("vocab", "as_numbers"),
    R.IP: ("vocab16", "vocab24", "freq_values", "freq_counts", "missing_count", "n_fit"),
    R.TEXT: ("masks", "vocab", "length_center", "length_scale", "factorize_first"),
    R.HIGH_CARDINALITY: ("vocab", "freq_values", "freq_counts", "missing_count", "n_fit", "domain_vocab"),
}


def _check_types(st: dict) -> None:
    """Reject a state whose values have the wrong JSON types (a hand-edited or corrupted file)."""
    name = st["column"]

    def strings(key: str, optional: bool = False) -> None:
        v = st.get(key)
        if v is None and optional:
            return
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ValueError(f"column {name!r}: {key!r} must be a list of strings")

    def number(key: str) -> None:
        v = st.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise ValueError(f"column {name!r}: {key!r} must be a finite number")

    for key in ("numeric", "categorical"):
        strings(key)
    if not all(isinstance(c, int) and c >= N_RESERVED for c in st["cardinalities"]):
        raise ValueError(f"column {name!r}: cardinalities must be integers >= {N_RESERVED}")
    role = st["role"]
    for key in ("vocab", "vocab16", "vocab24", "freq_values", "masks"):
        if key in _REQUIRED.get(role, ()):
            strings(key)
    if role == R.HIGH_CARDINALITY:
        strings("domain_vocab", optional=True)
    if role == R.CATEGORICAL and not isinstance(st.get("port_ranges", False), bool):
        raise ValueError(f"column {name!r}: 'port_ranges' must be a boolean")
    for key in ("fill", "center", "scale", "length_center", "length_scale", "missing_count", "n_fit"):
        if key in _REQUIRED.get(role, ()):
            number(key)
    if "freq_counts" in st and (
        not isinstance(st["freq_counts"], list) or len(st["freq_counts"]) != len(st["freq_values"])
        or not all(isinstance(c, int) for c in st["freq_counts"])
    ):
        raise ValueError(f"column {name!r}: 'freq_counts' must be integers matching 'freq_values'")
    if role == R.TEXT and not set(st["masks"]) <= set(T.MASK_NAMES):
        raise ValueError(f"column {name!r}: unknown text masks {sorted(set(st['masks']) - set(T.MASK_NAMES))}")
    if role == R.TIMESTAMP and st["unit"] not in (None, "s", "ms", "us", "ns"):
        raise ValueError(f"column {name!r}: unknown epoch unit {st['unit']!r}")
    expected = sum(len(st[k]) for k in ("numeric", "categorical"))
    if role in _TRANSFORM and expected == 0:
        raise ValueError(f"column {name!r}: role {role!r} without outputs")


# --------------------------------------------------------------------------------------------------- encoder
class FeatureEncoder(BaseEstimator):
    """Encode any flat event table (many OCSF classes mixed, sparse columns, unknown names) for models.

    Parameters
    ----------
    overrides:
        ``{column or glob pattern: role}`` forcing a role (one of :data:`obsad.features.roles.OVERRIDE_ROLES`);
        exact names win over patterns, patterns apply in order. A forced column is never dropped as a duplicate.
    exclude:
        columns (or glob patterns such as ``"unmapped.*"``) ignored entirely, e.g. label columns.
    min_frequency:
        a value enters a vocabulary when seen at least this many times in training (rarer ones share id 1).
    min_frequency_ratio:
        ... and in at least this fraction of the column's filled training rows (default 0.01 %: 100 times in a
        million rows), so that in a big table the chance repeats of a near-unique value stay out.
    min_code_coverage:
        an integer code column (more than ``max_code_values`` distinct values) whose vocabulary-worthy values cover
        less than this share of its filled rows is identifier-like: dropped, or encoded by IANA range for ports.
    max_categories:
        at most this many known values per categorical output (the most frequent).
    low_cardinality:
        strings with at most this many distinct values are plain categoricals.
    max_code_values:
        integer columns with at most this many distinct values are categorical codes.
    identifier_ratio:
        distinct/present ratio from which a token-like string column may be an identifier.
    text_template_ratio:
        a near-unique column whose templates number more than this fraction of its values is random (identifier).
    heavy_tail_skew, heavy_tail_ratio:
        a numeric column is log-scaled when ``|skew|`` exceeds the first or, non-negative, ``max/median`` the second.
    clip:
        numeric outputs are clipped to ``[-clip, clip]``.
    max_frequency_values:
        frequency encodings keep the training counts of at most this many values (the most frequent; the rest
        read as never seen, which for a value seen a handful of times in a big table is the same signal).
    drop_duplicates:
        drop the second copy of duplicated measures / fields (:func:`obsad.features.roles.find_duplicates`).
    n_jobs:
        threads for fit/transform (None: the CPUs available, at most 8; 1: no threads).
    chunk_rows:
        ``transform`` works on blocks of this many rows (column x block tasks share the threads; fewer, larger
        blocks mean less per-task overhead and fewer repeated distinct values). Outputs do not depend on it.

    Fitted attributes (trailing underscore): ``columns_`` (per-column JSON state, sorted), ``roles_``,
    ``numeric_names_``, ``categorical_names_``, ``cardinalities_``, ``sources_``, ``n_fit_rows_``.
    """

    def __init__(
        self,
        overrides: Mapping[str, str] | None = None,
        exclude: Sequence[str] | None = None,
        *,
        min_frequency: int = 5,
        min_frequency_ratio: float = 1e-4,
        min_code_coverage: float = 0.5,
        max_categories: int = 512,
        low_cardinality: int = 64,
        max_code_values: int = 16,
        identifier_ratio: float = 0.8,
        text_template_ratio: float = 0.5,
        heavy_tail_skew: float = 2.0,
        heavy_tail_ratio: float = 100.0,
        clip: float = 10.0,
        max_frequency_values: int = 10_000,
        drop_duplicates: bool = True,
        n_jobs: int | None = None,
        chunk_rows: int = 131_072,
    ):
        self.overrides = overrides
        self.exclude = exclude
        self.min_frequency = min_frequency
        self.min_frequency_ratio = min_frequency_ratio
        self.min_code_coverage = min_code_coverage
        self.max_categories = max_categories
        self.low_cardinality = low_cardinality
        self.max_code_values = max_code_values
        self.identifier_ratio = identifier_ratio
        self.text_template_ratio = text_template_ratio
        self.heavy_tail_skew = heavy_tail_skew
        self.heavy_tail_ratio = heavy_tail_ratio
        self.clip = clip
        self.max_frequency_values = max_frequency_values
        self.drop_duplicates = drop_duplicates
        self.n_jobs = n_jobs
        self.chunk_rows = chunk_rows

    # ------------------------------------------------------------------------------------------- plumbing
    def _check_params(self) -> None:
        for name in ("min_frequency", "max_categories", "max_frequency_values"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("low_cardinality", "max_code_values"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        for name in ("min_frequency_ratio", "min_code_coverage"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not (0 <= float(v) <= 1):
                raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
        if not (0 < float(self.identifier_ratio) <= 1):
            raise ValueError(f"identifier_ratio must be in (0, 1], got {self.identifier_ratio!r}")
        if not (float(self.clip) > 0):
            raise ValueError(f"clip must be positive, got {self.clip!r}")
        for col, role in dict(self.overrides or {}).items():
            if role not in R.OVERRIDE_ROLES:
                raise ValueError(f"override for {col!r}: unknown role {role!r}; expected one of {R.OVERRIDE_ROLES}")

    def _min_count(self, n_present: int) -> int:
        """Least training count for a vocabulary value of a column with ``n_present`` filled rows."""
        return R.vocabulary_min_count(n_present, self.min_frequency, self.min_frequency_ratio)

    def _threads(self) -> int:
        if self.n_jobs is not None and self.n_jobs > 0:
            return int(self.n_jobs)
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            n = os.cpu_count() or 1
        return max(1, min(8, n))

    def _map(self, fn: Callable, items: list, n_rows: int, cost: Callable | None = None) -> list:
        """``fn`` over ``items`` in threads (serially for small frames, where threads cost more than they save).

        Results come back in the order of ``items``; the costliest items (by ``cost``) are started first so the
        threads finish together."""
        workers = min(self._threads(), len(items))
        if workers <= 1 or n_rows < 20_000:
            return [fn(it) for it in items]
        order = sorted(range(len(items)), key=lambda i: -cost(items[i])) if cost else list(range(len(items)))
        results: list = [None] * len(items)
        with ThreadPoolExecutor(max_workers=workers) as ex:
            futures = {i: ex.submit(fn, items[i]) for i in order}
            for i, fut in futures.items():
                results[i] = fut.result()
        return results

    def _override_for(self, column: str) -> str | None:
        ov = dict(self.overrides or {})
        if column in ov:
            return ov[column]
        for pattern, role in ov.items():
            if any(ch in pattern for ch in "*?[") and fnmatchcase(column, pattern):
                return role
        return None

    def _excluded(self, column: str) -> bool:
        for pattern in self.exclude or ():
            if column == pattern or (any(ch in pattern for ch in "*?[") and fnmatchcase(column, pattern)):
                return True
        return False

    @staticmethod
    def _columns(df: pd.DataFrame) -> dict[str, Any]:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
        names: dict[str, Any] = {}
        for key in df.columns.tolist():
            name = str(key)
            if name in names:
                raise ValueError(f"duplicate column name {name!r}")
            names[name] = key
        return names

    def _check_fitted(self) -> None:
        if not hasattr(self, "columns_"):
            raise NotFittedError(
                "This FeatureEncoder instance is not fitted yet. Call 'fit' with a DataFrame first, "
                "or load a fitted encoder with FeatureEncoder.load(path)."
            )

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self, df: pd.DataFrame, y: Any = None) -> "FeatureEncoder":
        """Infer each column's role and learn its encoding from ``df``. Returns ``self``."""
        self._check_params()
        names = self._columns(df)
        n = len(df)
        excluded = sorted(c for c in names if self._excluded(c))
        candidates = sorted(c for c in names if c not in set(excluded))
        absent_overrides = sorted(
            c for c, role in dict(self.overrides or {}).items()
            if not any(ch in c for ch in "*?[") and c not in names and not self._excluded(c)
        )

        def profile(col: str) -> tuple[R.ColumnProfile, R.Inference, bool]:
            series = df[names[col]] if col in names else pd.Series(np.full(n, np.nan), index=df.index)
            p = R.ColumnProfile(col, series)
            forced = self._override_for(col)
            if forced is not None:
                hints = {"as_numbers": p.kind in (V.KIND_NUMBER,)} if forced == R.CATEGORICAL else {}
                if forced == R.TIMESTAMP and p.kind in (V.KIND_NUMBER, V.KIND_BOOL):
                    hints["unit"] = V.guess_epoch_unit(p.floats)
                why = "override" + ("; column absent at fit" if col not in names else "")
                return p, R.Inference(forced, why, hints), True
            return p, R.infer_role(p, self), False

        profiled = self._map(profile, sorted(set(candidates) | set(absent_overrides)), n)

        dropped: dict[str, tuple[str, str]] = {}
        if self.drop_duplicates:
            measures, partitions = [], []
            for p, inf, forced in profiled:
                if forced:
                    continue
                if inf.role == R.NUMERIC:
                    measures.append((p.name, p.floats, 0))
                elif inf.role == R.TIMESTAMP:
                    ms = V.to_epoch_ms(p.series, kind=p.kind, unit=inf.hints.get("unit"))[0]
                    measures.append((p.name, ms, 0 if p.kind == V.KIND_DATETIME else 1))
                elif inf.role in _PARTITION_ROLES and p.n_unique < 0.5 * p.n_present:
                    partitions.append((p.name, p.factorized[0], p.partition_key))
            # a timestamp and a plain number are never the same measure: compare within each family
            ts_names = {p.name for p, inf, _ in profiled if inf.role == R.TIMESTAMP}
            dropped.update(R.find_duplicates([m for m in measures if m[0] not in ts_names], []))
            dropped.update(R.find_duplicates([m for m in measures if m[0] in ts_names], partitions))

        def fit_one(item: tuple[R.ColumnProfile, R.Inference, bool]) -> dict:
            p, inf, forced = item
            st: dict[str, Any] = {
                "column": p.name, "role": inf.role, "reason": inf.reason, "kind": p.kind,
                "n_unique": int(p.n_unique) if p.n_present else 0, "missing_rate": float(p.missing_rate),
            }
            if p.name in dropped:
                kept, why = dropped[p.name]
                st.update(role=R.DROP_DUPLICATE, reason=f"duplicate of {kept!r}: {why}", duplicate_of=kept)
            elif inf.role in _FIT:
                st.update(_FIT[inf.role](p, inf.hints, self))
                st["reason"] += st.pop("reason_suffix", "")
            for k in ("numeric", "categorical", "cardinalities"):
                st.setdefault(k, [])
            return st

        states = self._map(fit_one, profiled, n)
        for col in excluded:
            states.append({"column": col, "role": R.EXCLUDED, "reason": "excluded by the caller", "kind": None,
                           "n_unique": None, "missing_rate": None, "numeric": [], "categorical": [],
                           "cardinalities": []})
        states.sort(key=lambda s: s["column"])
        self._set_state(states, n)
        return self

    def _set_state(self, states: list[dict], n_rows: int) -> None:
        self.columns_ = states
        self.n_fit_rows_ = int(n_rows)
        self.roles_ = {s["column"]: s["role"] for s in states}
        self.numeric_names_ = [name for s in states for name in s["numeric"]]
        self.categorical_names_ = [name for s in states for name in s["categorical"]]
        self.cardinalities_ = [int(c) for s in states for c in s["cardinalities"]]
        self.sources_ = {name: s["column"] for s in states for name in s["numeric"] + s["categorical"]}
        self._caches = {s["column"]: {} for s in states}

    # ------------------------------------------------------------------------------------------ transform
    def transform(self, df: pd.DataFrame) -> EncodedFeatures:
        """Encode ``df`` with the fitted roles. Missing columns read as all-missing, new columns are ignored,
        values of a drifted dtype are coerced (what could not be is reported in ``report['unparsed']``)."""
        self._check_fitted()
        names = self._columns(df)
        n = len(df)
        active = [s for s in self.columns_ if s["role"] in _TRANSFORM]
        known = {s["column"] for s in self.columns_}
        missing = [s["column"] for s in active if s["column"] not in names]
        caches = getattr(self, "_caches", None)
        if caches is None:
            caches = self._caches = {s["column"]: {} for s in self.columns_}

        # an all-missing column encodes exactly as an absent one (the outputs of a missing value on every row):
        # it is found from the frame's arrays, and never read as a Series
        empty = V.all_missing_columns(df, [names[st["column"]] for st in active if st["column"] in names]) \
            if _SHORTCUTS else set()
        columns = {st["column"]: df[names[st["column"]]] for st in active
                   if st["column"] in names and names[st["column"]] not in empty}
        n_blocks = max(1, -(-n // max(1, int(self.chunk_rows))))
        step = max(1, -(-n // n_blocks))  # equal blocks: no straggler
        bounds = [(lo, min(lo + step, n)) for lo in range(0, n, step)] or [(0, 0)]
        # absent and all-missing columns are written at once below, not as tasks
        constant = [k for k, st in enumerate(active) if _SHORTCUTS and st["column"] not in columns]
        read = sorted(set(range(len(active))) - set(constant))
        tasks = [(k, lo, hi) for lo, hi in bounds for k in read]

        # Each task copies its outputs into one row of a column-major buffer (a contiguous copy, in the threads:
        # numpy copies release the GIL); the buffers are then transposed into the row-major outputs by row
        # ranges, in parallel too. Column-wise writes straight into a row-major array are strided and cost
        # about twice as much as this blocked transpose.
        d_num, d_cat = len(self.numeric_names_), len(self.categorical_names_)
        num_t = np.empty((d_num, n), dtype=np.float32)
        cat_t = np.empty((d_cat, n), dtype=np.int64)
        offsets, i_num, i_cat = [], 0, 0
        for st in active:
            offsets.append((i_num, i_cat))
            i_num += len(st["numeric"])
            i_cat += len(st["categorical"])
        if (i_num, i_cat) != (d_num, d_cat):
            raise RuntimeError("internal error: output widths disagree with the fitted state")
        self._write_missing_outputs([active[k] for k in constant], [offsets[k] for k in constant], caches,
                                    num_t, cat_t)

        def run(task: tuple[int, int, int]) -> int:
            k, lo, hi = task
            st = active[k]
            col = st["column"]
            cache = caches.setdefault(col, {})
            series = None
            if col in columns:
                series = columns[col] if _SHORTCUTS and lo == 0 and hi == n else columns[col].iloc[lo:hi]
                if _SHORTCUTS and n_blocks > 1 and _all_missing(series):  # a block of a sparse column
                    series = None
            if series is None and _SHORTCUTS:  # absent or all missing: the outputs of a missing value, on every row
                nums, cats = _missing_outputs(st, cache, float(self.clip))
                bad = 0
            elif series is None:
                series = pd.Series(np.full(hi - lo, np.nan), index=df.index[lo:hi])
                nums, cats, bad = _TRANSFORM[st["role"]](st, series, cache, float(self.clip))
            else:
                nums, cats, bad = _TRANSFORM[st["role"]](st, series, cache, float(self.clip))
            if len(nums) != len(st["numeric"]) or len(cats) != len(st["categorical"]):
                raise RuntimeError(f"internal error: outputs of {col!r} disagree with the fitted state")
            j_num, j_cat = offsets[k]
            for j, a in enumerate(nums):
                num_t[j_num + j, lo:hi] = a
            for j, a in enumerate(cats):
                cat_t[j_cat + j, lo:hi] = a
            return int(bad)

        bads = self._map(run, tasks, n, cost=lambda t: _COST.get(active[t[0]]["role"], 1) * (t[2] - t[1]))
        num = np.empty((n, d_num), dtype=np.float32)
        cat = np.empty((n, d_cat), dtype=np.int64)

        def assemble(rows: tuple[int, int]) -> None:
            lo, hi = rows
            num[lo:hi] = num_t[:, lo:hi].T
            cat[lo:hi] = cat_t[:, lo:hi].T

        n_parts = max(1, min(4 * self._threads(), -(-n // 8192)))
        part = -(-n // n_parts) if n else 1
        self._map(assemble, [(lo, min(lo + part, n)) for lo in range(0, n, part)], n)
        unparsed: dict[str, int] = {}
        for (k, _, _), bad in zip(tasks, bads):
            if bad:
                col = active[k]["column"]
                unparsed[col] = unparsed.get(col, 0) + bad
        report = {
            "n_rows": n,
            "missing_columns": missing,
            "unparsed": unparsed,
            "ignored_columns": sorted(c for c in names if c not in known),
        }
        if missing:
            log.warning("FeatureEncoder.transform: %d fitted column(s) absent, read as missing: %s",
                        len(missing), ", ".join(missing[:10]))
        return EncodedFeatures(
            numeric=num, categorical=cat, numeric_names=list(self.numeric_names_),
            categorical_names=list(self.categorical_names_), cardinalities=list(self.cardinalities_),
            sources=dict(self.sources_), report=report,
        )

    def _write_missing_outputs(self, states: list[dict], offsets: list[tuple[int, int]], caches: dict,
                               num_t: np.ndarray, cat_t: np.ndarray) -> None:
        """Every row of the (column-major) outputs of columns that are absent or all missing: the outputs of a
        missing value, written in one assignment per buffer (a single event has dozens of such columns)."""
        rows_num, values_num, rows_cat, values_cat = [], [], [], []
        for st, (j_num, j_cat) in zip(states, offsets):
            nums, cats = _missing_outputs(st, caches.setdefault(st["column"], {}), float(self.clip))
            if len(nums) != len(st["numeric"]) or len(cats) != len(st["categorical"]):
                raise RuntimeError(f"internal error: outputs of {st['column']!r} disagree with the fitted state")
            rows_num += range(j_num, j_num + len(nums))
            values_num += nums
            rows_cat += range(j_cat, j_cat + len(cats))
            values_cat += cats
        # values of several dtypes: gathered as float64 (exact for float32 too) and int64, cast on assignment
        # exactly as each column's own output array would be
        if rows_num:
            num_t[rows_num] = np.asarray(values_num, dtype=np.float64)[:, None]
        if rows_cat:
            cat_t[rows_cat] = np.asarray(values_cat, dtype=np.int64)[:, None]

    def fit_transform(self, df: pd.DataFrame, y: Any = None) -> EncodedFeatures:
        return self.fit(df).transform(df)

    # ---------------------------------------------------------------------------------------- inspection
    def get_feature_names_out(self) -> list[str]:
        self._check_fitted()
        return list(self.numeric_names_) + list(self.categorical_names_)

    def describe(self) -> pd.DataFrame:
        """One row per input column: column, role, reason, n_unique, missing_rate, outputs."""
        self._check_fitted()
        rows = [
            {"column": s["column"], "role": s["role"], "reason": s["reason"], "n_unique": s["n_unique"],
             "missing_rate": s["missing_rate"], "outputs": list(s["numeric"]) + list(s["categorical"])}
            for s in self.columns_
        ]
        return pd.DataFrame(rows, columns=["column", "role", "reason", "n_unique", "missing_rate", "outputs"])

    # --------------------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """The fitted encoder as JSON-able data (parameters, then one state per column)."""
        self._check_fitted()
        params = self.get_params()
        params["overrides"] = dict(params["overrides"]) if params["overrides"] is not None else None
        params["exclude"] = list(params["exclude"]) if params["exclude"] is not None else None
        return {"format": FORMAT, "version": VERSION, "params": params, "n_fit_rows": self.n_fit_rows_,
                "columns": [dict(s) for s in self.columns_]}

    @classmethod
    def from_dict(cls, data: Any) -> "FeatureEncoder":
        """Rebuild a fitted encoder from :meth:`to_dict` output; ValueError when it is not one."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a FeatureEncoder state (expected format {FORMAT!r})")
        if data.get("version") != VERSION:
            raise ValueError(f"unsupported FeatureEncoder state version {data.get('version')!r} (expected {VERSION})")
        try:
            allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
            params = dict(data["params"])
            unknown = set(params) - allowed
            if unknown:
                raise ValueError(f"unknown parameters {sorted(unknown)}")
            enc = cls(**params)
            enc._check_params()
            states = [dict(s) for s in data["columns"]]
            for s in states:
                role = s["role"]
                if not isinstance(s["column"], str):
                    raise ValueError("column names must be strings")
                if role not in _TRANSFORM and role not in R.DROP_ROLES and role != R.EXCLUDED:
                    raise ValueError(f"unknown role {role!r}")
                for key in ("numeric", "categorical", "cardinalities") + _REQUIRED.get(role, ()):
                    if key not in s:
                        raise ValueError(f"column {s['column']!r} ({role}) lacks {key!r}")
                if len(s["cardinalities"]) != len(s["categorical"]):
                    raise ValueError(f"column {s['column']!r}: cardinalities do not match outputs")
                _check_types(s)
            n_rows = int(data["n_fit_rows"])
        except ValueError as exc:
            raise ValueError(f"invalid FeatureEncoder state: {exc}") from exc
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"invalid FeatureEncoder state: {type(exc).__name__}: {exc}") from exc
        enc._set_state(sorted(states, key=lambda s: s["column"]), n_rows)
        return enc

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted encoder as JSON, atomically."""
        return write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureEncoder":
        """Read an encoder written by :meth:`save`; ValueError for a file that is not one."""
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a FeatureEncoder JSON file ({exc})") from exc
        return cls.from_dict(data)
