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
    if args.labels is not None:
        return _fit_two_stage(args, events, report)
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


def _fit_two_stage(args: argparse.Namespace, events, report) -> int:
    """``obsad fit --labels``: masked pretraining on every event, a classification head on the labelled ones."""
    from obsad.labels import read_labels
    from obsad.runtime import Stopwatch
    from obsad.train.two_stage import TwoStageConfig, encode_labels, fit_two_stage

    labels = read_labels(args.labels, events, id_column=args.id_column, n_input=report.n_input)
    encode_labels(labels, args.normal_label)  # class checks before anything is trained
    watch = Stopwatch()
    config = TwoStageConfig(seed=args.seed, progress=not args.quiet)
    model = fit_two_stage(events, labels, config, normal_class=args.normal_label)
    path = model.save(args.out)
    summary = model.summary
    per_class = ", ".join(f"{name} {n:,}" for name, n in summary["labels_per_class"].items())
    print(f"two-stage fit on {len(events):,} events ({summary['n_labels']:,} labelled: {per_class}) "
          f"in {watch.seconds:.1f} s")
    print(f"stage 1: masked-feature pretraining, {summary.get('pretrain_epochs', 0)} epochs; stage 2: frozen "
          f"encoder + head at {config.head_lr:.0e} ({config.head_lr_ratio} x base), "
          f"{summary['n_validation_labels']:,} latest labels held out")
    print(f"threshold {model.threshold_:.4g} on 1 - P({args.normal_label}): the {model.threshold_percentile}th "
          f"percentile of the events not labelled as anomalies ({summary['share_flagged']:.2%} of them flagged)")
    print(f"wrote model package {path} ({model.package_name})")
    return 0


