"""How long does a simulated month of production take? The simulator alone, then the month with and without changes.

    python bench/bench_month.py --days 28 --baseline-days 7 --events-per-day 4000
"""

from __future__ import annotations

import argparse
import time


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--baseline-days", type=int, default=7)
    ap.add_argument("--events-per-day", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = ap.parse_args()

    t0 = time.perf_counter()
    import obsad.features.encoder  # noqa: F401  (the schema change's column choice imports it)
    from obsad.ocsf.month import simulate_month
    from obsad.ocsf.simulate import simulate
    print(f"imports: {time.perf_counter() - t0:.2f} s")

    total = args.days + args.baseline_days
    n = args.events_per_day * total
    simulate_month(days=14, baseline_days=1, events_per_day=1000, seed=args.seed)  # warm-up: caches
    t_sim, _ = _best(lambda: simulate(n_events=n, days=total, seed=args.seed), args.repeat)
    kw = {"days": args.days, "baseline_days": args.baseline_days, "events_per_day": args.events_per_day,
          "seed": args.seed}
    t_plain, _ = _best(lambda: simulate_month(**kw, changes=[]), args.repeat)
    t_month, month = _best(lambda: simulate_month(**kw), args.repeat)
    print(f"{total} days x {args.events_per_day} events: {len(month.events):,} events, {len(month.labels):,} labelled,"
          f" {len(month.changes)} changes")
    print(f"best of {args.repeat}: simulate {t_sim:.2f} s | month without changes {t_plain:.2f} s | "
          f"month with the default changes {t_month:.2f} s")


if __name__ == "__main__":
    main()
