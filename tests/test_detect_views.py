"""Event view, window view, combiner and evaluation: calibration, known answers, explanations, errors.

Small synthetic data only: a hand-built event table per view, a tiny masked-feature model trained for a few
hundred steps, random "embeddings". The whole file runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError

from obsad.detect import EntityWindowDetector, FieldSurpriseDetector, MaxZCombiner
from obsad.detect.evaluation import detection_row, explanation_hits, scenario_auroc, table
from obsad.features import FeatureEncoder
from obsad.models import TabularResNet
from obsad.train import MaskedFeatureObjective

# ============================================================================================ window view data
USERS = np.array([f"user{i:02d}" for i in range(50)], dtype=object)
ACTIONS = np.array(["read", "write", "delete", "list"], dtype=object)
ACTION_P = [0.5, 0.3, 0.1, 0.1]
DAY0 = pd.Timestamp("2024-01-01", tz="UTC")
N_EMB = 4


def _events(hours: int, start: pd.Timestamp, seed: int) -> pd.DataFrame:
    """50 users, ~2 events per user and hour (Poisson), 4 actions (not a view: < min_distinct), a latency."""
    rng = np.random.default_rng(seed)
    n = hours * 50 * 2
    frame = pd.DataFrame({
        "time": start + pd.to_timedelta(rng.uniform(0, hours * 3600, n), unit="s"),
        "user": USERS[rng.integers(0, 50, n)],
        "action": rng.choice(ACTIONS, n, p=ACTION_P),
        "latency": rng.lognormal(3.0, 0.3, n),
    })
    return frame.sort_values("time").reset_index(drop=True)


def _vectors(encoder: FeatureEncoder, frame: pd.DataFrame, seed: int) -> np.ndarray:
    """Random normal "embedding" (N_EMB dims) followed by the encoded numeric fields."""
    emb = np.random.default_rng(seed).normal(size=(len(frame), N_EMB))
    return np.hstack([emb, encoder.transform(frame).numeric])


@pytest.fixture(scope="module")
def window_data():
    train = _events(48, DAY0, 0)
    cal = _events(24, DAY0 + pd.Timedelta("2D"), 1)
    test = _events(24, DAY0 + pd.Timedelta("3D"), 2)
    encoder = FeatureEncoder(n_jobs=1).fit(train)
    names = encoder.transform(train.head(10)).numeric_names
    return {"train": train, "cal": cal, "test": test, "encoder": encoder, "names": names,
            "v_train": _vectors(encoder, train, 10), "v_cal": _vectors(encoder, cal, 11),
            "v_test": _vectors(encoder, test, 12)}


@pytest.fixture(scope="module")
def windows(window_data):
    d = window_data
    det = EntityWindowDetector(d["encoder"], n_embedding=N_EMB, field_names=d["names"], window="1h",
                               threshold_percentile=95.0)
    return det.fit((d["train"], d["v_train"]), calibration=(d["cal"], d["v_cal"]))


def test_encoder_roles_of_the_window_table(window_data):
    """Preconditions of the window tests: the roles the detector relies on."""
    enc = window_data["encoder"]
    assert enc.roles_ == {"time": "timestamp", "user": "categorical", "action": "categorical",
                          "latency": "numeric"}
    names = window_data["names"]
    assert names[0] == "latency" and all(enc.sources_[n] == "time" for n in names[1:])


def test_windows_choose_views_by_role_and_drop_time_fields(windows):
    # user (50 values) is a view, action (4 values < min_distinct=5) is not; the time column is found by role
    assert [v.column for v in windows.views_] == ["user"]
    assert windows.time_column_ == "time"
    # hour/day-of-week outputs of the timestamp are not window fields
    assert windows.fields_ == ["latency"]
    assert windows.n_features_in_ == N_EMB + 5
    view = windows.views_[0]
    assert len(view.entities) == 50 and view.mean.shape == (51, N_EMB + 1)


# ============================================================================================ event view data
SERVICES = np.array([f"svc-{c}" for c in "abcdef"], dtype=object)
METHODS = np.array(["GET", "POST", "PUT"], dtype=object)
REGIONS = np.array(["eu", "us"], dtype=object)
STATUS = np.array(["ok", "retry", "fail", "skip"], dtype=object)


def _service_events(n: int, seed: int) -> pd.DataFrame:
    """A latent class k (6 values) fixes service, method, region and bytes; status and noise are pure noise."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 6, n)
    return pd.DataFrame({
        "service": SERVICES[k],
        "method": METHODS[k % 3],
        "region": REGIONS[k // 3],
        "status": rng.choice(STATUS, n),
        "bytes": 100.0 * (k + 1) + rng.normal(0.0, 5.0, n),
        "noise": rng.normal(0.0, 1.0, n),
    })


@pytest.fixture(scope="module")
def surprise_data():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train = _service_events(4000, 0)
        encoder = FeatureEncoder(n_jobs=1).fit(train)
        feats = encoder.transform(train)
        torch.manual_seed(0)
        net = TabularResNet(len(feats.numeric_names), feats.cardinalities, d_model=32, n_blocks=1, d_hidden=64,
                            mask_token=True)
        model = MaskedFeatureObjective(net, mask_prob=0.25)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        num = torch.as_tensor(feats.numeric, dtype=torch.float32)
        cat = torch.as_tensor(feats.categorical, dtype=torch.long)
        gen = torch.Generator().manual_seed(0)
        for _ in range(300):
            idx = torch.randint(0, len(num), (256,), generator=gen)
            out = model({"numeric": num[idx], "categorical": cat[idx]})
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        model.eval()
        det = FieldSurpriseDetector(model, top=3, calibration_max=1500, threshold_percentile=90.0, seed=3)
        det.fit(feats)
        yield {"encoder": encoder, "train": feats, "model": model, "detector": det}
    finally:
        torch.set_num_threads(before)


# ============================================================================================ 1. calibration
def _combiner_scores(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.normal(size=n), 100.0 * rng.exponential(size=n)])


