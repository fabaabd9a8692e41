"""Alert quality from late, partial analyst feedback (obsad.monitor.alerts): the append-only logs, verdicts known at
`now` (latest wins), the estimators on hand-made days with known answers, their intervals, time zones, the
simulated analyst, and one pass through a real fitted pipeline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from obsad.monitor.alerts import (
    ALERT_COLUMNS,
    QUALITY_COLUMNS,
    VERDICT_COLUMNS,
    AlertLog,
    AlertQualityError,
    VerdictLog,
    check_verdicts,
    daily_quality,
    latest_verdicts,
    proportion_interval,
    quality_summary,
    rolling_quality,
    simulate_analyst,
)
from obsad.monitor.drift import clopper_pearson

T0 = pd.Timestamp("2026-03-02", tz="UTC")


def at(hours: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=hours)


def scores_frame(n: int, flagged, *, prefix: str, start: pd.Timestamp = T0, span_hours: float = 24.0) -> pd.DataFrame:
    """A frame shaped like FittedPipeline.score's: ``flagged`` row positions are alerts; times in epoch ms."""
    is_anomaly = np.zeros(n, dtype=bool)
    is_anomaly[list(flagged)] = True
    times = start.value // 10**6 + (np.arange(n) * (span_hours * 3_600_000 / max(n, 1))).astype(np.int64)
    return pd.DataFrame({"event_uid": [f"{prefix}{i}" for i in range(n)], "time": times,
                         "score": np.where(is_anomaly, 5.0, 0.0) + np.arange(n) / n, "percentile": 50.0,
                         "is_anomaly": is_anomaly, "view": np.where(is_anomaly, "event", ""),
                         "top_features": np.where(is_anomaly, "a, b", "")})


def verdicts(rows) -> pd.DataFrame:
    """(event_uid, verdict, verdict_time[, event_time]) tuples -> a verdict frame."""
    rows = [tuple(r) + (pd.NaT,) * (4 - len(r)) for r in rows]
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


