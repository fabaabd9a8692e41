"""How fast does the OCSF simulator produce events? Prints events per second.

    python bench/bench_simulate.py --events 100000 --days 7
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = ap.parse_args()

    from obsad.ocsf.simulate import simulate

    simulate(n_events=10_000, days=args.days, seed=args.seed)  # warm-up: imports, caches
    best = float("inf")
    for r in range(args.repeat):
        t0 = time.perf_counter()
        sim = simulate(n_events=args.events, days=args.days, seed=args.seed + r)
        best = min(best, time.perf_counter() - t0)
    print(f"simulate: {args.events} events over {args.days} days, {sim.events.shape[1]} columns, "
          f"{len(sim.labels)} labelled anomalous")
    print(f"best of {args.repeat}: {best:.3f} s  ->  {args.events / best:,.0f} events/s")


if __name__ == "__main__":
    main()
