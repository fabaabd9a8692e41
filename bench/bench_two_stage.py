"""Benchmark `obsad fit --labels`: two-stage fit time on simulated events with a few hundred analyst labels.

    python bench/bench_two_stage.py                         # 30k events, 300 labels, 2 threads
    python bench/bench_two_stage.py --events 30000 --labels 300 --threads 2

One simulated organisation; the first ``--events`` events (by time) are the baseline, of which ``--labels`` are
labelled from the simulator's truth: half of them anomalies drawn at random (an analyst's confirmed incidents),
half ordinary events. The command is run as a user runs it (a subprocess, progress bar off), and its wall time
is printed beside the stages it reports; the package is then read back and its scores of the labelled events
summarised (a sanity check, not a quality measure: notebook 08 measures quality on a later period).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--labels", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the CI machine has 2 cores)")
    args = ap.parse_args(argv)

    from obsad.ocsf.simulate import write_simulation
    from obsad.train.two_stage import load_two_stage_model, predict_anomalies

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sim = write_simulation(root / "sim", n_events=max(args.events, 5000), seed=0, start="2026-03-04T00:00:00Z")
        export = pd.read_parquet(sim["events"])
        export = export.iloc[np.argsort(export["time"].to_numpy(), kind="stable")[:args.events]]
        export = export.reset_index(drop=True)
        export.to_parquet(root / "events.parquet")
        truth = pd.read_parquet(sim["labels"]).drop_duplicates("event_uid").set_index("event_uid")["scenario"]
        uid = export["metadata"].map(lambda m: m["uid"]) if "metadata" in export else export["metadata.uid"]
        scenario = uid.map(truth).fillna("normal").to_numpy(dtype=object)
        rng = np.random.default_rng(0)
        anomalous, normal = np.flatnonzero(scenario != "normal"), np.flatnonzero(scenario == "normal")
        n_anomalous = min(len(anomalous), args.labels // 2)
        rows = np.r_[rng.choice(anomalous, n_anomalous, replace=False),
                     rng.choice(normal, args.labels - n_anomalous, replace=False)]
        pd.DataFrame({"row": rows, "label": scenario[rows]}).to_csv(root / "labels.csv", index=False)

        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
               "PYTHONWARNINGS": "ignore"}
        cmd = [sys.executable, "-m", "obsad.cli", "fit", "--events", str(root / "events.parquet"),
               "--labels", str(root / "labels.csv"), "--out", str(root / "model"), "--quiet"]
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        for line in done.stdout.splitlines():
            if line.startswith(("two-stage fit", "stage 1", "threshold", "wrote")):
                print(line)
        print(f"obsad fit --labels: {len(export):,} events, {len(rows)} labels, {seconds:.1f} s wall "
              f"(goal: <= 180 s on 2 cores)")
        model, _, classes = load_two_stage_model(root / "model")
        from obsad.ocsf import load_events

        events = load_events(root / "events.parquet").events
        answer = predict_anomalies(model, events.iloc[rows])
        labelled_anomaly = scenario[rows] != "normal"
        print(f"classes: {', '.join(classes)}")
        print(f"labelled anomalies flagged: {answer['is_anomaly'].to_numpy()[labelled_anomaly].mean():.2f}; "
              f"labelled normal events flagged: {answer['is_anomaly'].to_numpy()[~labelled_anomaly].mean():.2f} "
              f"(in-sample)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
