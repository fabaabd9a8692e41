"""Benchmark the investigator: does it name the field a scenario changed, and how fast over every flagged event?

    python bench/bench_investigate.py                       # simulate(30000, days=7, seed=0): about 2 min, 2 cores
    python bench/bench_investigate.py --seed 1 --events 60000

One simulated week (:func:`obsad.ocsf.simulate.simulate`) is split by time: the pipeline is fitted on the first 70 %
of the events (:func:`obsad.pipeline.fit_pipeline`, no labels) and scores the rest. For every flagged event that the
simulator labelled, the investigator's top ``--k`` fields are compared with the scenario's signature (the columns it
changed): a hit when one of them is in the signature (:func:`obsad.detect.evaluation.explanation_hits`). Printed per
scenario, beside the pipeline's own ``top_features`` and a blind guess (``k`` of the fields drawn at random).

Then what each piece of evidence contributes (the same events ranked by the surprise alone, the neighbours alone,
both without the window view, all three), the accuracy over *every* labelled event of the scored period, flagged or
not (where the ranking is weakest: events that look normal one by one), the wall time of ranking all flagged events
and of full investigations, and one investigation per scenario.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=3, help="top fields compared with the signature")
    ap.add_argument("--neighbours", type=int, default=10, help="reference events compared with each event")
    ap.add_argument("--threads", type=int, default=2, help="torch and FAISS threads (the CI machine has 2 cores)")
    ap.add_argument("--target-steps", type=int, default=300, help="training steps of fit_pipeline")
    ap.add_argument("--examples", action="store_true", help="print one investigation per scenario")
    args = ap.parse_args(argv)

    import faiss
    import torch

    from obsad.detect.evaluation import explanation_chance, explanation_hits
    from obsad.monitor.investigate import Investigator, attribution_accuracy
    from obsad.ocsf import load_events, simulate
    from obsad.pipeline import fit_pipeline
    from obsad.splits import time_split

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    pd.set_option("display.width", 160)

    t0 = time.perf_counter()
    sim = simulate(args.events, days=args.days, seed=args.seed)
    events, _ = load_events(sim.events)
    split = time_split(events["time"], (0.7, 0.0, 0.3)).to_numpy()
    train = events[split == "train"].reset_index(drop=True)
    test = events[split == "test"].reset_index(drop=True)
    labels = sim.labels
    print(f"simulate({args.events}, days={args.days}, seed={args.seed}): fit on {len(train):,} events, "
          f"score {len(test):,} ({time.perf_counter() - t0:.1f} s)")
    t = time.perf_counter()
    pipeline = fit_pipeline(train, seed=args.seed, progress=False, target_steps=args.target_steps)
    print(f"fit_pipeline: {time.perf_counter() - t:.1f} s; views: {', '.join(pipeline.views)}; "
          f"reference: {len(pipeline.reference):,} events")

    t = time.perf_counter()
    scores = pipeline.score(test, n_top=args.k)
    score_seconds = time.perf_counter() - t
    t = time.perf_counter()
    inv = Investigator(pipeline, n_neighbours=args.neighbours, seed=args.seed).fit()
    fit_seconds = time.perf_counter() - t
    t = time.perf_counter()
    acc = attribution_accuracy(pipeline, test, labels, k=args.k, investigator=inv, scores=scores)
    acc_seconds = time.perf_counter() - t
    n_rows = int(acc.table.loc["all", "events"])
    print(f"\nscoring {len(test):,} events: {score_seconds:.2f} s; investigator tables: {fit_seconds:.2f} s; "
          f"ranking the fields of {n_rows} flagged scenario events: {acc_seconds:.2f} s")
    print()
    print(acc.summary())
    goal = acc.overall >= 0.8
    print(f"\ngoal (top-{args.k} >= 80 % of flagged scenario events): {'met' if goal else 'NOT met'} "
          f"({100 * acc.overall:.1f} %)")

    # what each piece of evidence contributes, on the same flagged scenario events
    rows = acc.events["row"].to_numpy()
    uid = test["metadata.uid"]
    by_uid = labels.drop_duplicates("event_uid").set_index("event_uid")
    truth = [list(x) for x in uid.map(by_uid["fields"]).to_numpy(dtype=object)[rows]]
    ev = inv.rank(test, rows, scores=scores)
    names = np.asarray(ev.columns, dtype=object)

    def hits(key: np.ndarray) -> np.ndarray:
        order = np.argsort(-key, axis=1, kind="stable")[:, :args.k]
        return explanation_hits([list(names[o]) for o in order], truth, k=args.k)

    ablation = pd.DataFrame({
        "scenario": acc.events["scenario"].to_numpy(),
        "surprise only": hits(ev.surprise),
        "neighbours only": hits(ev.local),
        "surprise + neighbours": hits(ev.surprise + ev.local),
        "all (investigator)": hits(ev.surprise + ev.local + ev.window),
    })
    if len(ablation):
        table = ablation.groupby("scenario").mean()
        table.loc["all"] = ablation.drop(columns="scenario").mean()
        print(f"\ntop-{args.k} hit rate by evidence used (flagged scenario events):")
        print(table.to_string(float_format=lambda x: f"{x:.3f}"))

    # every labelled event of the scored period, flagged or not
    scenario = uid.map(by_uid["scenario"]).to_numpy(dtype=object)
    every = np.flatnonzero(pd.notna(scenario))
    if len(every):
        t = time.perf_counter()
        ev_all = inv.rank(test, every, scores=scores)
        all_seconds = time.perf_counter() - t
        true_all = [list(x) for x in uid.map(by_uid["fields"]).to_numpy(dtype=object)[every]]
        frame = pd.DataFrame({
            "scenario": scenario[every].astype(str),
            "flagged": scores["is_anomaly"].to_numpy()[every],
            "investigator": explanation_hits(ev_all.top(args.k), true_all, k=args.k),
            "chance": explanation_chance(true_all, inv.columns_, k=args.k),
        })
        table = frame.groupby("scenario").agg(events=("flagged", "size"), flagged=("flagged", "mean"),
                                              investigator=("investigator", "mean"), chance=("chance", "mean"))
        print(f"\nevery labelled event of the scored period ({len(every)} events, ranked in {all_seconds:.2f} s):")
        print(table.to_string(float_format=lambda x: f"{x:.3f}"))

    # full investigations (raw tables, neighbours, recommendation)
    some = rows[:200]
    t = time.perf_counter()
    done = inv.investigate(test, some, scores=scores)
    print(f"\n{len(done)} full investigations: {time.perf_counter() - t:.2f} s")
    if args.examples and len(done):
        first = acc.events.iloc[:len(some)].groupby("scenario").head(1).index.to_numpy()
        for i in first:
            print(f"\n--- {acc.events['scenario'].iat[i]}")
            print(done[i].summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
