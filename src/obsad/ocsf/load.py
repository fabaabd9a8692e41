"""Load anyone's OCSF export into one flat table, and report everything that was malformed.

``load_events(source)`` reads Parquet, JSON Lines or a JSON array (or an in-memory DataFrame / list of
dicts) and returns :class:`LoadResult` ``(events, report)``. The table follows the contract in
``docs/architecture.md`` ("The flat table"):

* one row per event, columns named by dotted OCSF paths (``src_endpoint.ip``), sorted by name;
* nested objects are flattened; flat inputs are accepted with dotted (``a.b``) or underscore (``a_b``) names:
  an underscore name is turned into a dotted path only when the split matches real OCSF attribute and object
  names in the schemas shipped with pydantic-ocsf (``src_endpoint_ip`` -> ``src_endpoint.ip``, while
  ``type_uid`` or ``status_detail`` stay as they are; unknown names are left unchanged);
* string columns holding JSON objects are expanded into dotted sub-columns; a value present both flat and
  nested/JSON is kept once (the flat value wins; missing flat values are filled; conflicts are reported);
* arrays of objects become ``<name>.count`` and ``<name>.types``; arrays of scalars are joined with ``|``;
* numbers-as-strings and ``"true"``/``"false"`` are coerced when (nearly) the whole column parses, the rest is
  set to missing and reported;
* ``time`` becomes ``datetime64[ms, UTC]`` (epoch s/ms/us/ns or ISO strings, else from ``time_dt``).

Nothing is dropped silently: lines that are not JSON objects are excluded and reported with their line
number, bad values become missing and are reported with the event's position.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import gzip
import importlib.util
import json
import math
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from .. import encodings

__all__ = ["OCSFLoadError", "LoadReport", "LoadResult", "load_events", "ocsf_dotted_name"]

#: Share of a column's non-null values that must parse before the column is coerced (the rest is reported).
COERCE_THRESHOLD = 0.99
_DETAIL_MAX = 120
_SAMPLE = 500
#: Exact shortcuts around fixed per-column costs (a pandas Series per step, a regex compiled per call). With
#: ``False`` every column takes the general code path; tests/test_small_batches.py checks that both give the same
#: tables and reports.
_SHORTCUTS = True
_FEW = 64  # up to this many values, Python counts a sample faster than Arrow's call overhead
_MISSING_TOKENS = ("", "null", "none", "nan", "n/a")
_MISSING_SET = frozenset(_MISSING_TOKENS)
_STR_DTYPE = pd.Series(["a"]).dtype  # the default string dtype of the installed pandas ("str" in pandas 3)
_ARROW_STR = (isinstance(_STR_DTYPE, pd.StringDtype) and _STR_DTYPE.storage == "pyarrow"
              and pd.Series(["a"]).array.__arrow_array__().type == pa.large_string())
_PROBLEM_COLUMNS = ["line", "field", "reason", "detail"]
_POSITION_WORD = {"line": "line", "element": "element", "row": "row"}
_TIME_UNITS = (("s", 1e11, 1000.0), ("ms", 1e14, 1.0), ("us", 1e17, 1e-3), ("ns", math.inf, 1e-6))

_INT_RE = r"[+-]?\d+"
# digits, then a fraction or not, then an exponent or not; written so that each character can be read one way
# only (``\d+\.?\d*`` splits a run of digits in as many ways as it is long: Python's backtracking then took
# time quadratic in a value's length to refuse one, 18 s on 32,000 digits and a letter)
_FLOAT_RE = r"[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
_LEADING_ZERO_RE = r"[+-]?0\d+"
_FLOAT_PY = re.compile(_FLOAT_RE)


class OCSFLoadError(ValueError):
    """The source cannot be loaded as OCSF events; the message says why and what to do."""


# --------------------------------------------------------------------------------------------------- report
@dataclasses.dataclass
class LoadReport:
    """What ``load_events`` found: counts, every problem with its position, and what it changed.

    ``problems`` has one row per problem: ``line`` (position of the event: 1-based line number for JSON Lines,
    0-based element index for a JSON array or list, 0-based row for Parquet or a DataFrame; see ``position``),
    ``field`` (column, or None for a whole line), ``reason`` (short code) and ``detail`` (text with the raw value).
    """

    source: str
    format: str
    position: str
    n_input: int
    n_loaded: int
    problems: pd.DataFrame
    coerced: dict[str, str] = dataclasses.field(default_factory=dict)
    renamed: dict[str, str] = dataclasses.field(default_factory=dict)
    expanded: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def n_problems(self) -> int:
        return int(len(self.problems))

    def counts(self) -> dict[str, int]:
        """Number of problems per reason, most frequent first (ties by name)."""
        if self.problems.empty:
            return {}
        vc = self.problems["reason"].value_counts()
        items = sorted(((str(k), int(v)) for k, v in vc.items()), key=lambda kv: (-kv[1], kv[0]))
        return dict(items)

    def summary(self, max_examples: int = 5) -> str:
        word = _POSITION_WORD.get(self.position, self.position)
        lines = [
            f"Loaded {self.n_loaded:,} of {self.n_input:,} events from {self.source} ({self.format}).",
        ]
        if self.problems.empty:
            lines.append("No problems found.")
        else:
            lines.append(f"{self.n_problems:,} problem(s):")
            width = max(len(r) for r in self.counts())
            for reason, n in self.counts().items():
                where = self.problems.loc[self.problems["reason"] == reason, "line"].head(3).tolist()
                at = ", ".join(str(int(x)) for x in where if pd.notna(x))
                example = f"  (e.g. {word} {at})" if at else ""
                lines.append(f"  {reason:<{width}}  {n:>8,}{example}")
            lines.append("Examples:")
            examples = self.problems.drop_duplicates("reason").head(max_examples)
            if len(examples) < max_examples:
                rest = self.problems.drop(examples.index).head(max_examples - len(examples))
                examples = pd.concat([examples, rest]).sort_index()
            for rec in examples.itertuples(index=False):
                field = f" [{rec.field}]" if isinstance(rec.field, str) else ""
                pos = f"{word} {int(rec.line)}" if pd.notna(rec.line) else "(no position)"
                lines.append(f"  {pos}{field}: {rec.reason}: {rec.detail}")
        if self.coerced:
            lines.append("Coerced:")
            lines.extend(f"  {k}: {v}" for k, v in self.coerced.items())
        if self.renamed:
            shown = list(self.renamed.items())[:8]
            more = f", ... (+{len(self.renamed) - 8})" if len(self.renamed) > 8 else ""
            lines.append(
                f"Renamed {len(self.renamed)} underscore column(s) to OCSF paths: "
                + ", ".join(f"{a} -> {b}" for a, b in shown)
                + more
            )
        if self.expanded:
            lines.append("Expanded: " + ", ".join(f"{k} -> {len(v)} column(s)" for k, v in self.expanded.items()))
        if self.notes:
            lines.append("Notes:")
            lines.extend(f"  - {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view of the report (problems as a list of records)."""
        problems = [
            {
                "line": None if pd.isna(r.line) else int(r.line),
                "field": r.field if isinstance(r.field, str) else None,
                "reason": str(r.reason),
                "detail": str(r.detail),
            }
            for r in self.problems.itertuples(index=False)
        ]
        return {
            "source": self.source,
            "format": self.format,
            "position": self.position,
            "n_input": int(self.n_input),
            "n_loaded": int(self.n_loaded),
            "n_problems": self.n_problems,
            "problem_counts": self.counts(),
            "problems": problems,
            "coerced": dict(self.coerced),
            "renamed": dict(self.renamed),
            "expanded": {k: list(v) for k, v in self.expanded.items()},
            "notes": list(self.notes),
        }


@dataclasses.dataclass
class LoadResult:
    """The flat event table and its :class:`LoadReport`; unpacks as ``events, report``."""

    events: pd.DataFrame
    report: LoadReport

    def __iter__(self) -> Iterator[Any]:
        yield self.events
        yield self.report


# ------------------------------------------------------------------------------------- OCSF schema lookup
@functools.lru_cache(maxsize=1)
def _schema_index() -> tuple[dict[str, str | None], dict[str, dict[str, str | None]]]:
    """(dictionary attribute -> type, object name -> {attribute -> type}) over all bundled OCSF versions.

    Object attributes include those inherited through ``extends``. Profiles are not resolved in the bundled
    files, which is why the splitter falls back to dictionary attributes for intermediate objects.
    """
    spec = importlib.util.find_spec("ocsf")
    if spec is None or not spec.submodule_search_locations:
        return {}, {}
    folder = Path(list(spec.submodule_search_locations)[0]) / "schemas"
    dictionary: dict[str, str | None] = {}
    objects: dict[str, dict[str, str | None]] = {}
    for path in sorted(folder.glob("v*.json")):
        try:
            with open(path, encoding="utf-8") as fh:
                schema = json.load(fh)
        except (OSError, ValueError):
            continue
        attrs = schema.get("dictionary", {}).get("attributes", {})
        objs = schema.get("objects", {})

        def attr_type(name: str, spec_: Any) -> str | None:
            own = spec_.get("type") if isinstance(spec_, dict) else None
            return own or attrs.get(name, {}).get("type")

        def resolve(name: str, seen: tuple[str, ...] = ()) -> dict[str, str | None]:
            obj = objs.get(name)
            if not isinstance(obj, dict):
                return {}
            out: dict[str, str | None] = {}
            parent = obj.get("extends")
            if parent and parent not in seen and parent != name:
                out.update(resolve(parent, seen + (name,)))
            for key, val in obj.get("attributes", {}).items():
                if not key.startswith("$"):
                    out[key] = attr_type(key, val)
            return out

        for name in objs:
            objects.setdefault(name, {}).update(resolve(name))
        for key, val in attrs.items():
            if isinstance(val, dict):
                dictionary.setdefault(key, val.get("type"))
    return dictionary, objects


@functools.lru_cache(maxsize=4096)
def ocsf_dotted_name(name: str) -> str:
    """Map an underscore-flattened OCSF name to its dotted path, or return it unchanged.

    ``src_endpoint_ip`` -> ``src_endpoint.ip``; ``metadata_product_vendor_name`` ->
    ``metadata.product.vendor_name``; ``type_uid``, ``status_detail`` (real attributes) and unknown names stay.
    """
    if "_" not in name or "." in name:
        return name
    dictionary, objects = _schema_index()
    if not dictionary or name in dictionary:
        return name
    tokens = name.split("_")
    if any(not t for t in tokens):
        return name

    def solve(i: int, obj: str, lenient: bool) -> list[str] | None:
        attrs = objects.get(obj, {})
        rest = "_".join(tokens[i:])
        if rest in attrs:
            return [rest]
        for j in range(i + 1, len(tokens)):
            head = "_".join(tokens[i:j])
            typ = attrs.get(head)
            if typ is None and lenient:
                typ = dictionary.get(head)
            if typ in objects and typ != "object":
                sub = solve(j, typ, lenient)
                if sub:
                    return [head, *sub]
        return None

    for lenient in (False, True):
        for j in range(1, len(tokens)):
            head = "_".join(tokens[:j])
            typ = dictionary.get(head)
            if typ in objects and typ != "object":
                sub = solve(j, typ, lenient)
                if sub:
                    return ".".join([head, *sub])
    return name


# ------------------------------------------------------------------------------------------ small helpers
def _trunc(value: Any, n: int = _DETAIL_MAX) -> str:
    if isinstance(value, bytes):
        text = value.decode("utf-8", errors="replace")
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    text = text.strip()
    return text if len(text) <= n else text[: n - 3] + "..."


def _repr_series(values: pd.Series) -> pd.Series:
    """Quoted, truncated text of raw values for problem details (only ever called on the bad rows)."""
    return pd.Series([repr(_trunc(v, 80)) if isinstance(v, str) else _trunc(v, 80) for v in values], dtype=object)


@functools.lru_cache(maxsize=256)
def _string_dtype(dt: Any) -> bool:
    return pd.api.types.is_string_dtype(dt) and not isinstance(dt, pd.CategoricalDtype)


def _is_string_col(s: pd.Series) -> bool:
    """Text dtype (not categorical). Cached per dtype: it is asked of every column in several steps (the text
    columns the loader builds carry the default string dtype itself, whose hash pandas computes each time)."""
    dt = s.dtype
    if dt is _STR_DTYPE:
        return True
    try:
        return _string_dtype(dt)
    except TypeError:  # an unhashable dtype
        return _string_dtype.__wrapped__(s.dtype)


def _notna(s: pd.Series) -> np.ndarray:
    """``s.notna()`` as a numpy array, on the column's own array (no Series built: a per-column fixed cost)."""
    return ~np.asarray(pd.isna(s.array), dtype=bool)


def _arrow_text(s: pd.Series) -> pa.ChunkedArray | None:
    """The Arrow storage of a pyarrow-backed text column (every present value a str), else None."""
    if isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow":
        return s.array.__arrow_array__()
    return None


def _sample_positions(valid: np.ndarray, k: int) -> np.ndarray:
    """Positions of up to k of the valid values, evenly spaced over them."""
    pos = np.flatnonzero(valid)
    if len(pos) > k:
        pos = pos[np.linspace(0, len(pos) - 1, k).astype(np.int64)]
    return pos


def _sample(s: pd.Series, k: int = _SAMPLE) -> list[Any]:
    """Up to k non-null values of ``s`` as a list, evenly spaced over the column (deterministic, no full copy)."""
    arrow = isinstance(s.dtype, (pd.ArrowDtype, pd.StringDtype)) and getattr(s.dtype, "storage", "pyarrow") == "pyarrow"
    if _SHORTCUTS and len(s) <= k:  # every non-null value, in order: one conversion, no positions
        if arrow:
            return [v for v in s.array.__arrow_array__().to_pylist() if v is not None]
        values = s.tolist()
        ok = _notna(s)
        return values if ok.all() else [v for v, keep in zip(values, ok.tolist()) if keep]
    if arrow:
        arr = s.array.__arrow_array__()
        valid = arr.is_valid()
        if isinstance(valid, pa.ChunkedArray):
            valid = valid.combine_chunks()
        pos = _sample_positions(valid.to_numpy(zero_copy_only=False), k)
        return arr.take(pa.array(pos)).to_pylist()
    return s.iloc[_sample_positions(s.notna().to_numpy(dtype=bool), k)].tolist()