# ------------------------------------------------------------------------------------------------ the logs
def test_append_and_read_round_trip(tmp_path):
    log = AlertLog(tmp_path / "log")
    second = log.append(scores_frame(50, [3, 7, 9], prefix="b", start=at(24)), model_version="v2",
                        scored_at=at(47))
    first = log.append(scores_frame(40, [1, 2], prefix="a"), model_version="v1", scored_at=at(23))
    again = log.append(scores_frame(10, [], prefix="c"), model_version="v1", scored_at=at(23))  # same instant
    # names sort in time order (by scored_at, not by the order appended) and never replace an earlier file
    assert sorted([second, first, again]) == [first, again, second] and first != again
    files = sorted(p.name for p in (tmp_path / "log" / "alerts").iterdir())
    assert files == [f"{first}.parquet", f"{again}.parquet", f"{second}.parquet"]  # no temporary file left
    assert not list((tmp_path / "log").rglob("*.tmp"))

    alerts = log.read()
    assert list(alerts.columns) == ALERT_COLUMNS
    assert alerts["event_uid"].tolist() == ["a1", "a2", "b3", "b7", "b9"]  # the flagged rows only, in time order
    assert str(alerts["alert_time"].dtype) == "datetime64[us, UTC]"
    assert str(alerts["event_time"].dtype) == "datetime64[us, UTC]"
    assert alerts["alert_time"].tolist() == [at(23)] * 2 + [at(47)] * 3
    expected_b3 = at(24) + pd.Timedelta(milliseconds=3 * 24 * 3_600_000 // 50)
    assert alerts.loc[alerts["event_uid"] == "b3", "event_time"].iloc[0] == expected_b3
    assert alerts["model_version"].tolist() == ["v1", "v1", "v2", "v2", "v2"]
    assert (alerts["top_features"] == "a, b").all() and (alerts["score"] > 5).all()
    assert log.read(start=at(24))["event_uid"].tolist() == ["b3", "b7", "b9"]
    assert log.read(end=at(24))["event_uid"].tolist() == ["a1", "a2"]

    batches = log.batches()
    per_append = batches.groupby("batch")[["scored", "alerts"]].sum()
    assert per_append.loc[first].tolist() == [40, 2] and per_append.loc[again].tolist() == [10, 0]
    assert per_append.loc[second].tolist() == [50, 3]
    assert batches["slot"].dt.minute.isin([0, 15, 30, 45]).all()

    # an alerts file whose batch record was never written (a crash between the two writes) is not read
    (tmp_path / "log" / "alerts" / "20260310T000000000000Z-0000.parquet").write_bytes(
        (tmp_path / "log" / "alerts" / f"{second}.parquet").read_bytes())
    assert len(log.read()) == 5


def test_append_refuses_naive_times_and_missing_columns(tmp_path):
    log = AlertLog(tmp_path)
    frame = scores_frame(5, [0], prefix="x")
    with pytest.raises(AlertQualityError, match="timezone-aware"):
        log.append(frame, model_version="v1", scored_at=pd.Timestamp("2026-03-02 10:00"))
    with pytest.raises(AlertQualityError, match="is_anomaly"):
        log.append(frame.drop(columns="is_anomaly"), model_version="v1", scored_at=at(1))
    with pytest.raises(AlertQualityError, match="model_version"):
        log.append(frame, model_version=" ", scored_at=at(1))
    assert log.read().empty and log.batches().empty


def test_bad_verdicts_are_refused_naming_the_rows(tmp_path):
    bad = verdicts([("a", "true_positive", at(1)), ("b", "tp", at(1)), ("c", "false_positive", at(1)),
                    ("d", None, at(1))])
    with pytest.raises(AlertQualityError, match=r"rows \[1, 3\].*'tp'") as err:
        VerdictLog(tmp_path).record(bad)
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)
    with pytest.raises(AlertQualityError, match="timezone-aware"):
        check_verdicts(pd.DataFrame({"event_uid": ["a"], "verdict": ["benign"],
                                     "verdict_time": [pd.Timestamp("2026-03-02")]}))
    with pytest.raises(AlertQualityError, match=r"rows \[1\]"):
        check_verdicts(pd.DataFrame({"event_uid": ["a", "b"], "verdict": ["benign", "missed"],
                                     "verdict_time": ["2026-03-02T10:00:00Z", "2026-03-02T10:00:00"]}))
    assert not list(tmp_path.glob("*.parquet"))


def test_verdict_log_keeps_the_recording_order_and_the_latest_verdict_wins(tmp_path):
    log = VerdictLog(tmp_path)
    log.record(verdicts([("a", "false_positive", at(5)), ("b", "true_positive", at(5))]), recorded_at=at(6))
    log.record(verdicts([("a", "true_positive", at(8)), ("b", "false_positive", at(5))]), recorded_at=at(9))
    assert len(log.read()) == 4
    latest = latest_verdicts(log.read(), now=at(10)).set_index("event_uid")["verdict"]
    assert latest["a"] == "true_positive"  # revised later
    assert latest["b"] == "false_positive"  # same verdict time: the one recorded last
    # as known at hour 7 the revision of "a" had not happened yet
    assert latest_verdicts(log.read(), now=at(7)).set_index("event_uid")["verdict"]["a"] == "false_positive"


def test_ids_of_any_type_join_and_plain_frames_are_checked(tmp_path):
    log = AlertLog(tmp_path)
    now = at(10)
    scores = pd.DataFrame({"event_uid": [1, 2, 3], "score": [1.0, 2.0, 3.0], "is_anomaly": [0, 1, 1],
                           "time": pd.to_datetime(["2026-03-02 01:00"] * 3)})  # naive event times are UTC
    log.append(scores, model_version="v1", scored_at=at(9))
    assert log.read()["event_time"].tolist() == [at(1), at(1)]
    given = pd.DataFrame({"event_uid": [2, 3, 9], "verdict": ["true_positive", "false_positive", "missed"],
                          "verdict_time": [at(9.5)] * 3, "event_time": [at(-20)] * 3})
    q = daily_quality(log, given, now=now)
    assert q[["alerts", "labelled", "tp", "fp", "missed"]].to_numpy().tolist() == [[0, 0, 0, 0, 1], [2, 2, 1, 1, 0]]
    assert q["recall"].iloc[0] == 0.0  # no alert that day and an incident missed: recall is known, and 0


