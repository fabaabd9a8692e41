"""The simulated month of production (obsad.ocsf.month): each change happens on its days and nowhere else."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from obsad.ocsf import load_events
from obsad.ocsf.month import (
    Change,
    MonthError,
    default_changes,
    human_driven,
    simulate_month,
    write_month,
)
from obsad.ocsf.simulate import TIMEOUT_MS

KW = {"days": 14, "baseline_days": 3, "events_per_day": 1500, "seed": 3}
SMALL = {"days": 3, "baseline_days": 1, "events_per_day": 1700}  # a few days, for what needs no full month
HOUR = 3_600_000


@pytest.fixture(scope="module")
def month():
    return simulate_month(**KW)


@pytest.fixture(scope="module")
def plain():
    """The same month with no change: the world the changes are measured against."""
    return simulate_month(**KW, changes=[])


def _by_uid(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop_duplicates("metadata.uid").set_index("metadata.uid")


def _window(month, name):
    row = month.changes.set_index("name").loc[name]
    return int(row["start"].value // 1_000_000), int(row["end"].value // 1_000_000)


# --------------------------------------------------------------------------------------------------
# shape, determinism, timeline
# --------------------------------------------------------------------------------------------------


def test_same_seed_same_month(month):
    again = simulate_month(**KW)
    pd.testing.assert_frame_equal(month.events, again.events)
    pd.testing.assert_frame_equal(month.labels, again.labels)
    pd.testing.assert_frame_equal(month.changes, again.changes)
    other = simulate_month(**SMALL, seed=4, changes=[])
    assert not other.events["metadata.uid"].isin(month.events["metadata.uid"]).any()


def test_export_shape(month, plain):
    ev = month.events
    assert ev["time"].is_monotonic_increasing
    # same columns and dtypes as the simulator's export, plus what the schema change adds
    for c in plain.events.columns:
        assert ev[c].dtype == plain.events[c].dtype, c
    schema = month.change("schema_change")
    assert set(ev.columns) - set(plain.events.columns) == {schema.fields[1], schema.fields[2]}
    # uids unique except the simulator's exact duplicates
    dup = ev[ev["metadata.uid"].duplicated(keep=False)]
    assert dup["metadata.uid"].isin(plain.events.loc[plain.events["metadata.uid"].duplicated(), "metadata.uid"]).all()
    assert len(month.baseline()) + len(month.production()) == len(ev)
    lo, hi = month.day_bounds(0)
    assert lo == month.production_start == month.start + pd.Timedelta(days=3) and str(lo.tz) == "UTC"
    day0 = month.day(0)
    assert len(day0) and (day0["time"] >= lo.value // 10**6).all() and (day0["time"] < hi.value // 10**6).all()
    assert sum(len(month.day(i)) for i in range(month.days)) == len(month.production())
    with pytest.raises(MonthError):
        month.day(14)


def test_baseline_has_no_change(month, plain):
    base = month.baseline()
    pd.testing.assert_frame_equal(base[plain.events.columns], plain.baseline())
    added = [c for c in base.columns if c not in plain.events.columns]
    assert added and base[added].isna().all().all()
    # and nothing changes before the first change starts
    first = int(month.changes["start_day"].min())
    for i in range(first):
        pd.testing.assert_frame_equal(month.day(i)[plain.events.columns], plain.day(i))


def test_changes_table_and_truth(month):
    ch = month.changes
    assert list(ch["name"]) == [c.name for c in default_changes(14)]
    assert {"name", "kind", "start", "end", "fields", "description", "labelled"} <= set(ch.columns)
    assert str(ch["start"].dt.tz) == "UTC" and (ch["end"] > ch["start"]).all()
    truth = month.truth()
    assert len(truth) == 14 and truth["n_events"].sum() == len(month.production())
    for i, row in truth.iterrows():
        active = [c for c in month.change_list if c.start_day <= i <= c.last_day(14)]
        assert row["changes"] == month.changes_on(i) == [c.name for c in active]
        assert row["drift_expected"] == any(c.kind != "slow_burn" for c in active)
        assert "slow_burn" not in row["drift_changes"]
    assert not truth.loc[truth["day"] < 3, "drift_expected"].any() and truth.loc[truth["day"] >= 3, "drift_expected"].all()
    burn_only = simulate_month(**SMALL, seed=3, changes=[Change("burn", "slow_burn", 1, 2, labelled=True)])
    assert not burn_only.truth()["drift_expected"].any()  # a slow burn alone moves no distribution


def test_default_timeline():
    for days in range(14, 61):
        ch = default_changes(days)
        starts = [c.start_day for c in ch]
        assert starts == sorted(starts) and len(set(starts)) == len(starts), days
        assert all(0 <= c.start_day <= c.last_day(days) < days for c in ch), days
        assert starts[0] >= (7 if days >= 21 else 3), days  # an ordinary stretch first
        lull = ch[1]
        assert lull.last_day(days) < ch[2].start_day, days  # the lull is over before the slow burn
    spans = {c.name: (c.start_day, c.end_day) for c in default_changes(28)}
    assert spans == {"new_service": (7, None), "holiday_lull": (9, 11), "slow_burn": (14, 19),
                     "schema_change": (21, None), "latency_regression": (22, 27)}


def test_bad_requests_are_refused():
    with pytest.raises(MonthError):
        default_changes(10)
    for changes in ([Change("a", "lull", 2, 1)], [Change("a", "lull", 0), Change("a", "lull", 1)],
                    [Change("a", "meteor", 0)], [Change("a", "lull", 0, labelled=True)], [Change("a", "lull", 14)]):
        with pytest.raises(MonthError):
            simulate_month(**KW, changes=changes)
    with pytest.raises(MonthError):
        simulate_month(days=2, baseline_days=1, events_per_day=100, changes=[])


# --------------------------------------------------------------------------------------------------
# each change happens on its days and not before
# --------------------------------------------------------------------------------------------------


def test_new_service(month, plain):
    c = month.change("new_service")
    lo, hi = _window(month, "new_service")
    ev = month.events
    new_uids = ~ev["metadata.uid"].isin(plain.events["metadata.uid"]) & (ev["class_uid"] != 3002)  # not the burn
    assert (ev.loc[new_uids, "time"] >= lo).all()
    svc = ev["dst_endpoint.svc_name"] == c.params["service"].name
    hosts = ev["dst_endpoint.hostname"].isin(c.params["hosts"])
    port = ev["dst_endpoint.port"] == c.params["service"].port
    paths = ev["http_request.url.path"].fillna("").str.startswith("/api/recommendations/")
    for new_value in (svc, hosts, port, paths):
        new_value = new_value.fillna(False).to_numpy(dtype=bool)
        assert new_value.any() and (ev.loc[new_value, "time"] >= lo).all()
        assert (new_value <= new_uids.to_numpy(dtype=bool)).all()  # only in the added events
    for col in ("dst_endpoint.svc_name", "dst_endpoint.hostname", "http_request.url.hostname"):
        assert plain.events[col].notna().any()
    assert not plain.events["dst_endpoint.svc_name"].eq(c.params["service"].name).any()
    # every day from its start, HTTP and mesh flows, about the share asked for
    for i in range(c.start_day, 14):
        d = month.day(i)
        assert (d["dst_endpoint.svc_name"] == c.params["service"].name).sum() > 0
    http = ev["class_uid"] == 4002
    inside = (ev["time"] >= lo) & (ev["time"] < hi)
    share = (svc & inside).sum() / (http & inside & ~svc).sum()
    assert 0.05 < share < 0.11
    flows = ev["dst_endpoint.ip"].isin(c.params["ips"]) & port.fillna(False) & (ev["class_uid"] == 4001)
    assert flows.sum() > 0 and (ev.loc[flows, "time"] >= lo).all()
    # its events look like HTTP events: the same columns filled
    filled_new = ev.loc[svc].notna().mean()
    filled_old = ev.loc[http & ~svc].notna().mean()
    assert set(filled_new[filled_new > 0].index) <= set(filled_old[filled_old > 0].index) | {"metadata.processed_time"}


def test_holiday_lull(month, plain):
    c = month.change("holiday_lull")
    lo, hi = _window(month, "holiday_lull")
    p = plain.events[(plain.events["time"] >= lo) & (plain.events["time"] < hi)]
    labelled = p["metadata.uid"].isin(plain.labels["event_uid"])
    human = human_driven(p, plain.population)
    kept = p["metadata.uid"].isin(month.events["metadata.uid"])
    assert kept[~human | labelled].all()  # machines carry on, incidents still happen
    rate = kept[human & ~labelled].mean()
    assert 0.15 < rate < 0.25, rate
    # duplicates stay or go together
    assert month.events["metadata.uid"].duplicated().sum() > 0
    m = month.events[(month.events["time"] >= lo) & (month.events["time"] < hi)]
    pairs = p[p["metadata.uid"].duplicated(keep=False)]
    both = pairs.groupby("metadata.uid")["metadata.uid"].transform("size")
    assert (both == 2).all()
    in_m = m["metadata.uid"].value_counts()
    assert set(in_m.reindex(pairs["metadata.uid"].unique()).dropna().astype(int)) <= {2}
    # the day before and after: no people were sent home
    for i in (c.start_day - 1, c.last_day(14) + 1):
        ours, theirs = month.day(i), plain.day(i)
        assert theirs["metadata.uid"].isin(ours["metadata.uid"]).all()


def test_schema_change(month, plain):
    renamed, new_name, added, dropped = month.change("schema_change").fields
    lo, _ = _window(month, "schema_change")
    ev, pe = _by_uid(month.events), _by_uid(plain.events)
    common = pe.index.intersection(ev.index)
    ev, pe = ev.loc[common], pe.loc[common]
    after = (ev["time"] >= lo).to_numpy()
    assert pe.loc[after, renamed].notna().any() and pe.loc[after, dropped].notna().any()
    assert ev.loc[after, renamed].isna().all() and ev.loc[after, dropped].isna().all()
    assert ev.loc[after, new_name].equals(pe.loc[after, renamed].rename(new_name))
    assert ev.loc[~after, new_name].isna().all() and ev.loc[~after, added].isna().all()
    assert ev.loc[~after, renamed].equals(pe.loc[~after, renamed])
    assert ev.loc[~after, dropped].equals(pe.loc[~after, dropped])
    producer = pe[renamed].notna().to_numpy() & after
    assert ev.loc[producer, added].notna().all() and ev.loc[~producer, added].isna().all()
    assert (ev.loc[producer, added] >= ev.loc[producer, "time"]).all()
    # the renamed column is one the encoder uses, and the dropped one had values in the baseline
    assert month.baseline()[renamed].notna().mean() > 0.05 and month.baseline()[dropped].notna().mean() > 0.05


def test_schema_change_with_imposed_columns():
    changes = [Change("upgrade", "schema", 1, params={"rename": "http_response.length", "rename_to": "bytes_sent"})]
    m = simulate_month(**SMALL, seed=5, changes=changes)
    renamed, new_name, added, dropped = m.change("upgrade").fields
    assert (renamed, new_name, added) == ("http_response.length", "bytes_sent", "metadata.processed_time")
    # the dropped column is one the same producer (the events carrying the renamed field) sends
    base = m.baseline()
    assert base[dropped].notna().any() and not (base[dropped].notna() & base[renamed].isna()).any()
    after = m.events["time"] >= int(m.change_list[0].start_day * 86_400_000 + m.production_start.value // 10**6)
    assert m.events.loc[after, renamed].isna().all() and m.events.loc[after, new_name].notna().any()
    with pytest.raises(MonthError):
        simulate_month(**SMALL, changes=[Change("bad", "schema", 1, params={"rename": "no.such.column"})])


def test_latency_regression(month, plain):
    c = month.change("latency_regression")
    service = c.params["service"]
    lo, hi = _window(month, "latency_regression")
    ev, pe = _by_uid(month.events), _by_uid(plain.events)
    pe = pe[(pe["dst_endpoint.svc_name"] == service)]
    pe = pe[~pe.index.isin(plain.labels["event_uid"]) & pe.index.isin(ev.index)]  # the lull removed some
    ev = ev.loc[pe.index]
    t = pe["time"].to_numpy()
    code = pd.to_numeric(pe["http_response.code"]).to_numpy()
    inside = (t >= lo) & (t < hi) & (code < 500)
    mult = 1.0 + 2.0 * (t - lo) / (hi - lo)
    for col in ("duration", "http_response.latency"):
        before = pe[col].to_numpy(dtype=float)
        after = ev[col].to_numpy(dtype=float)
        assert (after[~inside] == before[~inside]).all()
        assert (after[inside] == np.minimum(TIMEOUT_MS - 1, np.round(before[inside] * mult[inside]))).all()
    # the ratio grows day by day, up to about 3
    ratio = pd.Series(ev["duration"].to_numpy(dtype=float)[inside] / pe["duration"].to_numpy(dtype=float)[inside])
    by_day = ratio.groupby((t[inside] - lo) // 86_400_000).median()
    assert by_day.is_monotonic_increasing and by_day.iloc[0] < 1.6 and by_day.iloc[-1] > 2.4
    lab = month.labels[month.labels["scenario"] == "latency_regression"]
    assert set(lab["event_uid"]) == set(pe.index[inside])
    assert (lab["category"] == "operations").all() and (lab["entity"] == service).all()
    # the service is not one the simulator's own operations incidents hit
    assert service not in set(plain.labels.loc[plain.labels["category"] == "operations", "entity"])


def test_slow_burn(month, plain):
    c = month.change("slow_burn")
    lo, hi = _window(month, "slow_burn")
    lab = month.labels[month.labels["scenario"] == "slow_burn"]
    ev = month.events.set_index("metadata.uid").loc[lab["event_uid"]]
    assert len(lab) == (hi - lo) // HOUR
    hours = (ev["time"].to_numpy() - lo) // HOUR
    assert sorted(hours.tolist()) == list(range((hi - lo) // HOUR))  # one attempt in every hour
    assert (ev["class_uid"] == 3002).all() and (ev["status"] == "Failure").all()
    assert ev["src_endpoint.ip"].nunique() == 1 and ev["user.name"].nunique() == 1
    assert (lab["entity"] == c.params["ip"]).all() and (lab["category"] == "security").all()
    assert (lab["shape"] == "collective").all() and set(lab["fields"].iloc[0]) >= {"src_endpoint.ip"}
    assert ev["user.name"].iloc[0] in set(plain.population.user_name.tolist())
    assert not plain.events["src_endpoint.ip"].eq(c.params["ip"]).any()
    assert not month.events.loc[month.events["time"] < lo, "src_endpoint.ip"].eq(c.params["ip"]).any()


def test_labels_join_events(month, plain):
    lab = month.labels
    assert list(lab.columns) == list(plain.labels.columns)
    assert lab["event_uid"].is_unique and lab["event_uid"].isin(month.events["metadata.uid"]).all()
    assert set(plain.labels["event_uid"]) <= set(lab["event_uid"])  # the simulator's incidents are kept
    assert set(lab["scenario"]) - set(plain.labels["scenario"]) == {"slow_burn", "latency_regression"}
    first = month.events.drop_duplicates("metadata.uid").reset_index().set_index("metadata.uid")["index"]
    assert lab["event_uid"].map(first).is_monotonic_increasing


def test_loads_like_the_simulators_export(month, plain):
    ours, theirs = load_events(month.events), load_events(plain.events)
    assert ours.report.n_loaded == len(month.events)
    assert set(ours.report.problems["reason"]) <= set(theirs.report.problems["reason"])
    assert len(ours.report.problems) <= len(theirs.report.problems)


def test_write_month(tmp_path, month):
    paths = write_month(tmp_path, month=month)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["month_changes.json", "month_events.parquet",
                                                         "month_labels.parquet"]
    ev = pd.read_parquet(paths["events"])
    assert len(ev) == len(month.events) and ev["metadata.uid"].equals(month.events["metadata.uid"])
    assert pd.read_parquet(paths["labels"])["event_uid"].tolist() == month.labels["event_uid"].tolist()
    doc = json.loads(paths["changes"].read_text())
    assert [c["name"] for c in doc["changes"]] == month.changes["name"].tolist()
    assert doc["changes"][3]["fields"] == list(month.change("schema_change").fields)
    assert len(doc["truth"]) == 14 and doc["production_start"] == "2026-10-08T00:00:00Z"
