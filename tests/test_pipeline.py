"""End-to-end pipeline: fit -> save -> load -> score, and the `obsad fit` / `obsad score` verbs."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from obsad.ocsf import load_events, simulate
from obsad.ocsf.nested import to_nested
from obsad.pipeline import fit_pipeline, load_pipeline

COLUMNS = ["score", "percentile", "is_anomaly", "top_features"]


@pytest.fixture(scope="module")
def sims():
    return simulate(n_events=6000, days=2, seed=11), simulate(n_events=6000, days=2, seed=12)


@pytest.fixture(scope="module")
def fitted(sims, tmp_path_factory):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        base = sims[0]
        normal = base.events[~base.events["metadata.uid"].isin(set(base.labels["event_uid"]))]
        events, _ = load_events(normal)
        pipeline = fit_pipeline(events, epochs=2, seed=0, progress=False)
    finally:
        torch.set_num_threads(before)
    path = pipeline.save(tmp_path_factory.mktemp("pkg") / "model")
    return pipeline, path, events


def test_roundtrip_identical_scores(fitted, sims):
    pipeline, path, _ = fitted
    loaded = load_pipeline(path)
    events, _ = load_events(sims[1].events)
    before, after = pipeline.score(events), loaded.score(events)
    np.testing.assert_array_equal(before["score"].to_numpy(), after["score"].to_numpy())
    pd.testing.assert_frame_equal(before, after)
    z = pipeline.embed(pipeline.encoder.transform(events))
    np.testing.assert_array_equal(pipeline.detector.score_samples(z), loaded.detector.score_samples(z))
    assert loaded.detector.threshold_ == pipeline.detector.threshold_
    assert loaded.reference is not None and len(loaded.reference) == loaded.detector_state["n_reference"]
    assert loaded.config["model_config"]["d_model"] > 0


def test_scoring_leaves_the_thread_pools_as_it_found_them(fitted, sims):
    import faiss
    import torch

    pipeline, _, _ = fitted
    events, _ = load_events(sims[1].events.iloc[:500])
    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    try:
        two = pipeline.score(events)
        assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == (2, 2)
        torch.set_num_threads(1)
        faiss.omp_set_num_threads(1)
        one = pipeline.score(events)  # one thread to spare none: the same scores
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])
    np.testing.assert_allclose(one["score"].to_numpy(), two["score"].to_numpy(), rtol=1e-6, atol=1e-6)


def test_templates_shared_between_encoder_and_window_view_change_no_score(fitted, sims, monkeypatch):
    """A batch large enough for the window view's own thread (its text views template the values the encoder
    templates, and take the encoder's results): the same table as with every templating done twice."""
    from contextlib import nullcontext

    import obsad.features.text as text
    import obsad.pipeline as pipeline_module

    pipeline, _, _ = fitted
    events, _ = load_events(sims[1].events)
    assert len(events) >= pipeline_module.BESIDE_MIN_EVENTS and pipeline.window is not None
    assert any(view.template_masks for view in pipeline.window.views_)
    calls = []
    real = text._template_array
    monkeypatch.setattr(text, "_template_array", lambda arr, masks=None: calls.append(len(arr)) or real(arr, masks))
    pipeline.score(events)  # the window view's own memo of few-valued keys filled, as in the calls below
    calls.clear()
    shared = pipeline.score(events)
    n_shared = len(calls)
    monkeypatch.setattr(pipeline_module, "shared_templates", nullcontext)
    twice = pipeline.score(events)
    assert 0 < n_shared < len(calls) - n_shared
    pd.testing.assert_frame_equal(shared, twice)


def test_event_view_alone_is_the_calibrated_knn_score(fitted, sims):
    pipeline, _, _ = fitted
    events, _ = load_events(sims[1].events.iloc[:400])
    alone = pipeline.score(events, views="event", explain="all")
    assert (alone["view"] == "event").all()
    z = pipeline.embed(pipeline.encoder.transform(events))
    knn = pipeline.detector.score_samples(z)
    expected = (knn - pipeline.combiner.median_[0]) / pipeline.combiner.scale_[0]
    np.testing.assert_allclose(alone["score"].to_numpy(), expected, rtol=1e-9)
    np.testing.assert_array_equal(alone["is_anomaly"].to_numpy(), expected > pipeline.threshold)
    assert alone["top_features"].str.len().gt(0).all()
    both = pipeline.score(events)
    assert (both["score"].to_numpy() >= alone["score"].to_numpy() - 1e-9).all()  # the max over views
    with pytest.raises(ValueError, match="views"):
        pipeline.score(events, views="window")