# ------------------------------------------------------------------------------------------------ the estimators
@pytest.fixture
def hand_made(tmp_path):
    """Day 1 (2 March, UTC): 1,000 events scored at 12:00, 10 alerts (a0..a9); verdicts: a0..a3 TP, a4 FP, two
    missed incidents, one benign audit. Day 2: 500 events, 4 alerts, no verdict. Day 3: nothing."""
    log = AlertLog(tmp_path / "alerts")
    log.append(scores_frame(1000, range(10), prefix="a"), model_version="v1", scored_at=at(12))
    log.append(scores_frame(500, range(4), prefix="b", start=at(24)), model_version="v1", scored_at=at(36))
    rows = [(f"a{i}", "true_positive", at(20)) for i in range(4)] + [("a4", "false_positive", at(21)),
                                                                     ("m1", "missed", at(30), at(3)),
                                                                     ("m2", "missed", at(40), at(9)),
                                                                     ("n1", "benign", at(40), at(10))]
    vlog = VerdictLog(tmp_path / "verdicts")
    vlog.record(verdicts(rows), recorded_at=at(41))
    return log, vlog


def test_daily_quality_gives_the_known_answers(hand_made):
    log, vlog = hand_made
    q = daily_quality(log, vlog, now=at(24 * 3 + 6))
    assert list(q.columns) == QUALITY_COLUMNS and len(q) == 4
    assert [d.day for d in q.index] == [2, 3, 4, 5] and str(q.index.tz) == "UTC"
    d1, d2, d4 = q.iloc[0], q.iloc[1], q.iloc[3]
    assert (d1["scored"], d1["alerts"], d1["labelled"], d1["tp"], d1["fp"], d1["missed"], d1["benign"]) == \
        (1000, 10, 5, 4, 1, 2, 1)
    assert d1["alert_rate"] == pytest.approx(0.01)
    assert d1["review_share"] == pytest.approx(0.5)
    assert d1["precision"] == pytest.approx(0.8)
    assert d1["recall"] == pytest.approx(4 / 6)
    assert d1["recall_scaled"] == pytest.approx(8 / 10)  # 10 alerts x 0.8 = 8 incidents caught, 2 missed
    assert d1["fpr"] == pytest.approx(2 / (1000 - 8 - 2))  # 10 x 0.2 false alarms among the estimated negatives
    assert d1["f1"] == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
    assert (d1["precision_low"], d1["precision_high"]) == pytest.approx((0.37553, 0.96378), abs=1e-5)  # Wilson 4/5
    assert (d2["scored"], d2["alerts"], d2["labelled"]) == (500, 4, 0)
    assert d4["end"] == at(24 * 3 + 6) and d4["start"] == at(24 * 3)
    assert q["model_versions"].tolist() == ["v1", "v1", "", ""]

    cp = daily_quality(log, vlog, now=at(24 * 3 + 6), interval="clopper-pearson").iloc[0]
    assert (cp["precision_low"], cp["precision_high"]) == pytest.approx(clopper_pearson(4, 5))
    assert (cp["recall_low"], cp["recall_high"]) == pytest.approx(clopper_pearson(4, 6))


def test_days_without_labels_are_nan_not_zero(hand_made):
    log, vlog = hand_made
    q = daily_quality(log, vlog, now=at(24 * 3 + 6))
    d2, d3 = q.iloc[1], q.iloc[2]
    for name in ("precision", "recall", "recall_scaled", "fpr", "f1", "precision_low", "fpr_high"):
        assert np.isnan(d2[name]) and np.isnan(d3[name]), name
    assert d2["alert_rate"] == pytest.approx(4 / 500)  # the volume is known without labels
    assert d3["alerts"] == 0 and d3["scored"] == 0 and np.isnan(d3["alert_rate"])
    # without batch records, nothing is known of the events scored
    no_batches = daily_quality(log.read(), vlog, now=at(24 * 3 + 6))
    assert np.isnan(no_batches["scored"]).all() and np.isnan(no_batches["fpr"]).all()
    assert no_batches["precision"].iloc[0] == pytest.approx(0.8)


