"""Cost and health (obsad.monitor.resources, obsad.monitor.health, `obsad health`): the resource monitor, timed
scoring, the service's /metrics read back, the known-good pre-filter and its trade-off, the health report's
verdicts, and the verb's JSON and exit codes on a tiny fitted package."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from obsad.monitor.health import CHECKS, DEFAULT_TARGETS, Target, health_report
from obsad.monitor.resources import (
    KnownGoodFilter,
    ResourceMonitor,
    histogram_quantile,
    kind_columns,
    metrics_from_prometheus,
    prefilter_tradeoff,
    time_scoring,
)


# ------------------------------------------------------------------------------------------------ fitted package
@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A package fitted (40 steps) on a random two thirds of one small simulation; the rest, split at random, is a
    held-out reference and the current events (exchangeable with it: no drift by construction)."""
    import torch

    from obsad.ocsf import load_events, simulate
    from obsad.pipeline import fit_pipeline

    sim = simulate(6000, days=3, seed=5)
    events, _ = load_events(sim.events)
    truth = events["metadata.uid"].isin(set(sim.labels["event_uid"])).to_numpy()
    part = np.random.default_rng(0).integers(0, 6, len(events))
    train, held, current = part < 4, part == 4, part == 5
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipeline = fit_pipeline(events[train].reset_index(drop=True), target_steps=40, progress=False, seed=0)
        path = pipeline.save(tmp_path_factory.mktemp("health") / "model")
        yield {"pipeline": pipeline, "path": path, "train": events[train].reset_index(drop=True),
               "held": events[held].reset_index(drop=True), "current": events[current].reset_index(drop=True),
               "truth_current": truth[current], "truth_train": truth[train]}
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ resources
def test_resource_monitor_sees_memory_and_cpu():
    import psutil

    with ResourceMonitor(interval=0.01) as monitor:
        block = np.ones(12_000_000)  # 96 MB, held for several sampling intervals
        for _ in range(20):
            block += 1.0
        total = float(block.sum())
        del block
    stats = monitor.stats()
    assert total > 0
    assert stats.n_samples >= 3 and stats.wall_s > 0
    assert 0 < stats.rss_start_mb <= stats.rss_peak_mb and stats.rss_mean_mb <= stats.rss_peak_mb
    assert stats.rss_peak_mb - stats.rss_start_mb > 60  # the array was seen
    assert 0 < stats.cpu_mean_pct <= 100 * psutil.cpu_count() * 1.05
    # the mean is exact (CPU time / wall time); the max comes from the samples, which a busy machine can starve,
    # so it need not reach the mean
    assert 0 <= stats.cpu_max_pct <= 100 * psutil.cpu_count() * 1.5
    assert set(stats.to_dict()) >= {"cpu_mean_pct", "cpu_max_pct", "rss_peak_mb", "rss_mean_mb", "wall_s"}
    with pytest.raises(RuntimeError):
        ResourceMonitor().stats()


def test_time_scoring_gives_ordered_percentiles_per_batch_size(world):
    current = world["current"]
    times = time_scoring(world["pipeline"], current, batch_sizes=(1, 50, 10**7), repeats={1: 6, 50: 4})
    assert times.skipped == [10**7]
    frame = times.frame()
    assert frame["batch_size"].tolist() == [1, 50] and frame["n_calls"].tolist() == [6, 4]
    assert frame["views"].tolist() == ["event", "all"]  # a lone event by the event view, as the service does
    for row in times.rows:
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["events_per_s"] > 0 and row["rss_peak_mb"] > 0
    assert times.latency()["batch_size"] == 1 and times.latency(50)["batch_size"] == 50
    assert times.resources.rss_peak_mb > 0
    json.dumps(times.to_dict())
    with pytest.raises(ValueError):
        time_scoring(world["pipeline"], current, batch_sizes=(0,))