@functools.lru_cache(maxsize=64)
def _even_positions_np(n: int, k: int) -> np.ndarray:
    """:func:`_sample_positions` of a column of ``n`` values none missing (the same for every such column of a
    batch, so made once), as numpy (read-only: shared by every caller)."""
    pos = _sample_positions(np.ones(n, dtype=bool), k)
    pos.flags.writeable = False
    return pos


@functools.lru_cache(maxsize=64)
def _even_positions(n: int, k: int) -> pa.Array:
    """:func:`_even_positions_np` as an Arrow array (for ``take``)."""
    return pa.array(_even_positions_np(n, k))


def _text_sample_counts(arr: pa.ChunkedArray, k: int = _SAMPLE) -> tuple[list[str], list[int], int]:
    """The :func:`_sample` of a text column as its distinct values and their counts (and its size), counted by
    Arrow: the screens below only ask how many sampled values pass a test, so each distinct value is tested once,
    without first turning every sampled value into a Python string."""
    shared = _shared_sample_counts(arr, k)
    if shared is not None:
        return shared
    if len(arr) - arr.null_count > k:  # (at most k present values: the sample is all of them, in order)
        if arr.null_count:
            valid = arr.is_valid()
            if isinstance(valid, pa.ChunkedArray):
                valid = valid.combine_chunks()
            positions = pa.array(_sample_positions(valid.to_numpy(zero_copy_only=False), k))
        else:
            positions = _even_positions(len(arr), k)
        arr = arr.take(positions)
    arr = arr.drop_null()
    counted = pc.value_counts(arr)
    return counted.field("values").to_pylist(), counted.field("counts").to_pylist(), len(arr)


def _shared_sample_counts(arr: pa.ChunkedArray, k: int) -> tuple[list[str], list[int], int] | None:
    """:func:`_text_sample_counts` from the column's dictionary encoding, inside a scoring call that shares
    encodings (:func:`obsad.encodings.shared_encodings`): the window view and the encoder then take the same
    codes instead of hashing the column again. The same sampled values and counts (listed in another order,
    which no screen depends on); None outside such a call."""
    if not (_SHORTCUTS and encodings.sharing()) or arr.num_chunks != 1:
        return None
    chunk = arr.chunk(0)
    if len(chunk) < encodings.MEMO_MIN_VALUES:
        return None
    codes, dictionary = encodings.dictionary_codes(chunk)
    if chunk.null_count == 0:
        sampled = codes[_even_positions_np(len(chunk), k)] if len(chunk) > k else codes
    else:
        present = codes >= 0
        sampled = codes[_sample_positions(present, k)] if len(chunk) - chunk.null_count > k else codes[present]
    counts = np.bincount(sampled, minlength=len(dictionary))
    if counts.all():  # every distinct value is in the sample (a column of few values)
        return dictionary.to_pylist(), counts.tolist(), len(sampled)
    seen = np.flatnonzero(counts)
    return dictionary.take(pa.array(seen)).to_pylist(), counts[seen].tolist(), len(sampled)


def _object_array(values: Sequence[Any]) -> np.ndarray:
    return np.fromiter(values, dtype=object, count=len(values))


def _masked_array(arr: np.ndarray, kind: str) -> pd.api.extensions.ExtensionArray:
    """``pd.array(arr, dtype="Int64" or "boolean")`` of an object array of Python/numpy integers or booleans and
    missing values, built from its values and mask (same values, same hidden fill under the mask: 1 and False);
    a value beyond int64 raises OverflowError as there."""
    missing = np.asarray(pd.isna(arr), dtype=bool)
    if kind == "integer":
        data = np.ones(len(arr), dtype=np.int64)
        data[~missing] = arr[~missing].astype(np.int64)
        return pd.arrays.IntegerArray(data, missing)
    data = np.zeros(len(arr), dtype=bool)
    data[~missing] = arr[~missing].astype(bool)
    return pd.arrays.BooleanArray(data, missing)


def _infer_series(arr: np.ndarray) -> pd.Series:
    """A Series of the narrowest faithful dtype for an object array of JSON scalars (None = missing)."""
    kind = pd.api.types.infer_dtype(arr, skipna=True)
    try:
        if _SHORTCUTS and kind in ("integer", "boolean"):
            return pd.Series(_masked_array(arr, kind))
        if kind == "integer":
            return pd.Series(pd.array(arr, dtype="Int64"))
        if kind in ("floating", "mixed-integer-float"):
            return pd.Series(arr.astype(np.float64))
        if kind == "string":
            if _SHORTCUTS and _ARROW_STR:  # straight to Arrow: the same array, without pandas' checks per value
                return pd.Series(pd.arrays.ArrowStringArray(pa.array(arr, type=pa.large_string(), from_pandas=True),
                                                            dtype=_STR_DTYPE))
            return pd.Series(arr, dtype=_STR_DTYPE)
        if kind == "boolean":
            return pd.Series(pd.array(arr, dtype="boolean"))
    except (OverflowError, TypeError, ValueError, pa.ArrowException):
        pass
    return pd.Series(arr, dtype=object)


#: The kinds (of ``pd.api.types.infer_dtype``) that :func:`_infer_series` turns into a narrower dtype than object.
_NARROWER = frozenset({"integer", "floating", "mixed-integer-float", "string", "boolean"})


def _normalise_dtype(s: pd.Series) -> pd.Series:
    """Uniform dtypes whatever the reader: Int64 for integers, boolean, float64, default str, else object."""
    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        s = s.astype(s.cat.categories.dtype) if len(s.cat.categories) else s.astype(object)
        dt = s.dtype
    if pd.api.types.is_bool_dtype(dt):
        return s.astype("boolean")
    if pd.api.types.is_integer_dtype(dt):
        if isinstance(dt, pd.Int64Dtype):
            return s
        try:
            return s.astype("Int64")
        except (OverflowError, TypeError, ValueError):
            return s
    if pd.api.types.is_float_dtype(dt):
        return s.astype(np.float64) if dt != np.float64 else s
    if dt == object:
        values = s.to_numpy(dtype=object)
        if _SHORTCUTS and pd.api.types.infer_dtype(values, skipna=True) not in _NARROWER:
            return s  # stays an object column of these values: no new Series
        return _infer_series(values)
    if _is_string_col(s) and dt != _STR_DTYPE:
        return s.astype(_STR_DTYPE)
    return s


def _equal_mask(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Element-wise equality of two aligned Series of possibly different dtypes (compared as text if needed)."""
    try:
        eq = a == b
        return np.array(eq.fillna(False).to_numpy(dtype=bool), dtype=bool, copy=True)
    except (TypeError, ValueError):
        return np.array((a.astype(str) == b.astype(str)).to_numpy(dtype=bool), dtype=bool, copy=True)


# ------------------------------------------------------------------------------------------- the builder
class _Builder:
    """Holds the columns being built (name -> Series on RangeIndex(n)), positions and the report pieces."""

    def __init__(self, n: int, pos: np.ndarray) -> None:
        self.n = n
        self.pos = np.asarray(pos, dtype=np.int64)
        self.cols: dict[str, pd.Series] = {}
        self.nested: dict[str, pd.Series] = {}  # reached through objects; merged after renaming (flat wins)
        self.problems: list[tuple[list, list, list, list]] = []  # (lines, fields, reasons, details)
        self.coerced: dict[str, str] = {}
        self.renamed: dict[str, str] = {}
        self.expanded: dict[str, list[str]] = {}
        self.notes: list[str] = []
        self.json_arrays: set[str] = set()
        self.derived: set[str] = set()  # columns made from arrays: never re-typed
        self._samples: dict[str, tuple[pd.Series, list[Any]]] = {}
        self._counts: dict[str, tuple[pd.Series, tuple]] = {}

    def sample(self, name: str) -> list[Any]:
        """Evenly spaced non-null values of column ``name`` (cached while the column is unchanged)."""
        s = self.cols[name]
        hit = self._samples.get(name)
        if hit is not None and hit[0] is s:
            return hit[1]
        values = _sample(s)
        self._samples[name] = (s, values)
        return values

    def sample_counts(self, name: str) -> tuple[list[Any], list[int], int, bool]:
        """:meth:`sample` as (values, how many times each, sample size, whether every value is a str): distinct
        values once for text (cached while the column is unchanged)."""
        s = self.cols[name]
        hit = self._counts.get(name)
        if hit is not None and hit[0] is s:
            return hit[1]
        text = _arrow_text(s) if _SHORTCUTS and len(s) > _FEW else None  # counted by Arrow past a few values
        if text is not None:
            values, counts, size = _text_sample_counts(text)
            out = (values, counts, size, True)
        else:
            sample = self.sample(name)
            if all(type(v) is str for v in sample):
                counted = collections.Counter(sample)
                out = (list(counted), list(counted.values()), len(sample), True)
            else:
                out = (sample, [1] * len(sample), len(sample), all(isinstance(v, str) for v in sample))
        self._counts[name] = (s, out)
        return out

    # problems ------------------------------------------------------------------------------------------
    def problem(self, rows: np.ndarray, field: str | None, reason: str, details: Iterable[str] | str) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        detail = [details] * rows.size if isinstance(details, str) else list(details)
        self.problems.append((self.pos[rows].tolist(), [field] * rows.size, [reason] * rows.size, detail))

    # merging -------------------------------------------------------------------------------------------
    def merge(self, name: str, new: pd.Series, origin: str) -> None:
        """Add ``new`` as column ``name``; if it exists, keep existing values, fill its gaps, report conflicts."""
        old = self.cols.get(name)
        if old is None:
            self.cols[name] = new
            return
        old_ok = old.notna().to_numpy(dtype=bool)
        new_ok = new.notna().to_numpy(dtype=bool)
        both = old_ok & new_ok
        fill = ~old_ok & new_ok
        n_conflict = 0
        if both.any():
            idx = np.flatnonzero(both)
            a, b = old.iloc[idx].reset_index(drop=True), new.iloc[idx].reset_index(drop=True)
            same = _equal_mask(a, b)
            if not same.all():
                # numbers and their string forms are not conflicts ("200" vs 200)
                same |= (a.astype(str).str.strip() == b.astype(str).str.strip()).to_numpy(dtype=bool)
            bad = idx[~same]
            n_conflict = int(bad.size)
            if n_conflict:
                details = [
                    f"kept {_trunc(x, 50)!r}, {origin} has {_trunc(y, 50)!r}"
                    for x, y in zip(old.iloc[bad].tolist(), new.iloc[bad].tolist())
                ]
                self.problem(bad, name, "conflicting_values", details)
        if fill.any():
            if old.dtype != new.dtype:
                merged = old.astype(object).where(old_ok, new.astype(object))
            else:
                merged = old.where(old_ok, new)
            self.cols[name] = _normalise_dtype(merged) if merged.dtype == object else merged
        self.notes.append(
            f"{name}: present both as a flat column and in {origin}; kept once "
            f"({int(both.sum()):,} in both, {n_conflict:,} conflicting kept the flat value, "
            f"{int(fill.sum()):,} filled from {origin})"
        )

    # nested values -------------------------------------------------------------------------------------
    def add_store(self, store: dict[str, tuple[list[int], list[Any]]], origin: str) -> list[str]:
        """Turn a sparse column store (name -> (rows, values)) into Series and merge them in."""
        series = _store_to_series(store, self.n)
        for name in sorted(series):
            self.merge(name, series[name], origin)
        return sorted(series)


def _walk(obj: dict, prefix: str, row: int, flat: dict, nested: dict) -> None:
    """Append the leaves of one event to the column stores; keys reached through an object go to ``nested``."""
    for key, val in obj.items():
        if type(val) is dict:
            if val:
                _walk_nested(val, f"{prefix}{key}.", row, nested)
        else:
            entry = flat.get(prefix + key)
            if entry is None:
                entry = flat[prefix + key] = ([], [])
            entry[0].append(row)
            entry[1].append(val)


def _walk_nested(obj: dict, prefix: str, row: int, nested: dict) -> None:
    for key, val in obj.items():
        if type(val) is dict:
            if val:
                _walk_nested(val, f"{prefix}{key}.", row, nested)
        else:
            name = prefix + key
            entry = nested.get(name)
            if entry is None:
                entry = nested[name] = ([], [])
            entry[0].append(row)
            entry[1].append(val)


class _Wanted:
    """Which leaves of a record can contribute to the requested output ``columns`` (the rule of
    :func:`_parquet_columns`, applied while walking): a path that is a requested name, lies under one (a
    requested JSON-string or array column), or leads to one (an object, a JSON string or an array that expands
    to it); top-level names also under their dotted OCSF spelling. The rest is not walked: on a wide record,
    most of the loading time went into columns nobody asked for."""

    def __init__(self, columns: Sequence[str]) -> None:
        wanted = set(columns)
        if "time" in wanted:
            wanted.add("time_dt")
        self.names = frozenset(wanted)
        self.leading = frozenset(w[:i] for w in wanted for i, ch in enumerate(w) if ch == ".")

    def keeps(self, name: str) -> bool:
        """Whether a dotted ``name`` found inside a column (a key of a JSON-string column) can make a requested
        column: it is one, lies under one, or leads to one."""
        if name in self.names or name in self.leading:
            return True
        return any(name[:i] in self.names for i, ch in enumerate(name) if ch == ".")

    def top(self, key: str) -> tuple[bool, bool]:
        """(keep or descend, already under a requested name) for a top-level key."""
        for cand in (key, ocsf_dotted_name(key)):
            if cand in self.names:
                return True, True
            if cand in self.leading:
                return True, False
        return False, False


#: Up to this many records, the walk keeps each column as a list with a slot per record (``values[row] = value``,
#: a record without the path leaves its slot None), not as (rows, values) appended per value: one store per value
#: instead of two appends, and no scatter to rows afterwards (~2.5 ms of ~16 for 1,000 nested events). Past it,
#: the sparse lists: a slot per record and column would hold memory for every column a wide export has.
_DENSE_ROWS = 8192


class _Node:
    """One path of a batch's records, as :class:`_Plan` decided it: the column its values go to (``name`` in
    ``store``, taken on its first value) and, for objects met there, the plan of the path's children."""

    __slots__ = ("name", "store", "children", "column")

    def __init__(self, name: str, store: dict, children: tuple[str, bool]) -> None:
        self.name, self.store = name, store
        self.children: _Plan | tuple[str, bool] = children  # (prefix, under) until an object is met here
        self.column = None  # the column's store entry, once a value was met here

    def child_plan(self, parent: _Plan) -> _Plan:
        if not isinstance(self.children, _Plan):
            prefix, under = self.children
            self.children = _Plan(parent.wanted, parent.nested, prefix, under, slots=parent.slots)
        return self.children

    def take_column(self, slots: int | None):
        """This path's store entry (shared by the paths of one dotted name): a list of ``slots`` Nones (dense),
        or the (rows.append, values.append) of the sparse lists (``slots`` None)."""
        entry = self.store.get(self.name)
        if entry is None:
            entry = self.store[self.name] = [None] * slots if slots is not None else ([], [])
        self.column = entry if slots is not None else (entry[0].append, entry[1].append)
        return self.column