@pytest.fixture(scope="module")
def calibrated(surprise_data, window_data, windows):
    """Per detector: (fitted detector, its calibration input, fresh input from the same distribution)."""
    sd, wd = surprise_data, window_data
    surprise = sd["detector"]
    combiner = MaxZCombiner(threshold_percentile=99.0).fit(_combiner_scores(5000, 0))
    return {
        "surprise": (surprise, sd["train"].take(surprise.calibration_rows_),
                     sd["encoder"].transform(_service_events(3000, 1))),
        "windows": (windows, (wd["cal"], wd["v_cal"]), (wd["test"], wd["v_test"])),
        "combiner": (combiner, _combiner_scores(5000, 0), _combiner_scores(40_000, 1)),
    }


DETECTORS = ["surprise", "windows", "combiner"]


@pytest.mark.parametrize("name", DETECTORS)
def test_threshold_is_the_percentile_of_calibration_scores(calibrated, name):
    det, cal, _ = calibrated[name]
    cal_scores = det.score_samples(cal)
    assert cal_scores.dtype == np.float64
    np.testing.assert_allclose(np.sort(cal_scores), det.train_scores_, rtol=1e-5, atol=1e-6)
    expected = np.percentile(cal_scores, det.threshold_percentile)
    assert det.threshold_ == pytest.approx(expected, rel=1e-5, abs=1e-6)
    flagged = det.predict(cal).mean()
    assert flagged == pytest.approx(1.0 - det.threshold_percentile / 100.0, abs=0.01)


@pytest.mark.parametrize("name,low,high", [("surprise", 0.05, 0.17), ("windows", 0.015, 0.12),
                                           ("combiner", 0.006, 0.015)])
def test_fresh_data_flags_about_the_calibrated_share(calibrated, name, low, high):
    det, _, fresh = calibrated[name]
    scores = det.score_samples(fresh)
    rate = float((scores > det.threshold_).mean())
    assert low <= rate <= high, (rate, 1.0 - det.threshold_percentile / 100.0)
    np.testing.assert_array_equal(det.predict(fresh), scores > det.threshold_)
    np.testing.assert_allclose(det.decision_function(fresh), scores - det.threshold_)


@pytest.mark.parametrize("name", DETECTORS)
def test_percentile_of_is_monotone_from_0_to_100(calibrated, name):
    det = calibrated[name][0]
    lo, hi = det.train_scores_[0], det.train_scores_[-1]
    grid = np.linspace(lo - 1.0, hi + 1.0, 501)
    p = det.percentile_of(grid)
    assert (np.diff(p) >= 0).all()
    assert p[0] == 0.0 and p[-1] == 100.0
    assert det.percentile_of([hi])[0] == 100.0
    n = det.train_scores_.size
    assert det.percentile_of([det.threshold_])[0] == pytest.approx(det.threshold_percentile, abs=100.0 / n + 1.0)


def test_window_threshold_without_calibration_uses_training_events(window_data):
    d = window_data
    det = EntityWindowDetector(d["encoder"], n_embedding=N_EMB, field_names=d["names"],
                               threshold_percentile=90.0).fit((d["train"], d["v_train"]))
    train_scores = det.score_samples((d["train"], d["v_train"]))
    np.testing.assert_allclose(det.training_scores_, train_scores)
    assert det.threshold_ == pytest.approx(np.percentile(train_scores, 90.0))


@pytest.mark.parametrize("pct", [0.0, -1.0, 100.5])
def test_invalid_threshold_percentile_raises(window_data, pct):
    d = window_data
    with pytest.raises(ValueError, match="threshold_percentile"):
        EntityWindowDetector(d["encoder"], n_embedding=N_EMB, field_names=d["names"],
                             threshold_percentile=pct).fit((d["train"], d["v_train"]))
    with pytest.raises(ValueError, match="threshold_percentile"):
        MaxZCombiner(threshold_percentile=pct).fit(_combiner_scores(100, 0))


# ============================================================================================ 2. window view
BURST_USER, BURST_HOUR = "user07", DAY0 + pd.Timedelta("3D") + pd.Timedelta("10h")


