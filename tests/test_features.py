"""FeatureEncoder: role inference, templating, robustness to real-world drift, persistence, determinism."""

from __future__ import annotations

import json
import uuid
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from obsad.features import EncodedFeatures, FeatureEncoder, template
from obsad.features.encoder import FORMAT, VERSION

N = 3000


def make_events(n: int = N, seed: int = 7) -> pd.DataFrame:
    """A small mixed table: several event kinds, sparse fields, ids, IPs, text with ids inside, heavy tails."""
    rng = np.random.default_rng(seed)
    is_http = rng.random(n) < 0.6
    latency = rng.lognormal(3.0, 1.5, n)
    users = np.array([f"user{i:03d}" for i in range(300)], dtype=object)
    user_idx = np.minimum(rng.zipf(1.5, n), 300) - 1
    order_ids = rng.integers(1, 99999, n)
    paths = np.where(rng.random(n) < 0.5, [f"/orders/{i}/items" for i in order_ids], [f"/users/{i}" for i in order_ids])
    sessions = [f"Session {rng.integers(0, 2**32):08x} closed after {rng.integers(1, 90)} s" for _ in range(n)]
    logins = [f"User {users[i]} logged in from 10.0.{rng.integers(0, 9)}.{rng.integers(1, 250)}" for i in user_idx]
    messages = np.where(rng.random(n) < 0.5, sessions, logins)
    private = [f"10.{rng.integers(0, 3)}.{rng.integers(0, 256)}.{rng.integers(1, 255)}" for _ in range(n)]
    public = [f"203.0.113.{rng.integers(1, 255)}" for _ in range(n)]
    src_ip = np.where(rng.random(n) < 0.8, private, public)
    t0 = pd.Timestamp("2024-03-04 00:00:00", tz="UTC")
    df = pd.DataFrame({
        "metadata.uid": [str(uuid.UUID(int=int(rng.integers(0, 2**62)) << 64 | i)) for i in range(n)],
        "metadata.product.name": "obsad-sim",
        "unmapped.always_missing": np.full(n, np.nan),
        "class_uid": np.where(is_http, 4002, 3002),
        "src_endpoint.port": rng.integers(1024, 65535, n),
        "dst_endpoint.port": rng.choice([443, 80, 22, 5432], n),
        "http_response.code": pd.Series(rng.choice([200, 200, 200, 404, 500], n)).where(is_http),
        "duration": latency,
        "http_response.latency": pd.Series(latency).where(is_http),
        "cpu_pct": rng.normal(40, 8, n),
        "src_endpoint.ip": src_ip,
        "http_request.url.path": pd.Series(paths).where(is_http),
        "message": messages,
        "time": t0 + pd.to_timedelta(np.sort(rng.integers(0, 7 * 86_400, n)), unit="s"),
        "actor.user.name": users[user_idx],
        "is_admin": rng.random(n) < 0.1,
    })
    return df


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return make_events()


@pytest.fixture(scope="module")
def fitted(events) -> FeatureEncoder:
    return FeatureEncoder().fit(events)


def role(enc: FeatureEncoder, column: str) -> str:
    return enc.roles_[column]


def state(enc: FeatureEncoder, column: str) -> dict:
    return next(s for s in enc.columns_ if s["column"] == column)


def col(feats: EncodedFeatures, name: str) -> np.ndarray:
    if name in feats.numeric_names:
        return feats.numeric[:, feats.numeric_names.index(name)]
    return feats.categorical[:, feats.categorical_names.index(name)]


