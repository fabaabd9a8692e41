"""Small batches (one event, a request of a few) take exact shortcuts past fixed per-column costs.

``load_events``, ``FeatureEncoder.transform`` (with the column readers and templating it uses) and the window view
each keep their general code path behind a module switch (``_SHORTCUTS``); here both paths run on the same inputs,
which must give the same table and report, the same arrays and the same window scores: simulated events in
batches of 1, 2, 7, 64 and 1000, flat and nested, clean and messy (JSON-string columns, type drift, malformed
values, missing fields, nested dicts, arrays, underscore names, records that are no objects).
"""

from __future__ import annotations

import json
import random
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from messy_events import T0, messy  # tests/ is on the import path (pytest's rootdir insertion)

import obsad.detect.windows as windows_module
import obsad.encodings as encodings_module
import obsad.features.encoder as encoder_module
import obsad.features.text as text_module
import obsad.features.values as values_module
import obsad.ocsf.load as load_module
from obsad.detect import EntityWindowDetector
from obsad.detect.windows import window_vectors
from obsad.features import FeatureEncoder
from obsad.ocsf import load_events, simulate
from obsad.ocsf.nested import to_nested

SIZES = (1, 2, 7, 64, 1000)
N_EMB = 8


@contextmanager
def general_path(*modules):
    """The modules' general code paths (their exact shortcuts switched off) for the duration."""
    before = [m._SHORTCUTS for m in modules]
    for m in modules:
        m._SHORTCUTS = False
    try:
        yield
    finally:
        for m, b in zip(modules, before):
            m._SHORTCUTS = b


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    events = simulate(n_events=5000, days=2, seed=5).events
    return events.sort_values("time", kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def batches(sim) -> list[tuple[str, list]]:
    """(name, list of records) for each size: flat rows as JSON gives them, nested OCSF events, messy variants."""
    score = sim.iloc[3000:].reset_index(drop=True)
    out = []
    for i, n in enumerate(SIZES):
        rows = score.iloc[i * 7:i * 7 + n].reset_index(drop=True)
        flat = json.loads(rows.to_json(orient="records"))
        nested = json.loads(json.dumps(to_nested(rows), default=str))
        out += [(f"flat {n}", flat), (f"nested {n}", nested), (f"messy flat {n}", messy(flat, i, 0.05)),
                (f"messy nested {n}", messy(nested, 10 + i, 0.2))]
    return out


@pytest.fixture(scope="module")
def fitted(sim):
    """An encoder fitted on the first 3000 simulated events and a window view on random "embeddings"."""
    events, _ = load_events(sim.iloc[:3000])
    encoder = FeatureEncoder(n_jobs=1).fit(events.iloc[:2000])
    names = encoder.transform(events.head(5)).numeric_names

    def vectors(frame: pd.DataFrame, seed: int) -> np.ndarray:
        z = np.random.default_rng(seed).normal(size=(len(frame), N_EMB)).astype(np.float32)
        return window_vectors(z, encoder.transform(frame).numeric)

    early, late = events.iloc[:2000], events.iloc[2000:3000]
    detector = EntityWindowDetector(encoder, n_embedding=N_EMB, field_names=names, window="1h")
    detector.fit((early, vectors(early, 0)), calibration=(late, vectors(late, 1)))
    columns = list(dict.fromkeys([st["column"] for st in encoder.columns_] + ["metadata.uid", "time"]))
    return encoder, detector, vectors, columns


# -------------------------------------------------------------------------------------------- load_events
def assert_same_load(fast, general) -> None:
    pd.testing.assert_frame_equal(fast.events, general.events, check_exact=True, check_column_type=True,
                                  check_index_type=True)
    a, b = fast.report, general.report
    pd.testing.assert_frame_equal(a.problems, b.problems, check_exact=True, check_column_type=True)
    assert a.to_dict() == b.to_dict()
    assert list(a.coerced) == list(b.coerced) and a.notes == b.notes


def test_load_events_shortcuts_give_the_general_table_and_report(batches, fitted):
    columns = fitted[3]
    for name, records in batches:
        for cols in (columns, None):
            fast = load_events(records, columns=cols)
            with general_path(load_module):
                general = load_events(records, columns=cols)
            try:
                assert_same_load(fast, general)
            except AssertionError as exc:
                raise AssertionError(f"{name}, columns={'model' if cols else 'all'}: {exc}") from exc


def test_load_events_shortcuts_on_the_cases_of_test_load():
    """Hand-made messy inputs: conflicts, time forms, JSON text cells, arrays, objects beside scalars."""
    cases = [
        [{"time": T0, "src_endpoint": {"ip": "1.1.1.1"}, "src_endpoint.ip": "1.1.1.1"},
         {"time": T0, "src_endpoint": {"ip": "2.2.2.2"}, "src_endpoint.ip": "9.9.9.9"}],
        [{"time": T0, "a": 1}, {"time": T0 // 1000, "a": 2}, {"time": "2023-11-14T22:13:20Z", "a": 3},
         {"time": "2023-11-14T23:13:20+01:00", "a": 4}, {"time": T0 / 1000 + 0.5, "a": 5}],
        [{"time": T0, "time_dt": "2023-11-14T22:13:20.000Z"}, {"time": None, "time_dt": "2023-11-14T22:13:20Z"},
         {"time_dt": "2023-11-14T22:13:20Z"}],
        [{"time": T0, "resources": json.dumps([{"type": "a"}, {"type": "b"}])}, {"time": T0, "resources": "[]"}],
        [{"time": T0, "categories": ["web", "news"]}, {"time": T0, "categories": []}, {"time": T0}],
        [{"time": T0, "m": [1, "a", None, {"x": 1}]}, {"time": T0, "m": [True, 2.0]}],
        [{"time": T0, "unmapped": json.dumps({"k": i})} for i in range(20)] + [{"time": T0, "unmapped": "{no"}],
        [{"time": T0 + i, "status_code": str(200 + i % 5)} for i in range(50)] + [{"time": T0, "status_code": "x"}],
        [{"time": T0, "zip": "00123", "v": "1.1"}, {"time": T0, "zip": "04567", "v": "1.2"}],
        [{"time": T0, "device": "laptop-1", "device_hostname": "a"}],
        [{"time": T0, "big": 2 ** 70, "f": 1, "g": 1.5}, {"time": T0, "big": 1, "f": 2.5, "g": None}],
        [{"time": T0, "flag": "TRUE"}, {"time": T0, "flag": "False "}, {"time": T0, "flag": "null"}],
        [{"time": T0, "u": "\ud800x"}, {"time": T0, "u": "ok"}],
        [{"time": None}, {"time": "nope"}],
        [{"a": 1}],
        [{"time": T0, "x": {"a": {"b": 1}, "a.b": 2}}],
        # arrays of objects: type keys as text, integers, absent, null; null elements, empty arrays and objects
        [{"time": T0, "obs": [{"type": "IP", "type_id": 2}, {"type_id": -7, "name": "x"}, None, {}]},
         {"time": T0, "obs": []}, {"time": T0, "obs": [{"name": "b"}, {"name": "a"}, {"type": ""}, {"name": "b"}]},
         {"time": T0}, {"time": T0, "obs": None}],
        # ... and type keys whose text Arrow would print otherwise (a flag, a decimal, an object): not the Python way
        [{"time": T0, "obs": [{"type": True}, {"type": "a"}]}, {"time": T0, "obs": [{"type": "b"}]}],
        [{"time": T0, "obs": [{"type_id": 2.0}, {"type_id": 3.5}]}, {"time": T0, "obs": [{"name": "c"}]}],
        [{"time": T0, "obs": [{"type": {"k": 1}, "name": "n"}]}, {"time": T0, "obs": [{"name": "m"}]}],
    ]
    for records in cases:
        fast, general = _outcome(records), None
        with general_path(load_module):
            general = _outcome(records)
        if isinstance(fast, Exception) or isinstance(general, Exception):  # the same error (a lone surrogate)
            assert (type(fast), str(fast)) == (type(general), str(general))
        else:
            assert_same_load(fast, general)


def _outcome(records):
    try:
        return load_events(records)
    except Exception as exc:  # noqa: BLE001 - compared with the general path's
        return exc


def test_clean_small_batches_have_no_problem_and_the_requested_columns(batches, fitted):
    columns = fitted[3]
    frame, report = load_events(dict(batches)["nested 1"], columns=columns)
    assert list(frame.columns) == sorted(set(columns)) and len(frame) == 1
    assert report.problems.empty and list(report.problems.columns) == ["line", "field", "reason", "detail"]
    assert str(frame["time"].dtype) == "datetime64[ms, UTC]"


# ------------------------------------------------------------------------------------------------ encoder
def assert_same_features(fast, general) -> None:
    np.testing.assert_array_equal(fast.numeric, general.numeric)
    np.testing.assert_array_equal(fast.categorical, general.categorical)
    assert fast.numeric.dtype == general.numeric.dtype and fast.categorical.dtype == general.categorical.dtype
    assert fast.report == general.report


def test_transform_shortcuts_give_the_general_arrays(batches, fitted):
    encoder, _, _, columns = fitted
    for name, records in batches:
        for cols in (columns, None):
            frame = load_events(records, columns=cols).events
            fast = encoder.transform(frame)
            with general_path(encoder_module, values_module, encodings_module, text_module):
                general = encoder.transform(frame)
            try:
                assert_same_features(fast, general)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from exc


def test_all_missing_columns_of_any_dtype_encode_as_absent_ones(batches, fitted):
    encoder, _, _, columns = fitted
    base = load_events(dict(batches)["nested 7"], columns=columns).events
    for dtype in ("object", "float64", "Int64", "boolean", "str", "datetime64[ms, UTC]", "category"):
        frame = base.copy()
        for col in list(frame.columns)[::2]:
            frame[col] = pd.Series([None] * len(frame), dtype=dtype)
        fast = encoder.transform(frame)
        with general_path(encoder_module, values_module, encodings_module, text_module):
            general = encoder.transform(frame)
        assert_same_features(fast, general)
    chunked = FeatureEncoder.from_dict(encoder.to_dict()).set_params(chunk_rows=3)  # blocks of a sparse column
    assert_same_features(chunked.transform(base), encoder.transform(base))


def test_all_missing_columns_agrees_with_counting_each_column():
    """The block-wise test (Arrow's null counts, masks, ``isna`` of the rest) names exactly the columns whose
    ``count()`` is 0, for every dtype the loader or a user's frame can hold; a NaN in an Arrow float column is a
    value there (Arrow's null is the missing value), as ``count()`` has it."""
    import pyarrow as pa

    one_value = {"object": "x", "float64": 1.5, "Int64": 3, "boolean": True, "str": "x", "string[pyarrow]": "x",
                 "datetime64[ms, UTC]": pd.Timestamp("2026-01-01", tz="UTC"), "category": "x",
                 pd.ArrowDtype(pa.float64()): 1.5, pd.ArrowDtype(pa.int64()): 3, pd.ArrowDtype(pa.large_string()): "x"}
    columns = {}
    for k, (dtype, value) in enumerate(one_value.items()):
        columns[f"empty{k}"] = pd.Series([None] * 5, dtype=dtype)
        columns[f"some{k}"] = pd.Series([None] * 4 + [value], dtype=dtype)
    columns["arrow_nan"] = pd.Series(pa.array([float("nan")] + [None] * 4), dtype=pd.ArrowDtype(pa.float64()))
    frame = pd.DataFrame(columns)
    expected = {f"empty{k}" for k in range(len(one_value))}
    assert {c for c in frame.columns if frame[c].count() == 0} == expected
    assert values_module.all_missing_columns(frame, list(frame.columns)) == expected
    assert values_module.all_missing_columns(frame.iloc[:4], list(frame.columns)) == set(frame.columns) - {"arrow_nan"}
    assert values_module.all_missing_columns(frame, ["some0", "empty0"]) == {"empty0"}


def test_dict_lookups_agree_with_arrow_lookups():
    vocab = ["a", "b", "é", "", "b"]  # a duplicate: the first position counts, as Arrow finds it
    import pyarrow as pa
    keys = pa.array(["b", None, "é", "zz", "", "a"], type=pa.large_string())
    cache_a, cache_b = {}, {}
    few = encoder_module._lookup(cache_a, "v", vocab, keys), encoder_module._lookup_rows(cache_a, "v", vocab, keys)
    with general_path(encoder_module, values_module, encodings_module, text_module):
        many = encoder_module._lookup(cache_b, "v", vocab, keys), encoder_module._lookup_rows(cache_b, "v", vocab, keys)
    for a, b in zip(few, many):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------- window view
def assert_same_windows(fast: list, general: list) -> None:
    assert len(fast) == len(general)
    for a, b in zip(fast, general):
        for field in ("rows", "window_of_row", "entity", "value", "start_ms", "count", "stats", "field_t", "credit",
                      "bucket_events", "pair_ids", "level"):
            x, y = getattr(a, field), getattr(b, field)
            if x is None or y is None:
                assert x is None and y is None, field
                continue
            assert x.dtype == y.dtype and x.shape == y.shape, field
            np.testing.assert_array_equal(x, y, err_msg=field)


def test_window_view_shortcuts_give_the_general_scores(batches, fitted, sim):
    encoder, detector, vectors, columns = fitted
    frames = [(name, load_events(records, columns=columns).events) for name, records in batches]
    frames.append(("training events", load_events(sim.iloc[500:540], columns=columns).events))  # own windows
    # events five hours apart over months (a grid of entities x hours too sparse to count on: view by view),
    # some without a time, one view's column absent
    spread = load_events(sim.iloc[3000:4000], columns=columns).events
    t = detector.time_column_
    first = spread[t].iloc[0]
    spread[t] = (first + pd.to_timedelta(np.arange(len(spread)) * 5, unit="h") if isinstance(first, pd.Timestamp)
                 else first + np.arange(len(spread)) * 5 * 3_600_000).astype(spread[t].dtype)
    spread.loc[spread.index % 9 == 4, t] = None
    frames += [("months", spread), ("a view's column absent", spread.iloc[::3].drop(
        columns=[detector.views_[0].column]).reset_index(drop=True))]
    for name, frame in frames:
        vec = vectors(frame, 7)
        fast_assigned = detector.assign(frame)
        fast_scores, fast_windows = detector.view_scores((frame, vec), assigned=fast_assigned)
        with general_path(windows_module, values_module, encodings_module, text_module):
            general_assigned = detector.assign(frame)
            general_scores, general_windows = detector.view_scores((frame, vec), assigned=general_assigned)
        try:
            assert_same_windows(fast_assigned, general_assigned)
            np.testing.assert_array_equal(fast_scores, general_scores)
            assert_same_windows(fast_windows, general_windows)
            rows = np.flatnonzero(np.isfinite(fast_scores).any(axis=1))
            pd.testing.assert_frame_equal(detector.explain_scored(frame.index, fast_scores, fast_windows, rows=rows),
                                          detector.explain_scored(frame.index, general_scores, general_windows,
                                                                  rows=rows))
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


def test_group_sums_added_one_by_one_equal_the_matrix_product():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n, groups, d = int(rng.integers(1, 64)), int(rng.integers(1, 12)), int(rng.integers(1, 9))
        dtype = np.float32 if trial % 2 else np.float64
        values = (rng.normal(size=(n + 5, d)) * 10.0 ** rng.integers(-6, 6, size=(1, d))).astype(dtype)
        values[rng.random(values.shape) < 0.1] = -0.0
        group = rng.integers(0, groups, n)
        rows = None if trial % 3 == 0 else np.sort(rng.choice(n + 5, n, replace=False))
        data = values[:n] if rows is None else values
        fast = windows_module._group_sums(group, data, groups, rows=rows)
        with general_path(windows_module):
            general = windows_module._group_sums(group, data, groups, rows=rows)
        assert fast.dtype == general.dtype
        assert np.array_equal(fast.view(np.uint8), general.view(np.uint8))  # bit for bit, signs of zero included


def test_group_sums_add_each_groups_rows_in_ascending_order():
    """The matrix product (by column) adds each group's rows from zero in ascending row order, whatever the order
    of ``rows``: bit for bit the sums of ``np.add.at`` applied in that order, for many rows and groups."""
    rng = np.random.default_rng(1)
    for trial in range(12):
        n, groups, d = int(rng.integers(200, 3000)), int(rng.integers(1, 400)), int(rng.integers(1, 40))
        dtype = np.float32 if trial % 2 else np.float64
        values = (rng.normal(size=(n + 50, d)) * 10.0 ** rng.integers(-6, 6, size=(1, d))).astype(dtype)
        group = rng.integers(0, groups, n)
        rows = None if trial % 3 == 0 else rng.choice(n + 50, n, replace=False)  # any order
        order = np.arange(n) if rows is None else np.argsort(rows, kind="stable")
        expected = np.zeros((groups, d), dtype=dtype)
        np.add.at(expected, group[order], (values[:n] if rows is None else values[rows])[order])
        got = windows_module._group_sums(group, values[:n] if rows is None else values, groups, rows=rows)
        assert got.dtype == dtype and np.array_equal(got.view(np.uint8), expected.view(np.uint8))


# ------------------------------------------------------------------------------- regexes of a few values
_ATOMS = ["550e8400-e29b-41d4-a716-446655440000", "john.doe@example.co.uk", "a@b.cc", "10.0.0.1", "256.1.1.1",
          "192.168.1.1:8080", "fe80::1", "2001:db8::ff00:42:8329", "::1", "1:2:3:4:5:6:7:8", "deadbeef", "8f3a91c2",
          "facade", "123", "3.5", "1.2.3", "abc123def456ghi789", "user_42", "v2", "/", "?", "=", " ", "\n", "é",
          "٣", "日本", "-", "_", ".", ":", "@", "ABCDEF12", "Z9" * 9, "api.example.com", "WWW.Example.COM.", ".."]


def _random_text(rng: random.Random) -> str:
    parts = [rng.choice(_ATOMS) if rng.random() < 0.7 else "".join(rng.choice("ab9.:-_@/ éZ٣\n") for _ in range(4))
             for _ in range(rng.randrange(0, 7))]
    return rng.choice(["", " ", "/", ".", "-", ":", "@"]).join(parts)


def test_templates_and_domains_of_a_few_values_equal_arrows():
    import pyarrow as pa

    rng = random.Random(0)
    for _ in range(400):
        values = [_random_text(rng) if rng.random() > 0.1 else None for _ in range(rng.randrange(1, 12))]
        arr = pa.array(values, type=rng.choice([pa.string(), pa.large_string()]))
        masks = rng.sample(list(text_module.MASK_NAMES), rng.randrange(0, 8))
        few = text_module.template_array(arr, masks), text_module.registered_domain(arr)
        with general_path(text_module):
            arrow = text_module.template_array(arr, masks), text_module.registered_domain(arr)
        assert few[0][0].equals(arrow[0][0]) and few[0][1] == arrow[0][1], (values, masks)
        assert few[1].equals(arrow[1]), values


def test_templates_taken_mask_by_mask_by_either_engine_equal_arrows():
    """Past a few values each mask picks its engine by the size of the values (``_PY_BYTES``): Python's and
    Arrow's passes alternate on one array; the templates are Arrow's, slices and a long value included."""
    import pyarrow as pa

    rng = random.Random(2)
    chosen = set()
    for trial in range(60):
        n = rng.choice([70, 150, 400, 1200])
        values = [_random_text(rng) if rng.random() > 0.1 else None for _ in range(n)]
        if trial % 10 == 9:
            values[rng.randrange(n)] = "a-" * 200 + "1234567890abcdef"  # one long value: every mask in Arrow
        arr = pa.array(values, type=rng.choice([pa.string(), pa.large_string()]))
        if trial % 3 == 0:
            arr = arr.slice(5, n - 10)
        masks = rng.sample(list(text_module.MASK_NAMES), rng.randrange(1, 8))
        chosen |= text_module._python_masks(arr, masks)
        mixed = text_module.template_array(arr, masks)
        with general_path(text_module):
            arrow = text_module.template_array(arr, masks)
        assert mixed[0].equals(arrow[0]) and list(mixed[1]) == list(arrow[1]), (trial, masks)
    assert {"token", "uuid", "number"} <= chosen  # the Python engine did take part


def test_long_values_are_templated_by_arrow_even_when_few(monkeypatch):
    """A few values go through Python's regular expressions, unless one is long: Python backtracks (the token
    mask took ~5 s on 32,000 characters of ``a-a-...``), RE2 does not; the templates and domains are Arrow's."""
    import pyarrow as pa

    from obsad.features.text import MASK_NAMES, registered_domain, template_array

    def no_long_value(python_way):
        def guarded(*args):
            values = args[0].to_pylist() if isinstance(args[0], pa.Array) else [args[0]]
            assert all(v is None or len(v) <= text_module._PY_MAX_CHARS for v in values), "a long value in Python"
            return python_way(*args)
        return guarded

    monkeypatch.setattr(text_module, "_template_few", no_long_value(text_module._template_few))
    monkeypatch.setattr(text_module, "_py_domain", no_long_value(text_module._py_domain))
    assert template_array(pa.array(["ok 12", None], type=pa.large_string()), ["number"])[0].to_pylist() == \
        ["ok <NUM>", None]  # short values: still the Python way (through the guard)
    long_values = pa.array(["a-" * 10000 + "1234567890abcdef", "x" * 300 + "@example.com", None, "ok 12"],
                           type=pa.large_string())
    fast = template_array(long_values, list(MASK_NAMES))
    fast_domains = registered_domain(pa.array(["h" * 20000, "a.b." + "c" * 20000], type=pa.large_string()))
    with general_path(text_module):
        general = template_array(long_values, list(MASK_NAMES))
        general_domains = registered_domain(pa.array(["h" * 20000, "a.b." + "c" * 20000], type=pa.large_string()))
    assert fast[0].to_pylist() == general[0].to_pylist() and list(fast[1]) == list(general[1])
    assert fast_domains.to_pylist() == general_domains.to_pylist()


def test_ipv4_parse_of_a_few_values_equals_arrows():
    import pyarrow as pa

    rng = random.Random(1)
    odd = ["fe80::1", "::ffff:10.0.0.1", "1.2.3", "1.2.3.4.5", "01.002.003.004", "1.2.3.4\n", "١.٢.٣.٤", "",
           "[::1]"]
    for _ in range(400):
        values = []
        for _ in range(rng.randrange(1, 20)):
            r = rng.random()
            values.append(".".join(str(rng.choice([0, 10, 127, 172, 192, 168, 100, 255, 256, 999, 16, 64]))
                                   for _ in range(4)) if r < 0.6 else rng.choice(odd) if r < 0.8 else
                          "".join(rng.choice("0123456789.:af ") for _ in range(rng.randrange(0, 14))))
        arr = pa.array(values, type=pa.large_string())
        few = encoder_module._parse_ipv4(arr)
        with general_path(encoder_module):
            arrow = encoder_module._parse_ipv4(arr)
        for a, b in zip(few, arrow):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