def _package_format(directory: Path) -> str | None:
    import json

    try:
        return json.loads((directory / "config.json").read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None  # the package loader says what is wrong


def _score_two_stage(args: argparse.Namespace) -> int:
    import numpy as np

    from obsad.io import write_parquet
    from obsad.ocsf.load import load_events
    from obsad.train.two_stage import load_two_stage_model, predict_anomalies

    model, _, _ = load_two_stage_model(args.model)
    columns = list(dict.fromkeys(model.input_columns + ["metadata.uid", "time"]))
    events, report = load_events(args.events, columns=columns)
    print(report.summary())
    answer = predict_anomalies(model, events).reset_index(drop=True)
    out = events[[c for c in ("metadata.uid", "time") if c in events.columns]].reset_index(drop=True)
    out = out.rename(columns={"metadata.uid": "event_uid"})
    out["score"] = answer["anomaly_score"].to_numpy()
    out["is_anomaly"] = answer["is_anomaly"].to_numpy()
    out["predicted_class"] = answer["predicted_class"].astype(str).to_numpy()
    out["class_probability"] = answer["class_probability"].to_numpy()
    top = np.full(len(out), "", dtype=object)
    explain = np.ones(len(out), dtype=bool) if args.explain_all else out["is_anomaly"].to_numpy()
    if explain.any():
        top[explain] = model.explain(events.iloc[np.flatnonzero(explain)])
    out["top_features"] = top
    write_parquet(out, args.out)
    flagged = out["is_anomaly"].to_numpy()
    by_class = out.loc[flagged, "predicted_class"].value_counts()
    detail = ", ".join(f"{n:,} {name}" for name, n in by_class.items())
    print(f"scored {len(out):,} events: {int(flagged.sum()):,} above the threshold ({flagged.mean():.2%})"
          f"{': ' + detail if detail else ''}")
    print(f"wrote {args.out}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from obsad.io import write_parquet
    from obsad.ocsf.load import load_events
    from obsad.pipeline import load_pipeline

    if args.out.suffix.lower() != ".parquet":
        raise UserError(f"--out must be a .parquet file, got {args.out}")
    if not args.model.is_dir():
        raise UserError(f"--model {args.model}: not a model package directory")
    from obsad.train.two_stage import PACKAGE_FORMAT

    if _package_format(args.model) == PACKAGE_FORMAT:
        if args.engine == "spark":
            raise UserError("--engine spark scores packages written by `obsad fit` without --labels; score this "
                            "two-stage package with --engine local")
        return _score_two_stage(args)
    if args.engine == "spark":
        return _score_spark(args)
    pipeline = load_pipeline(args.model)
    for warning in pipeline.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    events, report = load_events(args.events, columns=pipeline.input_columns)  # only what the model reads
    print(report.summary())
    scores = pipeline.score(events, explain="all" if args.explain_all else "flagged").reset_index(drop=True)
    write_parquet(scores, args.out)
    _print_scored(scores, args.out)
    return 0


def _score_spark(args: argparse.Namespace) -> int:
    """``obsad score --engine spark``: the same scores computed by Spark (:mod:`obsad.spark`), on ``--master``."""
    from obsad.spark import MissingSparkError, require_pyspark

    try:
        require_pyspark()
    except MissingSparkError as exc:
        raise UserError(str(exc)) from None
    from pyspark.errors import PySparkException, PythonException

    from obsad.spark import score_file

    explain = "all" if args.explain_all else "flagged"
    try:
        scores = score_file(args.events, args.model, args.out, master=args.master, partitions=args.partitions,
                            explain=explain)
    except PySparkException as exc:  # one line says why: a worker's exception is its last line, Spark's its first
        lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        raise UserError(f"Spark ({args.master}) failed: "
                        f"{lines[-1] if isinstance(exc, PythonException) else lines[0]}") from exc
    print(f"read {args.events} with Spark ({args.master})")
    _print_scored(scores, args.out)
    return 0


def _print_scored(scores, out: Path) -> None:
    flagged = int(scores["is_anomaly"].sum())
    share = flagged / max(len(scores), 1)
    by_view = scores.loc[scores["is_anomaly"], "view"].value_counts()
    detail = ", ".join(f"{n:,} by the {view} view" for view, n in by_view.items())
    print(f"scored {len(scores):,} events: {flagged:,} above the threshold ({share:.2%}){': ' + detail if detail else ''}")
    print(f"wrote {out}")


def _cmd_serve(args: argparse.Namespace) -> int:
    """``obsad serve``: the HTTP scoring service (obsad.serve) until interrupted."""
    from obsad.serve import ModelLoadError, ServeConfigError, serve

    for flag, path in (("--model", args.model), ("--shadow", args.shadow)):
        if path is not None and not path.is_dir():
            raise UserError(f"{flag} {path}: not a model package directory")
    try:
        serve(args.model, host=args.host, port=args.port, allow_remote=args.allow_remote,
              api_key_file=args.api_key_file, shadow=args.shadow, shadow_log=args.shadow_log,
              max_batch=args.max_batch, max_body_bytes=args.max_body_bytes, threads=args.threads,
              workers=args.workers, log_level=args.log_level)
    except (ServeConfigError, ModelLoadError) as exc:
        raise UserError(str(exc)) from exc
    return 0


def _check_parquet_out(path: Path) -> None:
    if path.suffix.lower() != ".parquet":
        raise UserError(f"--out must be a .parquet file, got {path}")


def _cmd_logs_parse(args: argparse.Namespace) -> int:
    from obsad.io import write_parquet
    from obsad.logs.pipeline import parse_log_lines
    from obsad.runtime import Stopwatch

    _check_parquet_out(args.out)
    watch = Stopwatch()
    lines, report = parse_log_lines(args.logs, args.format)
    write_parquet(lines, args.out)
    print(report.summary())
    n_templates = int(lines["template_id"].max()) + 1 if len(lines) else 0
    print(f"parsed {len(lines):,} lines into {n_templates:,} templates "
          f"({len(lines) / max(watch.seconds, 1e-9):,.0f} lines/s)")
    print(f"wrote {args.out}")
    return 0


def _cmd_logs_fit(args: argparse.Namespace) -> int:
    from obsad.logs.formats import read_labels
    from obsad.logs.pipeline import fit_log_pipeline

    labels = read_labels(args.labels) if args.labels is not None else None
    pipeline = fit_log_pipeline(args.logs, args.format, seed=args.seed, labels=labels, progress=not args.quiet)
    path = pipeline.save(args.out)
    c = pipeline.config
    print(f"{c['n_lines']:,} lines, {c['n_sessions']:,} sessions: {c['sessions']['train']:,} to train, "
          f"{c['sessions']['val']:,} to stop early, {c['sessions']['test']:,} to calibrate")
    if c["sessions_excluded_as_anomalous"]:
        print(f"{c['sessions_excluded_as_anomalous']:,} sessions labelled anomalous were left out")
    if c["sessions_trimmed_as_outlying"]:
        print(f"{c['sessions_trimmed_as_outlying']:,} sessions far above the others' scores were set aside as "
              "probable anomalies before the final training (pass --labels to use known labels instead)")
    print(f"{c['n_templates']:,} templates in the training vocabulary; {c['epochs_run']} epochs")
    print(f"threshold {pipeline.rule.threshold_:.4g} on {pipeline.rule.column}: the "
          f"{pipeline.rule.threshold_percentile}th percentile of the calibration sessions; sessions with more than "
          f"{pipeline.rule.unseen_rate_limit:.0%} unseen templates are flagged too")
    print(f"fitted in {pipeline.timings['fit_seconds']:.1f} s; wrote model package {path}")
    return 0


def _cmd_logs_score(args: argparse.Namespace) -> int:
    from obsad.io import write_parquet
    from obsad.logs.pipeline import load_log_pipeline

    _check_parquet_out(args.out)
    if not args.model.is_dir():
        raise UserError(f"--model {args.model}: not a model package directory")
    pipeline = load_log_pipeline(args.model)
    scores, report = pipeline.score_file(args.logs)
    print(report.summary())
    write_parquet(scores, args.out)
    flagged = int(scores["is_anomaly"].sum())
    print(f"scored {len(scores):,} sessions: {flagged:,} flagged ({flagged / max(len(scores), 1):.2%})")
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
    fit.add_argument("--labels", type=Path, default=None,
                     help="analyst labels (Parquet or CSV: a 'label' column and 'row' or the --id-column): "
                          "two-stage training, masked pretraining on every event then a classification head")
    fit.add_argument("--id-column", default=None,
                     help="column of the label file matching the events' field of the same name (default: 'row', "
                          "0-based positions in --events)")
    fit.add_argument("--normal-label", default="normal", help="the label of ordinary events (default 'normal')")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(run=_cmd_fit)

    sco = verbs.add_parser("score", help="score OCSF events with a model package; write one row per event (Parquet)")
    sco.add_argument("--model", type=Path, required=True, help="model package folder written by obsad fit")
    sco.add_argument("--events", type=Path, required=True, help="Parquet, JSON Lines or JSON array of OCSF events")
    sco.add_argument("--out", type=Path, required=True, help="output .parquet file")
    sco.add_argument("--explain-all", action="store_true",
                     help="fill top_features for every event (default: for the flagged events only)")
    sco.add_argument("--engine", choices=("local", "spark"), default="local",
                     help="local: this process (default); spark: Apache Spark batch scoring, the same scores and "
                          "row order, for batches larger than one machine (needs pip install 'obsad[spark]' and "
                          "Java 17+)")
    sco.add_argument("--master", default="local[*]",
                     help="--engine spark: the Spark master (default local[*], every core of this machine); on a "
                          "cluster e.g. spark://host:7077, yarn or k8s://https://host:443, with obsad[spark] "
                          "installed on the executors")
    sco.add_argument("--partitions", type=_positive_int, default=None,
                     help="--engine spark: tasks per stage (default: the input's splits, at least one per core)")
    sco.set_defaults(run=_cmd_score)

    srv = verbs.add_parser("serve", help="serve a model package over HTTP: /v1/score, /v1/similar, /metrics")
    srv.add_argument("--model", type=Path, required=True, help="model package folder written by obsad fit "
                                                                "(fixed for the service's life; reload re-reads it)")
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1; beyond loopback needs --allow-remote)")
    srv.add_argument("--port", type=_positive_int, default=8080, help="port (default 8080)")
    srv.add_argument("--allow-remote", action="store_true",
                     help="allow a --host other than loopback (other machines can connect: set an API key)")
    srv.add_argument("--api-key-file", type=Path, default=None,
                     help="file holding the key required as 'Authorization: Bearer <key>' on /v1/* "
                          "(default: $OBSAD_API_KEY, else no key and no reload endpoint)")
    srv.add_argument("--shadow", type=Path, default=None,
                     help="challenger package scored beside --model on every request; recorded, never answered")
    srv.add_argument("--shadow-log", type=Path, default=None,
                     help="folder of the JSON Lines log of champion and challenger scores (with --shadow)")
    srv.add_argument("--max-batch", type=_positive_int, default=1000, help="most events per request (default 1000)")
    srv.add_argument("--max-body-bytes", type=_positive_int, default=8 << 20,
                     help="largest request body in bytes (default 8 MiB)")
    srv.add_argument("--threads", type=_positive_int, default=1,
                     help="torch and FAISS threads (default 1: the fastest for single events)")
    srv.add_argument("--workers", type=_positive_int, default=1,
                     help="processes scoring batches (default 1: in the service process); on a machine with spare "
                          "cores, one per core scores that many batches at once")
    srv.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                     help="log level (default info)")
    srv.set_defaults(run=_cmd_serve)

    from obsad.monitor.commands import add_drift_parser

    add_drift_parser(verbs)
    from obsad.monitor.health_commands import add_health_parser

    add_health_parser(verbs)
    from obsad.monitor.registry_commands import add_registry_parser

    add_registry_parser(verbs)

    logs = verbs.add_parser("logs", help="raw HDFS / OpenStack logs: templates, sessions, next-template model")
    log_verbs = logs.add_subparsers(dest="log_verb", required=True, metavar="VERB")
    formats = ("hdfs", "openstack")
    lpa = log_verbs.add_parser("parse", help="template every line (Drain3); write one row per line (Parquet)")
    lpa.add_argument("--format", choices=formats, required=True, help="line format (Loghub layout)")
    lpa.add_argument("--logs", type=Path, required=True, help="raw log file (plain or .gz)")
    lpa.add_argument("--out", type=Path, required=True, help="output .parquet file")
    lpa.set_defaults(run=_cmd_logs_parse)
    lfi = log_verbs.add_parser("fit", help="mine templates, train the next-template model, calibrate; write a package")
    lfi.add_argument("--format", choices=formats, required=True, help="line format (Loghub layout)")
    lfi.add_argument("--logs", type=Path, required=True, help="raw log file of mostly normal sessions")
    lfi.add_argument("--labels", type=Path, default=None,
                     help="optional anomaly_label.csv (session id, Anomaly/Normal): labelled anomalies are left out")
    lfi.add_argument("--out", type=Path, required=True, help="model package folder to write")
    lfi.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    lfi.add_argument("--quiet", action="store_true", help="no progress bar")
    lfi.set_defaults(run=_cmd_logs_fit)
    lsc = log_verbs.add_parser("score", help="score each session of a log file; write one row per session (Parquet)")
    lsc.add_argument("--model", type=Path, required=True, help="model package folder written by obsad logs fit")
    lsc.add_argument("--logs", type=Path, required=True, help="raw log file in the model's format")
    lsc.add_argument("--out", type=Path, required=True, help="output .parquet file")
    lsc.set_defaults(run=_cmd_logs_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (UserError, FileNotFoundError, PermissionError, IsADirectoryError, ValueError) as err:
        # ValueError covers OCSFLoadError, LogFormatError, PackageError and bad encoder files: the message says what
        # to fix.
        verb = args.verb + (f" {args.log_verb}" if getattr(args, "log_verb", None) else "")
        print(f"obsad {verb}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