def _with_burst(test: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The test day with user07's events of 10:00-11:00 replaced by 200 events (usually ~2)."""
    rng = np.random.default_rng(5)
    in_hour = (test["time"] >= BURST_HOUR) & (test["time"] < BURST_HOUR + pd.Timedelta("1h"))
    base = test[~((test["user"] == BURST_USER) & in_hour)]
    burst = pd.DataFrame({
        "time": BURST_HOUR + pd.to_timedelta(rng.uniform(0, 3600, 200), unit="s"),
        "user": BURST_USER,
        "action": rng.choice(ACTIONS, 200, p=ACTION_P),
        "latency": rng.lognormal(3.0, 0.3, 200),
    })
    frame = pd.concat([base, burst], ignore_index=True)
    return frame, np.r_[np.zeros(len(base), dtype=bool), np.ones(200, dtype=bool)]


def test_burst_of_one_user_gets_the_top_scores_and_a_rate_explanation(window_data, windows):
    frame, is_burst = _with_burst(window_data["test"])
    vectors = _vectors(window_data["encoder"], frame, 13)
    scores = windows.score_samples((frame, vectors))
    assert scores[is_burst].min() > scores[~is_burst].max()
    np.testing.assert_array_equal(np.sort(np.argsort(-scores, kind="stable")[:200]), np.flatnonzero(is_burst))
    assert windows.predict((frame, vectors))[is_burst].all()
    why = windows.explain((frame, vectors), n_fields=2)
    assert list(why.index) == list(frame.index)
    np.testing.assert_allclose(why["window_score"].to_numpy(), scores)  # the event's score is its window's
    b = why[is_burst]
    assert (b["view"] == "user").all() and (b["entity"] == BURST_USER).all()
    assert (b["statistic"] == "rate").all()
    assert (b["window_events"] == 200).all()
    assert (b["window_start"] == BURST_HOUR).all()
    assert all(f[0] == "user" for f in b["fields"])


def test_latency_shift_of_one_user_is_explained_by_the_latency_field(window_data, windows):
    frame = window_data["test"].copy()
    day = DAY0 + pd.Timedelta("3D")
    shifted = ((frame["user"] == "user13") & (frame["time"] < day + pd.Timedelta("12h"))).to_numpy()
    assert shifted.sum() >= 10  # precondition: several hours of that user's events
    frame.loc[shifted, "latency"] *= 10.0
    vectors = _vectors(window_data["encoder"], frame, 14)
    scores = windows.score_samples((frame, vectors))
    # every shifted event outranks every event of the other users; only user13's own hours after the episode
    # may score as high: the drift statistic's memory fades by (1 - 0.2) per window, so after a tenfold shift
    # it takes about ten hourly windows to fall below the episode's weakest hour
    others = (~shifted) & (frame["user"] != "user13").to_numpy()
    assert scores[shifted].min() > scores[others].max()
    after = (~shifted) & (scores > scores[shifted].min())
    assert (frame["user"][after] == "user13").all()
    assert (frame["time"][after] < day + pd.Timedelta("24h")).all()
    why = windows.explain((frame, vectors), n_fields=2)
    s = why[shifted]
    assert (s["view"] == "user").all() and (s["entity"] == "user13").all()
    assert s["statistic"].isin(["field_shift", "drift"]).all()
    assert all(f == ["user", "latency"] for f in s["fields"])
    # no field: the entity column alone
    assert all(f == ["user"] for f in windows.explain((frame, vectors), n_fields=0)[shifted]["fields"])


def test_events_without_entity_or_time_score_zero_and_do_not_move_the_others(window_data, windows):
    test = window_data["test"]
    extra = pd.DataFrame({
        "time": pd.Series([test["time"].iloc[0], pd.NaT, pd.NaT], dtype=test["time"].dtype),
        "user": pd.Series([None, "user03", None], dtype=object),
        "action": ["read", "write", "list"],
        "latency": [20.0, 21.0, 19.0],
    })
    frame = pd.concat([test, extra], ignore_index=True)
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    vectors = np.vstack([window_data["v_test"], np.random.default_rng(15).normal(size=(3, N_EMB + 5))])
    scores = windows.score_samples((frame, vectors))
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores[-3:], 0.0)
    np.testing.assert_allclose(scores[:-3], windows.score_samples((test, window_data["v_test"])))
    per_view, _ = windows.view_scores((frame, vectors))
    assert np.isneginf(per_view[-3:]).all() and np.isfinite(per_view[:-3]).all()
    why = windows.explain((frame, vectors)).iloc[-3:]
    assert why["view"].isna().all() and (why["window_events"] == 0).all()
    assert (why["window_score"] == 0.0).all() and all(f == [] for f in why["fields"])


def test_unseen_user_is_scored_against_the_population(window_data, windows):
    frame = window_data["test"].copy()
    frame.loc[frame["user"] == "user21", "user"] = "newcomer"
    scores = windows.score_samples((frame, window_data["v_test"]))
    assert np.isfinite(scores).all()
    why = windows.explain((frame, window_data["v_test"]))
    assert set(why.loc[frame["user"] == "newcomer", "entity"]) == {"newcomer"}