# ------------------------------------------------------------------------------------------------ /metrics
def test_metrics_from_prometheus_counts_and_bucket_percentiles():
    from obsad.serve.metrics import ServeMetrics

    m = ServeMetrics()
    for _ in range(90):
        m.observe_request("/v1/score", "POST", 200, 0.004)  # bucket (3, 5] ms
    for _ in range(3):
        m.observe_request("/v1/score", "POST", 422, 0.0015)  # bucket (1, 2] ms
    for _ in range(10):
        m.observe_request("/v1/similar", "POST", 500, 0.3)  # bucket (250, 500] ms
    for _ in range(40):
        m.observe_request("/metrics", "GET", 200, 0.0005)  # scrapes: not counted by default
    m.events_scored.inc(990)
    m.events_rejected.inc(10)
    m.anomalies.inc(7)
    text = m.render().decode()

    got = metrics_from_prometheus(text)
    assert (got.n_requests, got.n_errors, got.n_client_errors) == (103, 10, 3)
    assert got.error_rate == pytest.approx(10 / 103)
    assert got.latency_count == 103
    assert got.latency_mean_ms == pytest.approx(1000 * (90 * 0.004 + 3 * 0.0015 + 10 * 0.3) / 103)
    assert got.bounds["p50"] == [pytest.approx(3.0), pytest.approx(5.0)]
    assert 3.0 <= got.latency["p50_ms"] <= 5.0
    assert got.bounds["p95"] == [pytest.approx(250.0), pytest.approx(500.0)]  # rank 97.85 of 103: the slow ten
    assert 250.0 <= got.p95_ms <= 500.0
    assert got.latency["p50_ms"] <= got.latency["p90_ms"] <= got.latency["p95_ms"] <= got.latency["p99_ms"]
    assert (got.events_scored, got.events_rejected, got.anomalies_flagged) == (990, 10, 7)
    assert got.data_error_rate == pytest.approx(0.01)
    every = metrics_from_prometheus(text, endpoints=None)
    assert every.n_requests == 143 and every.bounds["p50"] == [pytest.approx(3.0), pytest.approx(5.0)]
    json.dumps(got.to_dict())
    fresh = metrics_from_prometheus(ServeMetrics().render().decode())  # a service that has answered nothing yet
    assert fresh.n_requests == 0 and fresh.error_rate is None and fresh.latency == {}
    with pytest.raises(ValueError, match="obsad serve"):
        metrics_from_prometheus("# nothing here\nsome_other_metric 1.0\n")


def test_histogram_quantile_interpolates_like_prometheus():
    bounds = np.array([1.0, 2.0, 4.0, np.inf])
    cum = np.array([10.0, 30.0, 40.0, 40.0])
    assert histogram_quantile(0.25, bounds, cum)[0] == pytest.approx(1.0)  # rank 10: the top of the first bucket
    assert histogram_quantile(0.5, bounds, cum)[0] == pytest.approx(1.5)  # rank 20: half-way through (1, 2]
    assert histogram_quantile(0.875, bounds, cum)[:3] == (pytest.approx(3.0), 2.0, 4.0)
    over = histogram_quantile(0.99, np.array([1.0, np.inf]), np.array([1.0, 10.0]))
    assert over == (1.0, 1.0, None)  # in +Inf: the last finite bound, upper end unknown
    assert histogram_quantile(0.5, bounds, np.zeros(4))[0] is None


# ------------------------------------------------------------------------------------------------ pre-filter
def _kinds_frame(rng: np.random.Generator, n_common: int, n_mixed: int, n_rare: int) -> pd.DataFrame:
    kind = np.array(["common"] * n_common + ["mixed"] * n_mixed + ["rare"] * n_rare, dtype=object)
    n = len(kind)
    return pd.DataFrame({
        "event.kind": kind,
        "event.code": np.where(kind == "mixed", 7, 3),  # an integer code with the kind
        "user": [f"u{i}" for i in rng.integers(0, 500, n)],  # many values: not a kind field
        "bytes": rng.lognormal(8, 2, n),  # a measure: not a kind field
        "note": np.where(rng.random(n) < 0.5, None, "x"),  # half missing: not a kind field
    })


