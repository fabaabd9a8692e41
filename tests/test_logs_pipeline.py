"""The log pipeline end to end: fit on simulated HDFS, score a later file, package safety, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from obsad.logs.formats import read_log_lines
from obsad.logs.pipeline import fit_log_pipeline, load_log_pipeline, parse_log_lines
from obsad.logs.simulate import simulate_hdfs
from obsad.package import PackageError


@pytest.fixture(scope="module")
def hdfs():
    """A training file and a later test file of the same cluster."""
    return (simulate_hdfs(n_blocks=1500, seed=0),
            simulate_hdfs(n_blocks=600, seed=1, start="2008-11-10 20:00:00"))


@pytest.fixture(scope="module")
def fitted(hdfs):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return fit_log_pipeline(list(hdfs[0].lines), "hdfs", labels=hdfs[0].labels, target_steps=300)
    finally:
        torch.set_num_threads(before)


def _truth(scores: pd.DataFrame, sim) -> np.ndarray:
    return scores["session_id"].map(sim.labels.set_index("session_id")["is_anomaly"]).to_numpy(dtype=bool)


def test_fit_with_labels_detects_the_later_anomalies(fitted, hdfs):
    train, test = hdfs
    assert fitted.config["sessions_excluded_as_anomalous"] == int(train.labels["is_anomaly"].sum())
    assert fitted.config["sessions_trimmed_as_outlying"] == 0
    scores, report = fitted.score_file(list(test.lines))
    assert report.n_lines == len(test.lines)
    assert len(scores) == test.labels.shape[0] and scores["session_id"].is_unique
    y = _truth(scores, test)
    flagged = scores["is_anomaly"].to_numpy()
    precision, recall = flagged[y].sum() / max(flagged.sum(), 1), flagged[y].mean()
    assert precision >= 0.75 and recall >= 0.8, (precision, recall)  # ~0.5 % of 580 normal sessions: ~3 false alarms
    assert flagged[~y].mean() <= 0.02
    np.testing.assert_array_equal(scores["score"].to_numpy(), scores[fitted.rule.column].to_numpy())
    assert scores["percentile"].between(0, 100).all()


def test_fit_without_labels_sets_probable_anomalies_aside(hdfs):
    train = hdfs[0]
    pipeline = fit_log_pipeline(list(train.lines), "hdfs")
    config = pipeline.config
    assert config["sessions_excluded_as_anomalous"] == 0
    assert config["sessions_trimmed_as_outlying"] == len(pipeline.set_aside) > 0
    assert len(pipeline.set_aside) < 0.1 * config["n_sessions"]
    labelled = train.labels.set_index("session_id")["is_anomaly"]
    assert labelled.loc[pipeline.set_aside].mean() >= 0.8  # what was set aside is mostly true anomalies


def test_package_round_trip_and_tamper_refusal(fitted, hdfs, tmp_path):
    path = fitted.save(tmp_path / "pkg")
    loaded = load_log_pipeline(path)
    lines = list(hdfs[1].lines)
    pd.testing.assert_frame_equal(loaded.score_file(lines)[0], fitted.score_file(lines)[0])
    assert loaded.parser.templates_ == fitted.parser.templates_
    parser = json.loads((path / "parser.json").read_text())
    parser["templates"][0] = "something else"
    (path / "parser.json").write_text(json.dumps(parser))
    with pytest.raises(PackageError, match="parser.json"):
        load_log_pipeline(path)


def test_parse_one_row_per_line_in_input_order_with_malformed_lines_kept(hdfs):
    lines = list(hdfs[0].lines[:2000])
    lines.insert(10, "this line has no HDFS header")
    out, report = parse_log_lines(lines, "hdfs")
    assert len(out) == len(lines) and out["line_no"].tolist() == list(range(1, len(lines) + 1))
    assert report.n_malformed == 1 and report.malformed_examples[0][0] == 11
    assert (out["template_id"] >= 0).all()  # mined on the file itself: every line has a template
    frame, _ = read_log_lines(lines, "hdfs")
    assert out["session_id"].equals(frame["session_id"])
    sample = out.iloc[:50]
    assert sample["template"].str.contains("<BLK>").any()


def _cli(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "obsad.cli", "logs", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def test_cli_parse_fit_score_round_trip_and_user_errors(hdfs, tmp_path):
    train, test = hdfs
    train_dir, test_dir = train.write(tmp_path / "train"), test.write(tmp_path / "test")
    log, labels = train_dir["log"], train_dir["labels"]
    parsed = _cli("parse", "--format", "hdfs", "--logs", log, "--out", tmp_path / "lines.parquet", cwd=tmp_path)
    assert parsed.returncode == 0, parsed.stderr
    lines = pd.read_parquet(tmp_path / "lines.parquet")
    assert list(lines.columns) == ["line_no", "session_id", "template_id", "template"]
    assert len(lines) == len(train.lines)
    fit = _cli("fit", "--format", "hdfs", "--logs", log, "--labels", labels, "--out", tmp_path / "pkg", "--quiet",
               cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    assert "labelled anomalous were left out" in fit.stdout and "threshold" in fit.stdout
    score = _cli("score", "--model", tmp_path / "pkg", "--logs", test_dir["log"], "--out", tmp_path / "s.parquet",
                 cwd=tmp_path)
    assert score.returncode == 0, score.stderr
    scores = pd.read_parquet(tmp_path / "s.parquet")
    assert {"session_id", "score", "is_anomaly"} <= set(scores.columns)
    assert len(scores) == len(test.labels)
    wrong = _cli("score", "--model", tmp_path / "pkg", "--logs", tmp_path / "missing.log", "--out",
                 tmp_path / "x.parquet", cwd=tmp_path)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    other = _cli("fit", "--format", "openstack", "--logs", log, "--out", tmp_path / "p2", cwd=tmp_path)
    assert other.returncode == 2 and "looks like hdfs" in other.stderr and "Traceback" not in other.stderr
