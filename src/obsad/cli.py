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
    paths = write_simulation(args.out, n_events=args.events, days=args.days, seed=args.seed)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obsad", description=__doc__.splitlines()[0])
    from obsad import __version__

    parser.add_argument("--version", action="version", version=f"obsad {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    sim = verbs.add_parser("simulate", help="write a labelled OCSF event dataset (Parquet)")
    sim.add_argument("--events", type=_positive_int, default=100_000, help="number of events (default 100000)")
    sim.add_argument("--days", type=_positive_int, default=7, help="days covered (default 7)")
    sim.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    sim.add_argument("--out", type=Path, required=True, help="output folder")
    sim.set_defaults(run=_cmd_simulate)

    ins = verbs.add_parser("inspect", help="load an OCSF export and report what was malformed")
    ins.add_argument("events", type=Path, help="Parquet, JSON Lines or JSON array of OCSF events")
    ins.add_argument("--columns", action="store_true", help="list the flat columns with their fill rate")
    ins.set_defaults(run=_cmd_inspect)
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