def test_known_good_filter_skips_a_high_volume_unflagged_kind_only():
    rng = np.random.default_rng(3)
    train = _kinds_frame(rng, 3000, 2000, 40)
    flags = np.zeros(len(train), dtype=bool)
    mixed = np.flatnonzero(train["event.kind"].to_numpy() == "mixed")
    flags[rng.choice(mixed, 100, replace=False)] = True  # 5 % of the mixed kind is flagged
    assert kind_columns(events=train) == ["event.code", "event.kind"]
    filt = KnownGoodFilter(min_count=100, max_flag_rate=0.001).fit(train, flags)
    assert filt.columns_ == ["event.code", "event.kind"]
    assert filt.known_good_ == ["event.code=3 & event.kind=common"]
    new = _kinds_frame(rng, 50, 50, 50)
    new.loc[0, "event.kind"] = "never seen"
    skip = filt.mask(new)
    kinds = new["event.kind"].to_numpy()
    assert skip[1:50].all() and not skip[0]  # the high-volume unflagged kind; an unseen kind is always scored
    assert not skip[kinds == "rare"].any()  # never flagged but rare: not enough evidence
    assert not skip[kinds == "mixed"].any()  # frequent but flagged
    # the same with a numeric score and its threshold, and after a JSON round trip
    scores = np.where(flags, 2.0, 0.0)
    again = KnownGoodFilter(min_count=100, max_flag_rate=0.001).fit(train, scores, threshold=1.0)
    assert again.known_good_ == filt.known_good_
    state = json.loads(json.dumps(filt.to_dict()))
    assert (KnownGoodFilter.from_dict(state).mask(new) == skip).all()
    looser = filt.with_params(max_flag_rate=0.1)
    assert looser.known_good_ == ["event.code=3 & event.kind=common", "event.code=7 & event.kind=mixed"]
    with pytest.raises(ValueError, match="threshold"):
        KnownGoodFilter().fit(train, scores)


def test_prefilter_tradeoff_is_monotone_and_counts_what_is_lost():
    rng = np.random.default_rng(4)
    train = _kinds_frame(rng, 3000, 2000, 40)
    flags = np.zeros(len(train), dtype=bool)
    flags[rng.choice(np.flatnonzero(train["event.kind"].to_numpy() == "mixed"), 20, replace=False)] = True  # 1 %
    filt = KnownGoodFilter(min_count=100, max_flag_rate=0.0).fit(train, flags)
    test = _kinds_frame(rng, 1000, 500, 20)
    kinds = test["event.kind"].to_numpy()
    truth = np.zeros(len(test), dtype=bool)
    truth[[0, 1, 1000, 1001, 1002, 1500, 1501]] = True  # two in common, three in mixed, two in rare
    flagged = truth.copy()
    flagged[0] = False  # the model misses one of the common kind's anomalies
    flagged[[10, 1100]] = True  # and raises two false alerts
    grid = {"min_count": [5000, 1000, 30], "max_flag_rate": [0.0, 0.02]}
    table = prefilter_tradeoff(filt, test, flagged, truth, grid=grid)
    assert len(table) == 6
    assert table["recall"].eq(6 / 7).all()
    for _, part in table.groupby("min_count"):  # a looser flag rate skips a superset
        assert part["share_saved"].is_monotonic_increasing and part["recall_lost"].is_monotonic_increasing
    for _, part in table.groupby("max_flag_rate"):  # a smaller min_count skips a superset
        part = part.sort_values("min_count", ascending=False)
        assert part["share_saved"].is_monotonic_increasing and part["recall_lost"].is_monotonic_increasing
    row = table.set_index(["min_count", "max_flag_rate"]).loc[(1000, 0.0)]  # the common kind skipped
    assert row["skipped"] == 1000 and row["share_saved"] == pytest.approx(1000 / 1520)
    assert row["anomalies_skipped"] == 2  # ... both of its anomalies,
    assert row["recall_lost"] == pytest.approx(1 / 7)  # ... only one of which the model would have found
    assert row["alerts_lost"] == 2 and row["share_alerts_lost"] == pytest.approx(2 / 8)
    row = table.set_index(["min_count", "max_flag_rate"]).loc[(30, 0.02)]  # every kind skipped
    assert row["share_saved"] == 1.0 and row["recall_filtered"] == 0.0
    none = table.set_index(["min_count", "max_flag_rate"]).loc[(5000, 0.0)]
    assert none["skipped"] == 0 and none["recall_lost"] == 0.0
    assert not (kinds == "rare")[filt.mask(test)].any()