def test_verdicts_from_now_on_are_not_known_yet(hand_made):
    log, vlog = hand_made
    early = daily_quality(log, vlog, now=at(20.5)).iloc[0]  # the four TPs (at 20:00) are in, the FP (21:00) not
    assert (early["labelled"], early["tp"], early["fp"], early["missed"]) == (4, 4, 0, 0)
    assert early["precision"] == 1.0 and early["end"] == at(20.5)
    before = daily_quality(log, vlog, now=at(20)).iloc[0]  # a verdict at `now` itself is not known yet
    assert before["labelled"] == 0 and np.isnan(before["precision"])
    assert len(daily_quality(log, vlog, now=at(11))) == 1  # nothing alerted yet: one empty day
    assert daily_quality(log, vlog, now=at(11))["alerts"].iloc[0] == 0


def test_latest_verdict_wins_in_the_counts(hand_made, tmp_path):
    log, vlog = hand_made
    vlog.record(verdicts([("a4", "true_positive", at(50)), ("a0", "false_positive", at(19))]), recorded_at=at(51))
    d1 = daily_quality(log, vlog, now=at(60)).iloc[0]
    # a4: FP (21:00) revised to TP (50:00); a0: a FP at 19:00 is older than its TP at 20:00, which stands
    assert (d1["tp"], d1["fp"]) == (5, 0)
    d1_before = daily_quality(log, vlog, now=at(49)).iloc[0]
    assert (d1_before["tp"], d1_before["fp"]) == (4, 1)


def test_intervals_contain_the_estimate_and_widen_with_fewer_labels():
    rng = np.random.default_rng(0)
    n = rng.integers(1, 200, 500)
    k = rng.integers(0, n + 1)
    for method in ("wilson", "clopper-pearson"):
        low, high = proportion_interval(k, n, method=method)
        assert np.all(low <= k / n) and np.all(k / n <= high) and np.all(low >= 0) and np.all(high <= 1)
        widths = np.subtract(*proportion_interval([400, 40, 4], [500, 50, 5], method=method)[::-1])
        assert widths[0] < widths[1] < widths[2]
    assert np.isnan(proportion_interval(0, 0)[0])
    assert np.diff(proportion_interval(8, 10, level=0.99)) > np.diff(proportion_interval(8, 10, level=0.9))


def test_estimates_sit_inside_their_intervals_and_more_labels_narrow_them(tmp_path):
    log = AlertLog(tmp_path / "alerts")
    log.append(scores_frame(20_000, range(400), prefix="e"), model_version="v1", scored_at=at(12))
    truth = {f"e{i}" for i in range(0, 400, 4)} | {f"e{i}" for i in range(1000, 1040)}  # 100 caught, 40 missed
    scored = scores_frame(20_000, range(400), prefix="e")
    widths = []
    for fraction in (0.05, 0.2, 0.8):
        v = simulate_analyst(log.read(), truth, scored=scored, review_fraction=fraction, audit_fraction=0.0,
                             report_fraction=1.0, delay_hours=(1.0, 0.1), seed=1)
        q = daily_quality(log, v, now=at(24 * 4)).iloc[0]
        for name in ("precision", "recall", "recall_scaled", "fpr", "alert_rate"):
            assert q[f"{name}_low"] <= q[name] <= q[f"{name}_high"], (fraction, name)
        widths.append(q["precision_high"] - q["precision_low"])
        assert q["missed"] == 40
    assert widths[0] > widths[1] > widths[2]
    # with most alerts reviewed, the scaled estimates approach the truth: precision 1/4, recall 100/140
    assert q["precision"] == pytest.approx(0.25, abs=0.05)
    assert q["recall_scaled"] == pytest.approx(100 / 140, abs=0.05)
    assert q["recall_scaled_low"] <= 100 / 140 <= q["recall_scaled_high"]
    assert q["fpr_low"] <= 300 / (20_000 - 140) <= q["fpr_high"]


