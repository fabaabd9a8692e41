"""Retraining (obsad.monitor.retraining, obsad.monitor.registry): the policy, the poisoned-baseline mitigation, champion
against challenger on labelled events, and the registry with promotion and rollback, with its CLI verbs."""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score

from obsad.monitor.drift import DriftResult
from obsad.monitor.registry import ModelRegistry, RegistryError, package_version
from obsad.monitor.registry_commands import add_registry_parser
from obsad.monitor.retraining import (
    RetrainPolicy,
    RetrainSignals,
    _weighted_metrics,
    compare_models,
    compare_on_labelled,
    out_of_sample_scores,
    poisoned_baseline_experiment,
    promotion_decision,
    read_shadow_log,
    retrain,
    trim_rows,
    trimmed_reference,
)


# ------------------------------------------------------------------------------------------------ a poisoned window
def _plant(base: pd.DataFrame, n: int, start: pd.Timestamp, tag: str, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` copies of one event, every numeric field 30 times its value (plus noise), within 30 minutes of
    ``start``: one attack, repeated; columns found from the data, none named."""
    out = pd.concat([base] * n, ignore_index=True)
    for c in out.columns:
        if pd.api.types.is_numeric_dtype(out[c]) and not pd.api.types.is_bool_dtype(out[c]):
            out[c] = out[c] * 30 + rng.normal(0, 1, n)
    out["time"] = start + pd.to_timedelta(rng.integers(0, 30 * 60 * 1000, n), unit="ms")
    out["metadata.uid"] = [f"{tag}-{i}" for i in range(n)]
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny network fitted once (target_steps=40) on a window that holds a planted attack of 40 events; the
    same attack again in the later test events."""
    import torch

    from obsad.ocsf import load_events, simulate
    from obsad.pipeline import assemble_pipeline, fit_pipeline

    sim = simulate(5000, days=3, seed=5)
    events, _ = load_events(sim.events)
    events = events[~events["metadata.uid"].isin(set(sim.labels["event_uid"]))].reset_index(drop=True)
    cut = events["time"].quantile(0.75)
    train = events[events["time"] <= cut].reset_index(drop=True)
    test = events[events["time"] > cut].reset_index(drop=True)
    rng = np.random.default_rng(0)
    base = train.iloc[[int(rng.integers(len(train)))]]
    middle = train["time"].min() + (train["time"].max() - train["time"].min()) / 2
    attack = _plant(base, 40, middle, "planted", rng)
    attack_test = _plant(base, 40, test["time"].min() + pd.Timedelta("2h"), "again", rng)
    poisoned = pd.concat([train, attack], ignore_index=True)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipeline = fit_pipeline(poisoned, seed=0, progress=False, target_steps=40, window=None)
        scores, method = out_of_sample_scores(pipeline, poisoned)
        trimmed = trimmed_reference(pipeline, poisoned, 0.02, scores=scores)
        other = assemble_pipeline(poisoned, pipeline.encoder, pipeline.objective, k=5, window=None)
        windowed = assemble_pipeline(poisoned, pipeline.encoder, pipeline.objective, window="1h")
    finally:
        torch.set_num_threads(before)
    root = tmp_path_factory.mktemp("retrain")
    paths = {name: p.save(root / name) for name, p in (("poisoned", pipeline), ("trimmed", trimmed),
                                                        ("k5", other))}
    labelled = pd.concat([test, attack_test], ignore_index=True)
    y = labelled["metadata.uid"].str.startswith("again").to_numpy()
    return {"pipeline": pipeline, "trimmed": trimmed, "other": other, "windowed": windowed, "poisoned": poisoned,
            "scores": scores, "method": method, "attack_test": attack_test, "test": test, "labelled": labelled, "y": y,
            "paths": paths, "train": train, "attack": attack}


# ------------------------------------------------------------------------------------------------ the mitigation
def test_a_burst_vouches_for_itself_until_scored_against_the_rest_of_the_window(world):
    from obsad.detect import KNNDetector

    p, poisoned = world["pipeline"], world["poisoned"]
    planted = poisoned["metadata.uid"].str.startswith("planted").to_numpy()
    z = p.embed(p.encoder.transform(poisoned))
    loo = KNNDetector(k=10).fit(z).training_scores_  # the detector's own training scores: leave-one-out
    # leave-one-out: the 39 other copies are each copy's neighbours, so the attack scores below ordinary events
    assert loo[planted].mean() < np.median(loo[~planted])
    # scored against events more than 12 hours away, the burst is the most unusual thing in the window
    scores = world["scores"]
    assert world["method"] == "time-excluded"
    assert scores[planted].min() > np.quantile(scores[~planted], 0.99)


def test_trimmed_reference_drops_the_top_events_and_restores_the_attack_scores(world):
    p, tp, poisoned, scores = world["pipeline"], world["trimmed"], world["poisoned"], world["scores"]
    dropped = trim_rows(scores, 0.02)
    assert len(dropped) == round(0.02 * len(poisoned))
    top_uids = set(poisoned["metadata.uid"].iloc[dropped])
    kept_uids = set(tp.reference["metadata.uid"])
    assert not top_uids & kept_uids  # no top-scoring training event is left in the reference
    assert kept_uids == set(poisoned["metadata.uid"]) - top_uids
    assert len(tp.arrays["reference_embeddings"]) == len(poisoned) - len(dropped)
    planted = set(world["attack"]["metadata.uid"])
    assert len(top_uids & planted) == len(planted)  # every planted event was trimmed
    assert tp.objective is p.objective  # the same network: nothing retrained
    assert tp.config["reference_trim"]["n_trimmed"] == len(dropped)
    assert tp.config["reference_trim"]["scores"] == "given"
    # the same attack seen again: it was its own neighbour, it no longer is
    attack = world["attack_test"]
    before = p.detector.score_samples(p.embed(p.encoder.transform(attack)))
    after = tp.detector.score_samples(tp.embed(tp.encoder.transform(attack)))
    assert after.mean() > 10 * before.mean()
    assert np.mean(before > p.detector.threshold_) <= 0.1
    assert np.mean(after > tp.detector.threshold_) >= 0.9
    assert p.score(attack, explain="none")["is_anomaly"].mean() <= 0.1
    assert tp.score(attack, explain="none")["is_anomaly"].mean() >= 0.9


def test_the_window_view_joins_the_trimming_scores_when_the_pipeline_has_one(world):
    p, poisoned = world["windowed"], world["poisoned"]
    planted = poisoned["metadata.uid"].str.startswith("planted").to_numpy()
    scores, method = out_of_sample_scores(p, poisoned)
    assert method == "time-excluded + window view"
    event_only, method = out_of_sample_scores(p, poisoned, views="event")
    assert method == "time-excluded"
    np.testing.assert_allclose(event_only, world["scores"])  # the same event view as without a window view
    # the combined score is the larger calibrated view: never below the event view's own calibrated score
    knn_z = p.combiner.member_z(np.column_stack([event_only, np.full(len(event_only), -np.inf)]))[:, 0]
    assert np.all(scores >= knn_z - 1e-9)
    assert planted[trim_rows(scores, 0.02)].sum() == planted.sum()
    with pytest.raises(ValueError, match="views"):
        out_of_sample_scores(p, poisoned, views="window")


def test_out_of_sample_scores_fall_back_to_leave_one_out_without_usable_time(world):
    from obsad.detect import KNNDetector

    p, poisoned = world["pipeline"], world["poisoned"]
    z = p.embed(p.encoder.transform(poisoned))
    loo = KNNDetector(k=10, reference_max=50_000).fit(z).training_scores_
    scores, method = out_of_sample_scores(p, poisoned, exclusion="30D")  # no block is 30 days from another
    assert method == "leave-one-out"
    np.testing.assert_allclose(scores, loo)
    with pytest.raises(ValueError, match="positive"):
        out_of_sample_scores(p, poisoned.iloc[:50], exclusion="0h")


def test_trim_rows():
    s = np.array([0.1, 0.9, 0.5, 0.9, 0.2, np.nan, 0.3, 0.4, 0.0, 0.6])
    assert trim_rows(s, 0.0).tolist() == []
    assert trim_rows(s, 0.2).tolist() == [1, 5]  # a missing score counts as the highest
    assert trim_rows(s, 0.3).tolist() == [1, 3, 5]
    with pytest.raises(ValueError, match="fraction"):
        trim_rows(s, 1.0)


def test_retrain_fits_the_recent_window_and_records_it(world, tmp_path, one_thread):
    events = world["poisoned"]
    fitted = retrain(events, seed=0, last="2D", trim_fraction=0.02, epochs=1, window=None, k=5)
    window = fitted.config["training_window"]
    latest = events["time"].max()
    recent = events[events["time"] >= latest - pd.Timedelta("2D")]
    assert window["n_events"] == len(recent) < len(events)
    assert pd.Timestamp(window["end"]) == latest and pd.Timestamp(window["start"]) == recent["time"].min()
    assert pd.Timestamp(window["start"]).tzinfo is not None
    assert fitted.config["reference_trim"]["n_trimmed"] == round(0.02 * len(recent))
    assert fitted.detector_state["k"] == 5 and fitted.config["retrain"]["trim_fraction"] == 0.02
    assert len(fitted.reference) == len(recent) - round(0.02 * len(recent))
    registry = ModelRegistry(tmp_path / "reg")
    name = registry.register(fitted, note="retrained on the last two days")
    row = registry.versions().set_index("version").loc[name]
    assert row["training_start"] == pd.Timestamp(window["start"])
    with pytest.raises(ValueError, match="trim_fraction"):
        retrain(events, trim_fraction=1.5)
    with pytest.raises(ValueError, match="times"):
        retrain(events.drop(columns=["time"]))


def test_poisoned_baseline_experiment_measures_the_drop_and_the_recovery(world, one_thread):
    train, attack = world["train"], world["attack"]
    from obsad.pipeline import assemble_pipeline

    # the incumbent: a model that never saw the attack (the same network, its reference the clean window)
    incumbent = assemble_pipeline(train, world["pipeline"].encoder, world["pipeline"].objective, window=None)
    result = poisoned_baseline_experiment(train, attack, world["labelled"], world["y"], seed=0, trim_fraction=0.02,
                                          epochs=1, window=None, vetted_by=incumbent)
    auroc = result.summary("AUROC")
    assert result.attack_vetted >= 30  # the incumbent flags most of the attack, so it leaves the reference
    assert auroc.loc["k-NN", "vetted"] > auroc.loc["k-NN", "poisoned"] + 0.3
    assert set(auroc.index) == {"pipeline", "k-NN", "IsolationForest"}
    assert result.n_attack == 40 and result.attack_trimmed == 40 and result.scores == "time-excluded"
    knn = auroc.loc["k-NN"]
    assert knn["clean"] - knn["poisoned"] > 0.3  # the reference that holds the attack hides it
    assert knn["trimmed"] > knn["poisoned"] + 0.3 and knn["recovered (trimmed)"] > 0.8
    assert json.loads(json.dumps(result.to_dict()))["n_trimmed"] == result.n_trimmed


# ------------------------------------------------------------------------------------------------ the policy
def test_policy_fires_on_each_signal_and_not_when_all_are_fine():
    policy = RetrainPolicy(max_age_days=30, min_precision=0.5, min_labels=30, drift_alpha=0.01, new_labels=500)
    calm = DriftResult(drift=False, p_value=0.4, statistic=0.001, method="mmd", window_size=1000)
    fine = {"drift": calm, "precision": 0.8, "precision_labels": 50, "new_labels": 10, "model_age_days": 3.0}
    decision = policy.decide(fine)
    assert not decision.retrain and decision.reasons == []
    assert [c["outcome"] for c in decision.checks] == ["ok"] * 4
    moved = DriftResult(drift=True, p_value=0.002, statistic=0.05, method="mmd", window_size=1000)
    for key, value, word in (("drift", moved, "drift"), ("precision", 0.2, "precision"), ("new_labels", 800, "new"),
                             ("model_age_days", 45.0, "days old")):
        decision = policy.decide({**fine, key: value})
        assert decision.retrain and len(decision.reasons) == 1 and word in decision.reasons[0], decision.reasons
    # p = 0.03 is drift for a test at 0.05, not strong enough for the policy's 0.01
    assert not policy.decide({**fine, "drift": {"drift": True, "p_value": 0.03, "method": "mmd"}}).retrain
    # a rule without a p-value counts by its flag
    assert policy.decide({**fine, "drift": {"drift": True, "p_value": None, "method": "ks_fraction"}}).retrain
    everything = policy.decide(RetrainSignals(drift=moved, precision=0.1, precision_labels=100, new_labels=900,
                                              model_age_days=90))
    assert len(everything.reasons) == 4
    assert json.loads(json.dumps(everything.to_dict()))["signals"]["drift"]["p_value"] == 0.002


def test_policy_ignores_precision_without_enough_labels():
    policy = RetrainPolicy(min_labels=30)
    decision = policy.decide({"precision": 0.0, "precision_labels": 5})
    assert not decision.retrain
    row = decision.checks_frame().set_index("rule").loc["precision"]
    assert row["outcome"] == "ignored" and "too few" in row["note"]
    decision = policy.decide({"precision": 0.2, "precision_labels": 30})
    assert decision.retrain and "95 % interval" in decision.reasons[0]
    assert policy.decide({}).checks_frame()["outcome"].eq("not measured").all()
    with pytest.raises(ValueError, match="unknown signal"):
        policy.decide({"precison": 0.2})
    with pytest.raises(ValueError, match="drift_alpha"):
        RetrainPolicy(drift_alpha=2).decide({})


# ---------------------------------------------------------------------------------------------- champion vs challenger
def test_weighted_metrics_match_scikit_learn_on_plain_and_resampled_events():
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.1
    score = np.round(y * 0.8 + rng.random(300), 1)  # rounded: ties
    flag = score > 1.0
    plain = _weighted_metrics(y, score, flag, np.ones((1, 300)))
    assert plain["auprc"][0] == pytest.approx(average_precision_score(y, score))
    assert plain["f1"][0] == pytest.approx(f1_score(y, flag))
    counts = rng.multinomial(300, np.full(300, 1 / 300), size=3)
    weighted = _weighted_metrics(y, score, flag, counts)
    for b in range(3):
        rows = np.repeat(np.arange(300), counts[b])
        assert weighted["auprc"][b] == pytest.approx(average_precision_score(y[rows], score[rows]))
        assert weighted["f1"][b] == pytest.approx(f1_score(y[rows], flag[rows]))


def _frame(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, threshold: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"event_uid": [f"e{i}" for i in range(len(y))],
                         "champion_score": champion, "champion_is_anomaly": champion > threshold,
                         "challenger_score": challenger, "challenger_is_anomaly": challenger > threshold})


def test_promotion_only_when_the_challenger_is_clearly_better():
    rng = np.random.default_rng(2)
    y = rng.random(600) < 0.1
    weak = y * 0.6 + rng.normal(0.5, 0.3, 600)
    strong = y * 1.5 + rng.normal(0.2, 0.2, 600)
    verdicts = pd.DataFrame({"event_uid": [f"e{i}" for i in range(600)], "anomalous": y})
    better = compare_on_labelled(_frame(y, weak, strong), verdicts, n_boot=500)
    assert better.difference["f1"]["low"] > 0 and better.n_labelled == 600 and better.n_anomalous == int(y.sum())
    decision = promotion_decision(better)
    assert decision.promote and "better" in decision.reason
    worse = compare_on_labelled(_frame(y, strong, weak), verdicts, n_boot=500)
    decision = promotion_decision(worse, metric="auprc")
    assert not decision.promote and decision.reason.startswith("challenger worse")
    twin = weak + rng.normal(0, 0.01, 600)  # the same model, give or take
    decision = promotion_decision(compare_on_labelled(_frame(y, weak, twin), verdicts, n_boot=500))
    assert not decision.promote and "not clearly better" in decision.reason
    # five more anomalies caught and nothing else changed: certainly better, by less than a margin asked for
    caught = np.flatnonzero(y & (weak <= 1.0))[:5]
    nudged = compare_on_labelled(_frame(y, weak, np.where(np.isin(np.arange(600), caught), 5.0, weak)), verdicts,
                                 n_boot=500)
    gain = nudged.difference["f1"]
    assert 0 < gain["low"] < gain["estimate"]
    decision = promotion_decision(nudged, min_gain=(gain["low"] + gain["estimate"]) / 2)
    assert not decision.promote and "not surely by the required" in decision.reason
    assert promotion_decision(nudged, min_gain=0.0).promote
    few = verdicts.iloc[:40]  # too few labelled anomalies to tell
    assert not promotion_decision(compare_on_labelled(_frame(y, weak, strong), few, n_boot=200)).promote
    table = better.table()
    assert list(table.index[:3]) == ["champion", "challenger", "challenger - champion"]
    assert json.loads(json.dumps(better.to_dict()))["n_boot"] == 500
    labels = verdicts.assign(label=np.where(y, "brute_force", "normal")).drop(columns="anomalous")
    again = compare_on_labelled(_frame(y, weak, strong), labels, n_boot=500)
    assert again.to_dict() == better.to_dict()  # seeded: same resamples
    with pytest.raises(ValueError, match="conflicting"):
        compare_on_labelled(_frame(y, weak, strong), pd.concat([verdicts.iloc[:5], verdicts.iloc[:5].assign(
            anomalous=~verdicts["anomalous"].iloc[:5])]))


def test_compare_models_promotes_the_trimmed_reference_and_rejects_a_twin(world):
    p, tp, other = world["pipeline"], world["trimmed"], world["other"]
    events, y = world["labelled"], world["y"]
    comparison = compare_models(p, tp, events, y, n_boot=300)
    assert comparison.challenger["recall"] > comparison.champion["recall"] + 0.5
    assert comparison.champion["version"] == package_version(world["paths"]["poisoned"])
    assert promotion_decision(comparison).promote
    assert not promotion_decision(compare_models(p, other, events, y, n_boot=300)).promote
    by_uid = pd.DataFrame({"event_uid": events["metadata.uid"], "anomalous": y})
    # exact duplicate events (same uid) count once
    assert compare_models(p, tp, events, by_uid, n_boot=300).n_labelled == events["metadata.uid"].nunique()


def test_read_shadow_log_reads_what_the_service_writes(tmp_path):
    import datetime as dt

    from obsad.serve.shadow import ShadowLog

    log = ShadowLog(tmp_path / "shadow")
    when = dt.datetime(2026, 3, 5, 12, tzinfo=dt.UTC)
    rng = np.random.default_rng(3)
    y = rng.random(200) < 0.15
    records = [{"time": (when + dt.timedelta(seconds=i)).isoformat(), "request_id": f"r{i // 10}", "slot": i % 10,
                "event_uid": f"e{i}", "views": "all",
                "champion": {"version": "aaaa", "score": float(y[i] * 0.3 + rng.random()), "is_anomaly": False,
                             "view": "event"},
                "challenger": {"version": "bbbb", "score": float(y[i] * 2 + rng.random()),
                               "is_anomaly": bool(y[i]), "view": "event"}} for i in range(200)]
    log.append(records, when)
    with open(log.path_for(when), "a", encoding="utf-8") as fh:
        fh.write('{"time": "2026-03-05T13:00:00+00:00", "request_id": "half')  # a live writer's unfinished line
    frame = read_shadow_log(tmp_path / "shadow")
    assert len(frame) == 200 and str(frame["time"].dt.tz) == "UTC"
    assert frame["challenger_is_anomaly"].dtype == bool and frame["champion_score"].dtype == np.float64
    assert set(frame["challenger_version"]) == {"bbbb"}
    assert len(read_shadow_log(tmp_path / "shadow", challenger="cccc")) == 0
    comparison = compare_on_labelled(frame, pd.Series(y, index=[f"e{i}" for i in range(200)]), n_boot=300)
    assert comparison.challenger["version"] == "bbbb" and comparison.challenger["recall"] == 1.0
    assert promotion_decision(comparison).promote
    two = pd.concat([frame, frame.assign(challenger_version="cccc")])
    with pytest.raises(ValueError, match="challenger versions"):
        compare_on_labelled(two, pd.Series(y, index=[f"e{i}" for i in range(200)]))


# ------------------------------------------------------------------------------------------------ the registry
def _tamper(package) -> None:
    path = package / "arrays.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_register_promote_rollback_round_trip(world, tmp_path):
    from obsad.pipeline import load_pipeline

    paths = world["paths"]
    registry = ModelRegistry(tmp_path / "reg")
    assert not registry.exists and registry.champion is None
    first = registry.register(paths["poisoned"], note="first", training_window=("2026-03-02", "2026-03-04T12:00"),
                              metrics={"f1": np.float64(0.5)})
    assert first.startswith("0001-") and first.endswith(package_version(paths["poisoned"])[:12])
    second = registry.register(paths["trimmed"], note="trimmed")
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(paths["poisoned"], note="again")
    assert registry.promote(first, reason="the first") == first
    assert registry.promote("2", reason="better on the labelled slice") == second
    assert registry.champion == second
    third = registry.register(world["other"], note="k=5, from a pipeline")  # meant to replace the champion
    assert world["other"].path == registry.version_path(third)
    served = registry.champion_path()
    assert served == registry.root / "champion" and served.is_symlink()
    assert served.resolve() == registry.version_path(second).resolve()
    assert package_version(served) == package_version(paths["trimmed"])
    assert load_pipeline(served).config["reference_trim"]["n_trimmed"] > 0  # the served path loads
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(second, reason="again")

    versions = registry.versions()
    assert versions["version"].tolist() == [first, second, third]
    assert str(versions["created"].dt.tz) == "UTC" and versions["champion"].tolist() == [False, True, False]
    assert versions["parent"].isna().tolist()[:2] == [True, True] and versions.loc[2, "parent"] == second
    assert versions.loc[0, "training_start"] == pd.Timestamp("2026-03-02", tz="UTC")
    assert versions.loc[0, "training_end"] == pd.Timestamp("2026-03-04T12:00", tz="UTC")
    assert versions.loc[0, "metrics.f1"] == 0.5 and versions.loc[0, "note"] == "first"
    assert pd.isna(versions.loc[1, "training_start"])

    assert registry.rollback(reason="alerts doubled") == first
    assert registry.champion == first and served.resolve() == registry.version_path(first).resolve()
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()
    registry.promote(third, reason="k=5")
    history = registry.history()
    assert history["action"].tolist() == ["promote", "promote", "rollback", "promote"]
    assert history["previous"].tolist()[1:] == [first, second, first]
    assert history["reason"].tolist()[2] == "alerts doubled"
    assert str(history["time"].dt.tz) == "UTC"
    assert registry.rollback() == first  # the champion before the third
    reopened = ModelRegistry(tmp_path / "reg")
    assert reopened.champion == first and reopened.versions().equals(registry.versions())


def test_rollback_with_no_previous_champion_is_a_clear_error(world, tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="no registry"):
        registry.rollback()
    name = registry.register(world["paths"]["poisoned"], note="only")
    with pytest.raises(RegistryError, match="no previous champion.*no champion"):
        registry.rollback()
    registry.promote(name, reason="first")
    with pytest.raises(RegistryError, match=f"no previous champion to roll back to \\(the champion is {name}\\)"):
        registry.rollback()
    with pytest.raises(RegistryError, match="no version '7'"):
        registry.promote("7", reason="x")
    with pytest.raises(RegistryError, match="reason"):
        registry.promote(name, reason=" ")


def test_tampered_packages_are_refused_at_register_promote_and_rollback(world, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(world["paths"]["poisoned"], tampered)
    _tamper(tampered)
    registry = ModelRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="refusing to register .*arrays.safetensors: checksum mismatch"):
        registry.register(tampered, note="bad")
    assert not registry.exists  # nothing was written
    first = registry.register(world["paths"]["poisoned"], note="a")
    second = registry.register(world["paths"]["trimmed"], note="b")
    _tamper(registry.version_path(second))
    with pytest.raises(RegistryError, match=f"refusing to promote {second}: arrays.safetensors"):
        registry.promote(second, reason="b")
    assert registry.champion is None and not (registry.root / "champion").exists()
    registry.promote(first, reason="a")
    third = registry.register(world["paths"]["k5"], note="c")
    registry.promote(third, reason="c")
    (registry.version_path(first) / "extra.txt").write_text("added")
    with pytest.raises(RegistryError, match=f"refusing to roll back to {first}: extra.txt: unexpected file"):
        registry.rollback()
    assert registry.champion == third


def test_the_record_is_written_atomically_through_obsad_io(world, tmp_path, monkeypatch):
    import obsad.io

    registry = ModelRegistry(tmp_path / "reg")
    first = registry.register(world["paths"]["poisoned"], note="a")
    second = registry.register(world["paths"]["trimmed"], note="b")
    registry.promote(first, reason="a")
    record = (registry.root / "registry.json").read_bytes()
    link = os.readlink(registry.root / "champion")

    def crash(obj, fh, **kwargs):  # the disk fills up half-way through the write
        fh.write('{"format": "obsad-regi')
        raise OSError("No space left on device")

    monkeypatch.setattr(obsad.io.json, "dump", crash)
    with pytest.raises(OSError, match="No space"):
        registry.promote(second, reason="b")
    monkeypatch.undo()
    assert (registry.root / "registry.json").read_bytes() == record  # the old record, whole
    assert os.readlink(registry.root / "champion") == link  # the link follows the record: unchanged
    assert not [p for p in registry.root.iterdir() if p.name.endswith(".tmp")]
    assert ModelRegistry(registry.root).champion == first


def test_the_link_follows_the_record_after_a_crash_between_them(world, tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    first = registry.register(world["paths"]["poisoned"], note="a")
    second = registry.register(world["paths"]["trimmed"], note="b")
    registry.promote(first, reason="a")
    record = json.loads((registry.root / "registry.json").read_text())
    record["champion"] = second  # as if the process died after writing the record, before moving the link
    (registry.root / "registry.json").write_text(json.dumps(record))
    ModelRegistry(registry.root)
    assert (registry.root / "champion").resolve() == registry.version_path(second).resolve()


def test_a_non_empty_folder_is_not_made_a_registry(world, tmp_path):
    (tmp_path / "data.txt").write_text("mine")
    with pytest.raises(RegistryError, match="not empty"):
        ModelRegistry(tmp_path).register(world["paths"]["poisoned"], note="x")


# ------------------------------------------------------------------------------------------------ obsad registry
def run_registry(argv: list[str]) -> int:
    """`obsad registry ...` through a parser built as `obsad` builds it, with `obsad`'s mapping of errors."""
    import sys

    parser = argparse.ArgumentParser(prog="obsad")
    add_registry_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as err:
        print(f"obsad {args.verb}: {err}", file=sys.stderr)
        return 2


def test_cli_verbs(world, tmp_path, capsys):
    reg = str(tmp_path / "reg")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"f1": 0.61, "auprc": 0.55}))
    assert run_registry(["registry", "register", "--registry", reg, "--model", str(world["paths"]["poisoned"]),
                         "--note", "baseline", "--training-start", "2026-03-02", "--training-end", "2026-03-05",
                         "--metrics", str(metrics)]) == 0
    assert "registered 0001-" in capsys.readouterr().out
    assert run_registry(["registry", "register", "--registry", reg, "--model", str(world["paths"]["trimmed"]),
                         "--note", "trimmed"]) == 0
    assert run_registry(["registry", "promote", "--registry", reg, "1", "--reason", "first model"]) == 0
    assert run_registry(["registry", "promote", "--registry", reg, "2", "--reason", "F1 +0.3 on the slice"]) == 0
    out = capsys.readouterr().out
    assert f"serve {tmp_path / 'reg' / 'champion'}" in out
    assert run_registry(["registry", "list", "--registry", reg]) == 0
    out = capsys.readouterr().out
    assert "2 version(s), champion: 0002-" in out and "baseline" in out and "metrics.f1" in out
    assert "F1 +0.3 on the slice" in out and "2026-03-02 00:00 .. 2026-03-05 00:00" in out
    assert run_registry(["registry", "rollback", "--registry", reg]) == 0
    assert "champion is 0001-" in capsys.readouterr().out
    assert run_registry(["registry", "list", "--registry", reg, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["champion"].startswith("0001-") and [h["action"] for h in record["history"]] == [
        "promote", "promote", "rollback"]
    cases = {
        "no previous champion": ["rollback", "--registry", reg],
        "no version '9'": ["promote", "--registry", reg, "9", "--reason", "x"],
        "no registry there": ["list", "--registry", str(tmp_path / "nowhere")],
        "not a model package directory": ["register", "--registry", reg, "--model", str(tmp_path / "none")],
        "go together": ["register", "--registry", reg, "--model", str(world["paths"]["k5"]),
                        "--training-start", "2026-03-02"],
        "not valid JSON": ["register", "--registry", reg, "--model", str(world["paths"]["k5"]),
                           "--metrics", str(tmp_path / "bad.json")],
    }
    (tmp_path / "bad.json").write_text("{nope")
    for expected, argv in cases.items():
        assert run_registry(["registry", *argv]) == 2, expected
        err = capsys.readouterr().err
        assert err.startswith("obsad registry: ") and expected in err and "Traceback" not in err, err