def test_filter_chooses_kind_fields_from_the_encoder_roles(world):
    pipeline = world["pipeline"]
    columns = kind_columns(pipeline.encoder)
    roles = {st["column"]: st for st in pipeline.encoder.columns_}
    assert 1 <= len(columns) <= 4
    for c in columns:
        assert roles[c]["role"] == "categorical" and 2 <= roles[c]["n_unique"] <= 16
        assert roles[c]["missing_rate"] <= 0.05
    train = world["train"]
    scores = pipeline.score(train, explain="none")
    filt = KnownGoodFilter(min_count=50, max_flag_rate=0.01).fit(train, scores, encoder=pipeline.encoder)
    assert filt.columns_ == columns and filt.kinds_["count"].sum() == len(train)
    current = world["current"]
    table = prefilter_tradeoff(filt, current, pipeline.score(current, explain="none"), world["truth_current"],
                               grid={"min_count": [50], "max_flag_rate": [0.0, 0.005, 0.01, 0.05]})
    assert table["share_saved"].is_monotonic_increasing and table["recall_lost"].is_monotonic_increasing
    assert (table["recall_lost"] >= 0).all() and (table["anomalies_skipped"] <= table["anomalies"]).all()
    # the kept events scored alone: a setting that skips nothing changes nothing
    again = prefilter_tradeoff(filt, current, pipeline.score(current, explain="none"), world["truth_current"],
                               grid=[{"min_count": 10**9}, {"min_count": 50, "max_flag_rate": 0.01}], rescore=pipeline)
    assert again["rescored"].all() and again.loc[0, "skipped"] == 0
    assert again.loc[0, "recall_lost"] == 0 and again.loc[0, "alerts_filtered"] == again.loc[0, "alerts"]
    assert again.loc[1, "skipped"] == table.loc[2, "skipped"] > 0


# ------------------------------------------------------------------------------------------------ health report
GOOD = {
    "drift": {"drift": False, "p_value": 0.4, "alpha": 0.05, "method": "mmd", "window_size": 1000, "fields": []},
    "quality": {"precision": 0.9, "recall": 0.8, "f1": 0.847, "fpr": 0.01, "n_labels": 120},
    "latency": {"p95_ms": 40.0, "source": "test"},
    "errors": {"api_error_rate": 0.001, "n_requests": 1000, "n_api_errors": 1, "data_error_rate": 0.0,
               "n_events": 500, "n_malformed": 0},
    "model_age_days": 3.0,
}
BAD = {
    "drift": ("drift", {**GOOD["drift"], "drift": True, "p_value": 0.002}),
    "f1": ("quality", {**GOOD["quality"], "f1": 0.6}),
    "fpr": ("quality", {**GOOD["quality"], "fpr": 0.08}),
    "latency_p95": ("latency", {"p95_ms": 350.0}),
    "api_error_rate": ("errors", {**GOOD["errors"], "api_error_rate": 0.03}),
    "data_error_rate": ("errors", {**GOOD["errors"], "data_error_rate": 0.02}),
    "model_age": ("model_age_days", 45.0),
}


def test_health_report_is_healthy_when_every_check_passes():
    report = health_report(**GOOD)
    assert [c.name for c in report.checks] == list(CHECKS)
    assert report.healthy and report.failing == [] and report.not_measured == []
    assert all(c.passing for c in report.checks)
    text = report.summary()
    assert text.count("✓") == len(CHECKS) + 1 and "✗" not in text and "HEALTHY" in text
    assert "0.847" in text and "40.0 ms" in text
    d = json.loads(json.dumps(report.to_dict()))
    assert d["healthy"] is True and {c["name"] for c in d["checks"]} == set(CHECKS)
    assert {"name", "value", "target", "comparison", "threshold", "passing", "detail", "action", "status"} <= set(
        d["checks"][0])


