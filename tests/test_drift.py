"""Drift detection (obsad.monitor): false-alarm rate and power of the embedding tests, per-field tests and their
multiple-testing correction, the retired KS-fraction rule, and the `obsad drift` verb (through its own parser)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from obsad.monitor import (
    DriftDetector,
    adjust_p_values,
    classifier_test,
    field_tests,
    inject_drift,
    ks_fraction_rule,
    mmd_test,
    power_curve,
)

# ------------------------------------------------------------------------------------------------ synthetic data
MIX = np.random.default_rng(123).normal(size=(4, 16))  # 4 latent factors seen through 16 correlated dimensions


def correlated(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    f = rng.normal(size=(n, 4))
    f[:, 0] += shift
    return f @ MIX + 0.5 * rng.normal(size=(n, 16))


def rate(alarms) -> float:
    return float(np.mean(alarms))


# ------------------------------------------------------------------------------------------------ fitted package
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A cheap package fitted on a random half of one simulation; the other half is split at random into a
    held-out reference and a pool of current events: a random split of the same events, so truly exchangeable.
    (The package's own training sample is not quite: the encoder learnt its vocabularies from those events.)"""
    import torch

    from obsad.ocsf import load_events, simulate
    from obsad.pipeline import fit_pipeline

    sim = simulate(n_events=8000, days=2, seed=21)
    normal = sim.events[~sim.events["metadata.uid"].isin(set(sim.labels["event_uid"]))]
    events, _ = load_events(normal)
    part = np.random.default_rng(0).integers(0, 4, len(events))  # 2 quarters to fit, 1 held out, 1 current
    fit_events = events[part < 2].reset_index(drop=True)
    held, pool = events[part == 2].reset_index(drop=True), events[part == 3].reset_index(drop=True)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pipeline = fit_pipeline(fit_events, epochs=1, seed=0, progress=False, window=None)
        path = pipeline.save(tmp_path_factory.mktemp("drift") / "model")
        embed = lambda frame: pipeline.embed(pipeline.encoder.transform(frame))  # noqa: E731
        z_held, z_pool = embed(held), embed(pool)
    finally:
        torch.set_num_threads(before)
    return {"pipeline": pipeline, "path": path, "embed": embed, "held": held, "z_held": z_held, "pool": pool,
            "z_pool": z_pool, "z_train": pipeline.arrays["reference_embeddings"], "train": pipeline.reference}


