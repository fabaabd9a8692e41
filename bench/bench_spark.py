"""Benchmark Spark batch scoring (obsad.spark) against the local engine: events/s versus Spark partitions.

    python bench/bench_spark.py                                  # 50k events, partitions 1 2 4 8, local[*]
    python bench/bench_spark.py --events 200000 --partitions 2 4 8 16 --master local[4]

One simulated organisation: a package is fitted on its first ``--fit-events`` events (by time) and scores the
next ``--events`` (a Parquet export). Both engines go from that file to the scores table in input order with the
package already fitted; the local engine is timed as ``obsad score`` runs it (one process, torch and FAISS on
every core), Spark as ``score_dataframe`` + collecting the scores, on a warm session (the JVM, the Python workers
and the package loaded once by a first, untimed run), best of ``--repeat``. ``max |score diff|`` compares each
Spark run's scores with the local engine's (they agree to float rounding).

The notebook imports :func:`throughput` to plot the table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def throughput(events: int = 50_000, partitions=(1, 2, 4, 8), *, fit_events: int = 10_000,
               master: str = "local[*]", repeat: int = 2, seed: int = 0) -> pd.DataFrame:
    """Events/s of the local engine and of Spark with each number of ``partitions``: one row per run kind,
    columns ``engine``, ``partitions``, ``events``, ``seconds`` (best of ``repeat``), ``events_per_s`` and
    ``max_score_diff`` (against the local engine)."""
    from obsad.ocsf.simulate import write_simulation
    from obsad.ocsf import load_events
    from obsad.pipeline import fit_pipeline, load_pipeline
    from obsad.spark import collect_scores, score_dataframe, spark_session

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sim = write_simulation(root / "sim", n_events=fit_events + events, seed=seed, start="2026-03-04T00:00:00Z")
        export = pd.read_parquet(sim["events"])
        export = export.iloc[np.argsort(export["time"].to_numpy(), kind="stable")].reset_index(drop=True)
        fit_file, score_file = root / "fit.parquet", root / "score.parquet"
        export.iloc[:fit_events].to_parquet(fit_file)
        export.iloc[fit_events:].to_parquet(score_file)
        fit_pipeline(load_events(fit_file).events, progress=False, seed=seed).save(root / "model")
        pipeline = load_pipeline(root / "model")

        local, best = None, np.inf
        for _ in range(repeat):
            t = time.perf_counter()
            local, _ = pipeline.score_events(score_file)  # what `obsad score` does
            best = min(best, time.perf_counter() - t)
        rows.append({"engine": "local", "partitions": 1, "events": len(local), "seconds": best,
                     "events_per_s": len(local) / best, "max_score_diff": 0.0})

        spark = spark_session(master, app_name="obsad bench")
        try:
            frame = spark.read.parquet(str(score_file))
            collect_scores(score_dataframe(frame, root / "model"))  # warm-up: JVM, Python workers, package
            for n in partitions:
                spark.conf.set("spark.sql.shuffle.partitions", str(n))
                best, scores = np.inf, None
                for _ in range(repeat):
                    t = time.perf_counter()
                    scores = collect_scores(score_dataframe(frame, root / "model", partitions=n))
                    best = min(best, time.perf_counter() - t)
                diff = float(np.abs(scores["score"].to_numpy() - local["score"].to_numpy()).max())
                rows.append({"engine": f"spark {master}", "partitions": n, "events": len(scores), "seconds": best,
                             "events_per_s": len(scores) / best, "max_score_diff": diff})
        finally:
            spark.stop()
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000, help="events scored (default 50000)")
    ap.add_argument("--fit-events", type=int, default=10_000, help="events the package is fitted on")
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--master", default="local[*]", help="Spark master (default local[*])")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    table = throughput(args.events, tuple(args.partitions), fit_events=args.fit_events, master=args.master,
                       repeat=args.repeat)
    print(table.to_string(index=False, formatters={"seconds": "{:.2f}".format, "events_per_s": "{:,.0f}".format,
                                                   "max_score_diff": "{:.1e}".format}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