@pytest.mark.parametrize("failing", list(BAD))
def test_health_report_fails_when_one_check_fails(failing):
    argument, value = BAD[failing]
    report = health_report(**{**GOOD, argument: value})
    assert not report.healthy
    assert report.failing == [failing]
    check = report.check(failing)
    assert check.passing is False and check.status == "FAIL"
    assert check.action == DEFAULT_TARGETS[failing].action and check.action
    text = report.summary()
    assert "✗" in text and f"failing: {failing}" in text and "action:" in text
    assert report.to_dict()["failing"] == [failing]


def test_unmeasured_checks_are_not_measured_not_passing():
    report = health_report(latency={"p95_ms": 12.0})
    assert report.healthy  # every measured check passes
    assert report.check("latency_p95").passing is True
    assert set(report.not_measured) == set(CHECKS) - {"latency_p95"}
    for name in report.not_measured:
        check = report.check(name)
        assert check.passing is None and check.value is None and check.status == "not measured"
    assert "not measured" in report.summary() and "–" in report.summary()
    assert not health_report().healthy  # nothing measured is not healthy
    assert "UNKNOWN" in health_report().summary()
    # undefined numbers (no labelled alerts) are not measured either
    report = health_report(quality={"precision": None, "recall": float("nan"), "f1": None, "fpr": None})
    assert report.check("f1").passing is None and report.check("fpr").passing is None


def test_health_targets_can_be_overridden_and_drift_uses_the_tests_alpha():
    assert not health_report(latency={"p95_ms": 150.0}, targets={"latency_p95": 100}).healthy
    assert health_report(model_age_days=45.0, targets={"model_age": 60}).healthy
    strict = Target("<", 10.0, "P95 latency", "ms", "faster")
    assert health_report(latency={"p95_ms": 12.0}, targets={"latency_p95": strict}).failing == ["latency_p95"]
    drift = {"p_value": 0.03, "alpha": 0.01}  # no drift at the test's own alpha of 0.01 ...
    assert health_report(drift=drift).check("drift").passing is True
    assert health_report(drift=drift, targets={"drift": 0.05}).check("drift").passing is False  # ... drift at 0.05
    assert health_report(drift={"drift": True, "p_value": None}).check("drift").passing is False  # no p-value
    with pytest.raises(ValueError, match="unknown health check"):
        health_report(targets={"latency": 1})


def test_health_report_reads_timing_and_service_metrics(world):
    from obsad.serve.metrics import ServeMetrics

    times = time_scoring(world["pipeline"], world["current"], batch_sizes=(1,), repeats=3)
    check = health_report(latency=times).check("latency_p95")
    assert check.value == pytest.approx(times.latency()["p95_ms"]) and "batch of 1" in check.detail
    m = ServeMetrics()
    for _ in range(20):
        m.observe_request("/v1/score", "POST", 200, 0.3)
    service = metrics_from_prometheus(m.render().decode())
    check = health_report(latency=service).check("latency_p95")
    assert check.passing is False and 250 <= check.value <= 500 and "bucket" in check.detail


# ------------------------------------------------------------------------------------------------ obsad health
def run_health(argv: list[str]) -> int:
    """`obsad health` through `obsad`'s own entry point once it is wired; until then through a parser built the
    same way, with `main`'s mapping of a ValueError to one line on stderr and exit code 2."""
    import sys

    from obsad import cli
    from obsad.monitor.health_commands import add_health_parser

    parser = cli.build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "health" in verbs.choices:
        return cli.main(argv)
    parser = argparse.ArgumentParser(prog="obsad")
    add_health_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as err:
        print(f"obsad {args.verb}: {err}", file=sys.stderr)
        return 2


FAST = ["--batch-sizes", "1,40", "--repeats", "3", "--max-samples", "200", "--permutations", "100"]
#: With 100 permutations no p-value is below 1 / 101: at this alpha the drift check passes whatever the sample (the
#: drift test's own false-alarm rate and power are tested in test_drift.py); the runs that must be healthy use it.
NEVER = ["--alpha", "0.001"]