def test_rows_in_input_order_with_columns(fitted, sims):
    pipeline, _, _ = fitted
    events, _ = load_events(sims[1].events)
    events = events.iloc[:800]
    shuffled = events.sample(frac=1.0, random_state=3)
    out = pipeline.score(shuffled)
    assert list(out.index) == list(shuffled.index)
    assert set(COLUMNS) <= set(out.columns)
    assert out["event_uid"].tolist() == shuffled["metadata.uid"].tolist()
    assert out["is_anomaly"].dtype == bool and out["score"].dtype == np.float64
    assert out["percentile"].between(0, 100).all()
    assert (out["is_anomaly"] == (out["score"] > pipeline.threshold)).all()
    ref = pipeline.score(events).loc[shuffled.index]
    np.testing.assert_allclose(out["score"].to_numpy(), ref["score"].to_numpy(), rtol=1e-5, atol=1e-6)
    names = [f for s in out["top_features"] for f in s.split(", ") if f]
    assert names and set(names) <= set(events.columns)
    assert out["top_features"].str.split(", ").str.len().max() <= 3


def test_explanations_for_flagged_events_by_default_and_for_all_on_request(fitted, sims):
    pipeline, _, _ = fitted
    events, _ = load_events(sims[1].events)
    events = events.iloc[:3000]
    flagged_only, every = pipeline.score(events), pipeline.score(events, explain="all")
    flagged = flagged_only["is_anomaly"].to_numpy()
    assert flagged.any() and (~flagged).any()
    assert (flagged_only["top_features"][flagged] != "").all()
    assert (flagged_only["top_features"][~flagged] == "").all()
    # explaining a subset gives each event the same explanation as explaining them all
    assert flagged_only["top_features"][flagged].tolist() == every["top_features"][flagged].tolist()
    assert (every["top_features"] != "").mean() > 0.95
    pd.testing.assert_frame_equal(flagged_only.drop(columns="top_features"), every.drop(columns="top_features"))
    assert (pipeline.score(events, explain="none")["top_features"] == "").all()
    with pytest.raises(ValueError, match="explain must be"):
        pipeline.score(events, explain="some")


def test_labelled_anomalies_score_higher(fitted, sims):
    pipeline, _, _ = fitted
    test = sims[1]
    events, _ = load_events(test.events)
    out = pipeline.score(events)
    anomalous = out["event_uid"].isin(set(test.labels["event_uid"]))
    assert anomalous.any()
    assert out.loc[anomalous, "score"].mean() > out.loc[~anomalous, "score"].mean()


