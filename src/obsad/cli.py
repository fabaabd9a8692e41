"""The ``obsad`` command line: argument parsing and messages only; every verb calls the library.

A user mistake (a missing file, a bad number) ends with a one-line message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def _cmd_simulate(args: argparse.Namespace) -> int:
    from obsad.ocsf.simulate import write_simulation
    from obsad.runtime import Stopwatch

    watch = Stopwatch()
    import pandas as pd

    try:
        pd.Timestamp(args.start)
    except (ValueError, TypeError) as exc:
        raise UserError(f"--start {args.start!r} is not a date or an ISO 8601 instant ({exc})") from exc
    try:
        paths = write_simulation(args.out, n_events=args.events, days=args.days, seed=args.seed, start=args.start)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    import pyarrow.parquet as pq

    n_events = pq.ParquetFile(paths["events"]).metadata.num_rows
    n_labels = pq.ParquetFile(paths["labels"]).metadata.num_rows
    print(f"wrote {n_events:,} events to {paths['events']}")
    print(f"wrote {n_labels:,} labels to {paths['labels']}")
    print(f"{n_events / max(watch.seconds, 1e-9):,.0f} events/s ({watch.seconds:.1f} s)")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from obsad.ocsf.load import load_events

    events, report = load_events(args.events)
    print(report.summary())
    print(f"{len(events):,} events, {events.shape[1]} columns")
    if args.columns:
        for name in events.columns:
            filled = events[name].notna().mean()
            print(f"  {name:48s} {str(events[name].dtype):24s} {filled:6.1%} filled")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from obsad.ocsf.load import load_events
    from obsad.pipeline import fit_pipeline
    from obsad.runtime import Stopwatch

    events, report = load_events(args.events)
    print(report.summary())
    watch = Stopwatch()
    window = None if args.window.lower() == "none" else args.window
    if window is not None:
        import pandas as pd

        try:
            if pd.Timedelta(window) <= pd.Timedelta(0):
                raise ValueError("not positive")
        except ValueError as exc:
            raise UserError(f"--window {args.window!r} is not a positive duration like 1h or 30min ({exc})") from exc
    try:
        pipeline = fit_pipeline(events, epochs=args.epochs, seed=args.seed, progress=not args.quiet, window=window)
    except ValueError as exc:  # too few events, nothing usable in them
        raise UserError(str(exc)) from exc
    path = pipeline.save(args.out)
    state = pipeline.detector_state
    config = pipeline.config
    print(f"fitted on {len(events):,} events: {config['n_numeric']} numeric and {config['n_categorical']} "
          f"categorical features, {config['train_config']['epochs']} epochs in {watch.seconds:.1f} s")
    views = "event view (k-NN over {:,} reference events, {} index)".format(state["n_reference"], state["index"])
    if pipeline.window is not None:
        views += f" + window view ({len(pipeline.window.views_)} entity columns, {pipeline.window.window} windows)"
    print(f"views: {views}")
    for warning in pipeline.warnings:
        print(f"note: {warning}")
    print(f"threshold {pipeline.threshold:.4g}: the {pipeline.combiner.threshold_percentile}th percentile of the "
          f"scores of the latest {config['calibration_events']:,} events")
    print(f"wrote model package {path}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from obsad.io import write_parquet
    from obsad.ocsf.load import load_events
    from obsad.pipeline import load_pipeline

    if args.out.suffix.lower() != ".parquet":
        raise UserError(f"--out must be a .parquet file, got {args.out}")
    if not args.model.is_dir():
        raise UserError(f"--model {args.model}: not a model package directory")
    pipeline = load_pipeline(args.model)
    for warning in pipeline.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    events, report = load_events(args.events, columns=pipeline.input_columns)  # only what the model reads
    print(report.summary())
    scores = pipeline.score(events, explain="all" if args.explain_all else "flagged").reset_index(drop=True)
    write_parquet(scores, args.out)
    flagged = int(scores["is_anomaly"].sum())
    share = flagged / max(len(scores), 1)
    by_view = scores.loc[scores["is_anomaly"], "view"].value_counts()
    detail = ", ".join(f"{n:,} by the {view} view" for view, n in by_view.items())
    print(f"scored {len(scores):,} events: {flagged:,} above the threshold ({share:.2%}){': ' + detail if detail else ''}")
    print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obsad", description=__doc__.splitlines()[0])
    from obsad import __version__

    parser.add_argument("--version", action="version", version=f"obsad {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    sim = verbs.add_parser("simulate", help="write a labelled OCSF event dataset (Parquet)")
    sim.add_argument("--events", type=_positive_int, default=100_000, help="number of events (default 100000)")
    sim.add_argument("--days", type=_positive_int, default=7, help="days covered (default 7)")
    sim.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    sim.add_argument("--start", default="2026-03-02T00:00:00Z",
                     help="first instant, ISO 8601 UTC (default 2026-03-02T00:00:00Z, a Monday)")
    sim.add_argument("--out", type=Path, required=True, help="output folder")
    sim.set_defaults(run=_cmd_simulate)

    ins = verbs.add_parser("inspect", help="load an OCSF export and report what was malformed")
    ins.add_argument("events", type=Path, help="Parquet, JSON Lines or JSON array of OCSF events")
    ins.add_argument("--columns", action="store_true", help="list the flat columns with their fill rate")
    ins.set_defaults(run=_cmd_inspect)

    fit = verbs.add_parser("fit", help="fit encoder, model and detector on a baseline of OCSF events; write a package")
    fit.add_argument("--events", type=Path, required=True, help="Parquet, JSON Lines or JSON array of OCSF events")
    fit.add_argument("--out", type=Path, required=True, help="model package folder to write")
    fit.add_argument("--epochs", type=_positive_int, default=None,
                     help="training epochs (default: about 300 optimisation steps)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.add_argument("--window", default="1h",
                     help="window length of the window view (entities over time), e.g. 30min, 1h; 'none' to "
                          "score events one by one only (default 1h)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(run=_cmd_fit)

    sco = verbs.add_parser("score", help="score OCSF events with a model package; write one row per event (Parquet)")
    sco.add_argument("--model", type=Path, required=True, help="model package folder written by obsad fit")
    sco.add_argument("--events", type=Path, required=True, help="Parquet, JSON Lines or JSON array of OCSF events")
    sco.add_argument("--out", type=Path, required=True, help="output .parquet file")
    sco.add_argument("--explain-all", action="store_true",
                     help="fill top_features for every event (default: for the flagged events only)")
    sco.set_defaults(run=_cmd_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UserError as err:
        print(f"obsad {args.verb}: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, ValueError) as err:
        # ValueError covers OCSFLoadError and bad encoder files: the message says what to fix.
        print(f"obsad {args.verb}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