# ------------------------------------------------------------------------------------------------ p-value adjustment
def _bh_direct(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg as the textbook writes it: q_(i) = min_{j >= i} p_(j) m / j, capped at 1."""
    m = len(p)
    order = np.argsort(p)
    out = np.empty(m)
    for rank, i in enumerate(order, start=1):
        out[i] = min(1.0, min(p[order[j - 1]] * m / j for j in range(rank, m + 1)))
    return out


def test_benjamini_hochberg_and_bonferroni_give_the_known_values():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjust_p_values(p, "bh"), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(adjust_p_values(p, "bonferroni"), [0.04, 0.16, 0.12, 0.02])
    rng = np.random.default_rng(4)
    for size in (1, 2, 7, 50):
        q = np.r_[rng.uniform(size=size) ** 3, 0.5][:size]
        np.testing.assert_allclose(adjust_p_values(q, "bh"), _bh_direct(q), rtol=1e-12)
        np.testing.assert_allclose(adjust_p_values(q, "bh"), stats.false_discovery_control(q), rtol=1e-12)
    with_nan = adjust_p_values([0.01, np.nan, 0.02], "bonferroni")  # no test: not counted
    assert np.isnan(with_nan[1]) and np.allclose(with_nan[[0, 2]], [0.02, 0.04])
    with pytest.raises(ValueError, match="correction"):
        adjust_p_values(p, "holm")


# ------------------------------------------------------------------------------------------------ MMD / classifier
def test_mmd_false_alarm_rate_on_1000_synthetic_no_drift_windows_is_alpha():
    """1,000 no-drift windows, each against a reference sample of its own (the permutation test's guarantee is over
    both samples): the rate of p <= 0.05 is within 3 standard errors of 5 % (0.0069 at 1,000 windows) and the
    p-values are uniform on their grid; MMD^2_u is centred at 0."""
    rng = np.random.default_rng(1)
    results = []
    for i in range(1000):
        detector = DriftDetector(max_samples=100, max_reference=200, n_permutations=99, seed=i)
        results.append(detector.fit(correlated(rng, 200)).test(correlated(rng, 100)))
    false_alarms = rate([r.drift for r in results])
    assert 0.03 <= false_alarms <= 0.07, false_alarms
    p = np.array([r.p_value for r in results])
    assert np.all((p > 0) & (p <= 1)) and np.allclose(p * 100, np.round(p * 100))  # (1 + k) / (1 + 99)
    assert stats.chisquare(np.histogram(p, bins=10, range=(0, 1))[0]).pvalue > 0.001
    assert abs(np.median([r.statistic for r in results])) < 0.2 * np.std([r.statistic for r in results])


def test_classifier_test_false_alarm_rate_and_power():
    rng = np.random.default_rng(2)
    alarms = [classifier_test(correlated(rng, 300), correlated(rng, 100), seed=i)[1] <= 0.05 for i in range(200)]
    assert 0.01 <= rate(alarms) <= 0.08, rate(alarms)
    shifted = [classifier_test(correlated(rng, 300), correlated(rng, 100, shift=0.8), seed=i)[1] <= 0.05
               for i in range(20)]
    assert rate(shifted) >= 0.9


def test_mmd_power_on_a_clear_shift():
    """One latent factor (of four) moved by 0.5 sd, windows of 300: found at least 9 times in 10."""
    rng = np.random.default_rng(3)
    detector = DriftDetector(max_samples=300, n_permutations=100).fit(correlated(rng, 1200))
    alarms = [detector.test(correlated(rng, 300, shift=0.5), seed=i).drift for i in range(50)]
    assert rate(alarms) >= 0.9


def test_mmd_permutation_p_value_is_exact_and_deterministic():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(60, 3)), rng.normal(size=(40, 3))
    stat, p, bandwidth = mmd_test(x, y, n_permutations=199, seed=7)
    assert (stat, p, bandwidth) == mmd_test(x, y, n_permutations=199, seed=7)
    assert round(p * 200) == pytest.approx(p * 200)  # (1 + #{perm >= observed}) / (1 + n_permutations)
    # the unbiased estimator, directly (whitening off: a plain Gaussian kernel of the given bandwidth)
    direct = mmd_test(x, y, n_permutations=9, bandwidth=1.3, whiten=False)[0]
    k = lambda a, b: np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * 1.3 ** 2))  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    expected = ((kxx.sum() - m) / (m * (m - 1)) + (kyy.sum() - n) / (n * (n - 1)) - 2 * kxy.mean())
    assert direct == pytest.approx(expected, rel=1e-4, abs=1e-7)
    same = np.ones((30, 4))
    assert mmd_test(same, same.copy(), n_permutations=19)[1] == 1.0  # identical samples: no evidence


# ------------------------------------------------------------------------------------------------ the old rule
def test_ks_fraction_rule_alarms_more_than_alpha_and_more_as_windows_grow():
    """Correlated dimensions tested without correction: more than 5 % false alarms with no drift at all, and under
    a negligible shift (0.05 sd of one latent factor) the alarm rate climbs with the window while the MMD test,
    whose sample size is fixed, stays at alpha."""
    rng = np.random.default_rng(6)
    exact = [ks_fraction_rule(correlated(rng, 2000), correlated(rng, 500)).drift for _ in range(500)]
    assert stats.binomtest(int(np.sum(exact)), len(exact), 0.05, alternative="greater").pvalue < 0.01, rate(exact)
    ref = correlated(rng, 5000)
    small = rate([ks_fraction_rule(ref, correlated(rng, 100, 0.05)).drift for _ in range(60)])
    large = rate([ks_fraction_rule(ref, correlated(rng, 5000, 0.05)).drift for _ in range(60)])
    assert large > small + 0.2 and large > 0.3, (small, large)
    detector = DriftDetector(max_samples=100, max_reference=1000, n_permutations=100).fit(ref)
    capped = rate([detector.test(correlated(rng, 5000, 0.05), seed=i).drift for i in range(60)])
    assert capped <= 0.12, capped
    with pytest.raises(ValueError, match="dimensions"):
        ks_fraction_rule(ref, ref[:, :3])


# ------------------------------------------------------------------------------------------------ real features
def test_false_alarm_rate_on_simulator_embeddings_and_power_on_injected_drift(world):
    """Simulator events through a fitted model: 200 no-drift windows of 100 events against one held-out reference
    (the production set-up: one reference, many windows) stay within the bound, and so do they against the sample
    the package holds out for drift tests (its default reference); a numeric field moved by half a
    standard deviation, and a new value in 20 % of the events, are found in 9 windows of 10."""
    detector = DriftDetector(max_samples=100, max_reference=1000, n_permutations=100, seed=0).fit(world["z_held"])
    pool, embed = world["pool"], world["embed"]
    rng = np.random.default_rng(8)
    quiet = power_curve(detector, {"no drift": world["z_pool"]}, [100], n_windows=200, seed=0)
    assert list(quiet.columns) == ["drift", "window_size", "n_windows", "alarms", "rate", "ci_low", "ci_high",
                                   "method", "alpha"]
    assert 0.01 <= quiet["rate"].iloc[0] <= 0.08, quiet
    # the package's default reference: the events fit_pipeline held out of the fitting
    _, z_kept, held_out = world["pipeline"].drift_reference()
    assert held_out and len(z_kept) == len(world["pipeline"].arrays["drift_reference_rows"]) >= 300
    kept = DriftDetector(max_samples=100, n_permutations=100, seed=0).fit(z_kept)
    assert power_curve(kept, {"no drift": world["z_pool"]}, [100], n_windows=200, seed=0)["rate"].iloc[0] <= 0.08
    shifted = embed(inject_drift(pool, "numeric_shift", field="duration", magnitude=0.5, rng=rng))
    new_value = embed(inject_drift(pool, "new_value", field="metadata.version", value="1.4.0", share=0.2, rng=rng))
    assert power_curve(detector, {"duration +0.5 sd": shifted}, [100], n_windows=40)["rate"].iloc[0] >= 0.9
    detector = DriftDetector(max_samples=400, n_permutations=100, seed=0).fit(world["z_held"])
    assert power_curve(detector, {"new version": new_value}, [400], n_windows=40)["rate"].iloc[0] >= 0.9


def test_field_tests_name_the_moved_field_first_with_its_shift(world):
    from obsad.monitor.fields import field_kinds_from_encoder

    kinds = field_kinds_from_encoder(world["pipeline"].encoder)
    reference, pool = world["train"], world["pool"]
    window = pool.sample(1000, random_state=1)
    rng = np.random.default_rng(9)
    raw = pd.to_numeric(reference["duration"], errors="coerce")
    moved = inject_drift(window, "numeric_shift", field="duration", magnitude=0.5, scale=raw.std(), rng=rng)
    table = field_tests(reference, moved, kinds)
    first = table.iloc[0]
    assert first["field"] == "duration" and first["kind"] == "numeric" and first["p_value_adjusted"] < 1e-6
    assert first["shift"] == pytest.approx(0.5 * raw.std(), rel=0.25)  # Wasserstein on the original scale
    assert list(table.columns) == ["field", "kind", "p_value", "p_value_adjusted", "shift", "effect",
                                   "missing_reference", "missing_current", "detail"]

    new = field_tests(reference, inject_drift(window, "new_value", field="severity", value="Fatal", share=0.2,
                                              rng=rng), kinds)
    assert new.iloc[0]["field"] == "severity" and new.iloc[0]["kind"] == "categorical"
    assert new.iloc[0]["shift"] == pytest.approx(0.2, abs=0.05) and "'Fatal'" in new.iloc[0]["detail"]
    gone = field_tests(reference, inject_drift(window, "missing", field="user.name", share=1.0, rng=rng), kinds)
    assert gone.iloc[0]["field"] == "user.name" and gone.iloc[0]["missing_current"] == 1.0

    quiet = field_tests(reference, window, kinds, correction="bonferroni")
    assert (quiet["p_value_adjusted"] > 0.05).all(), quiet.head()
    assert quiet["p_value"].between(0, 1).all() and not quiet["field"].duplicated().any()


def test_detector_results_are_deterministic_and_carry_the_fields(world):
    from obsad.monitor.fields import field_kinds_from_encoder

    kinds = field_kinds_from_encoder(world["pipeline"].encoder)
    detector = DriftDetector(max_samples=300, n_permutations=200, seed=3, field_kinds=kinds)
    detector.fit(world["z_train"], world["train"])
    window = world["pool"].iloc[:600]
    a = detector.test(world["z_pool"][:600], window).to_dict()
    b = detector.test(world["z_pool"][:600], window).to_dict()
    assert a == b and json.loads(json.dumps(a)) == a
    assert set(a) >= {"drift", "p_value", "statistic", "method", "window_size", "fields"}
    assert a["window_size"] == 600 and a["details"]["n_current_used"] == 300
    assert {"field", "p_value", "p_value_adjusted", "shift", "kind"} <= set(a["fields"][0])
    with pytest.raises(ValueError, match="dimensions"):
        detector.test(world["z_pool"][:50, :10])
    with pytest.raises(ValueError, match="method"):
        DriftDetector(method="ks").fit(world["z_train"])


# ------------------------------------------------------------------------------------------------ obsad drift
def run_drift(argv: list[str]) -> int:
    """`obsad drift` through `obsad`'s own entry point (its parser and its mapping of errors to exit code 2)."""
    from obsad.cli import main

    return main(argv)


def test_cmd_drift_writes_the_report_and_exits_0_with_or_without_drift(world, tmp_path, capsys):
    pool = world["pool"]
    quiet, moved, held = tmp_path / "quiet.parquet", tmp_path / "moved.parquet", tmp_path / "held.parquet"
    # a random sample of the pool: its first 1,500 rows would be its earliest hours, a drift in time of day
    window = pool.iloc[np.sort(np.random.default_rng(5).choice(len(pool), 1500, replace=False))]
    window.to_parquet(quiet)
    world["held"].to_parquet(held)
    inject_drift(window, "new_value", field="metadata.version", value="1.4.0", share=0.3,
                 rng=np.random.default_rng(0)).to_parquet(moved)
    reports = {}
    runs = (("quiet", quiet, ["--reference", str(held)]), ("quiet, package sample", quiet, []), ("moved", moved, []))
    for name, events, reference in runs:
        out = tmp_path / f"{name}.json"
        code = run_drift(["drift", "--model", str(world["path"]), "--events", str(events), "--out", str(out),
                          "--max-samples", "300", "--permutations", "200", *reference])
        assert code == 0
        reports[name] = json.loads(out.read_text())
        assert f"wrote {out}" in capsys.readouterr().out
    for report in reports.values():
        assert {"drift", "p_value", "statistic", "method", "window_size", "fields"} <= set(report)
        assert report["method"] == "mmd" and report["window_size"] == 1500
        assert all({"field", "p_value", "p_value_adjusted", "shift", "kind"} <= set(f) for f in report["fields"])
    assert reports["quiet"]["drift"] is False and reports["quiet"]["p_value"] > 0.05
    assert reports["quiet, package sample"]["drift"] is False and reports["quiet, package sample"]["p_value"] > 0.05
    assert reports["quiet, package sample"]["reference"] == "package's held-out sample"
    assert reports["moved"]["drift"] is True and reports["moved"]["p_value"] <= 0.05
    assert reports["moved"]["fields"][0]["field"] == "metadata.version"
    # the same seed, the same bytes
    again = tmp_path / "again.json"
    assert run_drift(["drift", "--model", str(world["path"]), "--events", str(moved), "--out", str(again),
                      "--max-samples", "300", "--permutations", "200"]) == 0
    assert again.read_text() == (tmp_path / "moved.json").read_text()
    # the classifier test
    assert run_drift(["drift", "--model", str(world["path"]), "--events", str(moved), "--reference", str(held),
                      "--method", "classifier", "--max-samples", "300"]) == 0
    assert "drift: YES (classifier" in capsys.readouterr().out


def test_cmd_drift_errors_are_one_line_and_exit_2(world, tmp_path, capsys):
    events = tmp_path / "events.parquet"
    world["pool"].iloc[:200].to_parquet(events)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text("".join(json.dumps({"colour": "blue", "size": i}) + "\n" for i in range(50)))
    tampered = tmp_path / "tampered"
    shutil.copytree(world["path"], tampered)
    blob = bytearray((tampered / "arrays.safetensors").read_bytes())
    blob[-5] ^= 0xFF
    (tampered / "arrays.safetensors").write_bytes(bytes(blob))
    model = str(world["path"])
    cases = {
        "no such file": ["--model", model, "--events", str(tmp_path / "missing.parquet")],
        "no events": ["--model", model, "--events", str(empty)],
        "fields the model reads": ["--model", model, "--events", str(events), "--reference", str(wrong)],
        "not a model package": ["--model", str(tmp_path / "nowhere"), "--events", str(events)],
        "tampered": ["--model", str(tampered), "--events", str(events)],
        ".json": ["--model", model, "--events", str(events), "--out", str(tmp_path / "report.txt")],
    }
    for expected, argv in cases.items():
        assert run_drift(["drift", *argv]) == 2, expected
        err = capsys.readouterr().err
        assert err.startswith("obsad drift: ") and "Traceback" not in err, err
        if expected != "tampered":
            assert expected in err, err
        else:
            assert "arrays.safetensors" in err or "refusing" in err, err
