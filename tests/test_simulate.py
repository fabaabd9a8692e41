"""The OCSF simulator: export shape, realism properties, labels and scenario signatures, determinism."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from obsad.ocsf.nested import flatten_event, to_nested
from obsad.ocsf.scenarios import SCENARIOS, plan
from obsad.ocsf.simulate import TIMEOUT_MS, simulate, write_simulation

N = 20_000


@pytest.fixture(scope="module")
def sim():
    return simulate(n_events=N, days=7, seed=7)


@pytest.fixture(scope="module")
def ev(sim):
    return sim.events


def _berlin(times_ms: pd.Series) -> pd.Series:
    return pd.to_datetime(times_ms, unit="ms", utc=True).dt.tz_convert("Europe/Berlin")


# --------------------------------------------------------------------------------------------------
# shape of the export
# --------------------------------------------------------------------------------------------------


def test_size_classes_and_ocsf_identifiers(ev):
    assert len(ev) == N
    classes = set(ev["class_uid"].unique().tolist())
    assert {3002, 6003, 4002, 4001, 4003, 1007} <= classes and len(classes) >= 6
    assert (ev["type_uid"] == ev["class_uid"] * 100 + ev["activity_id"]).all()
    assert (ev["category_uid"] == ev["class_uid"] // 1000).all()
    assert ev["severity_id"].between(0, 6).all()
    assert ev["time"].dtype == np.int64 and ev["time"].is_monotonic_increasing
    dt = pd.to_datetime(ev["time_dt"], utc=True, format="ISO8601")
    assert (dt.dt.as_unit("ms").astype("int64") == ev["time"]).all()
    # every class has its own columns and lacks the others' (sparse)
    http = ev[ev["class_uid"] == 4002]
    dns = ev[ev["class_uid"] == 4003]
    assert http["query.hostname"].isna().all() and dns["http_response.code"].isna().all()
    assert dns["query.hostname"].notna().all() and http["http_response.code"].notna().all()


def test_column_order_is_deterministic_and_labels_do_not_leak(sim, ev):
    again = simulate(n_events=N, days=7, seed=8).events
    assert list(ev.columns)[:3] == ["time", "time_dt", "metadata.uid"]
    assert set(again.columns) == set(ev.columns)
    forbidden = re.compile(r"anomal|label|scenario|is_attack|ground", re.I)
    assert not [c for c in ev.columns if forbidden.search(c)]
    names = "|".join(re.escape(s) for s in SCENARIOS)
    for c in ev.columns:
        s = ev[c]
        if pd.api.types.is_string_dtype(s.dtype):
            assert not s.dropna().str.contains(names).any(), f"scenario name leaks in {c}"


def test_json_string_columns_parse(ev):
    for col, kind in (("unmapped", dict), ("resources", list), ("observables", list), ("answers", list),
                      ("src_endpoint", dict)):
        vals = ev[col].dropna()
        assert len(vals) > 0, col
        parsed = [json.loads(v) for v in vals.tolist()]
        assert all(isinstance(p, kind) for p in parsed), col
    res = [json.loads(v) for v in ev["resources"].dropna().tolist()]
    assert all(all({"uid", "type"} <= set(r) for r in arr) for arr in res)
    assert {len(a) for a in res} >= {1, 2}  # variable length arrays
    # the DNS source ships src_endpoint both as JSON and flat, with the same ip
    dns = ev[ev["class_uid"] == 4003]
    assert (dns["src_endpoint"].map(lambda s: json.loads(s)["ip"]) == dns["src_endpoint.ip"]).all()


def test_types_drift_and_constant_and_duplicated_measures(ev):
    http = ev[ev["class_uid"] == 4002]
    assert pd.api.types.is_string_dtype(ev["http_response.code"].dtype)
    assert http["http_response.code"].str.fullmatch(r"[1-5]\d\d").all()
    assert set(ev["is_mfa"].dropna().unique()) == {"true", "false"}
    assert ev["metadata.product.vendor_name"].nunique() == 1 and ev["metadata.product.vendor_name"].notna().all()
    assert (http["duration"] == http["http_response.latency"]).all()
    assert ev["metadata.version"].nunique() >= 3
    assert ev.groupby("class_uid")["metadata.version"].nunique().max() >= 2  # one class, two sources
    # unique ids: one uid per event, except re-sent duplicates
    assert ev["metadata.uid"].nunique() == len(ev) - ev.duplicated().sum()
    assert ev.drop_duplicates()["http_request.uid"].dropna().is_unique


def test_free_text_carries_ids(ev):
    msg = ev["message"].dropna()
    assert msg.str.contains(r"\d{5,}|\b[0-9a-f]{8}\b").mean() > 0.3
    assert ev["http_request.url.path"].dropna().str.contains(r"/\d{5,}").any()
    assert ev["status_detail"].dropna().str.contains(r"\d").any()
    ua = ev["http_request.user_agent"].dropna()
    assert ua.str.contains(r"Chrome/\d+\.\d").any() and ua.str.contains(r"aws-cli/2\.").any()


def test_exact_duplicates(ev):
    dup = ev.duplicated(keep=False)
    assert ev.duplicated().sum() == round(0.005 * N)
    assert ev.loc[dup, "metadata.uid"].value_counts().min() >= 2


def test_heavy_tails_and_timeout_ceiling(ev):
    http = ev[ev["class_uid"] == 4002]
    lat = http["http_response.latency"].astype(float)
    assert lat.max() == TIMEOUT_MS
    at_ceiling = http[lat == TIMEOUT_MS]
    assert len(at_ceiling) >= 10 and (at_ceiling["http_response.code"] == "504").all()
    assert lat.quantile(0.99) / lat.median() > 20
    size = ev["traffic.bytes_out"].dropna().astype(float)
    assert np.log10(size.max() / size.min()) >= 5


def test_missing_the_way_real_events_miss(ev):
    ip = ev["src_endpoint.ip"]
    internal = ip.str.startswith("10.").fillna(False).astype(bool)
    assert ev.loc[internal, "src_endpoint.location.country"].isna().all()
    external_auth = (ev["class_uid"] == 3002) & ip.notna() & ~internal
    assert ev.loc[external_auth, "src_endpoint.location.country"].notna().all()
    for cls in (3002, 4002):
        ua = ev.loc[ev["class_uid"] == cls, "http_request.user_agent"]
        assert 0 < ua.isna().mean() < 0.6, cls
    auth = ev[ev["class_uid"] == 3002]
    assert auth.loc[auth["status_id"] == 1, "status_detail"].isna().all()
    assert auth.loc[auth["status_id"] == 2, "status_detail"].notna().all()


def test_daily_and_weekly_rhythm(ev):
    local = _berlin(ev["time"])
    hours = local.dt.hour.value_counts()
    assert hours.get(14, 0) > 2 * hours.get(3, 0)
    day = local.dt.floor("D")
    per_day = ev.groupby(day).size()
    weekend = per_day[per_day.index.day_of_week >= 5]
    weekday = per_day[per_day.index.day_of_week < 5]
    assert weekday.mean() > 1.3 * weekend.mean()
    # people and servers keep different rhythms: office classes swing more than network flows
    auth_h = local[ev["class_uid"] == 3002].dt.hour.value_counts()
    assert auth_h.get(14, 0) > 5 * auth_h.get(3, 1)


# --------------------------------------------------------------------------------------------------
# labels and scenarios
# --------------------------------------------------------------------------------------------------


def test_labels_contract(sim, ev):
    lab = sim.labels
    assert list(lab.columns) == ["event_uid", "scenario", "category", "shape", "entity", "fields"]
    assert lab["event_uid"].is_unique and lab["event_uid"].isin(ev["metadata.uid"]).all()
    assert set(lab["scenario"]) == set(SCENARIOS)
    for name, g in lab.groupby("scenario"):
        sc = SCENARIOS[name]
        assert (g["category"] == sc.category).all() and (g["shape"] == sc.shape).all()
        assert all(list(f) == list(sc.fields) for f in g["fields"])
        rows = ev[ev["metadata.uid"].isin(g["event_uid"])]
        assert (rows["class_uid"] == sc.class_uid).all(), name
        # the label's entity is the value of the scenario's entity column in those events
        ent = rows.drop_duplicates("metadata.uid").set_index("metadata.uid")[sc.entity_field]
        assert (ent.loc[g["event_uid"]].to_numpy() == g["entity"].to_numpy()).all(), name
    share = len(lab) / len(ev.drop_duplicates("metadata.uid"))
    assert 0.01 <= share <= 0.03


def test_registry():
    assert len(SCENARIOS) >= 8
    assert {s.category for s in SCENARIOS.values()} == {"security", "operations"}
    assert {s.shape for s in SCENARIOS.values()} == {"point", "collective"}
    for s in SCENARIOS.values():
        assert s.fields and len(set(s.fields)) == len(s.fields) and s.description
    sizes = plan(100_000, 7)
    added = sum(s.added for s in sizes.values())
    assert 0.008 < added / 100_000 < 0.02


_HEX = re.compile(r"\b(?=[0-9a-f]*[0-9])[0-9a-f]{6,}\b")
_NUM = re.compile(r"\d{4,}")
_TIME_COLS = ("time", "time_dt", "start_time", "end_time", "metadata.uid")


def _comparable(a: pd.Series, ref: pd.Series) -> tuple[list, list]:
    """Values to compare distributions on: hour of day for times, deciles of the reference for
    numbers, templated text (ids masked) for free text, raw values otherwise."""
    if a.name in ("time", "time_dt"):
        def hour(s):
            t = pd.to_datetime(s, utc=True, format="ISO8601") if s.name == "time_dt" else pd.to_datetime(s, unit="ms", utc=True)
            return t.dt.tz_convert("Europe/Berlin").dt.hour.astype(str).tolist()
        return hour(a), hour(ref)
    if pd.api.types.is_numeric_dtype(a.dtype) and ref.nunique() > 20:
        edges = np.unique(np.quantile(ref.dropna().astype(float), np.linspace(0, 1, 11)))

        def cut(s):
            return ["-" if pd.isna(v) else str(int(np.searchsorted(edges, float(v), side="right"))) for v in s]
        return cut(a), cut(ref)
    if pd.api.types.is_string_dtype(a.dtype) and ref.nunique() > 50:
        def tmpl(s):
            return ["-" if pd.isna(v) else _NUM.sub("0", _HEX.sub("x", v)) for v in s.tolist()]
        return tmpl(a), tmpl(ref)
    return ["-" if pd.isna(v) else str(v) for v in a.tolist()], ["-" if pd.isna(v) else str(v) for v in ref.tolist()]


def _tv(x: list, y: list) -> float:
    px = pd.Series(x).value_counts(normalize=True)
    py = pd.Series(y).value_counts(normalize=True)
    idx = px.index.union(py.index)
    return 0.5 * float((px.reindex(idx, fill_value=0) - py.reindex(idx, fill_value=0)).abs().sum())


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_changes_exactly_its_signature(sim, name):
    """Signature columns differ in distribution from normal events of the same class (of the same
    entity where it has enough history); other columns only take values normal events take."""
    ev = sim.events.drop_duplicates("metadata.uid")
    lab = sim.labels
    sc = SCENARIOS[name]
    anomalous = set(lab["event_uid"])
    a = ev[ev["metadata.uid"].isin(lab.loc[lab["scenario"] == name, "event_uid"])]
    assert len(a) >= 1
    normal = ev[(ev["class_uid"] == sc.class_uid) & ~ev["metadata.uid"].isin(anomalous)]
    same_entity = normal[normal[sc.entity_field].isin(a[sc.entity_field].unique())]
    ref = same_entity if len(same_entity) >= 50 else normal
    for f in sc.fields:
        assert f in ev.columns, f
        if f == "start_time":  # flows: compare how long before their end they started
            x, y = _comparable((a["time"] - a[f]).rename("d"), (ref["time"] - ref[f]).rename("d"))
        else:
            x, y = _comparable(a[f], ref[f])
        assert _tv(x, y) >= 0.25, f"{name}: signature field {f} looks normal"
    for c in ev.columns:
        if c in sc.fields or c in _TIME_COLS:
            continue
        r = normal[c]
        if r.nunique() <= 50:
            extra = set(a[c].dropna().unique().tolist()) - set(r.dropna().unique().tolist())
            assert not extra, f"{name}: {c} takes values normal events never take: {sorted(map(str, extra))[:3]}"
            assert not (a[c].notna().any() and r.isna().all()), f"{name}: {c} set where normal events never set it"
        elif pd.api.types.is_numeric_dtype(r.dtype):
            med = a[c].median()
            lo, hi = r.quantile([0.01, 0.99])
            assert pd.isna(med) or lo <= med <= hi, f"{name}: {c} median {med} outside normal [{lo}, {hi}]"


def test_scenarios_look_like_the_incidents(sim):
    ev = sim.events.drop_duplicates("metadata.uid").set_index("metadata.uid")
    lab = sim.labels.set_index("event_uid")

    def rows(name):
        return ev.loc[lab.index[lab["scenario"] == name]]

    bf = rows("brute_force")
    assert (bf["status_id"] == 2).mean() > 0.9 and bf["user.name"].nunique() > 20
    assert bf.groupby("src_endpoint.ip").apply(lambda g: g["time"].max() - g["time"].min()).max() < 3_600_000
    tun = rows("dns_tunnelling")
    assert tun["query.hostname"].str.split(".").str[0].str.len().min() >= 38
    assert tun["query.hostname"].str.split(".").str[-2:].str.join(".").nunique() == 1
    ex = rows("data_exfiltration")
    normal_net = ev[(ev["class_uid"] == 4001) & ~ev.index.isin(lab.index)]
    assert not ex["dst_endpoint.ip"].isin(normal_net["dst_endpoint.ip"]).any()
    assert ex["traffic.bytes_out"].median() > 50 * normal_net["traffic.bytes_out"].median()
    adm = rows("off_hours_admin")
    local = _berlin(adm["time"])
    # at night, on a weekend where the window allows (the first 70 % of a week from Monday holds no
    # weekend night, so the early session there is on a weeknight)
    assert local.dt.hour.between(0, 5).all() and (local.dt.day_of_week >= 5).any()
    tb = rows("timeout_burst")
    assert (tb["http_response.latency"] == TIMEOUT_MS).mean() > 0.5
    creep = rows("latency_creep").sort_values("time")
    half = len(creep) // 2
    assert creep["http_response.latency"].iloc[half:].median() > 1.5 * creep["http_response.latency"].iloc[:half].median()
    lin = rows("rare_process_lineage")
    assert lin["process.parent_process.name"].isin(["WINWORD.EXE", "EXCEL.EXE", "OUTLOOK.EXE", "powershell.exe"]).all()
    travel = rows("impossible_travel")
    assert len(travel) == lab["scenario"].eq("impossible_travel").sum()
    auth = ev[ev["class_uid"] == 3002]
    for uid, r in travel.iterrows():
        before = auth[(auth["user.name"] == r["user.name"]) & (auth["time"] < r["time"])
                      & (auth["time"] > r["time"] - 2 * 3_600_000) & auth["src_endpoint.location.country"].notna()]
        assert (before["src_endpoint.location.country"] != r["src_endpoint.location.country"]).any()


def test_scenarios_recur_and_reach_the_test_window(sim):
    """Every scenario has an incident in the last 15 % of the window (what a time split tests on), with
    at least 30 % of a collective scenario's events; one with several incidents also has one in the first
    70 % (a contaminated training baseline); the collective ones that happen twice hit two entities."""
    ev = sim.events.drop_duplicates("metadata.uid").set_index("metadata.uid")
    lab = sim.labels.set_index("event_uid")
    start = pd.Timestamp(sim.start).value // 1_000_000
    frac = (ev["time"] - start) / (sim.days * 86_400_000)  # position in the window, 0 to 1
    sizes = plan(N, sim.days)
    for name, sc in SCENARIOS.items():
        f = frac.loc[lab.index[lab["scenario"] == name]]
        assert f.between(0, 1, inclusive="left").all(), name
        late = f >= 0.85
        assert late.any(), f"{name}: nothing in the last 15 % of the window"
        if sc.shape == "collective":
            assert late.mean() >= 0.3, f"{name}: only {late.mean():.0%} of its events in the last 15 %"
        if sizes[name].instances >= 2:
            assert (f < 0.7).any(), f"{name}: {sizes[name].instances} incidents, none in the first 70 %"
    for name in ("data_exfiltration", "port_scan", "dns_tunnelling", "timeout_burst", "error_storm"):
        assert sizes[name].instances == 2, name
        ent = lab.loc[lab["scenario"] == name, "entity"]
        f = frac.loc[ent.index]
        early, late = set(ent[f < 0.7]), set(ent[f >= 0.85])
        assert len(early) == 1 and len(late) == 1 and early != late, (name, early, late)
        assert ((f < 0.7) | (f >= 0.85)).all(), name  # two incidents: one early, one late, nothing between


# --------------------------------------------------------------------------------------------------
# determinism and files
# --------------------------------------------------------------------------------------------------


def test_write_is_deterministic(tmp_path):
    a = write_simulation(tmp_path / "a", n_events=10_000, days=3, seed=11)
    b = write_simulation(tmp_path / "b", n_events=10_000, days=3, seed=11)
    c = write_simulation(tmp_path / "c", n_events=10_000, days=3, seed=12)
    assert set(a) == {"events", "labels"}
    for k in a:
        assert a[k].name in ("ocsf_events.parquet", "ocsf_labels.parquet")
        assert a[k].read_bytes() == b[k].read_bytes()
        assert a[k].read_bytes() != c[k].read_bytes()
    back = pd.read_parquet(a["events"])
    assert len(back) == 10_000 and back["http_response.code"].dropna().map(type).eq(str).all()
    lab = pd.read_parquet(a["labels"])
    assert isinstance(lab["fields"].iloc[0][0], str)
    assert not list(tmp_path.glob("**/*.tmp"))


# --------------------------------------------------------------------------------------------------
# flat <-> nested
# --------------------------------------------------------------------------------------------------


def _no_none(obj) -> bool:
    if isinstance(obj, dict):
        return all(v is not None and _no_none(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_no_none(v) for v in obj)
    return obj is not None and obj == obj


def test_to_nested_and_back(ev):
    sample = ev.groupby("class_uid").head(40)
    nested = to_nested(sample)
    assert len(nested) == len(sample) and all(_no_none(e) for e in nested)
    http = [e for e in nested if e["class_uid"] == 4002]
    assert all(isinstance(e["http_response"]["code"], int) for e in http)
    assert all(isinstance(e["time"], int) and isinstance(e["unmapped"], dict) for e in http)
    api = [e for e in nested if e["class_uid"] == 6003 and "resources" in e]
    assert api and all(isinstance(e["resources"], list) for e in api)
    auth = [e for e in nested if e["class_uid"] == 3002 and "is_mfa" in e]
    assert auth and all(isinstance(e["is_mfa"], bool) for e in auth)
    dns = [e for e in nested if e["class_uid"] == 4003]
    assert all({"ip", "port"} <= set(e["src_endpoint"]) for e in dns)  # JSON object merged with the flat ip
    # flatten_event reproduces the row (JSON columns and stringified codes written back as strings)
    for (_, row), e in zip(sample.iterrows(), nested):
        flat = flatten_event(e, str_keys=("http_response.code",))
        for c, v in row.items():
            if pd.isna(v) or c == "src_endpoint":
                continue
            got = flat[c]
            if c in ("unmapped", "resources", "observables", "answers"):
                assert json.loads(got) == json.loads(v), c
            elif c == "is_mfa":
                assert got == (v == "true")
            else:
                assert got == v, c