class _Plan(dict):
    """:class:`_Wanted`'s verdict on each key met at one path of a batch's records (key -> :class:`_Node`, or
    False for a key that leads to no requested column), decided on the key's first appearance. The records of a
    batch share their keys: the names, the set lookups and the store lookup then happen once per path, not once
    per value (the walk was the costliest step of loading a batch of nested events). ``prefix`` None: the top
    level, whose values go to ``flat`` under their key and whose objects' leaves to ``nested``. ``slots``: the
    records' count for dense columns (see :data:`_DENSE_ROWS`), None for sparse ones."""

    def __init__(self, wanted: _Wanted, nested: dict, prefix: str | None, under: bool, flat: dict | None = None,
                 *, slots: int | None = None):
        super().__init__()
        self.wanted, self.nested, self.flat = wanted, nested, flat
        self.prefix, self.under, self.slots = prefix, under, slots

    def node(self, key: str) -> _Node | bool:
        if self.prefix is None:
            keep, under = self.wanted.top(key)
            found = _Node(key, self.flat, (f"{key}.", under)) if keep else False
        else:
            name = self.prefix + key
            below = self.under or name in self.wanted.names
            keep = below or name in self.wanted.leading
            found = _Node(name, self.nested, (f"{name}.", below)) if keep else False
        self[key] = found
        return found


def _walk_planned(obj: dict, row: int, plan: _Plan) -> None:
    """:func:`_walk` of the leaves the plan (:class:`_Wanted`) keeps, into sparse columns."""
    get = plan.get
    for key, val in obj.items():
        node = get(key)
        if not node:
            if node is None:
                node = plan.node(key)
            if node is False:
                continue
        if type(val) is dict:
            if val:
                children = node.children
                _walk_planned(val, row, children if type(children) is _Plan else node.child_plan(plan))
        else:
            appends = node.column or node.take_column(None)
            appends[0](row)
            appends[1](val)


def _walk_planned_dense(obj: dict, row: int, plan: _Plan) -> None:
    """:func:`_walk_planned` into dense columns (a slot per record). The same loop, kept apart: testing which
    store a value goes to, once per value, would give back about a third of what the slots save."""
    get = plan.get
    for key, val in obj.items():
        node = get(key)
        if not node:
            if node is None:
                node = plan.node(key)
            if node is False:
                continue
        if type(val) is dict:
            if val:
                children = node.children
                _walk_planned_dense(val, row, children if type(children) is _Plan else node.child_plan(plan))
        else:
            slots = node.column
            if slots is None:
                slots = node.take_column(plan.slots)
            slots[row] = val


def _walk_nested_wanted(obj: dict, prefix: str, row: int, nested: dict, wanted: _Wanted, under: bool) -> None:
    names, leading = wanted.names, wanted.leading
    for key, val in obj.items():
        name = prefix + key
        below = under or name in names
        if not below and name not in leading:
            continue
        if type(val) is dict:
            if val:
                _walk_nested_wanted(val, f"{name}.", row, nested, wanted, below)
        else:
            entry = nested.get(name)
            if entry is None:
                entry = nested[name] = ([], [])
            entry[0].append(row)
            entry[1].append(val)


# ------------------------------------------------------------------------------------------- the readers
def _store_to_series(store: dict[str, Any], n: int) -> dict[str, pd.Series]:
    """A column store -> Series of length n with inferred dtypes. Each entry: sparse (rows, values), or dense (a
    list of at least n slots, a value or None each: see :data:`_DENSE_ROWS`)."""
    out = {}
    for name, entry in store.items():
        if type(entry) is list:
            arr = np.fromiter(entry, dtype=object, count=n)  # the first n slots (records refused leave the rest)
        else:
            rows, values = entry
            arr = np.empty(n, dtype=object)
            arr[np.fromiter(rows, dtype=np.int64, count=len(rows))] = _object_array(values)
        out[name] = _infer_series(arr)
    return out


@dataclasses.dataclass
class _Part:
    """Some of the events, flattened: top-level columns, columns reached through objects, their positions."""

    pos: np.ndarray
    flat: dict[str, pd.Series]
    nested: dict[str, pd.Series]

    @property
    def n(self) -> int:
        return len(self.pos)


def _records_part(objs: Iterable[tuple[int, Any]], parse_problems: list[tuple[int, str, str]],
                  columns: Sequence[str] | None = None) -> _Part:
    """(position, decoded JSON value) pairs -> part; non-objects and empty objects are reported. ``columns``:
    only the leaves that can make these output columns are taken (see :class:`_Wanted`)."""
    wanted = _Wanted(columns) if columns is not None else None
    flat: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    plan = walk = None
    if wanted is not None:
        objs = objs if isinstance(objs, (list, tuple)) else list(objs)
        dense = len(objs) <= _DENSE_ROWS
        plan = _Plan(wanted, nested, None, False, flat, slots=len(objs) if dense else None)
        walk = _walk_planned_dense if dense else _walk_planned
    positions: list[int] = []
    row = 0
    for position, obj in objs:
        if type(obj) is not dict:
            if isinstance(obj, dict):
                obj = dict(obj)
            else:
                kind = "array" if isinstance(obj, list) else type(obj).__name__.replace("NoneType", "null")
                parse_problems.append((position, "not_an_object", f"a JSON {kind}, not an object: {_trunc(obj)}"))
                continue
        if not obj:
            parse_problems.append((position, "empty_object", "an empty JSON object {}"))
            continue
        if walk is None:
            _walk(obj, "", row, flat, nested)
        else:
            walk(obj, row, plan)
        positions.append(position)
        row += 1
    return _Part(np.asarray(positions, dtype=np.int64), _store_to_series(flat, row), _store_to_series(nested, row))


def _arrow_part(table: pa.Table, pos: np.ndarray) -> _Part:
    """Arrow table -> part; struct children are the nested columns (flat columns win on a clash)."""
    flat: dict[str, pd.Series] = {}
    struct_names, struct_cols = [], []
    for name, col in zip(table.column_names, table.columns):
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_struct(col.type):
            struct_names.append(str(name))
            struct_cols.append(col)
        else:
            flat[str(name)] = _arrow_series(col)
    return _Part(np.asarray(pos, dtype=np.int64), flat, _flatten_structs(struct_names, struct_cols))


def _table_part(table: pa.Table, columns: Sequence[str] | None) -> _Part:
    """An Arrow table of events (a row each, objects as structs) -> part, taking what the walk of the same events
    as dicts takes (:class:`_Wanted`): the top-level columns that are, lead to or spell a requested name, and
    below them the leaves the walk keeps (every leaf under a requested name)."""
    pos = np.arange(table.num_rows, dtype=np.int64)
    if columns is None:
        return _arrow_part(table, pos)
    wanted = _Wanted(columns)
    flat: dict[str, pd.Series] = {}
    pruned: tuple[list, list] = ([], [])  # struct columns whose leaves are kept as the walk keeps them
    whole: tuple[list, list] = ([], [])  # struct columns under a requested name: every leaf
    for name, col in zip(table.column_names, table.columns):
        keep, under = wanted.top(name)
        if not keep:
            continue
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if not pa.types.is_struct(col.type):
            flat[name] = _arrow_series(col)
        elif under:
            whole[0].append(name)
            whole[1].append(col)
        elif name in wanted.leading:
            pruned[0].append(name)
            pruned[1].append(col)
        # else an underscored spelling of a path leading to requested names: the walk looks below it for
        # "<name>.<key>", which no requested name is, and takes nothing
    nested = _flatten_structs(*pruned, keep=wanted.keeps)
    nested.update(_flatten_structs(*whole))
    return _Part(pos, flat, nested)


def _arrow_builder(table: pa.Table) -> _Builder:
    """A Parquet table -> builder (a pandas index stored as a column is not an event field: dropped, noted)."""
    meta = table.schema.pandas_metadata or {}
    index_cols = [c for c in meta.get("index_columns", []) if isinstance(c, str) and c in table.column_names]
    if index_cols:
        table = table.drop_columns(index_cols)
    b = _combine([_arrow_part(table, np.arange(table.num_rows, dtype=np.int64))])
    if index_cols:
        b.notes.append(f"pandas index column(s) {', '.join(index_cols)} stored in the Parquet file: not loaded")
    return b


def _na_like(template: pd.Series, n: int) -> pd.Series:
    return template.iloc[:0].reindex(pd.RangeIndex(n))


def _concat_columns(pieces: list[pd.Series]) -> pd.Series:
    if len(pieces) == 1:
        return pieces[0].reset_index(drop=True)
    if all(p.dtype == pieces[0].dtype for p in pieces):
        return pd.concat(pieces, ignore_index=True)
    # the type changed between chunks: let inference and the coercion step sort the values out
    values = np.concatenate([p.astype(object).to_numpy(dtype=object) for p in pieces])
    return _infer_series(np.where(pd.isna(values), None, values) if values.dtype == object else values)