def test_window_input_errors(window_data, windows):
    test, v = window_data["test"], window_data["v_test"]
    with pytest.raises(ValueError, match="'time'"):
        windows.score_samples((test.drop(columns="time"), v))
    with pytest.raises(ValueError, match="n_events"):
        windows.score_samples((test, v[:-1]))
    with pytest.raises(ValueError, match="dimensions"):
        windows.score_samples((test, v[:, :-1]))
    with pytest.raises(TypeError, match="tuple"):
        windows.score_samples([test, v])
    with pytest.raises(TypeError, match="DataFrame"):
        windows.score_samples((test.to_numpy(), v))
    d = window_data
    with pytest.raises(ValueError, match="n_events"):
        EntityWindowDetector(d["encoder"], n_embedding=N_EMB, field_names=d["names"]).fit(
            (d["train"], d["v_train"][:-5]))
    with pytest.raises(ValueError, match="field_names"):  # vectors wider than the embedding + named fields
        EntityWindowDetector(d["encoder"], n_embedding=N_EMB, field_names=d["names"][:1]).fit(
            (d["train"], d["v_train"]))
    with pytest.raises(ValueError, match="'time'"):
        EntityWindowDetector(d["encoder"], n_embedding=N_EMB, field_names=d["names"]).fit(
            (d["train"].drop(columns="time"), d["v_train"]))
    with pytest.raises(NotFittedError):
        EntityWindowDetector(d["encoder"], n_embedding=N_EMB, field_names=d["names"]).score_samples((test, v))


def test_windows_assigned_ahead_of_the_vectors_score_the_same(window_data, windows):
    test, v = window_data["test"], window_data["v_test"]
    at_once, _ = windows.view_scores((test, v))
    assigned = windows.assign(test)  # values and times only: what runs while the vectors are computed
    ahead, _ = windows.view_scores((test, v), assigned=assigned)
    np.testing.assert_array_equal(ahead, at_once)
    with pytest.raises(ValueError, match="other events"):
        windows.view_scores((test.head(50), v[:50]), assigned=assigned)
    with pytest.raises(ValueError, match="views"):
        windows.view_scores((test, v), assigned=assigned[:-1])


def test_window_detector_needs_a_timestamp_column(window_data):
    train = window_data["train"].drop(columns="time")
    encoder = FeatureEncoder(n_jobs=1).fit(train)
    feats = encoder.transform(train)
    vectors = np.hstack([np.zeros((len(train), N_EMB)), feats.numeric])
    with pytest.raises(ValueError, match="timestamp"):
        EntityWindowDetector(encoder, n_embedding=N_EMB, field_names=feats.numeric_names).fit((train, vectors))


