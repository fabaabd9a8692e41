"""Benchmark the fixed per-call costs that dominate small batches: one event and 1,000 events, stage by stage.

    python bench/bench_small_batches.py                      # model and events from /tmp/benchdata
    python bench/bench_small_batches.py --model DIR --events FILE.parquet --repeats 20
    python bench/bench_small_batches.py --baseline obsad_orig  # interleave with a renamed copy of an older obsad

What the scoring service does with a request (``obsad.serve.scoring``), in this process:

- **one event** (a nested OCSF dict, as clients send it, and a flat one, as a JSON export of the table gives it):
  ``load_events(..., columns=pipeline.input_columns)``, ``encoder.transform``, ``embed``, the k-NN search of the
  event view (what ``/v1/score`` runs for a single event), and their total;
- **1,000 events**: ``load_events``, ``encoder.transform``, the window view's ``assign`` and ``view_scores``, and
  ``load_events`` + ``pipeline.score`` (both views), as ``/v1/score`` runs a batch;
- **100,000 events** (``--events``, read from Parquet): ``load_events`` and ``encoder.transform``, to check that
  large inputs do not pay for the small-batch work.

Every figure is the best of ``--repeats`` runs (of 3 for 100k), in milliseconds. With ``--baseline NAME``, the same
calls of module ``NAME`` (a copy of the obsad package renamed to NAME, importable from ``--baseline-path``) run
interleaved with the current ones, on the same inputs, so that a noisy machine affects both alike. A copy of the
last commit, say::

    mkdir -p /tmp/orig && git archive HEAD src/obsad | tar -x -C /tmp/orig && mv /tmp/orig/src/obsad /tmp/orig/obsad_orig
    grep -rl "obsad" /tmp/orig/obsad_orig --include=*.py | xargs sed -i 's/from obsad\([. ]\)/from obsad_orig\1/g'

``/tmp/benchdata`` is made by fitting a pipeline on 30k simulated events (about a minute)::

    python bench/bench_small_batches.py --make
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path("/tmp/benchdata")


def make(root: Path) -> None:
    """Fit a package on 30k simulated events and keep the next 100k as events to score."""
    from obsad.ocsf import load_events
    from obsad.ocsf.simulate import write_simulation
    from obsad.pipeline import fit_pipeline

    root.mkdir(parents=True, exist_ok=True)
    sim = write_simulation(root / "sim", n_events=130_000, seed=0, start="2026-03-04T00:00:00Z")
    export = pd.read_parquet(sim["events"])
    export = export.iloc[np.argsort(export["time"].to_numpy(), kind="stable")].reset_index(drop=True)
    export.iloc[:30_000].to_parquet(root / "fit.parquet")
    export.iloc[30_000:].to_parquet(root / "score.parquet")
    fit_pipeline(load_events(root / "fit.parquet").events, progress=False).save(root / "model")


class Library:
    """The calls measured, from one copy of the package (``obsad`` or a renamed older copy)."""

    def __init__(self, package: str, model: Path) -> None:
        self.name = package
        self.load_events = importlib.import_module(f"{package}.ocsf").load_events
        self.scoring = importlib.import_module(f"{package}.serve.scoring")
        self.pipeline = importlib.import_module(f"{package}.pipeline").load_pipeline(model)

    def event_view(self, frame: pd.DataFrame) -> pd.DataFrame:
        """What ``/v1/score`` runs on a single event (the event view alone, nothing explained)."""
        return self.scoring.score_frame(self.pipeline, frame, "event", "none", 3)


def best_of(fns: list, repeats: int) -> list[float]:
    """Best wall time (ms) of each callable, the callables run in turn (so that noise hits each alike)."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return [min(t) * 1e3 for t in times]


def calls(lib: Library, records: list, batch: bool) -> dict:
    """The measured calls of one request (see the module docstring)."""
    p = lib.pipeline
    columns = p.input_columns
    frame, _ = lib.load_events(records, columns=columns)
    features = p.encoder.transform(frame)
    z = p.embed(features)
    out = {
        "load_events": lambda: lib.load_events(records, columns=columns),
        "encoder.transform": lambda: p.encoder.transform(frame),
        "embed": lambda: p.embed(features),
        "k-NN (event view)": lambda: p.detector.score_and_neighbors(z),
    }
    if batch and p.window is not None:
        assigned = p.window.assign(frame)
        vectors = p.window_vectors(z, features)
        out["window assign"] = lambda: p.window.assign(frame)
        out["window view_scores"] = lambda: p.window.view_scores((frame, vectors), assigned=assigned)
        out["load + pipeline.score"] = lambda: p.score(lib.load_events(records, columns=columns).events)
    else:
        out["load + event view (total)"] = lambda: lib.event_view(lib.load_events(records, columns=columns).events)
    for fn in out.values():  # warm the caches (vocabulary tables, lazily built indexes)
        fn()
    return out


def report(title: str, libs: list[Library], plans: list[dict], repeats: int) -> None:
    print(f"\n{title} (ms, best of {repeats})")
    for name in plans[0]:
        figures = best_of([plan[name] for plan in plans], repeats)
        print(f"  {name:28s} " + "   ".join(f"{lib.name} {ms:8.2f}" for lib, ms in zip(libs, figures)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "model")
    parser.add_argument("--events", type=Path, default=ROOT / "score.parquet")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch and FAISS threads (obsad serve uses 1)")
    parser.add_argument("--no-large", action="store_true", help="skip the 100k-event figures")
    parser.add_argument("--baseline", help="module name of a renamed copy of an older obsad, run interleaved")
    parser.add_argument("--baseline-path", default="/tmp/orig", help="folder holding that copy")
    parser.add_argument("--make", action="store_true", help=f"first fit the model and write the events to {ROOT}")
    args = parser.parse_args()
    if args.make:
        make(ROOT)
    if not args.model.exists() or not args.events.exists():
        sys.exit(f"no model at {args.model} or no events at {args.events}: run with --make first")

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    logging.disable(logging.WARNING)  # the encoder warns about absent columns on every small batch

    from obsad.ocsf.nested import to_nested

    libs = [Library("obsad", args.model)]
    if args.baseline:
        sys.path.insert(0, args.baseline_path)
        libs.append(Library(args.baseline, args.model))
    rows = pd.read_parquet(args.events).head(1000).reset_index(drop=True)
    flat = json.loads(rows.to_json(orient="records"))
    nested = json.loads(json.dumps(to_nested(rows), default=str))
    cases = [("one event, nested dict", nested[:1], False), ("one event, flat dict", flat[:1], False),
             ("1,000 events, nested dicts", nested, True), ("1,000 events, flat dicts", flat, True)]
    for title, records, batch in cases:
        report(title, libs, [calls(lib, records, batch) for lib in libs],
               args.repeats if not batch else max(3, args.repeats // 2))
    if not args.no_large:
        plans = []
        for lib in libs:
            p = lib.pipeline
            frame, _ = lib.load_events(args.events, columns=p.input_columns)
            plans.append({"load_events": lambda lib=lib, p=p: lib.load_events(args.events, columns=p.input_columns),
                          "encoder.transform": lambda p=p, frame=frame: p.encoder.transform(frame)})
        report("100,000 events from Parquet", libs, plans, 3)


if __name__ == "__main__":
    main()