def _combine(parts: list[_Part]) -> _Builder:
    """Stack parts (chunks of one file) into one builder; a column absent from a chunk is missing there."""
    if len(parts) == 1:
        part = parts[0]
        b = _Builder(part.n, part.pos)
        b.cols = dict(part.flat)
        b.nested = dict(part.nested)
        return b
    pos = np.concatenate([p.pos for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    b = _Builder(len(pos), pos)
    for attr in ("flat", "nested"):
        names = sorted({name for p in parts for name in getattr(p, attr)})
        out: dict[str, pd.Series] = {}
        for name in names:
            template = next(getattr(p, attr)[name] for p in parts if name in getattr(p, attr))
            pieces = [getattr(p, attr).get(name, None) for p in parts]
            pieces = [x if x is not None else _na_like(template, p.n) for x, p in zip(pieces, parts)]
            out[name] = _concat_columns(pieces)
        if attr == "flat":
            b.cols = out
        else:
            b.nested = out
    return b


_JSONL_CHUNK_BYTES = 8 << 20


def _python_lines(
    lines: list[bytes], numbers: list[int], problems: list[tuple[int, str, str]]
) -> list[tuple[int, Any]]:
    """json.loads each line; invalid ones become problems."""
    loads = json.loads
    out: list[tuple[int, Any]] = []
    for i, line in zip(numbers, lines):
        try:
            out.append((i, loads(line)))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            msg = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            problems.append((i, "invalid_json", f"{msg}: {_trunc(line)!r}"))
    return out


def _read_jsonl(data: bytes, problems: list[tuple[int, str, str]]) -> tuple[list[_Part], int, int]:
    """JSON Lines -> (parts, non-blank lines, blank lines).

    Clean files go through Arrow's reader in one call. Otherwise the lines are checked cheaply (an object
    starts with '{' and ends with '}'), the suspicious ones are parsed in Python and reported, and the rest is
    read by Arrow in chunks; a chunk Arrow still refuses (a malformed line inside, or a value whose type changes
    between lines) is parsed line by line in Python.
    """
    body = data.rstrip()
    if body.lstrip()[:1] == b"{":
        table = _read_json_arrow(data)
        if table is not None and table.num_rows and not _has_all_null_row(table):
            n_lines = body.count(b"\n") + 1
            if table.num_rows == n_lines:
                return [_arrow_part(table, np.arange(1, n_lines + 1, dtype=np.int64))], n_lines, 0
            # blank lines in between (Arrow skips them): number the rows by their lines
            lines = body.split(b"\n")
            numbers = [i for i, line in enumerate(lines, 1) if line and not line.isspace()]
            if len(numbers) == table.num_rows:
                pos = np.asarray(numbers, dtype=np.int64)
                return [_arrow_part(table, pos)], len(numbers), len(lines) - len(numbers)
    lines = body.split(b"\n")
    good: list[bytes] = []
    numbers: list[int] = []
    suspects: list[bytes] = []
    suspect_numbers: list[int] = []
    n_blank = 0
    for i, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            n_blank += 1
        elif stripped[0] == 123 and stripped[-1] == 125 and len(stripped) > 2 and stripped[1:-1].strip():
            good.append(stripped)
            numbers.append(i)
        else:
            suspects.append(stripped)
            suspect_numbers.append(i)
    parts: list[_Part] = []
    rescued = _python_lines(suspects, suspect_numbers, problems)
    # chunks of good lines, each read by Arrow when it can
    ends = np.cumsum(np.fromiter(map(len, good), dtype=np.int64, count=len(good)) + 1)
    start = 0
    while start < len(good):
        base = int(ends[start - 1]) if start else 0
        stop = max(int(np.searchsorted(ends, base + _JSONL_CHUNK_BYTES, side="left")), start + 1)
        stop = min(stop, len(good))
        chunk, chunk_numbers = good[start:stop], numbers[start:stop]
        table = _read_json_arrow(b"\n".join(chunk))
        if table is not None and table.num_rows == len(chunk):
            parts.append(_arrow_part(table, np.asarray(chunk_numbers, dtype=np.int64)))
        else:
            parts.append(_records_part(_python_lines(chunk, chunk_numbers, problems), problems))
        start = stop
    if rescued:
        parts.append(_records_part(rescued, problems))
    parts = [p for p in parts if p.n]
    if len(parts) > 1:
        # rows in file order (rescued lines were appended last)
        order_key = [int(p.pos[0]) for p in parts]
        parts = [parts[k] for k in np.argsort(order_key, kind="stable")]
        if any(int(a.pos[-1]) > int(b.pos[0]) for a, b in zip(parts, parts[1:])):
            parts = _split_in_order(parts)
    return parts, len(lines) - n_blank, n_blank


def _split_in_order(parts: list[_Part]) -> list[_Part]:
    """Interleaved parts (a rescued line in the middle of a chunk) -> one part re-ordered by position."""
    b = _combine(parts)
    order = np.argsort(b.pos, kind="stable")
    flat = {k: v.iloc[order].reset_index(drop=True) for k, v in b.cols.items()}
    nested = {k: v.iloc[order].reset_index(drop=True) for k, v in b.nested.items()}
    return [_Part(b.pos[order], flat, nested)]


def _has_all_null_row(table: pa.Table) -> bool:
    if not table.num_columns:
        return True
    if any(col.null_count == 0 for col in table.columns):  # a column with a value in every row (usually the first)
        return False
    all_null = pc.is_null(table.column(0))
    for col in table.columns[1:]:
        all_null = pc.and_(all_null, pc.is_null(col))
    return bool(pc.any(all_null).as_py())


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise OCSFLoadError(f"Cannot read {path}: {exc.strerror or exc}. Check the path and its permissions.") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise OCSFLoadError(f"{path} looks gzip-compressed but cannot be decompressed ({exc}).") from None
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    return data


_FORMATS_HINT = (
    "load_events reads Parquet (.parquet), JSON Lines (.jsonl/.ndjson/.json, one event object per line), "
    "a JSON array of event objects (.json), optionally gzip-compressed, or a pandas DataFrame / list of dicts"
)


def _detect(path: Path, data: bytes) -> str:
    if data[:4] == b"PAR1":
        return "parquet"
    head = data.lstrip()[:1]
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".gzip")]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in (".parquet", ".pq"):
        raise OCSFLoadError(f"{path} has a Parquet suffix but is not a Parquet file (no PAR1 header). {_FORMATS_HINT}.")
    if head == b"[":
        return "json_array"
    if suffix in (".jsonl", ".ndjson", ".json") or head == b"{":
        return "jsonl"
    # unknown suffix: JSON Lines if any of the first lines is an object
    for line in data[:65536].split(b"\n")[:20]:
        if line.lstrip()[:1] == b"{":
            return "jsonl"
    raise OCSFLoadError(f"Cannot tell the format of {path} (starts with {_trunc(data[:40])!r}). {_FORMATS_HINT}.")


_ARROW_STR = isinstance(_STR_DTYPE, pd.StringDtype) and _STR_DTYPE.storage == "pyarrow"


def _arrow_mapper(t: pa.DataType) -> Any:
    if pa.types.is_integer(t):
        return pd.Int64Dtype()
    if pa.types.is_boolean(t):
        return pd.BooleanDtype()
    if _ARROW_STR and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return _STR_DTYPE
    return None


def _direct_series(col: pa.ChunkedArray | pa.Array) -> pd.Series | None:
    """:func:`_arrow_series` of a text, int64 or float64 column, built straight from its buffers in the dtype the
    normalisation would give (~20 µs a column against ~50 through ``to_pandas`` and :func:`_normalise_dtype`; a
    batch has ~80); None for other types. Integers hide 1 under their mask, as :func:`_masked_array`."""
    t = col.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_int64(t) or pa.types.is_float64(t)):
        return None
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_int64(t):
        n, offset = len(arr), arr.offset
        data = np.zeros(0, np.int64) if n == 0 else np.frombuffer(arr.buffers()[1], np.int64)[offset: offset + n].copy()
        if arr.null_count:
            bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
            mask = ~np.unpackbits(bits, bitorder="little", count=offset + n)[offset:].view(bool)
            data[mask] = 1
        else:
            mask = np.zeros(n, dtype=bool)
        return pd.Series(pd.arrays.IntegerArray(data, mask))
    if pa.types.is_float64(t):
        return pd.Series(np.array(arr.to_numpy(zero_copy_only=False), dtype=np.float64, copy=True))
    if not _ARROW_STR:
        return None
    wide = arr if pa.types.is_large_string(t) else _widened(arr)
    return pd.Series(pd.arrays.ArrowStringArray(wide, dtype=_STR_DTYPE))


def _widened(arr: pa.Array) -> pa.Array:
    """A ``string`` array as ``large_string`` (pandas' storage for text): the same validity and characters, the
    offsets widened by numpy (~4 µs against ~9-15 for Arrow's cast, ~60 columns a batch)."""
    n, offset = len(arr), arr.offset
    if n == 0:
        return arr.cast(pa.large_string())
    validity, offsets, chars = arr.buffers()
    wide = np.frombuffer(offsets, np.int32, count=offset + n + 1).astype(np.int64)
    return pa.Array.from_buffers(pa.large_string(), n, [validity, pa.py_buffer(wide), chars], arr.null_count, offset)


def _arrow_series(col: pa.ChunkedArray | pa.Array) -> pd.Series:
    """One Arrow column -> a Series of the uniform dtypes; lists stay Arrow-backed for vectorised summaries."""
    if _SHORTCUTS:
        direct = _direct_series(col)
        if direct is not None:
            return direct
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        return pd.Series(pd.arrays.ArrowExtensionArray(col))
    if pa.types.is_null(col.type):
        return pd.Series(np.full(len(col), None, dtype=object))
    try:
        s = pd.Series(col.to_pandas(types_mapper=_arrow_mapper))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError, TypeError):
        s = pd.Series(col.to_pylist(), dtype=object)
    index = s.index
    if not (_SHORTCUTS and type(index) is pd.RangeIndex and index.start == 0 and index.step == 1):
        s = s.reset_index(drop=True)  # (Arrow's conversion numbers the rows from 0 already: no copy then)
    return _normalise_dtype(s)


def _flatten_structs(names: list[str], cols: list[pa.ChunkedArray], keep=None) -> dict[str, pd.Series]:
    """Struct columns -> dotted leaf Series (a null parent makes its leaves null); ``keep(name)``: which leaves
    to convert (all when None)."""
    if not cols:
        return {}
    sub = pa.table(cols, names=names)
    while any(pa.types.is_struct(t) for t in sub.schema.types):
        sub = sub.flatten()
    return {str(name): _arrow_series(col) for name, col in zip(sub.column_names, sub.columns)
            if keep is None or keep(str(name))}


