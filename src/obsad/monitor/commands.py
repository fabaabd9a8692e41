"""``obsad drift``: have the current events drifted from a model's training data?

    obsad drift --model DIR --events CURRENT [--reference REF] [--out report.json] [--method mmd|classifier]
                [--alpha 0.05] [--seed 0]

The reference is the sample of events the package keeps for it (:meth:`obsad.pipeline.FittedPipeline.drift_reference`):
events that ``obsad fit`` held out of the encoder's and the model's fitting (up to 2,000), with their stored
embeddings; or the events of ``--reference``, embedded with the package's model. Events a model was fitted on are
not quite a sample of new events: the encoder learnt its vocabularies and value frequencies from them, so their
embeddings differ slightly from those of new events of the same stream, and a test against them alarms more often
than ``alpha`` (measured in ``bench/bench_drift.py``). A package without held-out events (one assembled by hand
from an encoder fitted on all its events) falls back to its whole reference sample, and a drift found that way
comes with that warning. The per-field tests read raw values and are not affected. At most ``--max-samples`` current
events and four times as many reference events are embedded and tested (seeded subsamples); every event goes into
the per-field tests. Prints a summary; ``--out`` writes the result as JSON. Exit code 0 whether or not drift is found, 2 on an
error the user can fix (a missing or unreadable file, a package that fails verification, events that share no field
with the model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["DriftInputError", "add_drift_parser", "cmd_drift"]


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {value}")
    return value


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


def add_drift_parser(verbs) -> argparse.ArgumentParser:
    """Add the ``drift`` verb to ``verbs`` (the sub-parsers object of ``obsad``); it runs :func:`cmd_drift`."""
    p = verbs.add_parser("drift", help="test whether OCSF events drifted from a model package's training data")
    p.add_argument("--model", type=Path, required=True, help="model package folder written by obsad fit")
    p.add_argument("--events", type=Path, required=True,
                   help="current events: Parquet, JSON Lines or JSON array of OCSF events")
    p.add_argument("--reference", type=Path, default=None,
                   help="reference events in the same formats (default: the training sample kept in the package)")
    p.add_argument("--out", type=Path, default=None, help="write the result to this .json file")
    p.add_argument("--method", choices=("mmd", "classifier"), default="mmd",
                   help="embedding test: kernel MMD with a permutation test (default) or a classifier two-sample test")
    p.add_argument("--alpha", type=_probability, default=0.05,
                   help="false-alarm rate of the embedding test and level of the per-field tests (default 0.05)")
    p.add_argument("--correction", choices=("bh", "bonferroni"), default="bh",
                   help="per-field multiple-testing correction: Benjamini-Hochberg (default) or Bonferroni")
    p.add_argument("--max-samples", type=_count(4), default=1000,
                   help="current events embedded and tested, at most (default 1000; the reference: 4 times as many)")
    p.add_argument("--permutations", type=_count(1), default=500,
                   help="permutations of the MMD test (default 500)")
    p.add_argument("--seed", type=_count(0), default=0,
                   help="random seed of the subsamples and permutations (default 0)")
    p.set_defaults(run=cmd_drift)
    return p


class DriftInputError(ValueError):
    """A problem with ``obsad drift``'s inputs that the user can fix. A ``ValueError``, which ``obsad``'s ``main``
    prints as one line with exit code 2 (like ``UserError``; a ``UserError`` raised from here would be another class
    than the one ``main`` catches when the command line runs as ``python -m obsad.cli``)."""


def _user_error(message: str) -> Exception:
    return DriftInputError(message)


def _check_shared_fields(events, columns: list[str], flag: str, path: Path) -> None:
    """A file none of whose events has a value in any field the model reads is not a sample of the same stream."""
    present = [c for c in columns if c in events.columns and events[c].notna().any()]
    if not present:
        shown = ", ".join(columns[:5]) + (", ..." if len(columns) > 5 else "")
        raise _user_error(f"{flag} {path}: none of its {len(events):,} events has a value in any of the "
                          f"{len(columns)} fields the model reads ({shown}); is it the right file?")


def cmd_drift(args: argparse.Namespace) -> int:
    """Run ``obsad drift``: 0 whether or not drift is found; a user's mistake raises a ``ValueError``
    (:class:`DriftInputError`, ``OCSFLoadError``, ``PackageError``) whose message ``obsad``'s ``main`` prints, with
    exit code 2; a missing file is checked before anything is read."""
    import time

    started = time.perf_counter()
    if args.out is not None and args.out.suffix.lower() != ".json":
        raise _user_error(f"--out must be a .json file, got {args.out}")
    if not args.model.is_dir():
        raise _user_error(f"--model {args.model}: not a model package directory")
    for flag, path in (("--events", args.events), ("--reference", args.reference)):
        if path is not None and not path.is_file():
            raise _user_error(f"{flag} {path}: " + ("a directory, not a file" if path.is_dir() else "no such file"))

    import numpy as np

    from obsad.io import write_json
    from obsad.monitor.drift import DriftDetector
    from obsad.monitor.fields import field_kinds_from_encoder
    from obsad.ocsf.load import load_events
    from obsad.pipeline import load_pipeline

    pipeline = load_pipeline(args.model)  # PackageError (a ValueError) names the file that failed verification
    kinds = field_kinds_from_encoder(pipeline.encoder)
    model_columns = [st["column"] for st in pipeline.encoder.columns_ if not str(st["role"]).startswith("drop")
                     and st["role"] != "excluded"]
    columns = list(dict.fromkeys(pipeline.input_columns + list(kinds)))

    events, report = load_events(args.events, columns=columns)
    print(report.summary())
    _check_shared_fields(events, model_columns, "--events", args.events)
    if len(events) < 4:
        raise _user_error(f"--events {args.events}: {len(events)} event(s); a drift test needs at least 4")

    detector = DriftDetector(method=args.method, alpha=args.alpha, n_permutations=args.permutations,
                             max_samples=args.max_samples, seed=args.seed, correction=args.correction,
                             field_kinds=kinds)
    if args.reference is not None:
        reference, ref_report = load_events(args.reference, columns=columns)
        print(ref_report.summary())
        _check_shared_fields(reference, model_columns, "--reference", args.reference)
        if len(reference) < 4:
            raise _user_error(f"--reference {args.reference}: {len(reference)} event(s); at least 4 are needed")
        keep = detector.reference_rows(len(reference))
        ref_embeddings = pipeline.embed(pipeline.encoder.transform(reference.iloc[keep]))
        reference_label = str(args.reference)
        held_out = True
    else:
        try:
            reference, stored, held_out = pipeline.drift_reference()
        except ValueError:
            raise _user_error(f"--model {args.model}: the package keeps no reference sample; pass --reference") from None
        if len(reference) != len(stored):
            raise _user_error(f"--model {args.model}: the package's reference events and embeddings disagree; "
                              "pass --reference")
        if len(reference) < 4:
            raise _user_error(f"--model {args.model}: the package's reference holds {len(reference)} event(s); "
                              "pass a larger --reference")
        ref_embeddings = np.asarray(stored)
        reference_label = "package's held-out sample" if held_out else "package reference sample"
    detector.fit(ref_embeddings, reference)

    rows = detector.current_rows(len(events))
    cur_embeddings = pipeline.embed(pipeline.encoder.transform(events.iloc[rows]))
    result = detector.test(cur_embeddings, events, window_size=len(events))

    print(result.summary())
    if args.reference is None and not held_out and result.drift:
        print("note: the reference is the model's own training sample; the encoder learnt its vocabularies and "
              "value frequencies from those very events, so their embeddings differ slightly from those of new "
              f"events of an unchanged stream, and this test alarms more often than alpha = {args.alpha:g} (0.10 "
              "instead of 0.05 at 1,000 events in bench/bench_drift.py). For the stated rate, pass --reference "
              "with events the model was not fitted on.")
    if result.drift and not result.drifted_fields:
        print("no single field moved: the embeddings differ in how fields combine, which no field shows alone")
    if args.out is not None:
        payload = {**result.to_dict(), "model": str(args.model), "events": str(args.events),
                   "reference": reference_label, "n_reference": int(len(reference))}
        write_json(payload, args.out)
        print(f"wrote {args.out}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