def _cli(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "obsad.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_cli_fit_score_parquet_and_tampered(sims, tmp_path):
    src = tmp_path / "events.parquet"
    sims[0].events.to_parquet(src, index=False)
    fit = _cli("fit", "--events", src, "--out", tmp_path / "pkg", "--epochs", "1", "--quiet", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    assert "threshold" in fit.stdout and "6,000 events" in fit.stdout
    out = tmp_path / "scores.parquet"
    score = _cli("score", "--model", tmp_path / "pkg", "--events", src, "--out", out, cwd=tmp_path)
    assert score.returncode == 0, score.stderr
    scores = pd.read_parquet(out)
    assert len(scores) == len(sims[0].events) and set(COLUMNS) <= set(scores.columns)
    assert scores["event_uid"].tolist() == sims[0].events["metadata.uid"].tolist()
    assert ((scores["top_features"] != "") == scores["is_anomaly"]).all()  # flagged events are explained
    every = _cli("score", "--model", tmp_path / "pkg", "--events", src, "--out", tmp_path / "all.parquet",
                 "--explain-all", cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    explained = pd.read_parquet(tmp_path / "all.parquet")
    pd.testing.assert_frame_equal(explained.drop(columns="top_features"), scores.drop(columns="top_features"))
    assert (explained["top_features"] != "").mean() > 0.95

    weights = tmp_path / "pkg" / "model" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    bad = _cli("score", "--model", tmp_path / "pkg", "--events", src, "--out", tmp_path / "bad.parquet",
               cwd=tmp_path)
    assert bad.returncode == 2
    assert "weights.safetensors" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad.parquet").exists()


def test_cli_jsonl_nested_with_malformed_line(sims, tmp_path):
    events = sims[0].events.iloc[:5000]
    lines = [json.dumps(e, default=str) for e in to_nested(events)]
    lines.insert(100, "{not json")
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fit = _cli("fit", "--events", src, "--out", tmp_path / "pkg", "--epochs", "1", "--quiet", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    assert "invalid_json" in fit.stdout and "line 101" in fit.stdout
    out = tmp_path / "scores.parquet"
    score = _cli("score", "--model", tmp_path / "pkg", "--events", src, "--out", out, cwd=tmp_path)
    assert score.returncode == 0, score.stderr
    scores = pd.read_parquet(out)
    assert len(scores) == len(events)
    assert scores["event_uid"].tolist() == events["metadata.uid"].tolist()
    assert np.isfinite(scores["score"]).all()


def test_cli_user_errors(tmp_path):
    missing = _cli("score", "--model", tmp_path / "nope", "--events", tmp_path / "x.parquet",
                   "--out", tmp_path / "o.parquet", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


@pytest.fixture(scope="module")
def week():
    """One organisation over a week: fit on its first 70 % (by time), score the rest."""
    sim = simulate(n_events=20_000, days=7, seed=5, start="2026-03-04T00:00:00Z")
    events, _ = load_events(sim.events)
    order = np.argsort(events["time"].to_numpy(), kind="stable")
    events = events.iloc[order].reset_index(drop=True)
    cut = int(0.7 * len(events))
    return sim, events.iloc[:cut].reset_index(drop=True), events.iloc[cut:].reset_index(drop=True)


def test_window_view_flags_a_later_burst_and_names_its_fields(week):
    import torch

    sim, baseline, later = week
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pipeline = fit_pipeline(baseline, epochs=1, seed=0, progress=False)
    finally:
        torch.set_num_threads(before)
    assert pipeline.views == ("event", "window") and pipeline.window is not None
    out = pipeline.score(later)
    labels = sim.labels.set_index("event_uid")
    scenario = later["metadata.uid"].map(labels["scenario"]).fillna("").to_numpy()
    burst = scenario == "brute_force"
    assert burst.sum() >= 20  # the simulator puts a brute force in the last 15 % of the week
    assert out["is_anomaly"].to_numpy()[burst].mean() >= 0.8
    assert (out["view"].to_numpy()[burst] == "window").mean() >= 0.8
    fields = set(sim.labels.loc[sim.labels["scenario"] == "brute_force", "fields"].iloc[0])
    explained = [bool(set(t.split(", ")) & fields) for t in out["top_features"].to_numpy()[burst]]
    assert np.mean(explained) >= 0.8
    # ordinary later events: flagged far less often than the burst
    assert out["is_anomaly"].to_numpy()[scenario == ""].mean() < 0.05


def test_without_a_timestamp_there_is_no_window_view_and_scoring_still_works(week):
    _, baseline, later = week
    timeless = [c for c in baseline.columns if c in ("time", "time_dt", "start_time", "end_time")]
    pipeline = fit_pipeline(baseline.drop(columns=timeless).iloc[:3000], epochs=1, seed=0, progress=False)
    assert pipeline.window is None and pipeline.views == ("event",)
    assert any("no window view" in w for w in pipeline.warnings)
    out = pipeline.score(later.drop(columns=timeless).iloc[:500])
    assert len(out) == 500 and (out["view"] == "event").all() and np.isfinite(out["score"]).all()


def test_similar_events_finds_a_reference_event_itself_and_score_events_reads_records(fitted, sims):
    pipeline, _, _ = fitted
    reference = pipeline.reference
    distance, rows = pipeline.similar_events(reference.iloc[[7, 42]], n=3)
    assert rows.shape == (2, 3) and (np.diff(distance, axis=1) >= -1e-9).all()
    # the exact index returns the event itself (or an identical twin) first
    assert distance[0, 0] < 1e-5 and distance[1, 0] < 1e-5
    records = to_nested(sims[1].events.iloc[:50])
    scores, report = pipeline.score_events(records)
    assert len(scores) == 50 and report.n_loaded == 50


def test_same_seed_same_package_bytes(week, tmp_path):
    """Determinism: fitting twice with one seed writes byte-identical package files (no timings, no clocks)."""
    _, baseline, _ = week
    manifests = []
    for name in ("a", "b"):
        path = fit_pipeline(baseline.iloc[:4000], epochs=1, seed=3, progress=False).save(tmp_path / name)
        manifests.append(json.loads((path / "manifest.json").read_text())["files"])
    assert manifests[0] == manifests[1]