# ------------------------------------------------------------------------------------------- role inference
def test_codes_of_reads_integer_arrays_with_nulls_as_minus_one():
    """``codes_of`` reads the buffers: nulls (whatever their hidden value), slices (an offset inside the validity
    bitmap), chunked arrays and empty arrays give what ``fill_null(-1).to_numpy()`` gives."""
    import pyarrow.compute as pc

    from obsad.features.values import codes_of

    words = pa.array(["b", None, "a", "b", None, "c", "a"] * 5, type=pa.large_string())
    indices = pc.dictionary_encode(words).indices
    positions = pc.index_in(words, value_set=pa.array(["a", "c"], type=pa.large_string()))
    cases = [indices, indices.slice(3, 20), indices.slice(9), positions, positions.slice(1, 3),
             pa.chunked_array([indices.slice(0, 5), indices.slice(11, 4)]), pa.array([4, 2], type=pa.int32()),
             pa.array([], type=pa.int32())]
    for arr in cases:
        want = pc.fill_null(arr, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        got = codes_of(arr)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    assert (codes_of(indices) == -1).sum() == 10


def test_shared_encodings_encode_an_array_once_and_only_inside_the_block():
    import pyarrow.compute as pc

    from obsad import encodings
    from obsad.features import values as V

    words = pa.array([f"w{i % 37}" if i % 11 else None for i in range(600)], type=pa.large_string())
    want = pc.dictionary_encode(words)
    same_buffers = words.slice(0, len(words))  # another Python object, the same buffers
    sliced = words.slice(10, 400)
    assert V.known_codes(words) is None  # no block open: nothing is kept
    with V.shared_encodings():
        assert V.known_codes(words) is None
        codes, uniques = V.dictionary_codes(words)
        np.testing.assert_array_equal(codes, pc.fill_null(want.indices, -1).to_numpy(zero_copy_only=False))
        assert uniques.equals(want.dictionary) and not codes.flags.writeable
        again, again_uniques = V.dictionary_codes(same_buffers)
        assert again is codes and again_uniques is uniques
        assert V.known_codes(words)[0] is codes
        part_codes, part_uniques = V.dictionary_codes(sliced)  # a slice is an array of its own
        assert part_codes is not codes and len(part_codes) == 400
        assert part_uniques.equals(pc.dictionary_encode(sliced).dictionary)
        with V.shared_encodings():  # nested (another thread's block): the same memo
            assert V.known_codes(words)[0] is codes
        assert V.known_codes(words) is not None
        small = words.slice(0, 100)  # below _MEMO_MIN_VALUES: computed, never kept
        V.dictionary_codes(small)
        assert V.known_codes(small) is None
    assert V.known_codes(words) is None and encodings._ENCODINGS is None


def test_column_kind_remembered_by_dtype_equals_its_tests():
    """Kinds decided by the dtype are remembered per dtype; object and categorical columns are always read."""
    from obsad.features import values as V

    columns = [pd.Series([1, None], dtype="Int64"), pd.Series([1.5, 2.0]), pd.Series([True, False]),
               pd.Series([True, None], dtype="boolean"), pd.Series(["a", None], dtype=pd.StringDtype("pyarrow")),
               pd.Series(["a", None], dtype="str"), pd.Series(["a", "b"], dtype=object),
               pd.Series([1, "b"], dtype=object), pd.Series([1, 2], dtype=object),
               pd.Series(pd.to_datetime([0, 1], unit="ms", utc=True)), pd.Series(["x", "y"], dtype="category"),
               pd.Series([1, 2], dtype="category"), pd.Series([1, None], dtype=pd.ArrowDtype(pa.int32())),
               pd.Series([{"a": 1}, None], dtype=object), pd.Series(pd.to_timedelta([1, 2], unit="s"))]
    V.column_kind(columns[0])
    V._SHORTCUTS = False
    try:
        expected = [V.column_kind(c) for c in columns]
    finally:
        V._SHORTCUTS = True
    for _ in range(2):  # the first time computed (and remembered), the second time looked up
        assert [V.column_kind(c) for c in columns] == expected
    assert expected[6] == V.KIND_STRING and expected[7] == V.KIND_MIXED and expected[8] == V.KIND_NUMBER
    assert not any(isinstance(dt, pd.CategoricalDtype) or (isinstance(dt, np.dtype) and dt.kind == "O")
                   for dt in V._KIND_OF_DTYPE)


def test_roles_are_inferred_from_the_data(fitted):
    expected = {
        "metadata.uid": "drop_identifier",
        "metadata.product.name": "drop_constant",
        "unmapped.always_missing": "drop_constant",
        "class_uid": "categorical",
        "src_endpoint.port": "categorical",
        "dst_endpoint.port": "categorical",
        "http_response.code": "categorical",
        "duration": "numeric",
        "http_response.latency": "drop_duplicate",
        "cpu_pct": "numeric",
        "src_endpoint.ip": "ip",
        "http_request.url.path": "text",
        "message": "text",
        "time": "timestamp",
        "actor.user.name": "high_cardinality",
        "is_admin": "categorical",
    }
    assert {c: role(fitted, c) for c in expected} == expected
    desc = fitted.describe()
    assert list(desc.columns) == ["column", "role", "reason", "n_unique", "missing_rate", "outputs"]
    assert list(desc["column"]) == sorted(desc["column"])
    assert desc.set_index("column").loc["metadata.uid", "outputs"] == []
    assert all(isinstance(r, str) and r for r in desc["reason"])


def test_heavy_tail_is_log_scaled_and_symmetric_is_not(fitted, events):
    assert state(fitted, "duration")["log"] is True
    assert state(fitted, "cpu_pct")["log"] is False
    feats = fitted.transform(events)
    z = col(feats, "duration")
    order = np.argsort(events["duration"].to_numpy())
    assert np.all(np.diff(z[order]) >= 0), "scaling must preserve the order of a measure"
    assert abs(float(np.median(z))) < 0.05 and np.abs(z).max() <= 10.0
    # log scaling keeps the bulk spread out instead of crushed by the tail
    assert np.std(z) > 0.5


def test_ports_and_codes_are_categories_not_quantities(fitted, events):
    feats = fitted.transform(events)
    codes = col(feats, "http_response.code")
    present = events["http_response.code"].notna().to_numpy()
    assert (codes[~present] == 0).all() and (codes[present] >= 2).all()
    vocab = state(fitted, "http_response.code")["vocab"]
    assert set(vocab) == {"200", "404", "500"}
    assert "dst_endpoint.port" in feats.categorical_names and "dst_endpoint.port" not in feats.numeric_names


def test_text_is_templated():
    assert template("/orders/88231/items") == template("/orders/1002/items") == "/orders/<NUM>/items"
    assert template("Session 8f3a91c2 closed after 31 s") == "Session <HEX> closed after <NUM> s"
    assert template("req 123e4567-e89b-12d3-a456-426614174000 from 10.0.0.5") == "req <UUID> from <IP>"
    assert template("mail bob.smith@example.com") == "mail <EMAIL>"
    assert template("the decade facade") == "the decade facade"
    assert template("/orders/882311/items") == "/orders/<NUM>/items"  # a long number is a number, not a hex id
    assert template("user_12345 on Win64 v1.2.3") == "user_<NUM> on Win<NUM> v<NUM>.<NUM>"
    assert template("key AbC123xYz456QwErTyUi ok") == "key <TOK> ok"


def test_shared_templates_reuse_results_for_the_same_values_only_inside_the_block():
    """Inside ``shared_templates`` a second call on equal values (another array object, even another string
    width) returns the first call's templates, in its own type, without running the regexes; other values or
    masks are computed; outside the block, and once the last block closes, nothing is remembered."""
    import obsad.features.text as text

    values = [f"/orders/{i}/items from 10.0.{i % 250}.1" for i in range(600)]
    masks = ["ip", "number"]
    expected, fired = text._template_array(pa.array(values, pa.large_string()), masks)
    runs = []
    real = text._template_array

    def counted(arr, m=None):
        runs.append(len(arr))
        return real(arr, m)

    text._template_array = counted
    try:
        with text.shared_templates():
            first, first_fired = text.template_array(pa.array(values, pa.large_string()), masks)
            with text.shared_templates():  # a second scoring call at the same time: the same memo
                second, _ = text.template_array(pa.array(values, pa.string()), masks)
            third, _ = text.template_array(pa.array(values[:-1] + ["other 1"], pa.large_string()), masks)
            text.template_array(pa.array(values, pa.large_string()), ["number"])
            few, _ = text.template_array(pa.array(values[:10], pa.large_string()), masks)  # too few to remember
            text.template_array(pa.array(values[:10], pa.large_string()), masks)
        assert text._MEMO is None
        text.template_array(pa.array(values, pa.large_string()), masks)
    finally:
        text._template_array = real
    assert runs == [600, 600, 600, 10, 10, 600]
    assert first.equals(expected) and first_fired == fired == ["ip", "number"]
    assert second.type == pa.string() and second.cast(pa.large_string()).equals(expected)
    assert third[:-1].equals(expected[:-1]) and third[-1].as_py() == "other <NUM>"
    assert few.equals(expected[:10])


def test_template_memo_waits_for_a_result_being_computed_and_forgets_failures():
    import threading

    import obsad.features.text as text

    memo = text._TemplateMemo(max_entries=2)
    key = memo.key(pa.array(["a 1"] * 300), ["number"])
    started, release, results = threading.Event(), threading.Event(), []

    def slow():
        started.set()
        release.wait(5)
        return "computed", ["number"]

    owner = threading.Thread(target=lambda: results.append(memo.get_or_compute(key, slow)))
    owner.start()
    started.wait(5)
    waiter = threading.Thread(target=lambda: results.append(memo.get_or_compute(key, lambda: ("again", []))))
    waiter.start()
    release.set()
    owner.join(5)
    waiter.join(5)
    assert results == [("computed", ["number"])] * 2

    def broken():
        raise RuntimeError("regex engine failed")

    other = memo.key(pa.array(["b 2"] * 300), ["number"])
    with pytest.raises(RuntimeError):
        memo.get_or_compute(other, broken)
    assert memo.get_or_compute(other, lambda: ("fine", [])) == ("fine", [])
    for k in range(3):  # at most two entries: the oldest go first
        memo.get_or_compute(memo.key(pa.array([f"c {k}"] * 300), ["number"]), lambda: ("x", []))
    assert memo.get_or_compute(key, lambda: ("recomputed", [])) == ("recomputed", [])
    assert memo.key(pa.array(["a", None] * 200), ["number"]) is None  # nulls: not remembered


def test_text_columns_share_templates_in_the_encoding(events):
    df = events.copy()
    df.loc[0, "http_request.url.path"] = "/orders/88231/items"
    df.loc[1, "http_request.url.path"] = "/orders/1002/items"
    df.loc[2, "message"] = "Session 8f3a91c2 closed after 31 s"
    df.loc[3, "message"] = "Session 00ab12ff closed after 7 s"
    enc = FeatureEncoder().fit(df)
    feats = enc.transform(df)
    path = col(feats, "http_request.url.path.template")
    msg = col(feats, "message.template")
    assert path[0] == path[1] >= 2
    assert msg[2] == msg[3] >= 2
    st = state(enc, "message")
    assert "Session <HEX> closed after <NUM> s" in st["vocab"]
    assert any(v.startswith("User ") and "<IP>" in v for v in st["vocab"]) or len(st["vocab"]) > 2
    assert len(state(enc, "http_request.url.path")["vocab"]) == 2  # /orders/<NUM>/items and /users/<NUM>
    assert "message.length" in feats.numeric_names


def test_ip_is_split_into_network_parts(fitted, events):
    feats = fitted.transform(events)
    names = [n for n, s in feats.sources.items() if s == "src_endpoint.ip"]
    assert set(names) == {"src_endpoint.ip.prefix16", "src_endpoint.ip.prefix24", "src_endpoint.ip.private",
                          "src_endpoint.ip.freq"}
    ip = events["src_endpoint.ip"].to_numpy()
    private = col(feats, "src_endpoint.ip.private")
    is10 = np.array([v.startswith("10.") for v in ip])
    assert (private[is10] == 1).all() and (private[~is10] == 0).all()
    p24 = col(feats, "src_endpoint.ip.prefix24")
    public = np.flatnonzero(~is10)
    assert len(set(p24[public])) == 1 and p24[public[0]] >= 2  # all of 203.0.113.0/24
    assert "203.0.113.0/24" in state(fitted, "src_endpoint.ip")["vocab24"]


def test_timestamp_is_cyclic_in_utc():
    t = pd.Series(pd.to_datetime(["2024-03-04 06:00:00", "2024-03-04 18:00:00", None, "2024-03-07 12:00:00"] * 10))
    df = pd.DataFrame({"time": t.dt.tz_localize("Europe/Paris"), "x": np.arange(40.0)})
    enc = FeatureEncoder().fit(df)
    feats = enc.transform(df)
    hs, hc = col(feats, "time.hour_sin"), col(feats, "time.hour_cos")
    # 06:00 Paris (winter) = 05:00 UTC
    assert np.isclose(hs[0], np.sin(2 * np.pi * 5 / 24), atol=1e-6)
    assert np.isclose(hc[1], np.cos(2 * np.pi * 17 / 24), atol=1e-6)
    assert hs[2] == 0 and col(feats, "time.missing")[2] == 1.0
    # ISO strings read the same instants
    iso = df.assign(time=df["time"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert np.array_equal(enc.transform(iso).numeric, feats.numeric)


# -------------------------------------------------------------------------------------- categorical ids
def test_unseen_values_map_to_one_and_missing_to_zero(fitted, events):
    df = events.head(4).copy()
    df["dst_endpoint.port"] = [443, 9999, None, 80]
    df["actor.user.name"] = ["user000", "never-seen", None, "user000"]
    df["message"] = ["A brand new kind of message", None, "Session 0badf00d closed after 3 s", "x"]
    feats = fitted.transform(df)
    port = col(feats, "dst_endpoint.port")
    assert port[0] >= 2 and port[1] == 1 and port[2] == 0 and port[3] >= 2
    user = col(feats, "actor.user.name")
    assert user[0] >= 2 and user[1] == 1 and user[2] == 0
    freq = col(feats, "actor.user.name.freq")
    assert freq[1] == 0.0 and freq[0] > 0.0
    msg = col(feats, "message.template")
    assert msg[0] == 1 and msg[1] == 0 and msg[2] >= 2


def test_rare_values_share_the_rare_bucket():
    df = pd.DataFrame({"kind": ["a"] * 50 + ["b"] * 50 + ["rare"] * 2, "x": np.arange(102.0)})
    enc = FeatureEncoder(min_frequency=5).fit(df)
    ids = enc.transform(df).categorical[:, 0]
    assert set(ids[:100]) == {2, 3} and set(ids[100:]) == {1}
    assert enc.cardinalities_ == [4]


def test_outputs_are_finite_and_cardinalities_bound_the_ids(fitted, events):
    df = events.copy()
    df.loc[0:5, "duration"] = [np.inf, -np.inf, 1e300, -1e300, 0.0, np.nan]
    df.loc[6, "cpu_pct"] = 1e12
    feats = fitted.transform(df)
    assert feats.numeric.dtype == np.float32 and feats.categorical.dtype == np.int64
    assert np.isfinite(feats.numeric).all()
    assert np.abs(feats.numeric).max() <= 10.0
    assert len(feats.cardinalities) == feats.categorical.shape[1]
    assert (feats.categorical.min(axis=0) >= 0).all()
    assert (feats.categorical.max(axis=0) < np.array(feats.cardinalities)).all()
    assert set(feats.sources) == set(feats.numeric_names) | set(feats.categorical_names)
    assert set(feats.sources.values()) <= set(events.columns)
    assert len(feats) == len(df) and feats.to_frame().shape == (len(df), len(feats.feature_names))
    assert fitted.get_feature_names_out() == feats.feature_names


# ------------------------------------------------------------------------------------------- robustness
def test_missing_column_at_transform_reads_as_missing(fitted, events):
    df = events.drop(columns=["actor.user.name", "duration"])
    feats = fitted.transform(df)
    assert feats.report["missing_columns"] == ["actor.user.name", "duration"]
    assert (col(feats, "actor.user.name") == 0).all()
    assert np.isfinite(feats.numeric).all()
    assert feats.numeric.shape[1] == len(fitted.numeric_names_)


def test_new_columns_are_ignored(fitted, events):
    df = events.assign(brand_new_field=1.0)
    a, b = fitted.transform(events), fitted.transform(df)
    assert np.array_equal(a.numeric, b.numeric) and np.array_equal(a.categorical, b.categorical)
    assert b.report["ignored_columns"] == ["brand_new_field"]


def test_numbers_as_strings_at_transform_are_coerced(fitted, events):
    df = events.copy()
    df["duration"] = df["duration"].map(repr).astype(object)
    df["http_response.code"] = df["http_response.code"].map(lambda v: None if pd.isna(v) else str(int(v)))
    df["dst_endpoint.port"] = df["dst_endpoint.port"].astype(str)
    a, b = fitted.transform(events), fitted.transform(df)
    assert np.array_equal(a.numeric, b.numeric)
    assert np.array_equal(a.categorical, b.categorical)
    df.loc[0, "duration"] = "not a number"
    c = fitted.transform(df)
    assert c.report["unparsed"] == {"duration": 1} and np.isfinite(c.numeric).all()


def test_empty_frame_gives_empty_arrays_of_the_right_width(fitted, events):
    for df in (events.iloc[:0], pd.DataFrame()):
        feats = fitted.transform(df)
        assert feats.numeric.shape == (0, len(fitted.numeric_names_))
        assert feats.categorical.shape == (0, len(fitted.categorical_names_))
        assert len(feats) == 0


def test_constant_and_empty_columns_raise_no_warnings():
    df = pd.DataFrame({"c": [5.0] * 20, "e": [np.nan] * 20, "s": ["x"] * 20, "v": np.arange(20.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc = FeatureEncoder().fit(df)
        feats = enc.transform(df)
        FeatureEncoder().fit(df.iloc[:0]).transform(df.iloc[:0])
    assert enc.roles_ == {"c": "drop_constant", "e": "drop_constant", "s": "drop_constant", "v": "numeric"}
    assert feats.numeric_names == ["v"]


def test_odd_object_columns_do_not_crash():
    df = pd.DataFrame({
        "obj": [{"a": 1}, [1, 2], "x", 3, None] * 20,
        "flag": ["true", "false", None, "true", "false"] * 20,
        "mixed_num": [1, "2", 3.0, None, "4"] * 20,
        "nullable": pd.array([1, None, 3, 4, 5] * 20, dtype="Int64"),
        "zip": [f"{i:05d}" for i in range(100)],
    })
    enc = FeatureEncoder().fit(df)
    feats = enc.transform(df)
    assert enc.roles_["flag"] == "categorical" and enc.roles_["obj"] == "categorical"
    assert enc.roles_["nullable"] == "categorical" and enc.roles_["zip"] != "numeric"
    assert np.isfinite(feats.numeric).all()


def test_duplicated_measure_is_dropped(fitted):
    st = state(fitted, "http_response.latency")
    assert st["role"] == "drop_duplicate" and st["duplicate_of"] == "duration"
    assert "http_response.latency" not in fitted.sources_.values()
    assert role(fitted, "duration") == "numeric"
    # a monotone transform of a measure is the same measure
    x = np.arange(1.0, 201.0)
    df = pd.DataFrame({"bytes": x**2, "kb": np.log(x), "y": np.sin(x)})
    enc = FeatureEncoder().fit(df)
    assert enc.roles_["kb"] == "drop_duplicate" or enc.roles_["bytes"] == "drop_duplicate"
    assert enc.roles_["y"] == "numeric"
    assert FeatureEncoder(drop_duplicates=False).fit(df).roles_["kb"] == "numeric"


def test_overrides_and_exclude_are_respected(events):
    enc = FeatureEncoder(
        overrides={"dst_endpoint.port": "numeric", "metadata.uid": "categorical", "*.latency": "numeric",
                   "cpu_pct": "drop", "not.there": "categorical"},
        exclude=["message", "unmapped.*"],
    ).fit(events)
    assert enc.roles_["dst_endpoint.port"] == "numeric"
    assert enc.roles_["metadata.uid"] == "categorical"
    assert enc.roles_["http_response.latency"] == "numeric"  # forced: never dropped as a duplicate
    assert enc.roles_["cpu_pct"] == "drop"
    assert enc.roles_["message"] == "excluded" and enc.roles_["unmapped.always_missing"] == "excluded"
    assert "message" not in enc.sources_.values() and "cpu_pct" not in enc.sources_.values()
    feats = enc.transform(events)
    assert (col(feats, "not.there") == 0).all()
    with pytest.raises(ValueError, match="unknown role"):
        FeatureEncoder(overrides={"x": "bogus"}).fit(events)


def test_not_fitted_raises():
    with pytest.raises(NotFittedError):
        FeatureEncoder().transform(pd.DataFrame({"a": [1]}))
    with pytest.raises(NotFittedError):
        FeatureEncoder().describe()


# --------------------------------------------------------------------------------- persistence, determinism
def test_save_load_roundtrip_is_bit_identical(fitted, events, tmp_path):
    path = fitted.save(tmp_path / "encoder.json")
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["version"] == VERSION
    loaded = FeatureEncoder.load(path)
    a, b = fitted.transform(events), loaded.transform(events)
    assert a.numeric.tobytes() == b.numeric.tobytes()
    assert a.categorical.tobytes() == b.categorical.tobytes()
    assert (a.numeric_names, a.categorical_names, a.cardinalities, a.sources) == (
        b.numeric_names, b.categorical_names, b.cardinalities, b.sources)
    loaded.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == path.read_text()


def test_fitting_is_deterministic(events):
    a = FeatureEncoder(n_jobs=1).fit(events)
    b = clone(a).set_params(n_jobs=4)
    b.fit(events)
    assert json.dumps(a.to_dict()["columns"]) == json.dumps(b.to_dict()["columns"])
    assert json.dumps(a.to_dict()) == json.dumps(FeatureEncoder(n_jobs=1).fit(events).to_dict())
    fa, fb = a.transform(events), b.transform(events)
    assert fa.numeric.tobytes() == fb.numeric.tobytes() and fa.categorical.tobytes() == fb.categorical.tobytes()
    # row blocks are an implementation detail: outputs do not depend on them
    fc = b.set_params(chunk_rows=257).transform(events)
    assert fa.numeric.tobytes() == fc.numeric.tobytes() and fa.categorical.tobytes() == fc.categorical.tobytes()
    # threads start at 20k rows: they change nothing either
    big = pd.concat([events] * 7, ignore_index=True)
    serial = FeatureEncoder(n_jobs=1).fit(big)
    threaded = FeatureEncoder(n_jobs=3, chunk_rows=5000).fit(big)
    assert json.dumps(serial.to_dict()["columns"]) == json.dumps(threaded.to_dict()["columns"])
    fs, ft = serial.transform(big), threaded.fit_transform(big)
    assert fs.numeric.tobytes() == ft.numeric.tobytes() and fs.categorical.tobytes() == ft.categorical.tobytes()


def test_loading_garbage_or_wrong_version_is_a_clear_error(fitted, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a FeatureEncoder"):
        FeatureEncoder.load(bad)
    bad.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ValueError, match="not a FeatureEncoder"):
        FeatureEncoder.load(bad)
    data = fitted.to_dict()
    data["version"] = VERSION + 1
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="version"):
        FeatureEncoder.load(bad)
    data = fitted.to_dict()
    del data["columns"][3]["role"]
    with pytest.raises(ValueError, match="invalid FeatureEncoder state"):
        FeatureEncoder.from_dict(data)
    data = fitted.to_dict()
    next(c for c in data["columns"] if c["role"] == "categorical")["vocab"] = [1, 2]
    with pytest.raises(ValueError, match="list of strings"):
        FeatureEncoder.from_dict(data)


def test_ipv6_mapped_and_invalid_addresses():
    values = ["10.0.0.1", "10.0.0.2", "2001:db8:1::5", "2001:db8:1::6", "::ffff:10.0.0.9", "-", None, "8.8.8.8"]
    others = [f"172.16.{i}.1" for i in range(60)]  # enough real addresses that the few odd values don't matter
    df = pd.DataFrame({"addr": values * 20 + others})
    enc = FeatureEncoder().fit(df)
    assert enc.roles_["addr"] == "ip"
    feats = enc.transform(df.head(len(values)))
    p16, p24 = col(feats, "addr.prefix16"), col(feats, "addr.prefix24")
    private = col(feats, "addr.private")
    assert p16[0] == p16[1] == p16[4] >= 2  # the IPv4-mapped address is in 10.0/16 too
    assert p24[2] == p24[3] >= 2 and p24[2] != p24[0]  # one IPv6 /48
    assert p16[5] == 1 and p24[5] == 1  # not an address: unknown
    assert p16[6] == 0 and p24[6] == 0  # missing
    assert list(private) == [1, 1, 1, 1, 1, 0, 0, 0]
    st = state(enc, "addr")
    assert "10.0.0.0/16" in st["vocab16"] and "2001:db8::/32" in st["vocab16"]


def test_high_cardinality_keeps_frequency_and_registered_domain():
    rng = np.random.default_rng(3)
    hosts = [f"web-{i:03d}.{d}" for i in range(200) for d in ("prod.example.com", "corp.example.co.uk")]
    users = [f"first{i}.last{i}" for i in range(300)]
    df = pd.DataFrame({"host": rng.choice(hosts, 4000), "user": rng.choice(users, 4000)})
    enc = FeatureEncoder().fit(df)
    assert enc.roles_ == {"host": "high_cardinality", "user": "high_cardinality"}
    assert "host.domain" in enc.categorical_names_
    assert "user.domain" not in enc.categorical_names_  # "first.last" names are not grouped by a domain
    assert set(state(enc, "host")["domain_vocab"]) == {"example.com", "example.co.uk"}
    new = pd.DataFrame({"host": [hosts[0], "web-999.prod.example.com", "evil.attacker.net"], "user": ["x", "y", "z"]})
    feats = enc.transform(new)
    assert list(col(feats, "host")[1:]) == [1, 1]
    dom = col(feats, "host.domain")
    assert dom[1] >= 2 and dom[2] == 1  # new host under a known domain vs a never-seen domain
    freq = col(feats, "host.freq")
    assert freq[0] > 0 and freq[1] == 0 and freq[2] == 0


# ------------------------------------------------------------------------- identifier-like codes, port ranges
def test_near_unique_integer_codes_are_dropped_as_identifiers():
    rng = np.random.default_rng(11)
    n = 3000
    df = pd.DataFrame({
        "process.pid": rng.integers(100, 40_000, n),  # a code by name, but almost every value a one-off
        "job.status": rng.integers(0, 30, n),  # 30 codes, each seen ~100 times: a real category
        "exit_code": rng.choice([0, 1, 2], n),
    })
    enc = FeatureEncoder().fit(df)
    assert enc.roles_ == {"process.pid": "drop_identifier", "job.status": "categorical", "exit_code": "categorical"}
    st = state(enc, "process.pid")
    assert st["numeric"] == [] and st["categorical"] == []
    assert "cover" in st["reason"] and "filled rows" in st["reason"]
    # the rule is the coverage: raise the bar above the status column's and it goes too
    assert FeatureEncoder(min_code_coverage=1.0, min_frequency=200).fit(df).roles_["job.status"] == "drop_identifier"


def test_near_unique_ports_are_encoded_by_iana_range(fitted):
    assert "src_endpoint.port.range" in fitted.categorical_names_
    assert "src_endpoint.port" not in fitted.categorical_names_
    assert "dst_endpoint.port" in fitted.categorical_names_  # 4 service ports: a plain categorical
    rng = np.random.default_rng(5)
    ports = np.concatenate([rng.integers(1024, 65536, 2000), np.full(50, 22), np.arange(100, 111)]).astype(float)
    df = pd.DataFrame({"src_port": ports})
    enc = FeatureEncoder().fit(df)
    st = state(enc, "src_port")
    assert st["role"] == "categorical" and st["port_ranges"] is True and "IANA" in st["reason"]
    assert enc.categorical_names_ == ["src_port.range"]
    assert set(st["vocab"]) == {"22", "<well-known>", "<registered>", "<dynamic>"}
    new = pd.DataFrame({"src_port": [22, 105, 1000, 5000, 50000, 70000, None, 22.5]})
    ids = enc.transform(new).categorical[:, 0]
    pos = {v: i + 2 for i, v in enumerate(st["vocab"])}
    assert list(ids) == [pos["22"], pos["<well-known>"], pos["<well-known>"], pos["<registered>"],
                         pos["<dynamic>"], 1, 0, 1]
    as_strings = new.assign(src_port=["22", "105", "1000", "5000", "50000", "70000", None, "nope"])
    assert list(enc.transform(as_strings).categorical[:, 0]) == list(ids)


def test_relative_floor_keeps_chance_repeats_out_of_vocabularies():
    df = pd.DataFrame({"kind": ["a"] * 59_995 + ["b"] * 5})
    # 5 >= min_frequency, but 5 rows of 60,000 are under the 0.01 % floor (6 rows)
    assert state(FeatureEncoder().fit(df), "kind")["vocab"] == ["a"]
    assert state(FeatureEncoder(min_frequency_ratio=0.0).fit(df), "kind")["vocab"] == ["a", "b"]


def test_codes_read_the_same_whatever_the_dtype():
    values = [200, 404, None, 200, 500, 404, 200] * 30
    base = pd.DataFrame({"http.code": pd.array(values, dtype="Int64")})
    enc = FeatureEncoder().fit(base)
    expected = enc.transform(base).categorical
    variants = [
        pd.Series(values, dtype="float64"),
        pd.Series([np.nan if v is None else str(v) for v in values], dtype=object),
        pd.Series(values, dtype=pd.ArrowDtype(pa.int64())),
        pd.Series([v if v is not None else None for v in values], dtype=object),
    ]
    for v in variants:
        got = enc.transform(pd.DataFrame({"http.code": v})).categorical
        assert np.array_equal(got, expected), v.dtype
    odd = pd.DataFrame({"http.code": [200.0, 200.5, np.inf, -0.0, 1e300, np.nan, 404.0]})
    assert list(enc.transform(odd).categorical[:, 0]) == [expected[0, 0], 1, 1, 1, 1, 0, expected[1, 0]]
    assert list(enc.transform(pd.DataFrame({"http.code": np.array([200, 7, 404], dtype=np.uint16)}))
                .categorical[:, 0]) == [expected[0, 0], 1, expected[1, 0]]