def _without_temporal(t: pa.DataType) -> pa.DataType:
    """The same type with timestamps/dates (inferred by Arrow's JSON reader from some strings) as strings."""
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _without_temporal(f.type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(pa.field(t.value_field.name, _without_temporal(t.value_type)))
    if pa.types.is_large_list(t):
        return pa.large_list(pa.field(t.value_field.name, _without_temporal(t.value_type)))
    return t


#: Arrow's JSON reader parses its input in blocks of this many bytes, each cut at a line break (so one object per
#: line, or objects that break across blocks).
_JSON_BLOCK_BYTES = 1 << 24


def _read_json_arrow(buf: bytes) -> pa.Table | None:
    """Arrow's multithreaded reader for newline-delimited JSON objects; None when it refuses the input
    (a malformed line, a value whose type changes between lines, ...): the caller then parses line by line."""
    opts = pj.ReadOptions(block_size=_JSON_BLOCK_BYTES)
    try:
        table = pj.read_json(pa.BufferReader(buf), read_options=opts)
        schema = pa.schema([pa.field(f.name, _without_temporal(f.type)) for f in table.schema])
        if not schema.equals(table.schema):
            table = pj.read_json(
                pa.BufferReader(buf), read_options=opts, parse_options=pj.ParseOptions(explicit_schema=schema)
            )
    except (pa.ArrowException, OverflowError, ValueError):
        return None
    return table


def _frame_to_builder(df: pd.DataFrame) -> _Builder:
    n = len(df)
    b = _Builder(n, np.arange(n, dtype=np.int64))
    nested: dict[str, tuple[list[int], list[Any]]] = {}
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        dup = sorted({x for x in names if names.count(x) > 1})
        raise OCSFLoadError(f"The DataFrame has duplicate column names {dup[:5]}; rename them before loading.")
    arrow_structs: dict[str, pd.Series] = {}
    for name, col in zip(names, df.columns):
        s = df[col].reset_index(drop=True)
        if isinstance(s.dtype, pd.ArrowDtype) and pa.types.is_struct(s.dtype.pyarrow_dtype):
            arrow_structs.update(_flatten_structs([name], [pa.chunked_array(s.array.__arrow_array__())]))
            continue
        if s.dtype == object:
            values = s.to_numpy(dtype=object)
            is_dict = np.fromiter((type(v) is dict for v in values), dtype=bool, count=n)
            if is_dict.any():
                for r in np.flatnonzero(is_dict):
                    if values[r]:
                        _walk_nested(values[r], f"{name}.", int(r), nested)
                values = values.copy()
                values[is_dict] = None
                s = pd.Series(values, dtype=object)
                if not pd.notna(s).any():
                    b.notes.append(f"{name}: objects flattened into {name}.* columns")
                    continue
        b.cols[name] = _normalise_dtype(s)
    b.nested = _store_to_series(nested, n)
    for name, series in arrow_structs.items():
        b.nested[name] = series if name not in b.nested else b.nested[name].where(b.nested[name].notna(), series)
    return b


def _read(source: Any, columns: Sequence[str] | None) -> tuple[_Builder, str, str, str, int, list]:
    """-> (builder, source label, format, position kind, n_input, parse problems)."""
    problems: list[tuple[int, str, str]] = []
    if isinstance(source, pd.DataFrame):
        return _frame_to_builder(source), "DataFrame", "DataFrame", "row", len(source), problems
    if isinstance(source, (list, tuple)):
        b = _combine([_records_part(enumerate(source), problems, columns)])
        return b, "list of records", "records", "element", len(source), problems
    if isinstance(source, pa.Table):
        return _combine([_table_part(source, columns)]), "Arrow table", "Arrow", "row", source.num_rows, problems
    if not isinstance(source, (str, os.PathLike)):
        raise OCSFLoadError(f"Cannot load a {type(source).__name__}. {_FORMATS_HINT}.")
    path = Path(source)
    if not path.exists():
        raise OCSFLoadError(f"No such file: {path}. Check the path (relative paths start at {Path.cwd()}).")
    if path.is_dir():
        raise OCSFLoadError(
            f"{path} is a folder. Pass one file; to load several, call load_events per file and concatenate "
            "the tables with pd.concat."
        )
    if path.stat().st_size == 0:
        raise OCSFLoadError(f"{path} is empty (0 bytes): there are no events to load.")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1":
        try:
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            wanted = _parquet_columns(names, columns) if columns is not None else None
            table = pf.read(columns=wanted)
        except (pa.ArrowException, OSError) as exc:
            raise OCSFLoadError(
                f"{path} is not a readable Parquet file ({exc}). Re-export it or check that it is complete."
            ) from None
        return _arrow_builder(table), str(path), "Parquet", "row", table.num_rows, problems
    data = _read_bytes(path)
    if not data.strip():
        raise OCSFLoadError(f"{path} holds only whitespace: there are no events to load.")
    fmt = _detect(path, data)
    if fmt == "parquet":  # gzip-wrapped parquet
        try:
            table = pq.read_table(pa.BufferReader(data))
        except pa.ArrowException as exc:
            raise OCSFLoadError(f"{path} is not a readable Parquet file ({exc}).") from None
        return _arrow_builder(table), str(path), "Parquet", "row", table.num_rows, problems
    if fmt == "json_array":
        try:
            doc = json.loads(data)
        except ValueError as exc:
            where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            raise OCSFLoadError(
                f"{path} starts with '[' but is not valid JSON{where} ({getattr(exc, 'msg', exc)}). "
                "A JSON array file must be one complete array of event objects; for one event per line use JSON Lines."
            ) from None
        if not isinstance(doc, list):
            raise OCSFLoadError(f"{path} is JSON but not an array of events. {_FORMATS_HINT}.")
        b = _combine([_records_part(enumerate(doc), problems, columns)])
        return b, str(path), "JSON array", "element", len(doc), problems
    first_line = data.lstrip().split(b"\n", 1)[0].strip()
    if first_line[:1] == b"{" and first_line[-1:] != b"}":
        # maybe one pretty-printed JSON object rather than JSON Lines
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            b = _combine([_records_part([(1, doc)], problems)])
            return b, str(path), "JSON object", "element", 1, problems
    parts, n_input, n_blank = _read_jsonl(data, problems)
    b = _combine(parts) if parts else _Builder(0, np.zeros(0, dtype=np.int64))
    if n_blank:
        b.notes.append(f"{n_blank:,} blank line(s) skipped")
    return b, str(path), "JSON Lines", "line", n_input, problems


def _parquet_columns(names: list[str], columns: Sequence[str]) -> list[str]:
    """Physical Parquet columns that can contribute to the requested output columns."""
    wanted = set(columns)
    if "time" in wanted:
        wanted |= {"time_dt"}
    keep = []
    for name in names:
        mapped = ocsf_dotted_name(name)
        for cand in {name, mapped}:
            if any(
                w == cand or w.startswith(cand + ".") or cand.startswith(w + ".") for w in wanted
            ) or cand in ("time", "time_dt") and "time" in wanted:
                keep.append(name)
                break
    return keep


# -------------------------------------------------------------------------------------- transformations
def _rename_underscored(b: _Builder) -> None:
    if not _schema_index()[0] and any("_" in c and "." not in c for c in b.cols):
        b.notes.append("OCSF schemas (pydantic-ocsf) not found: underscore column names were not mapped to dotted paths")
    for name in sorted(b.cols):
        target = ocsf_dotted_name(name)
        if target == name:
            continue
        series = b.cols.pop(name)
        b.renamed[name] = target
        b.merge(target, series, f"column {name!r}")


def _merge_nested(b: _Builder) -> None:
    for name in sorted(b.nested):
        b.merge(name, b.nested[name], "the nested object")
    b.nested = {}


def _string_view(s: pd.Series) -> pd.Series | None:
    """Non-null values of a text-like column as strings (mixed object columns: scalars rendered as text)."""
    if _is_string_col(s) and s.dtype != object:
        return s.dropna()
    if s.dtype != object:
        return None
    nn = s.dropna()
    if nn.empty:
        return None
    kinds = nn.map(type)
    ok = kinds.isin([str, int, float, bool, np.str_, np.int64, np.float64, np.bool_])
    if not ok.all() or not (kinds == str).any():
        return None
    return nn.map(lambda v: ("true" if v else "false") if isinstance(v, (bool, np.bool_)) else str(v)).astype(object)


def _first_characters(values: list[str], counts: list[int]) -> dict[str, int]:
    """How many sampled values start (after leading whitespace) with ``{`` and with ``[`` (distinct ``values``,
    each seen ``counts`` times: a categorical column's sample repeats a few values hundreds of times)."""
    opens = {"{": 0, "[": 0}
    for value, count in zip(values, counts):
        first = value.lstrip()[:1]
        if first in opens:
            opens[first] += count
    return opens


def _without_openers(s: pd.Series) -> bool:
    """True when ``s`` is an Arrow text column with no ``{`` and no ``[`` among its characters: none of its values
    can open a JSON object or array, and the column is judged without sampling it (most text columns: ~50 µs
    each otherwise). Read off the character buffer (a copy and a memchr); characters outside a sliced array's
    range can only send the column to the full judgement."""
    arr = _arrow_text(s) if _SHORTCUTS else None
    if arr is None or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return False  # (a string view keeps short values outside the character buffers)
    for chunk in arr.chunks:
        chars = chunk.buffers()[2]
        if chars is not None and chars.size:
            data = chars.to_pybytes()
            if data.find(b"{") >= 0 or data.find(b"[") >= 0:
                return False
    return True


def _json_candidate(b: _Builder, name: str):
    """Column ``name`` as JSON texts to expand, or None: (the column, its non-null values, the kind of JSON value
    they hold (dict or list), the values left-stripped, which of them start with that kind's opener). A column
    qualifies when its sampled values are all text and enough of them open a JSON object (or array)."""
    s = b.cols.get(name)
    if s is None or not (_is_string_col(s) or s.dtype == object) or _without_openers(s):
        return None
    values, counts, n_sample, all_text = b.sample_counts(name)
    if not n_sample or not all_text:
        return None
    opens = _first_characters(values, counts)
    if not (opens["{"] or opens["["]):
        return None
    nn = s.dropna()
    for opener, kind in (("{", dict), ("[", list)):
        if opens[opener] / n_sample < COERCE_THRESHOLD:
            continue
        if s.dtype == object and not all(isinstance(v, str) for v in nn):
            return None
        stripped = nn.astype(_STR_DTYPE).str.lstrip()
        starts = stripped.str.startswith(opener).to_numpy(dtype=bool)
        if starts.mean() < COERCE_THRESHOLD:
            return None
        return s, nn, kind, stripped, starts
    return None


#: A column of at least this many JSON texts is parsed by Arrow on a thread of its own, started as soon as the
#: column is judged, while the other columns are judged and expanded (Arrow's reader releases Python's lock; one
#: column of one block is parsed on one core). Fewer texts parse in the time a thread takes to start.
_JSON_AT_ONCE_MIN = 4096


class _JsonParses:
    """Arrow's parses of JSON-text columns, each started on a thread when its column is judged (see
    :data:`_JSON_AT_ONCE_MIN`); ``get(name)`` is the future of a started parse, or None."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[str, Future] = {}

    def start(self, name: str, texts: pd.Series) -> None:
        if len(texts) < _JSON_AT_ONCE_MIN:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="obsad-json")
        self._futures[name] = self._pool.submit(lambda t: _read_json_arrow(_json_lines_buffer(t)), texts)

    def get(self, name: str) -> Future | None:
        return self._futures.get(name)

    def close(self) -> None:
        """No more parses: the threads end once the started ones are done (their results stay readable)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def _json_looking_first(b: _Builder, names: list[str]) -> list[str]:
    """``names`` with the text columns whose first few present values open a JSON object or array moved to the
    front (a glance at 16 rows, for the order of judging only, which changes no result): their parses then start
    before, and run while, the other columns are judged."""
    def looks_json(name: str) -> bool:
        s = b.cols.get(name)
        if s is None or not (_is_string_col(s) or s.dtype == object) or _without_openers(s):
            return False
        return any(isinstance(v, str) and v.lstrip()[:1] in ("{", "[") for v in s.array[:16])

    first = [name for name in names if looks_json(name)]
    chosen = set(first)
    return first + [name for name in names if name not in chosen]


def _expand_json_columns(b: _Builder, wanted: _Wanted | None = None) -> None:
    """Columns of JSON texts (objects or arrays, judged on a sample) -> their keys as columns (objects) or parsed
    arrays (summarised later); JSON inside JSON a few levels deep. ``wanted``: only the keys that can make the
    requested columns are kept (as the readers do for every other column)."""
    pending = sorted(b.cols)
    for _ in range(5):  # JSON inside JSON, a few levels at most
        changed = False
        before = set(b.cols)
        initial = {name: b.cols.get(name) for name in pending}
        candidates = {}
        parsing = _JsonParses()
        for name in _json_looking_first(b, pending):
            candidate = _json_candidate(b, name)
            if candidate is not None:
                candidates[name] = candidate
                if candidate[4].all() and _shallow_enough(candidate[3]):
                    parsing.start(name, candidate[3])
        parsing.close()
        for name in pending:
            if b.cols.get(name) is initial[name]:
                candidate, future = candidates.get(name), parsing.get(name)
            else:  # an earlier column of this round expanded into this name: judge it as it is now
                candidate, future = _json_candidate(b, name), None
            if candidate is None:
                continue
            s, nn, kind, stripped, starts = candidate
            parsed_table = future.result() if future is not None else _NOT_PARSED
            if starts.all() and (future is not None or _shallow_enough(stripped)) \
                    and _expand_json_arrow(b, name, stripped, kind, parsed_table, wanted):
                changed = changed or kind is dict
                continue
            parsed = [_loads_or_none(v) for v in stripped.to_numpy(dtype=object)]
            good = np.fromiter((type(v) is kind for v in parsed), dtype=bool, count=len(parsed))
            if good.mean() < COERCE_THRESHOLD:
                continue
            rows = nn.index.to_numpy()
            bad = rows[~good]
            if bad.size:
                what = "JSON object" if kind is dict else "JSON array"
                raw = nn[~good]
                opens = starts[~good]
                for flag, reason in ((True, "invalid_json"), (False, "wrong_type")):
                    sel = opens == flag
                    details = [f"expected a {what}, got {d}" for d in _repr_series(raw[sel])]
                    b.problem(bad[sel], name, reason, details)
            if kind is list:
                arr = np.empty(b.n, dtype=object)
                arr[rows[good]] = _object_array([v for v, g in zip(parsed, good) if g])
                b.cols[name] = pd.Series(arr, dtype=object)
                b.json_arrays.add(name)
            else:
                del b.cols[name]
                store: dict[str, tuple[list[int], list[Any]]] = {}
                under = wanted is not None and name in wanted.names
                for r, v, g in zip(rows, parsed, good):
                    if g and v:
                        if wanted is None:
                            _walk_nested(v, f"{name}.", int(r), store)
                        else:
                            _walk_nested_wanted(v, f"{name}.", int(r), store, wanted, under)
                created = b.add_store(store, f"the JSON column {name!r}")
                b.expanded[name] = created
                changed = True
        pending = sorted(set(b.cols) - before)
        if not changed or not pending:
            break


def _scatter(s: pd.Series, rows: np.ndarray, n: int) -> pd.Series:
    """Values of ``s`` (one per row in ``rows``) placed on RangeIndex(n), missing elsewhere."""
    if len(rows) == n:  # rows are sorted and unique: all of them
        return s.reset_index(drop=True)
    idx = np.full(n, -1, dtype=np.int64)
    idx[rows] = np.arange(len(rows), dtype=np.int64)
    return pd.Series(pd.api.extensions.take(s.array, idx, allow_fill=True))


def _json_lines_buffer(texts: pd.Series) -> pa.Buffer | bytes:
    """Non-null JSON texts -> one JSON Lines buffer of ``{"v": <text>}`` objects (built in Arrow, no Python loop)."""
    try:
        if isinstance(texts.dtype, pd.StringDtype) and texts.dtype.storage == "pyarrow":
            arr = texts.array.__arrow_array__()
        else:
            arr = pa.array(texts.to_numpy(dtype=object), pa.string())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        arr = arr.cast(pa.large_string())
        # raw newlines can only be whitespace between JSON tokens: make each text one line. Whether there are
        # any is read off the character buffer (a copy and a memchr: ~0.6 ms per MB, where a per-text substring match
        # costs ~3 ms); bytes outside the array's slice can only cause a needless, harmless replace.
        chars = arr.buffers()[2]
        chars = chars.to_pybytes() if chars is not None else b""
        for ch in ("\n", "\r"):
            if chars.find(ch.encode()) >= 0:
                arr = pc.replace_substring(arr, ch, " ")
        wrapped = pc.binary_join_element_wise(
            pa.scalar('{"v":', pa.large_string()),
            arr,
            pa.scalar("}\n", pa.large_string()),
            pa.scalar("", pa.large_string()),
        )
        if isinstance(wrapped, pa.ChunkedArray):
            wrapped = wrapped.combine_chunks()
        offsets = np.frombuffer(wrapped.buffers()[1], dtype=np.int64)
        offsets = offsets[wrapped.offset : wrapped.offset + len(wrapped) + 1]
        return wrapped.buffers()[2][int(offsets[0]) : int(offsets[-1])]
    except (pa.ArrowException, TypeError, ValueError):
        one_line = texts.astype(str).str.replace("\n", " ", regex=False).str.replace("\r", " ", regex=False)
        return ('{"v":' + one_line + "}").str.cat(sep="\n").encode("utf-8")


_NOT_PARSED = object()


def _expand_json_arrow(b: _Builder, name: str, texts: pd.Series, kind: type, table=_NOT_PARSED,
                       wanted: _Wanted | None = None) -> bool:
    """Parse a column of JSON texts with Arrow (vectorised); False if Arrow refuses (then parse per value).
    ``table``: Arrow's parse of ``texts`` when already done (:class:`_JsonParses`); ``wanted``: the keys kept."""
    if table is _NOT_PARSED:
        table = _read_json_arrow(_json_lines_buffer(texts))
    if table is None or table.num_rows != len(texts) or table.column_names != ["v"]:
        return False
    col = table.column("v")
    if col.null_count:
        return False
    rows = texts.index.to_numpy()
    if kind is dict:
        if not pa.types.is_struct(col.type):
            return False
        children = _flatten_structs([name], [col], None if wanted is None else wanted.keeps)
        del b.cols[name]
        for child in sorted(children):
            b.merge(child, _scatter(children[child], rows, b.n), f"the JSON column {name!r}")
        b.expanded[name] = sorted(children)
        return True
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        return False
    b.cols[name] = _scatter(_arrow_series(col), rows, b.n)
    b.json_arrays.add(name)
    return True


#: JSON texts nested deeper than this are refused (reported as invalid JSON): the walks, summaries and renderings
#: of parsed values recurse, and a crafted text of a few thousand brackets would otherwise stop the whole batch
#: with a RecursionError (a 500 from the service) instead of one reported value.
_JSON_MAX_DEPTH = 64


def _json_depth(value: Any) -> int:
    """How deeply a parsed JSON value nests objects and arrays (0 for a scalar), without recursing."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _shallow_enough(texts: pd.Series) -> bool:
    """Whether no text can nest deeper than ``_JSON_MAX_DEPTH`` (it has at most that many ``[`` and ``{``); the
    texts of a column that fails go through the per-value parse, which measures and refuses the deep ones."""
    arr = _arrow_text(texts) if isinstance(texts.dtype, pd.StringDtype) else None
    if arr is None:
        return all(v.count("[") + v.count("{") <= _JSON_MAX_DEPTH for v in texts.to_numpy(dtype=object))
    if len(arr) == 0:
        return True
    openers = pc.add(pc.count_substring(arr, "["), pc.count_substring(arr, "{"))
    return (pc.max(openers).as_py() or 0) <= _JSON_MAX_DEPTH


def _loads_or_none(v: str) -> Any:
    """The parsed text, or ``_INVALID`` when it is not JSON or nests deeper than ``_JSON_MAX_DEPTH``."""
    try:
        parsed = json.loads(v)
    except (ValueError, RecursionError):
        return _INVALID
    if v.count("[") + v.count("{") > _JSON_MAX_DEPTH and _json_depth(parsed) > _JSON_MAX_DEPTH:
        return _INVALID
    return parsed


_INVALID = object()


def _resolve_object_scalar_conflicts(b: _Builder) -> None:
    """A name holding scalars in some events and objects (``name.*`` columns) in others: the minority is wrong."""
    names = sorted(b.cols)
    # names that have dotted children (columns are only removed below, so no other name gains any)
    parents = {name[:i] for name in names for i, ch in enumerate(name) if ch == "."}
    for name in names:
        if name not in b.cols or (_SHORTCUTS and name not in parents):
            continue
        prefix = name + "."
        children = [c for c in b.cols if c.startswith(prefix)]
        if not children:
            continue
        scalar = b.cols[name].notna().to_numpy(dtype=bool)
        obj = np.zeros(b.n, dtype=bool)
        for c in children:
            obj |= b.cols[c].notna().to_numpy(dtype=bool)
        n_scalar, n_obj = int(scalar.sum()), int(obj.sum())
        if n_scalar == 0:
            del b.cols[name]
            continue
        if n_obj == 0:
            continue
        if (scalar & obj).any():
            # both forms in the same events: two different fields (say a vendor's flat 'device' beside
            # 'device_hostname'), not one field whose type drifts; keep both
            b.notes.append(f"{name}: holds values beside {name}.* columns in the same events; both kept")
            continue
        if n_scalar < n_obj or (n_scalar == n_obj):
            rows = np.flatnonzero(scalar)
            details = [f"expected an object, got {d}" for d in _repr_series(b.cols[name].iloc[rows])]
            b.problem(rows, name, "wrong_type", details)
            del b.cols[name]
            b.notes.append(f"{name}: {n_scalar:,} scalar value(s) where {n_obj:,} events have an object; set missing")
        else:
            rows = np.flatnonzero(obj)
            shown: list[dict[str, Any]] = [{} for _ in rows]
            for c in children:
                vals = b.cols[c].iloc[rows].astype(object).tolist()
                for d, v in zip(shown, vals):
                    if v is not None and not (isinstance(v, float) and math.isnan(v)) and v is not pd.NA:
                        d[c[len(prefix):]] = v
            b.problem(rows, name, "wrong_type", [f"expected a scalar, got an object {_trunc(d, 80)}" for d in shown])
            for c in children:
                s = b.cols[c].copy()
                s.iloc[rows] = None
                b.cols[c] = s
                if not s.notna().any():
                    del b.cols[c]
            b.notes.append(f"{name}: {n_obj:,} object value(s) where {n_scalar:,} events have a scalar; set missing")


def _is_listlike(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray))


def _element_type(el: Any) -> str | None:
    if not isinstance(el, dict):
        return None
    for key in ("type", "type_id", "name"):
        v = el.get(key)
        if v is not None:
            return str(v)
    return None


def _scalar_text(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=str)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))  # as Arrow renders it
    return str(v)


def _is_arrow_list(dtype: Any) -> bool:
    return isinstance(dtype, pd.ArrowDtype) and (
        pa.types.is_list(dtype.pyarrow_dtype) or pa.types.is_large_list(dtype.pyarrow_dtype)
    )


def _summarise_arrays(b: _Builder) -> None:
    """Arrays of objects -> ``<name>.count`` + ``<name>.types``; arrays of scalars -> text joined with ``|``."""
    for name in sorted(b.cols):
        s = b.cols[name]
        if _is_arrow_list(s.dtype):
            arr = s.array.__arrow_array__()
            arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
            if not _summarise_list_arrow(b, name, arr):
                b.cols[name] = pd.Series(_object_array(arr.to_pylist()), dtype=object)
                _summarise_list_python(b, name)
            continue
        if s.dtype == object:
            _summarise_list_python(b, name)


def _list_origin(b: _Builder, name: str) -> str:
    return "JSON text array" if name in b.json_arrays else "array"


def _joined_lists(n: int, parents: np.ndarray, values: pa.Array, valid: np.ndarray) -> pd.Series:
    """Rebuild per-row lists from (parent row, value) pairs and join each with '|'; missing where not valid."""
    per_row = np.bincount(parents, minlength=n) if len(parents) else np.zeros(n, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(per_row, out=offsets[1:])
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values.cast(pa.large_string()))
    joined = pc.binary_join(lists, pa.scalar("|", pa.large_string()))
    joined = pc.if_else(pa.array(valid), joined, pa.scalar(None, joined.type))
    direct = _direct_series(joined) if _SHORTCUTS else None  # (the Arrow text as it is, no Python strings)
    return direct if direct is not None else pd.Series(joined.to_pandas(), dtype=_STR_DTYPE)


def _distinct_sorted_pairs(rows: np.ndarray, keys: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """The distinct (row, key) pairs with a non-null key, sorted by row then key (code-point order, as Python
    sorts strings; UTF-8 byte order is the same): integers and one small sort of the distinct keys, no frame."""
    keep = keys.is_valid().to_numpy(zero_copy_only=False)
    if not keep.all():
        rows, keys = rows[keep], keys.filter(pa.array(keep))
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64), pa.array([], pa.string())
    encoded = pc.dictionary_encode(keys)
    distinct = encoded.dictionary
    order = pc.sort_indices(distinct).to_numpy(zero_copy_only=False).astype(np.int64)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    width = np.int64(len(order))
    pairs = np.unique(rows.astype(np.int64) * width + rank[encoded.indices.to_numpy(zero_copy_only=False)])
    return pairs // width, distinct.take(pa.array(order[pairs % width])).cast(pa.string())


def _summarise_list_arrow(b: _Builder, name: str, arr: pa.Array) -> bool:
    """Vectorised summary of an Arrow list column (length n); False if its elements are not summarisable here."""
    n = len(arr)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(arr)
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    vt = arr.type.value_type
    if pa.types.is_struct(vt):
        key = None
        for field in ("type", "type_id", "name"):
            idx = vt.get_field_index(field)
            if idx < 0:
                continue
            try:
                values = flat.field(idx).cast(pa.string())
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
                continue
            key = values if key is None else pc.coalesce(key, values)
        if key is None:
            key_rows, key_values = np.zeros(0, dtype=np.int64), pa.array([], pa.string())
        else:
            key = pc.if_else(flat.is_valid(), key, pa.scalar(None, pa.string()))
            key_rows, key_values = _distinct_sorted_pairs(parents, key)
        types = _joined_lists(n, key_rows, key_values, valid)
        lengths = pc.list_value_length(arr)
        count = _direct_series(lengths.cast(pa.int64())) if _SHORTCUTS else None
        if count is None:
            count = pd.Series(lengths.to_pandas(types_mapper=_arrow_mapper)).astype("Int64").reset_index(drop=True)
        del b.cols[name]
        origin = f"the {_list_origin(b, name)} {name!r}"
        b.merge(f"{name}.count", count, origin)
        b.merge(f"{name}.types", types, origin)
        b.derived |= {f"{name}.count", f"{name}.types"}
        b.expanded[name] = [f"{name}.count", f"{name}.types"]
        b.notes.append(f"{name}: {_list_origin(b, name)} of objects summarised as {name}.count and {name}.types")
        return True
    if pa.types.is_nested(vt):
        return False
    try:
        text = flat.cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return False
    keep = text.is_valid()
    b.cols[name] = _joined_lists(
        n, parents[keep.to_numpy(zero_copy_only=False)], text.filter(keep), valid
    )
    b.derived.add(name)
    b.coerced[name] = f"{_list_origin(b, name)}→text joined with '|' ({int(valid.sum()):,} values)"
    return True


def _summarise_list_python(b: _Builder, name: str) -> None:
    """Object column: lists (the majority form) are summarised, the minority form is reported and set missing."""
    s = b.cols[name]
    if _SHORTCUTS and not _notna(s).any():
        return
    nn = s.dropna()
    if nn.empty:
        return
    values = nn.to_numpy(dtype=object)
    is_list = np.fromiter((_is_listlike(v) for v in values), dtype=bool, count=len(values))
    n_list = int(is_list.sum())
    if n_list == 0:
        return
    rows = nn.index.to_numpy()
    if n_list * 2 < len(values):  # lists are the minority: they are the wrong ones
        bad = rows[is_list]
        details = [f"expected a scalar, got an array {_trunc(list(v), 60)}" for v in values[is_list]]
        b.problem(bad, name, "wrong_type", details)
        arr = s.to_numpy(dtype=object).copy()
        arr[bad] = None
        b.cols[name] = _normalise_dtype(pd.Series(arr, dtype=object))
        return
    if n_list < len(values):
        bad = rows[~is_list]
        b.problem(bad, name, "wrong_type", [f"expected an array, got {d}" for d in _repr_series(values[~is_list])])
    lists = [list(v) for v in values[is_list]]
    list_rows = rows[is_list]
    if _SHORTCUTS and _plain_object_lists(lists):
        del b.cols[name]
        _summarise_object_lists(b, name, lists, list_rows)
        return
    full: list[Any] = [None] * b.n
    for r, lst in zip(list_rows.tolist(), lists):
        full[r] = lst
    try:
        arr = pa.array(full)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        arr = None
    if arr is not None and (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        if _summarise_list_arrow(b, name, arr):
            return
    # heterogeneous elements: one Python pass over the array cells of this column
    has_objects = any(isinstance(el, dict) for lst in lists for el in lst)
    del b.cols[name]
    if has_objects:
        _summarise_object_lists(b, name, lists, list_rows)
    else:
        joined = np.empty(b.n, dtype=object)
        joined[list_rows] = _object_array(["|".join(_scalar_text(x) for x in lst if x is not None) for lst in lists])
        b.cols[name] = pd.Series(joined, dtype=_STR_DTYPE)
        b.derived.add(name)
        b.coerced[name] = f"{_list_origin(b, name)}→text joined with '|' ({len(lists):,} values)"


def _plain_object_lists(lists: list[list]) -> bool:
    """Whether the arrays hold objects only (and nulls), each type key (``_LIST_TYPE_KEYS``) holding text, an
    integer or nothing: then the Python summary gives the text Arrow's does (an integer prints alike) without
    converting every element, every field of it, to Arrow first (~1 ms a column of a batch, most of it fixed)."""
    seen = False
    for lst in lists:
        for el in lst:
            if el is None:
                continue
            if type(el) is not dict:
                return False
            seen = True
            for key in _LIST_TYPE_KEYS:
                v = el.get(key)
                if v is not None and type(v) is not str and type(v) is not int:
                    return False
    return seen


def _summarise_object_lists(b: _Builder, name: str, lists: list[list], list_rows: np.ndarray) -> None:
    """Arrays of objects (``lists``, at ``list_rows``; the column already removed) -> ``<name>.count`` and
    ``<name>.types`` (each array's distinct element types, sorted, joined with '|'), in Python."""
    count = _int_series(b.n, list_rows, np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists)))
    types = np.empty(b.n, dtype=object)
    types[list_rows] = _object_array(
        ["|".join(sorted({t for t in map(_element_type, lst) if t is not None})) for lst in lists]
    )
    origin = f"the {_list_origin(b, name)} {name!r}"
    b.merge(f"{name}.count", count, origin)
    b.merge(f"{name}.types", pd.Series(types, dtype=_STR_DTYPE), origin)
    b.derived |= {f"{name}.count", f"{name}.types"}
    b.expanded[name] = [f"{name}.count", f"{name}.types"]
    b.notes.append(f"{name}: {_list_origin(b, name)} of objects summarised as {name}.count and {name}.types")


def _screened(values: list[Any], counts: list[int], n_sample: int) -> list[tuple[str, int]] | None:
    """The sampled values as stripped lower-case text with their counts, less the missing tokens; or None as soon
    as more than a tenth of the sample is neither a flag (true/false) nor a number: then neither passes the
    screen (each needs 90 % of the values that are not missing tokens, at most the whole sample), and a text
    column of many distinct values is not lowered and matched value by value to the end."""
    fullmatch = _FLOAT_PY.fullmatch
    out: list[tuple[str, int]] = []
    not_flag = not_number = 0
    for x, c in zip(values, counts):
        v = (x if type(x) is str else _scalar_text(x)).strip().lower()
        if v in _MISSING_SET:
            continue
        out.append((v, c))
        if v != "true" and v != "false":
            not_flag += c
            if fullmatch(v) is None:
                not_number += c
                if 10 * not_number > n_sample and 10 * not_flag > n_sample:
                    return None
    return out


def _coerce_text_columns(b: _Builder, skip: set[str]) -> None:
    for name in sorted(b.cols):
        if name in skip:
            continue
        s = b.cols[name]
        if not (_is_string_col(s) or s.dtype == object):
            continue
        values, counts, n_sample, _ = b.sample_counts(name) if len(s) else ([], [], 0, False)
        if not n_sample or not any(isinstance(v, str) for v in values):
            continue
        # cheap screen on an evenly spaced sample before touching the whole column
        st = _screened(values, counts, n_sample)
        if st is None:  # neither flags nor numbers, whatever the rest of the sample holds
            is_bool = is_num = False
        else:
            n_st = sum(c for _, c in st)
            if not n_st:
                continue
            fullmatch = _FLOAT_PY.fullmatch
            is_bool = sum(c for v, c in st if v in ("true", "false")) >= 0.9 * n_st
            is_num = not is_bool and sum(c for v, c in st if fullmatch(v) is not None) >= 0.9 * n_st
        if not (is_bool or is_num):
            if s.dtype == object:
                _stringify_mixed(b, name)
            continue
        view = _string_view(s)
        if view is None:
            continue
        text = view.astype(_STR_DTYPE).str.strip()
        missing_tok = text.str.lower().isin(_MISSING_TOKENS).to_numpy(dtype=bool)
        vals = text[~missing_tok]
        origin = "str" if _is_string_col(s) and s.dtype != object else "mixed"
        if vals.empty:
            continue
        if is_bool:
            low = vals.str.lower()
            ok = low.isin(["true", "false"]).to_numpy(dtype=bool)
            if ok.mean() < COERCE_THRESHOLD:
                if s.dtype == object:
                    _stringify_mixed(b, name)
                continue
            # built from numpy arrays: pd.array([None] * n) converts a Python list value by value (~7 ms per 100k)
            truth, missing = np.zeros(b.n, dtype=bool), np.ones(b.n, dtype=bool)
            rows = vals.index.to_numpy()[ok]
            truth[rows] = (low[ok] == "true").to_numpy(dtype=bool)
            missing[rows] = False
            out = pd.Series(pd.arrays.BooleanArray(truth, missing))
            _finish_coercion(b, name, out, vals, ok, int(missing_tok.sum()), origin, "boolean")
            continue
        is_float = vals.str.fullmatch(_FLOAT_RE).to_numpy(dtype=bool)
        if is_float.mean() < COERCE_THRESHOLD:
            if s.dtype == object:
                _stringify_mixed(b, name)
            continue
        is_int = vals.str.fullmatch(_INT_RE).to_numpy(dtype=bool)
        if vals[is_int].str.fullmatch(_LEADING_ZERO_RE).any():
            b.notes.append(f"{name}: looks numeric but has leading zeros (an identifier?); kept as text")
            if s.dtype == object:
                _stringify_mixed(b, name)
            continue
        good = vals[is_float]
        all_int = bool(is_int[is_float].all())
        if not all_int and _ocsf_text_typed(name):
            b.notes.append(
                f"{name}: values look like decimals but OCSF types '{name.rsplit('.', 1)[-1]}' as text "
                "(a version?); kept as text"
            )
            if s.dtype == object:
                _stringify_mixed(b, name)
            continue
        numbers = _to_numbers(good, all_int)
        rows = good.index.to_numpy()
        if all_int:
            kind = numbers.dtype.kind
            fits = kind == "i" or (kind == "u" and (len(numbers) == 0 or numbers.max() < 2**63))
            if not fits:
                b.notes.append(f"{name}: integers beyond 64 bits (identifiers?); kept as text")
                if s.dtype == object:
                    _stringify_mixed(b, name)
                continue
            target = "Int64"
            out = _int_series(b.n, rows, numbers.to_numpy(dtype=np.int64))
        else:
            target = "float64"
            arr = np.full(b.n, np.nan)
            arr[rows] = numbers.to_numpy(dtype=np.float64)
            out = pd.Series(arr)
        _finish_coercion(b, name, out, vals, is_float, int(missing_tok.sum()), origin, target)


_NUMERIC_OCSF_TYPES = {"integer_t", "long_t", "float_t", "port_t", "timestamp_t", "boolean_t"}


def _ocsf_text_typed(name: str) -> bool:
    """True when the OCSF dictionary types this column's last segment as a non-numeric scalar (string_t, ...)."""
    leaf = name.rsplit(".", 1)[-1]
    typ = _schema_index()[0].get(leaf)
    return bool(typ) and typ.endswith("_t") and typ not in _NUMERIC_OCSF_TYPES


def _to_numbers(text: pd.Series, integers: bool) -> pd.Series:
    """Numeric-looking text -> numbers (Arrow cast when the text is Arrow-backed, else pandas)."""
    if isinstance(text.dtype, pd.StringDtype) and text.dtype.storage == "pyarrow":
        try:
            arr = text.array.__arrow_array__()
            if integers:
                try:
                    return pd.Series(pc.cast(arr, pa.int64()).to_numpy(), index=text.index)
                except pa.ArrowInvalid:
                    pass  # beyond int64: let pandas decide
            else:
                return pd.Series(pc.cast(arr, pa.float64()).to_numpy(), index=text.index)
        except (pa.ArrowException, TypeError, ValueError):
            pass
    try:
        return pd.to_numeric(text, errors="coerce")
    except (ValueError, TypeError, OverflowError):
        return pd.Series(np.nan, index=text.index)


def _int_series(n: int, rows: np.ndarray, values: np.ndarray) -> pd.Series:
    """A nullable Int64 Series of length n with ``values`` at ``rows`` and missing elsewhere."""
    data = np.zeros(n, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    data[rows] = values
    mask[rows] = False
    return pd.Series(pd.arrays.IntegerArray(data, mask))


def _stringify_mixed(b: _Builder, name: str) -> None:
    """An object column of mixed scalars that is not coerced becomes text (numbers rendered as text)."""
    s = b.cols[name]
    view = _string_view(s)
    if view is None:
        return
    out = pd.Series(np.full(b.n, None, dtype=object))
    out.iloc[view.index.to_numpy()] = view.to_numpy(dtype=object)
    b.cols[name] = out.astype(_STR_DTYPE)
    b.notes.append(f"{name}: mixed value types kept as text")


def _finish_coercion(
    b: _Builder, name: str, out: pd.Series, vals: pd.Series, ok: np.ndarray, n_empty: int, origin: str, target: str
) -> None:
    n_ok, n_bad = int(ok.sum()), int((~ok).sum())
    if n_bad:
        raw = b.cols[name].iloc[vals.index.to_numpy()[~ok]]
        details = [f"expected {target}, got {d}" for d in _repr_series(raw)]
        b.problem(vals.index.to_numpy()[~ok], name, "wrong_type", details)
    b.cols[name] = out
    if n_bad:
        desc = f"{origin}→{target} ({n_ok:,} of {n_ok + n_bad:,} values; {n_bad:,} unparseable set missing"
    else:
        desc = f"{origin}→{target} (all {n_ok:,} values"
    if n_empty:
        desc += f"; {n_empty:,} empty/null strings set missing"
    b.coerced[name] = desc + ")"


_NAT = np.iinfo(np.int64).min  # NaT as int64


def _all_contain(text: pd.Series, char: str) -> bool:
    """Whether every value of a text Series (no missing values) contains ``char``. A value with a character that
    no number has (``:``) cannot be a number: this spares the number pattern on ISO times (a fixed cost of about
    0.2 ms per call in pandas, which checks the pattern for RE2 compatibility each time)."""
    if not (isinstance(text.dtype, pd.StringDtype) and text.dtype.storage == "pyarrow"):
        return False
    arr = text.array.__arrow_array__()
    return bool(pc.all(pc.match_substring(arr, char)).as_py()) if len(arr) else False


def _ms_series(ms: np.ndarray) -> pd.Series:
    """int64 epoch milliseconds (``_NAT`` = missing) -> a ``datetime64[ms, UTC]`` Series on RangeIndex."""
    return pd.Series(ms.view("M8[ms]"), dtype="datetime64[ms, UTC]")


def _iso_ms_arrow(text: pd.Series) -> np.ndarray | None:
    """Epoch milliseconds of ISO 8601 texts (present values of an Arrow-backed column) by Arrow's cast, about 8x
    faster than pandas' parse; None unless Arrow reads every value, and at millisecond precision (a finer fraction,
    a date alone, a basic-format time...): pandas then parses them, as it would have. Where Arrow reads a value,
    it reads it as pandas does (UTC, offsets applied)."""
    arrow = _arrow_text(text)
    if arrow is None:
        return None
    try:
        times = pc.cast(arrow, pa.timestamp("ms", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if times.null_count:
        return None
    ms = times.cast(pa.int64())
    if isinstance(ms, pa.ChunkedArray):
        ms = ms.combine_chunks()
    return ms.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _ms_of(times: pd.Series) -> np.ndarray:
    """The int64 epoch milliseconds of a ``datetime64[ms, UTC]`` Series (``_NAT`` = missing)."""
    return np.asarray(times.array.asi8)


def _epoch_ms(num: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Epoch numbers -> (int64 milliseconds, which are usable, counts by unit). The unit is read from each value's
    magnitude (seconds below 1e11, milliseconds below 1e14, ...); a value that is not finite or lies beyond the
    datetime64[ms] range is unusable."""
    mag = np.abs(num)
    ms = np.full(len(num), np.nan)
    units: dict[str, int] = {}
    lo = 0.0
    for unit, hi, factor in _TIME_UNITS:
        m = (mag >= lo) & (mag < hi)
        if m.any():
            ms[m] = num[m] * factor
            units[f"epoch {unit}"] = int(m.sum())
        lo = hi
    ok = np.isfinite(ms) & (np.abs(ms) < 8.2e15)  # datetime64[ms] range, well inside
    return np.where(ok, np.round(np.where(ok, ms, 0.0)), 0.0).astype(np.int64), ok, units


def _parse_times(b: _Builder, name: str) -> tuple[np.ndarray, dict[str, int]]:
    """Column -> epoch milliseconds of datetime64[ms, UTC] (int64, ``_NAT`` for missing); unparseable values are
    reported. Returns (milliseconds, counts by unit).

    The result is assembled as int64 milliseconds, wrapped in a Series only where it is kept (no per-step
    Series: they dominate the cost of a small batch)."""
    s = b.cols[name]
    n = b.n
    units: dict[str, int] = {}
    if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(s.dtype):
        t = s if isinstance(s.dtype, pd.DatetimeTZDtype) else s.dt.tz_localize("UTC")
        out = _ms_of(t.dt.tz_convert("UTC").astype("datetime64[ms, UTC]"))
        units["datetime"] = int((out != _NAT).sum())
        return out, units
    out = np.full(n, _NAT, dtype=np.int64)
    present = _notna(s)
    if not present.any():
        return out, units
    text = None
    rows, num = np.zeros(0, dtype=np.int64), np.zeros(0)
    if _SHORTCUTS and (isinstance(s.dtype, pd.Int64Dtype) or s.dtype == np.float64):
        # epoch numbers (the common case): straight from the column's values
        rows = np.flatnonzero(present)
        num = s.to_numpy(dtype=np.float64, na_value=np.nan)[rows]
    else:
        if _SHORTCUTS and s.dtype == _STR_DTYPE:  # text: stripped in place of the column, then its present values
            view = s.str.strip()
            if not present.all():
                view = view[present]
        else:
            nn = s.dropna()
            if nn.dtype == object and pd.api.types.infer_dtype(nn, skipna=True) in ("datetime", "datetime64", "date"):
                conv = pd.to_datetime(nn, utc=True, errors="coerce")
                ok = conv.dropna()
                out[ok.index.to_numpy()] = _ms_of(ok.astype("datetime64[ms, UTC]"))
                units["datetime"] = int(len(ok))
                return out, units
            if pd.api.types.is_numeric_dtype(nn.dtype) and not pd.api.types.is_bool_dtype(nn.dtype):
                view = None
                num_s = nn.astype(np.float64).dropna()
                rows, num = num_s.index.to_numpy(), num_s.to_numpy()
            else:
                view = _string_view(nn) if nn.dtype == object else nn
                if view is None:
                    view = nn.map(lambda v: v if isinstance(v, str) else _trunc(v))
                view = view.astype(_STR_DTYPE).str.strip()
        if view is not None:
            is_num = np.zeros(len(view), dtype=bool) if _SHORTCUTS and _all_contain(view, ":") else (
                view.str.fullmatch(_FLOAT_RE).to_numpy(dtype=bool))
            if is_num.any():
                num_s = pd.to_numeric(view[is_num], errors="coerce").astype(np.float64).dropna()
                rows, num = num_s.index.to_numpy(), num_s.to_numpy()
                text = view[~is_num]
            else:  # no number-like text
                text = view
    # epoch numbers: unit by magnitude, value by value
    bad_rows: list[int] = []
    if len(num):
        ms, ok, found = _epoch_ms(num)
        units.update(found)
        out[rows[ok]] = ms[ok]
        bad_rows = rows[~ok].tolist()
    iso_ms = _iso_ms_arrow(text) if _SHORTCUTS and text is not None and not text.empty else None
    if iso_ms is not None:  # every text is an ISO time Arrow reads exactly (the common case)
        out[text.index.to_numpy()] = iso_ms
        units["ISO text"] = len(text)
    elif text is not None and not text.empty:
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        miss = parsed.isna().to_numpy(dtype=bool)
        if miss.any():
            try:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    parsed[miss] = pd.to_datetime(text[miss], format="mixed", utc=True, errors="coerce")
            except (ValueError, TypeError, OverflowError):
                pass
            miss = parsed.isna().to_numpy(dtype=bool)
        text_rows = text.index.to_numpy()
        if _SHORTCUTS and not miss.any():
            out[text_rows] = _ms_of(parsed.astype("datetime64[ms, UTC]"))
            units["ISO text"] = len(text_rows)
        elif not miss.all():
            ok = ~miss
            out[text_rows[ok]] = _ms_of(parsed[ok].astype("datetime64[ms, UTC]"))
            units["ISO text"] = int(ok.sum())
        bad_rows += text_rows[miss].tolist()
    if bad_rows:
        rows = np.asarray(sorted(bad_rows), dtype=np.int64)
        details = [f"not an epoch time or ISO 8601 date: {d}" for d in _repr_series(s.iloc[rows])]
        b.problem(rows, name, "unparseable_time", details)
    return out, units


def _dtype_word(s: pd.Series) -> str:
    if s.dtype == object:
        return "mixed"
    if _is_string_col(s):
        return "str"
    return str(s.dtype)


def _describe_units(units: dict[str, int], origin: str) -> str:
    return f"{origin}→datetime64[ms, UTC] (" + ", ".join(f"{n:,} {u}" for u, n in units.items()) + ")"


def _resolve_time(b: _Builder) -> None:
    has_time, has_dt = "time" in b.cols, "time_dt" in b.cols
    if not has_time and not has_dt:
        b.notes.append("no 'time' or 'time_dt' column: events have no timestamp")
        return
    dt_ms = None
    if has_dt:
        origin_dt = _dtype_word(b.cols["time_dt"])
        dt_ms, units_dt = _parse_times(b, "time_dt")
    if has_time:
        origin = _dtype_word(b.cols["time"])
        time_ms, units = _parse_times(b, "time")
        if units and origin != "datetime64[ms, UTC]":
            b.coerced["time"] = _describe_units(units, origin)
        if dt_ms is not None:
            fill = (time_ms == _NAT) & (dt_ms != _NAT)
            if fill.any():
                time_ms = np.where(fill, dt_ms, time_ms)
                b.notes.append(f"time: {int(fill.sum()):,} missing or unparseable value(s) filled from time_dt")
    else:
        assert dt_ms is not None
        time_ms = dt_ms
        b.coerced["time"] = _describe_units(units_dt, f"time_dt ({origin_dt})")
        b.notes.append("time: derived from time_dt ('time' column absent)")
    b.cols["time"] = _ms_series(time_ms)
    if dt_ms is not None and has_time:
        present = dt_ms != _NAT
        if np.array_equal(dt_ms[present], time_ms[present]):
            del b.cols["time_dt"]
            b.notes.append("time_dt: identical to time (to the millisecond); dropped")
        else:
            b.cols["time_dt"] = _ms_series(dt_ms)
            if units_dt:
                b.coerced["time_dt"] = _describe_units(units_dt, origin_dt)
    elif not has_time and has_dt:
        del b.cols["time_dt"]
    n_missing = int((time_ms == _NAT).sum())
    if n_missing:
        b.notes.append(f"time: {n_missing:,} event(s) have no usable time")


def _finalise(b: _Builder, columns: Sequence[str] | None) -> pd.DataFrame:
    """The output table: requested (or all) columns, sorted, object columns narrowed, absent ones all-missing.

    Every column Series is put on one shared index object, which the DataFrame constructor recognises as already
    aligned (no reindexing per column: that, not the data, is the cost of a table of a few rows)."""
    if columns is not None:
        missing = [c for c in columns if c not in b.cols]
        if missing:
            b.notes.append(f"requested column(s) not in the source, added as missing: {', '.join(missing[:10])}")
        names = sorted(set(columns))
    else:
        names = sorted(b.cols)
    index = pd.RangeIndex(b.n)
    absent = None
    data = {}
    for name in names:
        s = b.cols.get(name)
        if s is None:
            if absent is None:  # one all-missing column serves every absent name
                absent = pd.Series(np.full(b.n, None, dtype=object), index=index)
            data[name] = absent
            continue
        if s.dtype == object:
            s = _normalise_dtype(s)
        if _SHORTCUTS and len(s) == b.n:
            s.index = index
        else:  # pragma: no cover - defensive: aligned by position as before
            s = s.reset_index(drop=True)
        data[name] = s
    # columns are shared, not copied, where pandas copies on write (a copy of every column cost ~8 ms per 100k
    # events); elsewhere the frame copies them, so that the absent columns never alias each other
    return pd.DataFrame(data, index=index, copy=not _copy_on_write())


def _copy_on_write() -> bool:
    """Whether pandas copies shared column memory on write (always from pandas 3; an option in pandas 2)."""
    if int(pd.__version__.split(".")[0]) >= 3:
        return True
    try:
        return pd.get_option("mode.copy_on_write") is True
    except (KeyError, ValueError):  # pragma: no cover - a pandas without the option
        return False


@functools.lru_cache(maxsize=1)
def _no_problems() -> pd.DataFrame:
    """The (empty) problems table of a clean load; callers get a copy."""
    return _problems_table([], [], [], [])


def _problems_table(lines: list, fields: list, reasons: list, details: list) -> pd.DataFrame:
    index = pd.RangeIndex(len(lines))  # one index object: the frame needs no alignment
    return pd.DataFrame(
        {
            "line": pd.Series(pd.array(lines, dtype="Int64"), index=index),
            "field": pd.Series(fields, index=index, dtype=object),
            "reason": pd.Series(reasons, index=index, dtype=object),
            "detail": pd.Series(details, index=index, dtype=object),
        },
        index=index,
    )


def _problems_frame(b: _Builder, parse_problems: list[tuple[int, str, str]]) -> pd.DataFrame:
    """Every problem, sorted by position, field and reason (one frame built once, not one per problem kind)."""
    parts = list(b.problems)
    if _SHORTCUTS and not parts and not parse_problems:
        return _no_problems().copy()
    if parse_problems:
        parts.insert(0, ([p[0] for p in parse_problems], [None] * len(parse_problems),
                         [p[1] for p in parse_problems], [p[2] for p in parse_problems]))
    frame = _problems_table(*([v for part in parts for v in part[i]] for i in range(4)))
    if len(frame) > 1:
        frame = frame.sort_values(["line", "field", "reason"], kind="stable", na_position="last").reset_index(drop=True)
    return frame


# ----------------------------------------------------------------------------------------------- the API
def load_events(source: Any, *, columns: Sequence[str] | None = None) -> LoadResult:
    """Load OCSF events from a file or in-memory data into the flat table, with a report of every problem.

    ``source``: a path to Parquet, JSON Lines (``.jsonl``/``.ndjson``/``.json``) or a JSON array (``.json``),
    optionally gzip-compressed, detected by content where the suffix is ambiguous; or a ``pd.DataFrame``; or a
    list of event dicts; or a ``pyarrow.Table`` of events, one per row, objects as structs (as Arrow's JSON reader
    makes them: :func:`obsad.ocsf.arrow_json.read_events_table`). ``columns``: optional dotted output names to
    keep (requested names absent from the source are added as all-missing and noted in the report).

    Returns ``LoadResult(events, report)``; raises :class:`OCSFLoadError` for a missing, empty or unreadable
    source, or when no valid event remains.
    """
    if columns is not None:
        if isinstance(columns, str):
            columns = [columns]
        columns = [str(c) for c in columns]
    b, label, fmt, position, n_input, parse_problems = _read(source, columns)
    _rename_underscored(b)
    _merge_nested(b)
    _expand_json_columns(b, _Wanted(columns) if columns is not None else None)
    _resolve_object_scalar_conflicts(b)
    _summarise_arrays(b)
    _coerce_text_columns(b, skip={"time", "time_dt"} | b.derived)
    _resolve_time(b)
    events = _finalise(b, columns)
    report = LoadReport(
        source=label,
        format=fmt,
        position=position,
        n_input=int(n_input),
        n_loaded=int(b.n),
        problems=_problems_frame(b, parse_problems),
        coerced=dict(sorted(b.coerced.items())),
        renamed=b.renamed,
        expanded=b.expanded,
        notes=b.notes,
    )
    if b.n == 0 and n_input == 0:
        raise OCSFLoadError(f"{label} holds no events (0 records): there is nothing to load.")
    if b.n == 0:
        raise OCSFLoadError(
            f"No valid OCSF event in {label}: every record was rejected. Check that the file holds one JSON object "
            f"per event (JSON Lines) or an array of objects.\n{report.summary()}"
        )
    return LoadResult(events=events, report=report)


# ------------------------------------------------------------------------------------------- one plain event
_LIST_TYPE_KEYS = ("type", "type_id", "name")  # what an array element's type is read from (`_element_type`)
_ISO_UTC = re.compile(r"(\d{4})-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
_INT64_RANGE = range(-(2**63), 2**63)


class _NotPlain(Exception):
    """Raised inside :func:`plain_record` when a loader rule beyond flattening could apply."""


def _plain_text(value: str) -> bool:
    """Text the loader keeps as it is in a one-event column: not padded, not empty, not a null token, and not a
    number or boolean (coerced)."""
    if not value or value[0].isspace() or value[-1].isspace():
        return False
    low = value.lower()
    return low not in _MISSING_SET and low not in ("true", "false") and _FLOAT_PY.fullmatch(low) is None


def _plain_walk(obj: dict, prefix: str, leaves: dict[str, Any], depth: int = 0) -> None:
    for key, val in obj.items():
        kind = type(val)
        if kind is dict:
            if val:
                _plain_walk(val, f"{prefix}{key}.", leaves, depth)
            continue
        if val is None:
            continue  # missing: never in conflict with a value of the same name or below it
        name = prefix + key
        if name in leaves:  # flat and nested (or in JSON text): kept once when the same, else for the loader
            seen = leaves[name]
            if type(seen) is kind and seen == val:
                continue
            raise _NotPlain
        if not prefix and "_" in key and ocsf_dotted_name(key) != key:
            raise _NotPlain  # renamed to an OCSF path (and possibly merged with a nested value)
        if kind is str:
            opener = val.lstrip()[:1]
            if opener in ("{", "["):  # JSON as text: an object is expanded into its columns, an array summarised
                if depth >= 4:
                    raise _NotPlain  # nested deeper than the loader expands
                try:
                    val = json.loads(val)
                except (ValueError, RecursionError):
                    raise _NotPlain from None  # reported by the loader
                kind = type(val)
                if kind is dict and opener == "{":
                    _plain_walk(val, f"{name}.", leaves, depth + 1)
                    continue
                if kind is not list or opener != "[":
                    raise _NotPlain
        if kind is int:
            if val not in _INT64_RANGE:
                raise _NotPlain
        elif kind is float:
            if not math.isfinite(val):
                raise _NotPlain
        elif kind is list:
            # an array of objects whose type keys are text or whole numbers: summarised, as the loader does
            if not val or any(type(el) is not dict for el in val):
                raise _NotPlain
            for el in val:
                for k in _LIST_TYPE_KEYS:
                    v = el.get(k)
                    if v is not None and type(v) is not str and type(v) is not int:
                        raise _NotPlain
        elif kind is not bool and kind is not str:
            raise _NotPlain
        leaves[name] = val


@functools.lru_cache(maxsize=4096)
def _list_summary(type_keys: tuple) -> tuple[int, str | None]:
    """``(count, types)`` the loader gives an array of objects, from each element's type keys (cached: arrays of
    the same length and types summarise alike whatever their other fields)."""
    elements = [{k: v for k, v in zip(_LIST_TYPE_KEYS, keys) if v is not None} for keys in type_keys]
    frame = load_events([{"x": elements}]).events
    count, types = frame["x.count"].iloc[0], frame["x.types"].iloc[0]
    return int(count), (None if pd.isna(types) else str(types))


@functools.lru_cache(maxsize=4096)
def _loaded_text(name: str, value: str) -> Any:
    """What the loader makes of one text value of column ``name`` in a one-event table (a number, a boolean, the
    text, or None for missing), read from the loader itself and cached: account ids and flags sent as text repeat."""
    column = load_events([{name: value}]).events[name]  # a dotted name is never renamed
    loaded = column.iloc[0]
    if pd.isna(loaded):
        return None
    if isinstance(loaded, np.generic):
        loaded = loaded.item()
    return loaded if type(loaded) in (str, bool, int, float) else None


def _plain_time_dt(value: Any) -> bool:
    """ISO 8601 text the loader parses without a problem (a ``time_dt`` beside a usable ``time``)."""
    if type(value) is not str:
        return False
    m = _ISO_UTC.fullmatch(value)
    if m is None or not 1700 <= int(m.group(1)) <= 2200:
        return False
    try:
        import datetime

        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def plain_record(event: Any, columns: Iterable[str]) -> dict[str, Any] | None:
    """The values ``load_events([event], columns=columns)`` gives its one row, when loading this event alone
    takes nothing but flattening; ``None`` when another rule of the loader could apply (then call
    :func:`load_events`, which applies and reports it).

    Returns ``{column: value}`` for the requested columns the event has (the others are missing): JSON scalars
    as sent (text the loader coerces, coerced), ``time`` as ``numpy.datetime64`` milliseconds, an array of objects
    as its ``.count`` and ``.types``, a JSON object sent as text as its columns. Falls back on: JSON arrays as text,
    invalid JSON, arrays of
    scalars and empty arrays, a name given two different values or both a value and an object, an underscore name that maps
    to an OCSF path, a ``time`` that is no epoch number, a ``time_dt`` that is requested, stands in for ``time``
    or would not parse.

    Why: a service answering one event at a time pays a fixed cost per table step that dwarfs the event's own
    work. tests/test_single_event.py checks that this gives exactly what the loader gives.
    """
    if type(event) is not dict or not event:
        return None
    wanted = columns if isinstance(columns, (set, frozenset)) else set(columns)
    leaves: dict[str, Any] = {}
    try:
        _plain_walk(event, "", leaves)
    except (_NotPlain, RecursionError):
        return None
    for name in leaves:  # a name holding a value and, elsewhere in the event, an object
        cut = name.rfind(".")
        while cut > 0:
            if name[:cut] in leaves:
                return None
            cut = name.rfind(".", 0, cut)
    out: dict[str, Any] = {}
    for name, value in leaves.items():
        if type(value) is list:
            derived = (f"{name}.count", f"{name}.types")
            if derived[0] in leaves or derived[1] in leaves:
                return None
            if derived[0] in wanted or derived[1] in wanted:
                count, types = _list_summary(tuple(tuple(el.get(k) for k in _LIST_TYPE_KEYS) for el in value))
                out[derived[0]] = count
                if types is not None:
                    out[derived[1]] = types
        elif value is not None and name in wanted:
            if type(value) is str and not _plain_text(value):
                value = _loaded_text(name, value)  # coerced as the loader coerces it (a column not read cannot matter)
                if value is None:
                    continue
            out[name] = value
    time, time_dt = leaves.get("time"), leaves.get("time_dt")
    if "time_dt" in wanted and time_dt is not None:
        return None
    if time is None:
        if time_dt is not None:
            return None  # the time comes from time_dt
    else:
        if type(time) is not int and type(time) is not float:
            return None
        ms, ok, _ = _epoch_ms(np.array([float(time)]))
        if not ok[0]:
            return None
        out.pop("time", None)
        if "time" in wanted:
            out["time"] = np.datetime64(int(ms[0]), "ms")
        if time_dt is not None and not _plain_time_dt(time_dt):
            return None
    return out
