"""The `obsad` command line, run as a user runs it (a subprocess), on small inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd


def obsad(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "obsad.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)


def test_simulate_writes_identical_bytes_for_the_same_seed(tmp_path: Path):
    runs = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        out = tmp_path / name
        done = obsad("simulate", "--events", "6000", "--days", "2", "--seed", seed, "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert "wrote 6,000 events" in done.stdout
        runs.append({f: (out / f).read_bytes() for f in ("ocsf_events.parquet", "ocsf_labels.parquet")})
    assert runs[0] == runs[1]
    assert runs[0]["ocsf_events.parquet"] != runs[2]["ocsf_events.parquet"]
    labels = pd.read_parquet(tmp_path / "a" / "ocsf_labels.parquet")
    assert {"event_uid", "scenario", "category", "shape", "entity", "fields"} <= set(labels.columns)


def test_inspect_reports_malformed_lines_and_still_loads_the_rest(tmp_path: Path):
    export = tmp_path / "export.jsonl"
    good = {"class_uid": 3002, "time": 1772409600000, "user": {"name": "ana"}}
    export.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({**good, "time": 1772409601000}) + "\n")
    done = obsad("inspect", str(export), "--columns")
    assert done.returncode == 0, done.stderr
    assert "line 2" in done.stdout and "invalid_json" in done.stdout
    assert "2 events" in done.stdout and "user.name" in done.stdout


def test_inspect_with_no_valid_event_is_a_clear_error(tmp_path: Path):
    export = tmp_path / "garbage.jsonl"
    export.write_text("nope\n[1]\n")
    done = obsad("inspect", str(export))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "garbage.jsonl" in done.stderr or "no valid" in done.stderr.lower()