@pytest.fixture(scope="module")
def files(world, tmp_path_factory):
    from obsad.serve.metrics import ServeMetrics

    root = tmp_path_factory.mktemp("health_cli")
    current, held = root / "current.parquet", root / "held.parquet"
    world["current"].sample(400, random_state=0).sort_values("time").to_parquet(current)  # every day
    world["held"].to_parquet(held)
    good = root / "quality.json"
    good.write_text(json.dumps({"precision": 0.9, "recall": 0.85, "f1": 0.874, "fpr": 0.01, "n_labels": 80}))
    m = ServeMetrics()
    for i in range(200):
        m.observe_request("/v1/score", "POST", 500 if i == 0 else 200, 0.004)
    metrics = root / "metrics.txt"
    metrics.write_bytes(m.render())
    return {"current": current, "held": held, "quality": good, "metrics": metrics, "root": root}


def test_cmd_health_writes_the_report_and_exits_0_when_healthy(world, files, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = run_health(["health", "--model", str(world["path"]), "--events", str(files["current"]), "--reference",
                       str(files["held"]), "--quality", str(files["quality"]), "--metrics", str(files["metrics"]),
                       "--out", str(out), *NEVER, *FAST])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert code == 0, printed
    assert report["healthy"] is True and report["failing"] == [] and report["not_measured"] == []
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == set(CHECKS) and all(c["passing"] is True for c in checks.values())
    assert checks["api_error_rate"]["value"] == pytest.approx(1 / 200)
    assert 3.0 <= checks["latency_p95"]["value"] <= 5.0  # the service's histogram, not the timing
    assert checks["data_error_rate"]["value"] == 0.0 and checks["f1"]["value"] == pytest.approx(0.874)
    assert 0 <= checks["model_age"]["value"] < 1
    assert report["drift"]["p_value"] == checks["drift"]["value"] and report["drift"]["window_size"] == 400
    assert [r["batch_size"] for r in report["timing"]["rows"]] == [1, 40]
    assert report["timing"]["resources"]["rss_peak_mb"] > 0 and report["service"]["n_requests"] == 200
    assert "HEALTHY ✓" in printed and f"wrote {out}" in printed and "drift: no" in printed


def test_cmd_health_exits_1_when_a_check_fails(world, files, tmp_path, capsys):
    bad = tmp_path / "quality.json"
    bad.write_text(json.dumps({"precision": 0.5, "recall": 0.5, "f1": 0.5, "fpr": 0.2, "n_labels": 40}))
    lines = tmp_path / "events.jsonl"  # two malformed records among the events: a data error rate of 2 / 52
    sample = world["current"].sample(50, random_state=1).sort_values("time")
    sample = sample.assign(time=(sample["time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1))
    records = sample.to_json(orient="records", lines=True)  # time as epoch milliseconds, as exports write it
    lines.write_text(records.rstrip("\n") + "\n{not json\n[1, 2]\n")
    out = tmp_path / "report.json"
    code = run_health(["health", "--model", str(world["path"]), "--events", str(lines), "--reference",
                       str(files["held"]), "--quality", str(bad), "--out", str(out), "--alpha", "0.01",
                       "--target", "latency_p95=0.0001", *FAST])
    printed = capsys.readouterr().out
    assert code == 1, printed
    report = json.loads(out.read_text())
    assert report["healthy"] is False
    assert {"f1", "fpr", "latency_p95", "data_error_rate"} <= set(report["failing"])
    assert report["not_measured"] == ["api_error_rate"]  # no --metrics
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["data_error_rate"]["value"] == pytest.approx(2 / 52)
    assert checks["latency_p95"]["threshold"] == 0.0001 and "timed scoring" in checks["latency_p95"]["detail"]
    assert checks["api_error_rate"]["status"] == "not measured"
    assert "UNHEALTHY ✗" in printed and "action:" in printed


def test_cmd_health_user_errors_exit_2(world, files, tmp_path, capsys):
    tampered = tmp_path / "tampered"
    shutil.copytree(world["path"], tampered)
    blob = bytearray((tampered / "arrays.safetensors").read_bytes())
    blob[-5] ^= 0xFF
    (tampered / "arrays.safetensors").write_bytes(bytes(blob))
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("this is not prometheus {\n")
    listy = tmp_path / "list.json"
    listy.write_text("[0.9, 0.1]")
    model, events = str(world["path"]), str(files["current"])
    cases = {
        "no such file": ["--model", model, "--events", str(tmp_path / "missing.parquet")],
        "not a model package": ["--model", str(tmp_path / "nowhere"), "--events", events],
        "arrays.safetensors": ["--model", str(tampered), "--events", events],
        "--metrics": ["--model", model, "--events", events, "--metrics", str(garbage)],
        "JSON object": ["--model", model, "--events", events, "--quality", str(listy)],
        ".json": ["--model", model, "--events", events, "--out", str(tmp_path / "report.txt")],
    }
    for expected, argv in cases.items():
        assert run_health(["health", *argv, *FAST]) == 2, expected
        err = capsys.readouterr().err
        assert err.startswith("obsad health: ") and "Traceback" not in err and expected in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_cmd_health_reads_alert_quality_from_the_alert_and_verdict_logs(world, files, tmp_path, capsys):
    alerts_mod = pytest.importorskip("obsad.monitor.alerts")
    now = pd.Timestamp.now(tz="UTC")
    n = 200
    scores = pd.DataFrame({"event_uid": [f"e{i}" for i in range(n)],
                           "time": pd.date_range(now - pd.Timedelta(hours=3), periods=n, freq="30s"),
                           "score": np.linspace(0, 1, n), "percentile": np.linspace(0, 100, n),
                           "is_anomaly": np.arange(n) >= n - 20, "view": "event", "top_features": ""})
    log = alerts_mod.AlertLog(tmp_path / "alerts")
    log.append(scores, model_version="v1", scored_at=now - pd.Timedelta(hours=2))
    verdict = ["true_positive"] * 15 + ["false_positive"] * 5 + ["missed"] * 3
    uids = [f"e{i}" for i in range(n - 20, n)] + ["e0", "e1", "e2"]
    alerts_mod.VerdictLog(tmp_path / "verdicts").record(pd.DataFrame(
        {"event_uid": uids, "verdict": verdict, "verdict_time": now - pd.Timedelta(hours=1),
         "event_time": scores.set_index("event_uid").loc[uids, "time"].to_numpy()}))
    expected = alerts_mod.quality_summary(alerts_mod.AlertLog(tmp_path / "alerts"),
                                          alerts_mod.VerdictLog(tmp_path / "verdicts"), days=7).to_dict()
    assert expected["f1"] == pytest.approx(2 * 0.75 * (15 / 18) / (0.75 + 15 / 18))
    out = tmp_path / "report.json"
    code = run_health(["health", "--model", str(world["path"]), "--events", str(files["current"]), "--reference",
                       str(files["held"]), "--alerts", str(tmp_path / "alerts"), "--verdicts",
                       str(tmp_path / "verdicts"), "--out", str(out), *NEVER, *FAST])
    capsys.readouterr()
    report = json.loads(out.read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["f1"]["value"] == pytest.approx(expected["f1"]) and checks["f1"]["passing"] is True
    assert "labels" in checks["f1"]["detail"] and "precision 0.75" in checks["f1"]["detail"]
    if expected["fpr"] is None:
        assert checks["fpr"]["passing"] is None
    else:
        assert checks["fpr"]["value"] == pytest.approx(expected["fpr"])
        assert "interval" in checks["fpr"]["detail"]
    assert code == (0 if report["healthy"] else 1)
    assert run_health(["health", "--model", str(world["path"]), "--events", str(files["current"]), "--verdicts",
                       str(tmp_path / "verdicts"), *FAST]) == 2
    assert "--verdicts goes with --alerts" in capsys.readouterr().err
