"""`obsad fit --labels` and `obsad score` on a two-stage package, run as a user runs them (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def obsad(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "obsad.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A small simulated export, its truth, and 60 analyst labels (by row and by event uid)."""
    root = tmp_path_factory.mktemp("labels")
    done = obsad("simulate", "--events", "5000", "--days", "1", "--seed", "5", "--out", str(root / "sim"))
    assert done.returncode == 0, done.stderr
    events = pd.read_parquet(root / "sim" / "ocsf_events.parquet")
    events = events.iloc[np.argsort(events["time"].to_numpy(), kind="stable")[:2500]].reset_index(drop=True)
    events.to_parquet(root / "events.parquet")  # half a day: a quick fit
    truth = pd.read_parquet(root / "sim" / "ocsf_labels.parquet").drop_duplicates("event_uid")
    uid = events["metadata"].map(lambda m: m["uid"]) if "metadata" in events else events["metadata.uid"]
    scenario = uid.map(truth.set_index("event_uid")["scenario"]).fillna("normal").to_numpy(dtype=object)
    unique = ~uid.duplicated(keep=False).to_numpy()
    rng = np.random.default_rng(0)
    anomalous = np.flatnonzero((scenario != "normal") & unique)
    normal = np.flatnonzero((scenario == "normal") & unique)
    rows = np.r_[rng.choice(anomalous, min(30, len(anomalous)), replace=False), rng.choice(normal, 30, replace=False)]
    table = pd.DataFrame({"row": rows, "label": scenario[rows]})
    table.to_csv(root / "labels.csv", index=False)
    pd.DataFrame({"metadata.uid": uid.to_numpy()[rows], "label": scenario[rows]}).to_parquet(root / "labels.parquet")
    return {"root": root, "events": root / "events.parquet", "labels": table, "uid": uid.to_numpy()}


def test_fit_with_labels_by_row_then_score_adds_classes(labelled):
    root, events = labelled["root"], labelled["events"]
    done = obsad("fit", "--events", str(events), "--labels", str(root / "labels.csv"), "--out", str(root / "pkg"),
                 "--quiet")
    assert done.returncode == 0, done.stderr
    assert "two-stage fit" in done.stdout and "60 labelled" in done.stdout
    assert (root / "pkg" / "classes.json").is_file() and (root / "pkg" / "manifest.json").is_file()
    done = obsad("score", "--model", str(root / "pkg"), "--events", str(events), "--out", str(root / "s.parquet"))
    assert done.returncode == 0, done.stderr
    scores = pd.read_parquet(root / "s.parquet")
    assert len(scores) == len(labelled["uid"])
    assert (scores["event_uid"].to_numpy() == labelled["uid"]).all()  # input order
    assert {"score", "is_anomaly", "top_features", "predicted_class", "class_probability"} <= set(scores.columns)
    classes = {"normal", *labelled["labels"]["label"]}
    assert set(scores["predicted_class"]) <= classes
    assert scores["class_probability"].between(0, 1).all()
    flagged = scores["is_anomaly"].to_numpy()
    assert flagged.any() and (scores.loc[~flagged, "predicted_class"] == "normal").all()
    assert (scores.loc[flagged, "predicted_class"] != "normal").all()
    assert (scores.loc[flagged, "top_features"] != "").all()
    # the analyst's own anomalies rank above the analyst's normal events
    labels = labelled["labels"]
    s = scores["score"].to_numpy()
    assert s[labels["row"][labels["label"] != "normal"]].mean() > s[labels["row"][labels["label"] == "normal"]].mean()


def test_fit_with_labels_by_id_column(labelled):
    root = labelled["root"]
    done = obsad("fit", "--events", str(labelled["events"]), "--labels", str(root / "labels.parquet"),
                 "--id-column", "metadata.uid", "--out", str(root / "pkg_id"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "60 labelled" in done.stdout


@pytest.mark.parametrize("name, table, needle", [
    ("nolabel.csv", pd.DataFrame({"row": [1, 2]}), "no 'label' column"),
    ("rows.csv", pd.DataFrame({"row": [1, 10**6], "label": ["normal", "port_scan"]}), "match no event"),
    ("notint.csv", pd.DataFrame({"row": ["1", "two"], "label": ["normal", "port_scan"]}), "not whole numbers"),
    ("one.csv", pd.DataFrame({"row": [1, 2], "label": ["normal", "normal"]}), "at least two classes"),
    ("nonormal.csv", pd.DataFrame({"row": [1, 2], "label": ["a", "b"]}), "no event is labelled 'normal'"),
    ("conflict.csv", pd.DataFrame({"row": [1, 1, 2], "label": ["normal", "a", "b"]}), "conflicting labels"),
    ("empty.csv", pd.DataFrame({"row": [1, 2], "label": ["normal", ""]}), "empty"),
    ("ids.csv", pd.DataFrame({"metadata.uid": ["no-such-id"], "label": ["normal"]}), "match no event"),
    ("labels.txt", pd.DataFrame({"row": [1], "label": ["normal"]}), ".parquet or .csv"),
])
def test_malformed_label_files_fail_clearly_before_training(labelled, name, table, needle):
    root = labelled["root"]
    path = root / name
    table.to_csv(path, index=False)
    extra = ["--id-column", "metadata.uid"] if name == "ids.csv" else []
    out = root / f"out_{name}"
    done = obsad("fit", "--events", str(labelled["events"]), "--labels", str(path), *extra, "--out", str(out),
                 "--quiet")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert needle in done.stderr, done.stderr
    assert not out.exists()  # nothing written, nothing trained


def test_missing_label_file_and_row_positions_after_unloadable_events(tmp_path: Path):
    done = obsad("fit", "--events", str(tmp_path / "none.jsonl"), "--labels", str(tmp_path / "x.csv"),
                 "--out", str(tmp_path / "p"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    export = tmp_path / "export.jsonl"
    good = '{"class_uid": 3002, "time": %d, "user": {"name": "u%d"}}'
    lines = [good % (1772409600000 + i * 1000, i % 7) for i in range(40)]
    lines.insert(3, "{not json")
    export.write_text("\n".join(lines) + "\n")
    pd.DataFrame({"row": [0, 1], "label": ["normal", "odd"]}).to_csv(tmp_path / "l.csv", index=False)
    done = obsad("fit", "--events", str(export), "--labels", str(tmp_path / "l.csv"), "--out", str(tmp_path / "p"))
    assert done.returncode == 2
    assert "could not be loaded" in done.stderr and "--id-column" in done.stderr