# ============================================================================================ 3. event view
def _corrupt(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Each row's ``column`` replaced by a value inconsistent with the rest of the row."""
    out = frame.copy()
    k = pd.Index(SERVICES).get_indexer(out["service"])
    if column == "service":
        out["service"] = SERVICES[(k + 1) % 6]
    elif column == "method":
        out["method"] = METHODS[(k + 1) % 3]
    elif column == "bytes":
        out["bytes"] = 100.0 * ((k + 3) % 6 + 1)
    return out


@pytest.mark.parametrize("column", ["service", "method", "bytes"])
def test_field_surprise_explanation_names_the_corrupted_column(surprise_data, column):
    det, enc = surprise_data["detector"], surprise_data["encoder"]
    clean = _service_events(300, 7)
    corrupted_rows = np.arange(0, 300, 2)  # every other row corrupted
    frame = clean.copy()
    frame.iloc[corrupted_rows] = _corrupt(clean.iloc[corrupted_rows], column)
    feats = enc.transform(frame)
    z = det.column_z(feats)
    top3 = det.explain(feats, n_top=3)
    assert top3 == det.explain(feats, n_top=3, z=z)
    bad = [top3[i] for i in corrupted_rows]
    hits = np.mean([column in t for t in bad])
    assert hits >= 0.8, hits
    assert np.mean([t[0] == column for t in bad]) >= 0.6  # an untrained model: 0.48, 0.0, 0.0
    reported = explanation_hits(bad, [[column]] * len(bad), k=3)
    assert reported.dtype == bool and reported.mean() == pytest.approx(hits)
    # corrupted rows outrank clean rows
    scores = det.score_samples(feats)
    clean_rows = np.setdiff1d(np.arange(300), corrupted_rows)
    assert np.median(scores[corrupted_rows]) > np.percentile(scores[clean_rows], 90)


def test_field_surprise_score_is_the_mean_of_the_top_z(surprise_data):
    det, enc = surprise_data["detector"], surprise_data["encoder"]
    feats = enc.transform(_service_events(50, 8))
    assert det.columns_ == ["bytes", "noise", "method", "region", "service", "status"]
    raw = det.column_surprise(feats)
    assert raw.shape == (50, 6)
    z = det.column_z(feats)
    np.testing.assert_allclose(z, (raw - det.median_) / det.scale_)
    np.testing.assert_allclose(det.score_samples(feats), np.sort(z, axis=1)[:, -3:].mean(axis=1))
    # scales from the calibration sample, floored at min_scale
    sample = surprise_data["train"].take(det.calibration_rows_)
    cal_raw = det.column_surprise(sample)
    np.testing.assert_allclose(det.median_, np.median(cal_raw, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(det.scale_, np.maximum(np.quantile(cal_raw, 0.99, axis=0) - det.median_, 0.25),
                               rtol=1e-5, atol=1e-6)
    rows = det.calibration_rows_
    assert len(rows) == 1500 and (np.diff(rows) > 0).all() and rows[-1] < 4000
    one = det.explain(feats, n_top=1)
    assert all(len(e) == 1 for e in one)
    assert [e[0] for e in one] == [det.columns_[j] for j in np.argmax(z, axis=1)]
    assert all(len(e) == 6 for e in det.explain(feats, n_top=99))


def test_field_surprise_errors(surprise_data):
    from dataclasses import replace

    det, feats = surprise_data["detector"], surprise_data["train"]
    renamed = replace(feats.take(np.arange(5)), numeric_names=["other", "noise"],
                      sources={**feats.sources, "other": "other"})
    with pytest.raises(ValueError, match="columns"):
        det.score_samples(renamed)
    with pytest.raises(ValueError, match="top"):
        FieldSurpriseDetector(surprise_data["model"], top=0).fit(feats)
    with pytest.raises(NotFittedError):
        FieldSurpriseDetector(surprise_data["model"]).score_samples(feats)


# ============================================================================================ 4. evaluation
Y = np.array([0, 0, 0, 0, 1, 1, 0])
S = np.array([0.1, 0.2, 0.3, 0.8, 0.7, 0.9, 0.75])
SCEN = np.array(["", None, "", "", "brute", "leak", ""], dtype=object)


def test_detection_row_known_answer():
    row = detection_row("toy", Y, S, threshold=0.75, scenario=SCEN)
    # AUROC: pairs (pos, neg) = 2 x 5; 0.7 beats 0.1, 0.2, 0.3 (3 of 5), 0.9 beats all 5 -> 8 / 10
    assert row["AUROC"] == pytest.approx(0.8)
    # AP: ranked 0.9 (pos) 0.8 0.75 0.7 (pos) ...: 0.5 * 1 + 0.5 * 2/4
    assert row["AUPRC"] == pytest.approx(0.75)
    # flagged: score > 0.75 strictly -> 0.8 (neg), 0.9 (pos); 0.75 itself is not flagged
    assert row["precision"] == pytest.approx(0.5) and row["recall"] == pytest.approx(0.5)
    assert row["F1"] == pytest.approx(0.5)
    assert row["flagged"] == pytest.approx(2 / 7)
    assert row["recall:brute"] == 0.0 and row["recall:leak"] == 1.0
    assert set(row) == {"detector", "AUROC", "AUPRC", "F1", "precision", "recall", "flagged",
                        "recall:brute", "recall:leak"}
    assert row["detector"] == "toy"
    low = detection_row("low", Y, S, threshold=0.5)
    # flagged: 0.8, 0.7, 0.9, 0.75 -> TP 2, FP 2, FN 0
    assert low["precision"] == pytest.approx(0.5) and low["recall"] == 1.0
    assert low["F1"] == pytest.approx(2 / 3) and low["flagged"] == pytest.approx(4 / 7)
    assert not any(k.startswith("recall:") for k in low)
    none = detection_row("none", Y, S, threshold=10.0)
    assert none["F1"] == 0.0 and none["precision"] == 0.0 and none["flagged"] == 0.0


def test_detection_row_errors():
    with pytest.raises(ValueError, match="both"):
        detection_row("x", np.zeros(5), np.arange(5.0), 1.0)
    with pytest.raises(ValueError, match="both"):
        detection_row("x", np.ones(5), np.arange(5.0), 1.0)
    with pytest.raises(ValueError, match="shape"):
        detection_row("x", Y, S[:-1], 0.5)


def test_scenario_auroc_against_all_normal_events():
    out = scenario_auroc(Y, S, SCEN)
    # normal scores 0.1 0.2 0.3 0.8 0.75: brute (0.7) beats 3 of 5, leak (0.9) all
    assert out == {"brute": pytest.approx(0.6), "leak": pytest.approx(1.0)}


def test_table_indexes_by_detector_and_fills_missing_recalls():
    rows = [detection_row("a", Y, S, 0.75, SCEN), detection_row("b", Y, S, 0.5)]
    frame = table(rows)
    assert list(frame.index) == ["a", "b"]
    assert frame.loc["b", "recall:leak"] == 0.0 and frame.loc["a", "recall:leak"] == 1.0
    assert frame.loc["b", "AUROC"] == pytest.approx(0.8)


def test_explanation_hits_with_k():
    top = [["a", "b", "c"], ["x", "a"], ["y", "z", "w", "a"], []]
    truth = [["c"], ["a"], ["a", "q"], ["a"]]
    np.testing.assert_array_equal(explanation_hits(top, truth), [True, True, False, False])
    np.testing.assert_array_equal(explanation_hits(top, truth, k=1), [False, False, False, False])
    np.testing.assert_array_equal(explanation_hits(top, truth, k=2), [False, True, False, False])
    np.testing.assert_array_equal(explanation_hits(top, truth, k=4), [True, True, True, False])
    assert explanation_hits(top, truth).dtype == bool
    with pytest.raises(ValueError, match="explanations"):
        explanation_hits(top, truth[:-1])


# ============================================================================================ 5. combiner
def test_combiner_known_scale():
    cal = np.column_stack([np.arange(101.0), 10.0 * np.arange(101.0)])
    comb = MaxZCombiner(threshold_percentile=50.0).fit(cal)
    np.testing.assert_allclose(comb.median_, [50.0, 500.0])
    np.testing.assert_allclose(comb.scale_, [49.0, 490.0])  # q99 - median
    z = comb.member_z([[99.0, 0.0], [50.0, 990.0], [0.0, 0.0]])
    np.testing.assert_allclose(z, [[1.0, -500 / 490], [0.0, 1.0], [-50 / 49, -500 / 490]])
    np.testing.assert_allclose(comb.score_samples([[99.0, 0.0], [50.0, 990.0], [0.0, 0.0]]), [1.0, 1.0, -50 / 49])
    # both columns are the same ranks: the combined calibration score is (i - 50) / 49
    assert comb.threshold_ == pytest.approx(0.0)


def test_combiner_huge_member_score_tops_the_ranking_and_names_the_member():
    comb = MaxZCombiner().fit(_combiner_scores(5000, 0))
    scores = _combiner_scores(1000, 2)
    burst_rows, point_rows = [3, 500, 998], [42, 777]
    scores[burst_rows, 1] = 1e6
    scores[point_rows, 0] = 1e3
    combined = comb.score_samples(scores)
    assert set(np.argsort(-combined)[:5]) == set(burst_rows) | set(point_rows)
    z = comb.member_z(scores)
    np.testing.assert_allclose(combined, z.max(axis=1))
    np.testing.assert_array_equal(np.argmax(z[burst_rows], axis=1), 1)
    np.testing.assert_array_equal(np.argmax(z[point_rows], axis=1), 0)
    assert comb.predict(scores)[burst_rows + point_rows].all()


def test_combiner_shape_errors():
    comb = MaxZCombiner()
    with pytest.raises(NotFittedError):
        comb.member_z(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="n >= 2"):
        comb.fit(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="n >= 2"):
        comb.fit(np.zeros(10))
    comb.fit(_combiner_scores(100, 0))
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        comb.score_samples(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        comb.score_samples(np.zeros(4))
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        comb.member_z(np.zeros((4, 1)))


def test_a_burst_inside_the_training_data_still_stands_out_when_the_training_data_is_scored(window_data):
    """Scoring the baseline itself: each training hour is compared with the rest of its entity's history.

    The burst comes from a user seen nowhere else, so with its own hour left out its baseline is the population's;
    (without that, only the shrinkage towards the population would keep its hour from defining its own normal)."""
    d = window_data
    burst_hour = DAY0 + pd.Timedelta("1D") + pd.Timedelta("10h")
    rng = np.random.default_rng(21)
    base = d["train"]
    burst = pd.DataFrame({
        "time": burst_hour + pd.to_timedelta(rng.uniform(0, 3600, 150), unit="s"),
        "user": "intruder",
        "action": rng.choice(ACTIONS, 150, p=ACTION_P),
        "latency": rng.lognormal(3.0, 0.3, 150),
    })
    train = pd.concat([base, burst], ignore_index=True)
    is_burst = np.r_[np.zeros(len(base), dtype=bool), np.ones(150, dtype=bool)]
    v_train = _vectors(d["encoder"], train, 22)
    det = EntityWindowDetector(d["encoder"], n_embedding=N_EMB, field_names=d["names"], window="1h",
                               threshold_percentile=95.0)
    det.fit((train, v_train), calibration=(d["cal"], d["v_cal"]))
    scores = det.score_samples((train, v_train))
    assert scores[is_burst].min() > scores[~is_burst].max()
    assert det.predict((train, v_train))[is_burst].all()
    # the rebuilt detector (JSON + arrays) scores identically, leave-one-out included
    rebuilt = EntityWindowDetector.from_state(d["encoder"], *det.to_state())
    np.testing.assert_array_equal(rebuilt.score_samples((train, v_train)), scores)


def test_explanation_chance_known_answers():
    from obsad.detect.evaluation import explanation_chance

    columns = ["a", "b", "c", "d"]
    got = explanation_chance([["a"], [], ["a", "b"], ["a", "zz"]], columns, k=3)
    np.testing.assert_allclose(got, [0.75, 0.0, 1.0, 0.75])
    np.testing.assert_allclose(explanation_chance([["a"]], columns, k=1), [0.25])
    with pytest.raises(ValueError):
        explanation_chance([["a"]], [], k=3)


# ============================================================================================ credit and activity level
def test_field_shift_is_credited_to_the_events_that_moved_the_window(window_data):
    """For one hour, user13 makes 6 requests of which 3 are ten times slower. With credit the slow events score
    above the ordinary ones of the same window; without credit (``credit_scale=None``) every event gets its
    window's score."""
    d = window_data
    day = DAY0 + pd.Timedelta("3D")
    test = d["test"]
    keep = ~((test["user"] == "user13") & (test["time"] < day + pd.Timedelta("1h"))).to_numpy()
    minutes = np.arange(6) * 10 + 3  # every 10 minutes
    added = pd.DataFrame({
        "time": day + pd.to_timedelta(minutes, unit="min"),
        "user": "user13",
        "action": "read",
        "latency": np.exp(3.0) * np.where(np.arange(len(minutes)) % 2 == 0, 10.0, 1.0),
    })
    frame = pd.concat([test[keep], added], ignore_index=True)
    slow = np.r_[np.zeros(keep.sum(), dtype=bool), np.arange(len(added)) % 2 == 0]
    user13 = np.r_[np.zeros(keep.sum(), dtype=bool), np.ones(len(added), dtype=bool)]
    vectors = _vectors(d["encoder"], frame, 15)
    scores, dets = {}, {}
    for credit in (1.0, None):
        dets[credit] = EntityWindowDetector(d["encoder"], n_embedding=N_EMB, field_names=d["names"], window="1h",
                                            credit_scale=credit)
        dets[credit].fit((d["train"], d["v_train"]), calibration=(d["cal"], d["v_cal"]))
        scores[credit] = dets[credit].score_samples((frame, vectors))
    normal_half = user13 & ~slow
    assert scores[1.0][slow].min() > scores[1.0][normal_half].max()
    assert scores[1.0][slow].min() >= np.quantile(scores[1.0][~user13], 0.99)
    # without credit the windows decide alone: the two halves of each window score the same
    why = dets[None].explain((frame, vectors))
    assert (why.loc[user13, "window_events"] == 6).all()
    per_window = pd.Series(scores[None][user13]).groupby(why.loc[user13, "window_start"].to_numpy()).nunique()
    assert len(per_window) == 1 and (per_window == 1).all()


def test_a_one_off_spike_does_not_echo_through_the_drift_of_the_following_hours(window_data, windows):
    """Two hours of user13 are ten times slower, then it is back to normal: the following hours must not stay
    alarmed through the drift statistic's memory (without credit they did: about 40 % of them flagged)."""
    frame = window_data["test"].copy()
    day = DAY0 + pd.Timedelta("3D")
    spike = ((frame["user"] == "user13") & (frame["time"] >= day + pd.Timedelta("3h"))
             & (frame["time"] < day + pd.Timedelta("5h"))).to_numpy()
    assert spike.sum() >= 2
    frame.loc[spike, "latency"] *= 10.0
    vectors = _vectors(window_data["encoder"], frame, 16)
    scores = windows.score_samples((frame, vectors))
    after = ((frame["user"] == "user13") & (frame["time"] >= day + pd.Timedelta("5h"))).to_numpy()
    others = (frame["user"] != "user13").to_numpy()
    assert scores[spike].min() > np.quantile(scores[others], 0.99)
    assert scores[after].max() < np.quantile(scores[others], 0.99)
    assert not windows.predict((frame, vectors))[after].any()


def test_a_busier_hour_for_everyone_is_not_a_rate_anomaly(window_data, windows):
    """Every user has three times the usual events in one hour (a busy Monday morning): the entities' shares
    of the traffic did not change, so the rate statistic does not flag them; one user tripling alone is flagged."""
    d = window_data
    test = d["test"]
    hour = DAY0 + pd.Timedelta("3D") + pd.Timedelta("10h")
    in_hour = ((test["time"] >= hour) & (test["time"] < hour + pd.Timedelta("1h"))).to_numpy()
    extra = [test[in_hour].assign(time=test["time"][in_hour] + pd.Timedelta(seconds=s)) for s in (1, 2)]
    busy = pd.concat([test, *extra], ignore_index=True).sort_values("time", kind="stable").reset_index(drop=True)
    vectors = _vectors(d["encoder"], busy, 17)
    why = windows.explain((busy, vectors))
    flagged = windows.predict((busy, vectors))
    hour_rows = ((busy["time"] >= hour) & (busy["time"] < hour + pd.Timedelta("1h"))).to_numpy()
    assert hour_rows.sum() == 3 * in_hour.sum()
    assert not (flagged[hour_rows] & (why["statistic"][hour_rows] == "rate").to_numpy()).any()
    # the same hour tripled for one user only: that user's window is a rate anomaly
    mine = in_hour & (test["user"] == "user21").to_numpy()
    assert mine.sum() >= 1
    one = pd.concat([test, *[test[mine].assign(time=test["time"][mine] + pd.Timedelta(seconds=s))
                             for s in range(1, 6)]], ignore_index=True)
    one_scores = windows.score_samples((one, _vectors(d["encoder"], one, 18)))
    is_user21_hour = ((one["user"] == "user21") & (one["time"] >= hour)
                      & (one["time"] < hour + pd.Timedelta("1h"))).to_numpy()
    assert one_scores[is_user21_hour].min() > np.quantile(one_scores[~is_user21_hour], 0.99)


def test_a_few_ordinary_events_scored_alone_are_not_a_rate_anomaly(window_data, windows):
    """A file of five ordinary events: each is alone in its hour, i.e. all of that hour's traffic. Compared with
    a typical hour rather than with its own tiny batch, none of them is a rate anomaly."""
    test = window_data["test"]
    few = test.iloc[[10, 300, 700, 1200, 1700]].reset_index(drop=True)
    vectors = window_data["v_test"][[10, 300, 700, 1200, 1700]]
    why = windows.explain((few, vectors))
    assert not windows.predict((few, vectors)).any()
    assert (why["window_events"] == 1).all()
    assert (why["window_score"] < 1.0).all()


# ============================================================================================ coarser views, drift credit
def test_coarser_views_known_answers():
    from obsad.detect.windows import coarser_views

    rows = np.arange(8)
    fine = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    team = fine // 2  # each fine entity within one team
    other = np.array([0, 1, 0, 1, 0, 1, 0, 1])  # not nested in team: both kept
    assert coarser_views([(rows, fine), (rows, team)]) == {1}
    assert coarser_views([(rows, team), (rows, fine)]) == {0}
    assert coarser_views([(rows, team), (rows, team + 10)]) == {1}  # identical groupings: the later one
    assert coarser_views([(rows, team), (rows, other)]) == set()
    assert coarser_views([(rows, fine), (rows[:6], team[:6])]) == set()  # other events: not the same grouping
    shared = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    two_ways = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    assert coarser_views([(rows, shared), (rows, two_ways)]) == set()


def test_a_view_that_only_coarsens_another_is_dropped(window_data):
    """A team column (each user in one of 5 teams) groups the same events as the users, more coarsely: dropped,
    unless asked to keep it; a column not nested in the users is kept."""
    d = window_data
    team_of = {u: f"team{i % 5}" for i, u in enumerate(USERS)}
    frames = {}
    for name in ("train", "cal"):
        f = d[name].copy()
        f["team"] = f["user"].map(team_of)
        f["site"] = np.random.default_rng(3).choice([f"site{i}" for i in range(6)], len(f))
        frames[name] = f
    encoder = FeatureEncoder(n_jobs=1).fit(frames["train"])
    names = encoder.transform(frames["train"].head(10)).numeric_names
    v_train = _vectors(encoder, frames["train"], 10)
    kept = {}
    for keep in (False, True):
        det = EntityWindowDetector(encoder, n_embedding=N_EMB, field_names=names, window="1h",
                                   keep_coarser_views=keep).fit((frames["train"], v_train))
        kept[keep] = [v.column for v in det.views_]
        if not keep:
            assert det.dropped_views_ == ["team"]
            state, arrays = det.to_state()
            assert EntityWindowDetector.from_state(encoder, state, arrays).dropped_views_ == ["team"]
    assert "team" not in kept[False] and {"user", "site"} <= set(kept[False])
    assert "team" in kept[True]


def test_a_drift_mixed_into_a_window_stays_mostly_on_the_events_that_carry_it(window_data):
    """For twelve hours one event an hour of user13 comes from a new source three times slower, the others are as
    usual. The window's latency drifts; the slow events keep all of it, the usual ones about half (an event at
    its entity's mean keeps half of the drift, one a standard deviation into it all)."""
    d = window_data
    frame = d["test"].copy()
    day = DAY0 + pd.Timedelta("3D")
    rng = np.random.default_rng(5)
    mixed_in = ((frame["user"] == "user13") & (frame["time"] < day + pd.Timedelta("12h"))).to_numpy()
    added = pd.DataFrame({"time": day + pd.to_timedelta(np.arange(12) * 3600 + 1800, unit="s"), "user": "user13",
                          "action": "read", "latency": rng.lognormal(3.0 + np.log(3.0), 0.3, 12)})
    frame = pd.concat([frame, added], ignore_index=True)
    slow = np.r_[np.zeros(len(frame) - len(added), dtype=bool), np.ones(len(added), dtype=bool)]
    usual = np.r_[mixed_in, np.zeros(len(added), dtype=bool)]
    vectors = _vectors(d["encoder"], frame, 17)
    det = EntityWindowDetector(d["encoder"], n_embedding=N_EMB, field_names=d["names"], window="1h")
    det.fit((d["train"], d["v_train"]), calibration=(d["cal"], d["v_cal"]))
    _, windows = det.view_scores((frame, vectors))
    w = windows[[v.column for v in det.views_].index("user")]
    credit = pd.Series(w.drift_credit, index=w.rows)
    drift = pd.Series(w.stats[w.window_of_row, 3], index=w.rows)
    assert drift[np.flatnonzero(slow)].min() > 0  # the window drifts
    assert np.median(credit[np.flatnonzero(slow)]) > 0.9
    # the usual events keep part of it (half at their entity's mean; 27 events, so not exactly half)
    assert 0.1 < np.median(credit[np.flatnonzero(usual)]) < 0.7
    assert (credit[np.flatnonzero(usual)] < 1.0).mean() > 0.9


def test_a_field_that_stops_being_sent_is_not_an_alarm_for_every_entity(window_data):
    """In training the latency is missing now and then; on the test day the producer stops sending it. Every
    user's window then has no latency at all. With the missing-value indicators among the window statistics
    (``fill_rate_fields=True``, the old behaviour) most events are flagged; without them (the default) the day
    stays near the calibrated rate: a schema change is the drift monitor's business."""
    d = window_data
    rng = np.random.default_rng(7)
    frames = {}
    for name in ("train", "cal", "test"):
        f = d[name].copy()
        f.loc[rng.random(len(f)) < 0.05, "latency"] = np.nan
        frames[name] = f
    frames["test"]["latency"] = np.nan
    encoder = FeatureEncoder(n_jobs=1).fit(frames["train"])
    names = encoder.transform(frames["train"].head(10)).numeric_names
    assert "latency.missing" in names
    vectors = {name: _vectors(encoder, f, 20 + i) for i, (name, f) in enumerate(frames.items())}
    flagged = {}
    for with_fill_rates in (True, False):
        det = EntityWindowDetector(encoder, n_embedding=N_EMB, field_names=names, window="1h",
                                   fill_rate_fields=with_fill_rates)
        det.fit((frames["train"], vectors["train"]), calibration=(frames["cal"], vectors["cal"]))
        flagged[with_fill_rates] = det.predict((frames["test"], vectors["test"])).mean()
        assert ("latency.missing" in det.fields_) == with_fill_rates
    assert flagged[True] > 0.5
    assert flagged[False] < 0.05
