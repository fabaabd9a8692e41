"""How many ordinary events the default pipeline flags on each day of the simulated month, and which window views
and statistics raise those false alarms.

    python bench/bench_month_alerts.py                   # the first champion, days 0-4 and the changed days
    python bench/bench_month_alerts.py --days 0 7 21 --calibration latest

The model is what notebook 07 fits first: `fit_pipeline` on the baseline week (calibration spread over its hours
unless told otherwise). Each day is scored alone, as the notebook's daily batch is. For each day: the share of
unlabelled events flagged, the share of labelled ones caught, and the (view, statistic) pairs that decided the
most false alarms of the window view. A day of a change that the model has not learnt (a new service, a schema
change) shows what the alert volume costs the analyst until the model is retrained.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, nargs="*", default=[0, 1, 2, 3, 4, 7, 8, 14, 21, 22, 25])
    ap.add_argument("--calibration", choices=("spread", "latest"), default="spread")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=4, help="how many (view, statistic) pairs to list per day")
    args = ap.parse_args(argv)

    from obsad.detect.windows import STATISTICS, EntityWindowDetector
    from obsad.ocsf import load_events, simulate_month
    from obsad.pipeline import fit_pipeline

    month = simulate_month(days=28, baseline_days=7, events_per_day=4000, seed=args.seed)
    started = time.perf_counter()
    model = fit_pipeline(load_events(month.baseline()).events, seed=args.seed, progress=False,
                         calibration=args.calibration)
    window = model.window
    print(f"fitted on the baseline week in {time.perf_counter() - started:.0f} s; {len(window.views_)} window views "
          f"(dropped as coarser: {', '.join(window.dropped_views_) or 'none'}); calibration {args.calibration}")
    labelled = set(month.labels["event_uid"])
    print(f"{'day':>4} {'changes':28s} {'false alarms':>12} {'by windows':>10} {'recall':>7}  most false alarms from")
    for day in args.days:
        events = load_events(month.day(day)).events
        scored = model.score(events, explain="none")
        normal = ~events["metadata.uid"].isin(labelled).to_numpy()
        flagged = scored["is_anomaly"].to_numpy()
        by_window = flagged & (scored["view"].to_numpy() == "window")
        features = model.encoder.transform(events)
        per_view, windows = window.view_scores((events, model.window_vectors(features=features,
                                                                             z=model.embed(features))))
        causes = collections.Counter()
        for j, (view, w) in enumerate(zip(window.views_, windows)):
            if not len(w.rows):
                continue
            decided = (per_view[w.rows, j] >= per_view[w.rows].max(axis=1)) & by_window[w.rows] & normal[w.rows]
            statistic = EntityWindowDetector._event_z(view, w)[decided].argmax(axis=1)
            for s, n in zip(*np.unique(statistic, return_counts=True)):
                causes[f"{view.column} ({STATISTICS[s]})"] += int(n)
        recall = flagged[~normal].mean() if (~normal).any() else float("nan")
        changes = ", ".join(month.changes_on(day)) or "-"
        top = "; ".join(f"{name}: {n}" for name, n in causes.most_common(args.top))
        print(f"{day:>4} {changes[:28]:28s} {flagged[normal].mean():>12.3f} {by_window[normal].mean():>10.3f} "
              f"{recall:>7.3f}  {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
