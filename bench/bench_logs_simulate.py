"""How fast do the log simulators write lines, and how fast does ``read_log_lines`` read them back? Prints lines/s.

    python bench/bench_logs_simulate.py --blocks 50000 --instances 10000

Reading is timed on the written file (plain text, as Loghub ships it), from the path to the finished frame.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def best_of(repeat: int, run) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=50_000, help="HDFS blocks (about 19 lines each)")
    ap.add_argument("--instances", type=int, default=10_000, help="nova instances (about 36 lines each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = ap.parse_args()

    from obsad.logs.formats import read_log_lines
    from obsad.logs.simulate import simulate_hdfs, simulate_openstack

    simulate_hdfs(1_000), simulate_openstack(200)  # warm-up: imports, caches
    with tempfile.TemporaryDirectory() as tmp:
        for simulate, n, unit in ((simulate_hdfs, args.blocks, "blocks"), (simulate_openstack, args.instances,
                                                                            "instances")):
            seconds, sim = best_of(args.repeat, lambda: simulate(n, seed=args.seed))
            lines = len(sim.lines)
            anomalous = int(sim.labels["is_anomaly"].sum())
            print(f"{sim.name}: {n:,} {unit} -> {lines:,} lines, {len(sim.templates)} templates, "
                  f"{anomalous} anomalous sessions")
            print(f"  simulate      best of {args.repeat}: {seconds:.3f} s  ->  {lines / seconds:,.0f} lines/s")
            path = sim.write(Path(tmp) / sim.name)["log"]
            megabytes = path.stat().st_size / 1e6
            seconds, (frame, report) = best_of(args.repeat, lambda: read_log_lines(path, sim.format))
            print(f"  read_log_lines best of {args.repeat}: {seconds:.3f} s  ->  {lines / seconds:,.0f} lines/s "
                  f"({megabytes / seconds:,.0f} MB/s, {report.n_malformed} malformed)")


if __name__ == "__main__":
    main()