def test_time_zone_decides_the_day(tmp_path):
    log = AlertLog(tmp_path)
    log.append(scores_frame(10, [0], prefix="z", start=at(23.5), span_hours=0.1), model_version="v1",
               scored_at=at(23.5))  # 23:30 UTC on 2 March = 00:30 on 3 March in Berlin
    now = at(24 * 2)  # 4 March, 00:00 UTC = 01:00 in Berlin
    utc = daily_quality(log, None, now=now, tz="UTC", days=3)
    berlin = daily_quality(log, None, now=now, tz="Europe/Berlin", days=3)
    assert utc["alerts"].tolist() == [0, 1, 0] and utc.index[1] == pd.Timestamp("2026-03-02", tz="UTC")
    assert berlin["alerts"].tolist() == [0, 1, 0]
    assert berlin.index[1] == pd.Timestamp("2026-03-03", tz="Europe/Berlin")
    assert berlin["start"].iloc[2] == pd.Timestamp("2026-03-04", tz="Europe/Berlin")  # the day `now` falls in
    assert str(berlin.index.tz) == "Europe/Berlin" and berlin["end"].iloc[-1] == now
    with pytest.raises(AlertQualityError, match="time zone"):
        daily_quality(log, None, now=now, tz="Mars/Olympus")
    with pytest.raises(AlertQualityError, match="timezone-aware"):
        daily_quality(log, None, now=pd.Timestamp("2026-03-05"))


def test_days_follow_local_midnights_across_a_clock_change(tmp_path):
    log = AlertLog(tmp_path)
    start = pd.Timestamp("2026-03-28", tz="Europe/Berlin").tz_convert("UTC")  # clocks go forward on 29 March
    log.append(scores_frame(72, range(0, 72, 6), prefix="s", start=start, span_hours=72), model_version="v1",
               scored_at=start + pd.Timedelta(hours=70))
    q = daily_quality(log, None, now=start + pd.Timedelta(hours=71), tz="Europe/Berlin", on="event")
    assert [d.day for d in q.index] == [28, 29, 30]
    assert ((q["end"] - q["start"]) / pd.Timedelta(hours=1)).tolist() == [24, 23, 24]
    assert q["scored"].tolist() == [24, 23, 24]  # events hourly from 28 March 00:00 local: the 23-hour day holds 23
    assert q["alerts"].sum() == 12  # the last event (31 March, 00:00 local) is after the last day


def test_event_time_days_use_the_batch_slots(tmp_path):
    log = AlertLog(tmp_path)
    log.append(scores_frame(300, [0, 150, 299], prefix="w", span_hours=72), model_version="v1", scored_at=at(80))
    by_alert = daily_quality(log, None, now=at(96), days=4)
    by_event = daily_quality(log, None, now=at(96), on="event")
    assert by_alert["alerts"].tolist() == [0, 0, 0, 3] and by_alert["scored"].tolist() == [0, 0, 0, 300]
    assert by_event["alerts"].tolist() == [1, 1, 1, 0] and by_event["scored"].tolist() == [100, 100, 100, 0]


def test_rolling_windows_sum_the_days(hand_made):
    log, vlog = hand_made
    now = at(24 * 3 + 6)
    daily = daily_quality(log, vlog, now=now)
    one = rolling_quality(log, vlog, now=now, days=1)
    pd.testing.assert_frame_equal(daily, one)
    two = rolling_quality(log, vlog, now=now, days=2)
    assert two["alerts"].tolist() == [10, 14, 4, 0] and two["scored"].tolist() == [1000, 1500, 500, 0]
    assert two["precision"].iloc[1] == pytest.approx(0.8)  # recomputed from the window's counts
    assert two["start"].iloc[1] == at(0) and two["end"].iloc[-1] == now
    last = rolling_quality(log, vlog, now=now, days=7, periods=1)
    assert len(last) == 1 and last["alerts"].iloc[0] == 14 and last["start"].iloc[0] == at(-72)

    summary = quality_summary(log, vlog, now=now, days=7)
    assert (summary.alerts, summary.labelled, summary.tp, summary.missed) == (14, 5, 4, 2)
    assert summary.precision == pytest.approx(0.8) and summary.model_versions == ["v1"]
    assert summary.precision_interval[0] <= 0.8 <= summary.precision_interval[1]
    as_json = json.loads(json.dumps(summary.to_dict(), allow_nan=False))
    assert as_json["end"] == now.isoformat() and as_json["precision"] == pytest.approx(0.8)
    empty = quality_summary(log, None, now=now, days=1)
    assert empty.to_dict()["precision"] is None and "unknown" in empty.summary()


