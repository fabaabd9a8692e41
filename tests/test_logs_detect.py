"""Session rules and count vectors of the log pipeline (obsad.logs.detect)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from obsad.detect import IsolationForestDetector
from obsad.logs.detect import SessionRule, template_counts


def test_template_counts_known_answer_with_an_unseen_column():
    counts = template_counts([[0, 0, 2], [], [1, -1, -1, 2]], n_templates=3, log=False)
    np.testing.assert_array_equal(counts, [[2, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 2]])
    np.testing.assert_allclose(template_counts([[0, 0, 2]], 3), np.log1p([[2, 0, 1, 0]]), rtol=1e-6)
    assert template_counts([[], []], 2).shape == (2, 3)
    with pytest.raises(ValueError, match="template ids"):
        template_counts([[0, 3]], n_templates=3)


def _scores(n: int, seed: int, unseen: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"mean_nll": rng.gamma(2.0, 0.5, n), "max_nll": rng.gamma(3.0, 1.0, n),
                         "unseen_rate": np.full(n, unseen)})


def test_rule_threshold_is_the_percentile_of_the_normal_sessions_and_flags_about_that_share():
    normal = _scores(4000, 0)
    rule = SessionRule("mean_nll", threshold_percentile=99.0).fit(normal)
    assert rule.threshold_ == pytest.approx(np.percentile(normal["mean_nll"], 99.0))
    fresh = rule.predict(_scores(20000, 1))
    assert 0.006 < fresh.mean() < 0.014
    pct = rule.percentile_of(normal)
    assert pct.min() >= 0 and pct.max() == 100.0


def test_unseen_template_rule_fires_above_its_limit_whatever_the_score():
    rule = SessionRule("mean_nll").fit(_scores(1000, 0))
    quiet = pd.DataFrame({"mean_nll": [0.0, 0.0, 0.0], "unseen_rate": [0.0, 0.05, 0.051]})
    np.testing.assert_array_equal(rule.predict(quiet), [False, False, True])
    rule_off = SessionRule("mean_nll", unseen_rate_limit=None).fit(_scores(1000, 0))
    assert not rule_off.predict(quiet).any()


def test_rule_errors_and_state_round_trip():
    with pytest.raises(ValueError, match="no 'perplexity' column"):
        SessionRule("perplexity").fit(_scores(10, 0))
    with pytest.raises(ValueError, match="threshold_percentile"):
        SessionRule(threshold_percentile=0).fit(_scores(10, 0))
    with pytest.raises(TypeError):
        SessionRule().fit(np.zeros(3))
    rule = SessionRule("max_nll", 95.0, 0.1).fit(_scores(500, 2))
    again = SessionRule.from_state(json.loads(json.dumps(rule.to_state())))
    test = _scores(300, 3, unseen=0.2)
    np.testing.assert_array_equal(again.predict(test), rule.predict(test))
    assert again.threshold_ == rule.threshold_


def test_detectors_recalibrate_on_a_later_normal_period():
    rng = np.random.default_rng(0)
    train, later = rng.normal(size=(2000, 4)), rng.normal(size=(1000, 4))
    det = IsolationForestDetector(seed=0).fit(train)
    det.calibrate(later)
    assert det.threshold_ == pytest.approx(np.percentile(det.score_samples(later), 99.5))
    assert det.predict(later).mean() == pytest.approx(0.005, abs=0.002)
