"""A request body read by Arrow's JSON reader loads as the same body decoded into dicts.

``obsad.ocsf.arrow_json.read_events_table`` reads a body's events straight into an Arrow table where Arrow reads
them as orjson and the loader's walk do, and declines (None) where it might not. Here both paths run on the same
bodies: simulated events flat and nested, with the spellings real exports use (underscored and dotted names,
JSON text, arrays, numbers as text), messy variants, and the bodies Arrow must decline.
"""

from __future__ import annotations

import json
import random

import numpy as np
import orjson
import pandas as pd
import pytest
from messy_events import T0, messy  # tests/ is on the import path (pytest's rootdir insertion)

from obsad.ocsf import load_events, simulate
from obsad.ocsf.arrow_json import MAX_DEPTH, read_events_table
from obsad.ocsf.nested import to_nested
from obsad.serve.scoring import load_batch, parse_json, parse_score_request, read_score_table


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    events = simulate(n_events=5000, days=2, seed=11).events
    return events.sort_values("time", kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def columns(sim) -> list[str]:
    """A model's columns: every other column of the table (the rest must be left out), its uid and its time."""
    names = sorted(c for c in sim.columns if c not in ("time", "metadata.uid"))
    return names[::2] + ["metadata.uid", "time"]


def _respelled(records: list[dict], rng: random.Random) -> list[dict]:
    """The same events as some exporters write them, consistently across the batch: a few nested paths flattened
    into dotted or underscored keys, numbers as text, arrays of objects and of scalars, JSON text, nulls."""
    out = []
    for rec in records:
        rec = json.loads(json.dumps(rec))
        if isinstance(rec.get("src_endpoint"), dict) and "ip" in rec["src_endpoint"]:
            rec["src_endpoint_ip"] = rec["src_endpoint"].pop("ip")  # the loader renames it back
        if isinstance(rec.get("dst_endpoint"), dict) and "port" in rec["dst_endpoint"]:
            rec["dst_endpoint.port"] = rec["dst_endpoint"].pop("port")
        if "severity_id" in rec:
            rec["severity_id"] = str(rec["severity_id"])  # coerced back to numbers
        rec["observables"] = [{"name": "x", "type": "IP Address", "type_id": 2}, {"name": "y", "value": "v"}]
        rec["categories"] = ["a", "b"] if rng.random() < 0.5 else []
        rec["unmapped"] = json.dumps({"k": rng.randrange(5), "z": "q"})
        rec["duration"] = rng.choice([1, 2.5, None])
        out.append(dict(rng.sample(list(rec.items()), len(rec))))  # keys in any order
    return out


def _numbers_as_text(records: list[dict], rng: random.Random) -> list[dict]:
    """Every number of a few columns written as text, some of it malformed ("abc", "", "N/A"), some missing:
    the types stay put across the batch (Arrow takes it), the loader coerces and reports."""
    numeric = sorted({k for r in records for k, v in r.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "time"})
    chosen = rng.sample(numeric, min(3, len(numeric)))
    out = []
    for rec in records:
        rec = dict(rec)
        for k in chosen:
            if rec.get(k) is not None:
                rec[k] = rng.choice(["abc", "", "N/A", None]) if rng.random() < 0.02 else f" {rec[k]} "
        out.append(rec)
    return out


@pytest.fixture(scope="module")
def bodies(sim) -> list[tuple[str, list]]:
    rng = random.Random(3)
    out = []
    for i, n in enumerate((2, 7, 64, 1000)):
        rows = sim.iloc[1000 + 50 * i: 1000 + 50 * i + n].reset_index(drop=True)
        flat = json.loads(rows.to_json(orient="records"))
        nested = json.loads(json.dumps(to_nested(rows), default=str))
        out += [(f"flat {n}", flat), (f"nested {n}", nested), (f"respelled {n}", _respelled(nested, rng)),
                (f"numbers as text {n}", _numbers_as_text(flat, rng)),
                (f"messy flat {n}", messy(flat, i, 0.002)), (f"messy nested {n}", messy(nested, 10 + i, 0.01))]
    return out


def _body(doc) -> bytes:
    """JSON as a client may send it (``json``: integers past 64 bits and NaN included)."""
    return json.dumps(doc).encode()


def _same_load(table_result, list_result) -> None:
    pd.testing.assert_frame_equal(table_result.events, list_result.events, check_exact=True,
                                  check_column_type=True, check_index_type=True)
    a, b = table_result.report, list_result.report
    pd.testing.assert_frame_equal(a.problems, b.problems, check_exact=True)
    assert (a.n_input, a.n_loaded, a.coerced, a.renamed, a.expanded, a.notes) == (
        b.n_input, b.n_loaded, b.coerced, b.renamed, b.expanded, b.notes)


def test_tables_load_as_the_decoded_events(bodies, columns):
    """Where Arrow takes a body, the table loads (with the model's columns and with all) as the list of dicts."""
    taken = 0
    for name, records in bodies:
        got = read_events_table(_body({"events": records}), "events")
        if got is None:
            continue
        taken += 1
        table, others = got
        assert others == {} and table.num_rows == len(records)
        for cols in (columns, None):
            try:
                _same_load(load_events(table, columns=cols), load_events(records, columns=cols))
            except AssertionError as exc:
                raise AssertionError(f"{name}, columns={'model' if cols else 'all'}: {exc}") from exc
    # clean flat, nested, re-spelled and numbers-as-text bodies of every size are taken (the messy ones, whose
    # types change from event to event, are declined)
    assert taken >= 16


def test_a_request_read_by_arrow_gives_the_same_batch(bodies, columns):
    """The service's view: the same rows, slots, per-event errors and warnings, and the request's options."""
    model_columns = [c for c in columns if c != "metadata.uid"]
    for name, records in bodies:
        raw = _body({"events": records, "views": "all", "n_top": 4})
        fast = read_score_table(raw, 10_000)
        general = parse_score_request(parse_json(raw), 10_000)
        if fast is None:
            continue
        assert (fast.views, fast.explain, fast.n_top, fast.n_events) == (
            general.views, general.explain, general.n_top, len(general.events))
        a, b = load_batch(fast.table, columns, model_columns), load_batch(general.events, columns, model_columns)
        pd.testing.assert_frame_equal(a.events, b.events, check_exact=True)
        assert a.slots.tolist() == b.slots.tolist() and a.errors == b.errors and a.warnings == b.warnings, name
        assert a.n_requested == b.n_requested


def test_shared_encodings_leave_every_load_as_it_was(bodies, columns):
    """Inside a scoring call the loader's type screens count a sample from the column's shared dictionary
    encoding (obsad.encodings): the same frames, reports and repairs as outside one, read by Arrow or decoded."""
    from obsad.encodings import shared_encodings

    checked = 0
    for name, records in bodies:
        if len(records) < 1000:
            continue
        got = read_events_table(_body({"events": records}), "events")
        sources = [records] + ([got[0]] if got is not None else [])
        for source in sources:
            for cols in (columns, None):
                plain = load_events(source, columns=cols)
                with shared_encodings():
                    shared = load_events(source, columns=cols)
                try:
                    _same_load(shared, plain)
                except AssertionError as exc:
                    raise AssertionError(f"{name}, columns={'model' if cols else 'all'}: {exc}") from exc
                checked += 1
    assert checked >= 16


def _event(**extra) -> dict:
    return {"time": T0, "class_uid": 4001, "src_endpoint": {"ip": "10.0.0.1", "port": 443}, **extra}


DECLINED = {
    "an array, not an object": b'[{"time": 1}, {"time": 2}]',
    "a byte-order mark": b"\xef\xbb\xbf" + orjson.dumps({"events": [_event(), _event()]}),
    "an empty event": orjson.dumps({"events": [_event(), {}]}),
    "an event of nulls only": orjson.dumps({"events": [_event(), {"time": None, "class_uid": None}]}),
    "an event that is no object": orjson.dumps({"events": [_event(), 7]}),
    "a null event": orjson.dumps({"events": [_event(), None]}),
    "an integer past int64": orjson.dumps({"events": [_event(n=2**63), _event(n=1)]}),
    "an integer past 64 bits": b'{"events": [{"time": 1, "n": 18446744073709551616}, {"time": 2, "n": 1}]}',
    "a big integer in an array": orjson.dumps({"events": [_event(a=[1, 2**63]), _event(a=[2])]}),
    "a big integer in a nested object": json.dumps({"events": [_event(o={"n": -(2**63) - 1}), _event()]}).encode(),
    "NaN": b'{"events": [{"time": 1, "x": NaN}, {"time": 2, "x": 1.5}]}',
    "Infinity": b'{"events": [{"time": 1, "x": Infinity}, {"time": 2, "x": 1.5}]}',
    "ISO text Arrow reads as a timestamp": orjson.dumps(
        {"events": [_event(time_dt="2024-01-01T00:00:00"), _event(time_dt="2024-01-01T10:00:00Z")]}),
    "a date": orjson.dumps({"events": [_event(day="2024-01-01"), _event(day="2024-01-02")]}),
    "a type that changes": orjson.dumps({"events": [_event(x="a"), _event(x=1)]}),
    "an object beside a scalar": orjson.dumps({"events": [_event(x={"a": 1}), _event(x=1)]}),
    "a key twice": b'{"events": [{"time": 1, "a": 1, "a": 2}, {"time": 2, "a": 3}]}',
    "a lone surrogate": b'{"events": [{"time": 1, "a": "\\ud800"}, {"time": 2, "a": "x"}]}',
    "too deep": orjson.dumps({"events": [_event(d=json.loads('{"a": ' * (MAX_DEPTH + 2) + "1"
                                                              + "}" * (MAX_DEPTH + 2))), _event()]}),
    "two documents": orjson.dumps({"events": [_event()]}) + b" " + orjson.dumps({"events": [_event()]}),
    "no events key": orjson.dumps({"records": [_event(), _event()]}),
    "events not an array": orjson.dumps({"events": {"time": 1}}),
    "a float option": orjson.dumps({"events": [_event(), _event()], "n_top": 3.0}),
    "an object option": orjson.dumps({"events": [_event(), _event()], "views": {"a": 1}}),
    "not JSON": b'{"events": [{"time": 1},',
}


@pytest.mark.parametrize("case", sorted(DECLINED))
def test_bodies_arrow_would_read_otherwise_are_declined(case):
    assert read_events_table(DECLINED[case], "events") is None


def test_requests_the_general_path_takes_or_refuses_are_declined():
    """One event (scored without a table), more than the batch limit, unknown or invalid options: the general
    path decodes those and answers them (an error included)."""
    two = [_event(), _event(time=T0 + 1)]
    assert read_score_table(orjson.dumps({"events": two}), 10) is not None
    for body, limit in [({"events": two[:1]}, 10), ({"events": two}, 1), ({"events": two, "extra": 1}, 10),
                        ({"events": two, "views": "sideways"}, 10), ({"events": two, "n_top": 0}, 10),
                        ({"events": two, "explain": None}, 10)]:
        assert read_score_table(orjson.dumps(body), limit) is None, body


def test_a_big_float_is_declined_but_small_floats_and_nulls_are_taken():
    """The float check reads floats only: 1e19 (surely an integer's stand-in) is declined, 2.5 and a null are not."""
    assert read_events_table(orjson.dumps({"events": [_event(x=1e19), _event(x=2.5)]}), "events") is None
    table, _ = read_events_table(orjson.dumps({"events": [_event(x=None), _event(x=2.5), _event(x=1)]}), "events")
    assert table.column("x").to_pylist() == [None, 2.5, 1.0]
    assert np.isnan(load_events(table, columns=["x", "time"]).events["x"].iloc[0])


def test_arrow_columns_built_from_their_buffers_equal_the_general_conversion():
    """Text, int64 and float64 columns skip ``to_pandas`` and the dtype normalisation: the same Series for chunked,
    sliced (an offset inside the validity bitmap), empty and all-null columns."""
    import pyarrow as pa

    import obsad.ocsf.load as load_module

    ints = pa.array([None, None, 5, 6, None, 7, 8, 9, 10, None], pa.int64())
    columns = [pa.chunked_array([pa.array(["a", None, "b"])]),
               pa.chunked_array([pa.array(["a"], pa.large_string()), pa.array([None, "c"], pa.large_string())]),
               pa.chunked_array([ints.slice(3, 6)]), pa.chunked_array([ints.slice(0, 4), ints.slice(7)]),
               pa.array([1.5, None, 2.0]), pa.chunked_array([], pa.int64()), pa.array([None, None], pa.int64()),
               pa.array([2**62, -1], pa.int64())]
    for col in columns:
        fast = load_module._arrow_series(col)
        load_module._SHORTCUTS = False
        try:
            general = load_module._arrow_series(col)
        finally:
            load_module._SHORTCUTS = True
        pd.testing.assert_series_equal(fast, general, check_exact=True)


SHAPES = {
    "arrays of arrays": [{"time": T0, "a": [[1, 2], [3]]}, {"time": T0, "a": [[4]]}],
    "integers and floats in an array": [{"time": T0, "a": [1, 2.5]}, {"time": T0, "a": [3]}],
    "whole floats in arrays": [{"time": T0, "a": [1.0, 2.0]}, {"time": T0, "a": []}],
    "nulls in and for arrays": [{"time": T0, "a": [1, None]}, {"time": T0, "a": None}],
    "arrays of flags": [{"time": T0, "a": [True, False]}, {"time": T0, "a": [True]}],
    "arrays of text": [{"time": T0, "a": ["x", "y"]}, {"time": T0, "a": ["z", None]}],
    "arrays of objects holding arrays": [{"time": T0, "a": [{"type": "t", "v": [1]}]},
                                         {"time": T0, "a": [{"name": "n"}]}],
    "null objects at two depths": [{"time": T0, "o": {"p": {"q": 1}}}, {"time": T0, "o": {"p": None}},
                                   {"time": T0, "o": None}],
    "an empty object": [{"time": T0, "o": {}}, {"time": T0, "o": {"x": 1}}],
    "whole floats": [{"time": T0, "x": 1.0}, {"time": T0, "x": 2.0}],
    "integers, floats and nulls": [{"time": T0, "x": 1}, {"time": T0, "x": 2.5}, {"time": T0, "x": None}],
    "ISO times with fractions": [{"time": "2024-01-01T00:00:00.123Z"}, {"time": "2024-01-01T00:00:01.5Z"}],
    "JSON text": [{"time": T0, "unmapped": "{\"a\": 1}"}, {"time": T0, "unmapped": "{\"b\": \"x\"}"}],
    "an object under a requested name": [{"time": T0, "unmapped": {"a": 1, "b": {"c": 2}}},
                                         {"time": T0, "unmapped": {"a": 3}}],
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_shapes_arrow_takes_load_as_the_decoded_events(shape):
    """Arrays (of arrays, numbers, flags, text, objects), null and empty objects, whole floats, fractional ISO
    times, JSON text, an object where a whole column is requested: taken by Arrow, loaded the same."""
    records = SHAPES[shape]
    table, _ = read_events_table(_body({"events": records}), "events")
    requested = ["time", "a", "a.count", "a.types", "o.p.q", "o.x", "x", "unmapped", "unmapped.a", "unmapped.b.c"]
    for cols in (requested, None):
        _same_load(load_events(table, columns=cols), load_events(records, columns=cols))


def test_the_reader_learns_iso_time_fields_and_takes_them_as_text():
    """Arrow infers timestamps and dates from ISO text; the reader declares those fields text from then on (the
    document that showed them is read again so), the loads equal the decoded events, and a document where a
    declared field holds no value anywhere (absent and null read alike) or a time sits inside an array is
    declined."""
    from obsad.ocsf.arrow_json import EventsTableReader

    reader = EventsTableReader("events")
    first = [_event(time_dt="2024-01-01T00:00:00Z", m={"t": "2024-01-01T10:00:00Z", "y": 1}),
             _event(time_dt="2024-01-02T00:00:00Z", m={"t": "2024-01-01", "y": 2})]
    assert read_events_table(_body({"events": first}), "events") is None
    later = [_event(time_dt="2024-01-03T00:00:00Z", x=1), _event(time_dt="2024-01-03T00:00:01Z", m={"t": "ok"})]
    requested = ["time", "time_dt", "m.t", "m.y", "x", "src_endpoint.ip"]
    for records in (first, later):
        table, _ = reader.read(_body({"events": records}))
        for cols in (requested, None):
            _same_load(load_events(table, columns=cols), load_events(records, columns=cols))
    assert reader.text_paths == ["m.t", "time_dt"]
    assert reader.read(_body({"events": [_event(x=1), _event(x=2)]})) is None
    in_array = [_event(times=["2024-01-01T00:00:00Z"]), _event(times=["2024-01-02T00:00:00Z"])]
    assert reader.read(_body({"events": in_array})) is None and reader.text_paths == ["m.t", "time_dt"]