# ------------------------------------------------------------------------------------------------ simulated analyst
def test_simulate_analyst_is_deterministic_and_respects_its_fractions():
    n = 4000
    alerts = pd.DataFrame({"event_uid": [f"a{i}" for i in range(n)], "alert_time": at(10),
                           "event_time": at(9)})
    scored = pd.DataFrame({"event_uid": [f"a{i}" for i in range(n)] + [f"q{i}" for i in range(20_000)],
                           "time": T0.value // 10**6})
    truth = {f"a{i}" for i in range(0, n, 2)} | {f"q{i}" for i in range(400)}
    kwargs = {"scored": scored, "review_fraction": 0.3, "audit_fraction": 0.05, "report_fraction": 0.5,
              "delay_hours": (12.0, 1.0)}
    v = simulate_analyst(alerts, truth, seed=7, **kwargs)
    pd.testing.assert_frame_equal(v, simulate_analyst(alerts, truth, seed=7, **kwargs))
    assert not v.equals(simulate_analyst(alerts, truth, seed=8, **kwargs))
    assert list(v.columns) == VERDICT_COLUMNS and v["verdict_time"].is_monotonic_increasing
    on_alerts = v.loc[v["event_uid"].str.startswith("a")]
    assert on_alerts["verdict"].isin(["true_positive", "false_positive"]).all()
    assert len(on_alerts) / n == pytest.approx(0.3, abs=0.03)
    assert ((on_alerts["verdict"] == "true_positive") == on_alerts["event_uid"].isin(truth)).all()
    delay = (on_alerts["verdict_time"] - at(10)) / pd.Timedelta(hours=1)
    assert delay.min() > 0 and delay.median() == pytest.approx(12, rel=0.15) and delay.max() > 48  # some take days
    quiet = v.loc[v["event_uid"].str.startswith("q")]
    benign = (quiet["verdict"] == "benign").sum()
    assert benign / (20_000 - 400) == pytest.approx(0.05, abs=0.01)  # audited normal events
    assert (quiet["verdict"] == "missed").sum() / 400 == pytest.approx(0.05 + 0.95 * 0.5, abs=0.08)
    assert (quiet["event_time"] == T0).all()
    with pytest.raises(AlertQualityError, match="review_fraction"):
        simulate_analyst(alerts, truth, review_fraction=1.5)


# ------------------------------------------------------------------------------------------------ a real pipeline
def test_scores_of_a_fitted_pipeline_go_through(tmp_path, one_thread):
    from obsad.ocsf import load_events, simulate
    from obsad.pipeline import fit_pipeline

    sim = simulate(6000, days=3, seed=5)
    events, _ = load_events(sim.events)
    pipeline = fit_pipeline(events, epochs=1, seed=0, progress=False, target_steps=40)
    log = AlertLog(tmp_path / "alerts")
    day = events["time"].dt.floor("D")
    batches = []
    for d in sorted(day.unique()):  # one batch a day, scored at the end of its day
        batches.append(pipeline.score(events.loc[day == d]))
        log.append(batches[-1], model_version="m1", scored_at=d + pd.Timedelta(hours=23))
    alerts = log.read()
    scored = pd.concat(batches)
    assert len(alerts) == int(scored["is_anomaly"].sum()) > 0
    assert set(alerts["view"]) <= {"event", "window"}
    assert alerts["event_time"].isin(scored["time"]).all()
    v = simulate_analyst(alerts, sim.labels["event_uid"], scored=scored, review_fraction=1.0, seed=0,
                         delay_hours=(1.0, 0.5))
    q = daily_quality(log, v, now=events["time"].max().ceil("D") + pd.Timedelta(days=2))
    assert q["scored"].sum() == len(events) and q["alerts"].sum() == len(alerts)
    truth = set(sim.labels["event_uid"])
    assert q["tp"].sum() == alerts["event_uid"].isin(truth).sum()
    assert ((q["precision"].dropna() >= 0) & (q["precision"].dropna() <= 1)).all()
