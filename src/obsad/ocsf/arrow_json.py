"""Read the events of a JSON document with Arrow's JSON reader, where it reads them as the Python path would.

A scoring request of a thousand events is about a megabyte of JSON. Decoding it into dicts, walking every event
for the fields a model reads and typing each column from Python objects took about a third of a scoring
process's time per request. Arrow's reader parses the text straight into typed columns (in C++, one pass), and
:func:`obsad.ocsf.load_events` takes the table as it takes the decoded list: same table, same report, same
scores (tests/test_arrow_json.py loads both ways: simulated events flat, nested and re-spelled as exports
write them, numbers as text; messy ones, whose types change from event to event, are declined).

Arrow reads some documents otherwise than orjson and the loader's walk do. For those, :func:`read_events_table`
returns None and the caller decodes the document as before:

* not one JSON object, a byte-order mark, or text Arrow refuses (malformed, a value whose type changes between
  events, a key twice in an object, a lone surrogate...);
* an event that is not an object, or has no value at all (``{}`` is refused per event by the general path);
* an integer outside int64, which Arrow reads as a float where orjson keeps an integer up to 2**64 - 1 (checked
  on the float columns: any magnitude from 2**63 on), and NaN or infinity, which orjson refuses;
* strings that Arrow turns into timestamps or dates (it infers them from ISO-8601 text; the loader keeps the text):
  :class:`EventsTableReader` learns those fields and declares them text in the documents after;
* objects nested deeper than :data:`MAX_DEPTH` levels.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from .load import _has_all_null_row

__all__ = ["EventsTableReader", "read_events_table", "MAX_DEPTH"]

#: Objects (or arrays) nested deeper than this: the general path (Arrow's flattening goes level by level).
MAX_DEPTH = 32
_INT64_LIMIT = 2.0**63
_MIN_BLOCK = 1 << 16


def read_events_table(raw: bytes, key: str) -> tuple[pa.Table, dict[str, Any]] | None:
    """The events of the JSON object ``raw`` (the array under ``key``) as an Arrow table, one event per row, and
    the object's other top-level values as Python values (strings, integers, booleans or null only); None
    when the document should be decoded the general way (see the module's docstring)."""
    got = _read(raw, key, None)
    return None if isinstance(got, _Temporal) else got


class EventsTableReader:
    """:func:`read_events_table` that learns which fields hold ISO times. Arrow infers a timestamp or a date from
    such text (the loader keeps the text: the document is then declined); a field where it did, in an object
    path outside arrays, is declared text for the documents after (an explicit schema of those fields only, the
    others still inferred), and the document that showed it is read again so. A declared field must hold a value
    in some event: where none has one, a declared field would read as a column of nulls where the events have
    no such field, and the document is declined. Thread-safe (the learned fields are replaced, not changed)."""

    def __init__(self, key: str) -> None:
        self.key = key
        # (the declared paths, the explicit schema declaring them): one attribute, replaced whole
        self._declared: tuple[frozenset[tuple[str, ...]], pa.Schema | None] = (frozenset(), None)
        self._lock = threading.Lock()

    @property
    def text_paths(self) -> list[str]:
        """The fields declared text (dotted paths within an event)."""
        return sorted(".".join(p) for p in self._declared[0])

    def read(self, raw: bytes) -> tuple[pa.Table, dict[str, Any]] | None:
        """:func:`read_events_table`, with the fields learned so far declared text."""
        paths, schema = self._declared
        got = _read(raw, self.key, schema)
        if isinstance(got, _Temporal):
            if not got.paths or got.paths <= paths:  # inside an array, or declared but read otherwise
                return None
            paths, schema = self._learn(got.paths)
            got = _read(raw, self.key, schema)
            if got is None or isinstance(got, _Temporal):
                return None
        if got is not None and paths and not _all_present(got[0], paths):
            return None
        return got

    def _learn(self, paths: frozenset[tuple[str, ...]]) -> tuple[frozenset, pa.Schema]:
        with self._lock:
            merged = self._declared[0] | paths
            self._declared = (merged, pa.schema([pa.field(self.key, pa.list_(_struct_of(merged)))]))
            return self._declared


class _Temporal:
    """A document whose events hold text Arrow read as times: at these paths (empty: some inside an array)."""

    def __init__(self, paths: frozenset[tuple[str, ...]]) -> None:
        self.paths = paths


def _read(raw: bytes, key: str, schema: pa.Schema | None) -> tuple[pa.Table, dict[str, Any]] | _Temporal | None:
    if raw.lstrip()[:1] != b"{":
        return None
    try:
        # one block (the document is one row); one thread: a scoring process shares the cores with the others
        options = pj.ReadOptions(block_size=max(len(raw) + 1, _MIN_BLOCK), use_threads=False)
        parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer") if schema else None
        doc = pj.read_json(pa.BufferReader(raw), read_options=options, parse_options=parse)
    except (pa.ArrowException, OverflowError, ValueError):
        return None
    if doc.num_rows != 1 or key not in doc.column_names:
        return None
    column = doc.column(key)
    if not pa.types.is_list(column.type) or not pa.types.is_struct(column.type.value_type):
        return None
    others = {}
    for name, value in zip(doc.column_names, doc.columns):
        if name == key:
            continue
        if not (pa.types.is_string(value.type) or pa.types.is_int64(value.type) or pa.types.is_boolean(value.type)
                or pa.types.is_null(value.type)):
            return None
        others[name] = value[0].as_py()
    events = column.combine_chunks().flatten()
    if len(events) == 0 or events.null_count or events.type.num_fields == 0:
        return None
    if not _plain_type(events.type, 0):
        temporal = _temporal_paths(events.type, ())
        return _Temporal(temporal) if temporal is not None else None
    table = pa.Table.from_struct_array(events)
    if _has_all_null_row(table) or not all(map(_plain_floats, table.columns)):  # ({} or nulls only: refused)
        return None
    return table, others


def _temporal_paths(t: pa.DataType, path: tuple[str, ...]) -> frozenset[tuple[str, ...]] | None:
    """The object paths where ``t`` holds a timestamp or date (empty if one is inside an array); None when
    something else keeps the type from being plain."""
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return frozenset([path])
    if pa.types.is_struct(t):
        found: frozenset[tuple[str, ...]] = frozenset()
        for i in range(t.num_fields):
            sub = _temporal_paths(t.field(i).type, path + (t.field(i).name,))
            if sub is None:
                return None
            found |= sub
        return found
    if pa.types.is_list(t):
        sub = _temporal_paths(t.value_type, path)
        return None if sub is None else frozenset()  # a time inside an array cannot be declared
    return frozenset() if _plain_type(t, len(path)) else None


def _struct_of(paths: frozenset[tuple[str, ...]]) -> pa.StructType:
    """The struct type declaring each path as text (objects on the way as structs of the declared fields only)."""
    tree: dict = {}
    for path in paths:
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = None

    def build(node: dict) -> pa.StructType:
        return pa.struct([pa.field(k, pa.string() if v is None else build(v)) for k, v in sorted(node.items())])

    return build(tree)


def _all_present(table: pa.Table, paths: frozenset[tuple[str, ...]]) -> bool:
    """Whether every declared path holds a value in some event."""
    for path in paths:
        col: Any = table.column(path[0]) if path[0] in table.column_names else None
        for name in path[1:]:
            if col is None:
                break
            col = pc.struct_field(col, name) if name in [f.name for f in col.type] else None
        if col is None or col.null_count == len(col):
            return False
    return True


def _plain_type(t: pa.DataType, depth: int) -> bool:
    """Whether every type in ``t`` is one the JSON reader infers from text the loader reads alike (no timestamp or
    date), within :data:`MAX_DEPTH` levels."""
    if depth > MAX_DEPTH:
        return False
    if pa.types.is_struct(t):
        return all(_plain_type(t.field(i).type, depth + 1) for i in range(t.num_fields))
    if pa.types.is_list(t):
        return _plain_type(t.value_type, depth + 1)
    return (pa.types.is_null(t) or pa.types.is_boolean(t) or pa.types.is_int64(t) or pa.types.is_float64(t)
            or pa.types.is_string(t))


def _plain_floats(arr: pa.Array | pa.ChunkedArray) -> bool:
    """Whether every float in ``arr`` (at any depth) is finite and below 2**63 in magnitude: a larger one came
    from an integer literal that orjson keeps whole."""
    if isinstance(arr, pa.ChunkedArray):
        return all(map(_plain_floats, arr.chunks))
    t = arr.type
    if pa.types.is_float64(t):
        x = arr.to_numpy(zero_copy_only=False)
        nan = np.isnan(x)  # nulls read as NaN: a NaN beyond them is a NaN in the text
        return int(nan.sum()) == arr.null_count and bool(np.all(np.abs(x[~nan]) < _INT64_LIMIT))
    if pa.types.is_struct(t):
        return all(_plain_floats(arr.field(i)) for i in range(t.num_fields))
    if pa.types.is_list(t):
        return _plain_floats(arr.flatten())
    return True
