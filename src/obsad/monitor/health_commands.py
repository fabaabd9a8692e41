"""``obsad health``: is the model healthy? Every check of the Part 8 checklist measured on real numbers.

    obsad health --model DIR --events CURRENT [--reference REF] [--quality FILE.json | --alerts DIR [--verdicts DIR]]
                 [--metrics FILE_OR_URL] [--out report.json] [--batch-sizes 1,100,1000] [--repeats 20] [--target NAME=VALUE ...]
                 [--alpha 0.05] [--drift-method mmd|classifier] [--max-samples 1000] [--permutations 500] [--seed 0]

What is measured, and from what:

- **drift**: ``obsad drift`` itself (:func:`obsad.monitor.commands.cmd_drift`) on ``--events`` against the
  package's training sample or ``--reference`` (the honest reference: events the model was not fitted on); its
  p-value against ``--alpha``.
- **latency** and **resources**: the real scoring path, :meth:`FittedPipeline.score`, timed on contiguous batches
  of ``--events`` (``--batch-sizes``, ``--repeats`` calls each) under a :class:`~obsad.monitor.resources.
  ResourceMonitor`; the check is the P95 of the smallest batch (one request of one event, scored by the event view
  as the service scores it). With ``--metrics``, the check is the service's own P95 instead, estimated from its
  latency histogram, and the timing is reported beside it.
- **data error rate**: malformed events among those read from ``--events`` (the load report: records rejected,
  values that did not parse).
- **API error rate**: server errors (5xx) among the scoring requests counted in the service's ``/metrics``
  (``--metrics``: a saved text file or the URL); not measured without it.
- **alert quality** (F1, false-positive rate): from the alert and verdict logs (``--alerts``, ``--verdicts``:
  :func:`obsad.monitor.alerts.quality_summary` over the last ``--quality-days`` days), or a JSON object with ``f1``,
  ``fpr`` (and ``precision``, ``recall``, ``n_labels``, intervals) (``--quality``); not measured without either.
- **model age**: days since the package's manifest was written.

Prints the report; ``--out`` writes it as JSON. Exit code 0 when every measured check passes, 1 when one fails, 2
on an error the user can fix (a missing file, a package that fails verification, an unreadable metrics text).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .commands import _count, _probability

__all__ = ["HealthInputError", "add_health_parser", "cmd_health"]


class HealthInputError(ValueError):
    """A problem with ``obsad health``'s inputs that the user can fix: ``obsad`` prints it as one line, exit code 2."""


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes >= 1, got {text!r}")
    return sizes


def _target(text: str) -> tuple[str, float]:
    from .health import CHECKS

    name, sep, value = text.partition("=")
    if not sep or name.strip() not in CHECKS:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {', '.join(CHECKS)}, got {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number after {name}=, got {value!r}") from None


def add_health_parser(verbs) -> argparse.ArgumentParser:
    """Add the ``health`` verb to ``verbs`` (the sub-parsers object of ``obsad``); it runs :func:`cmd_health`."""
    p = verbs.add_parser("health", help="health report of a model package: drift, alert quality, latency, errors, age")
    p.add_argument("--model", type=Path, required=True, help="model package folder written by obsad fit")
    p.add_argument("--events", type=Path, required=True,
                   help="current events (Parquet, JSON Lines or JSON array): drift, timed scoring, data errors")
    p.add_argument("--reference", type=Path, default=None,
                   help="reference events for the drift test (default: the training sample kept in the package)")
    quality = p.add_mutually_exclusive_group()
    quality.add_argument("--quality", type=Path, default=None,
                         help="alert quality as a JSON object (f1, fpr, precision, recall, n_labels, ...)")
    quality.add_argument("--alerts", type=Path, default=None,
                         help="alert log folder (obsad.monitor.alerts.AlertLog): alert quality over the last "
                              "--quality-days days, with the verdicts of --verdicts")
    p.add_argument("--verdicts", type=Path, default=None,
                   help="verdict log folder (obsad.monitor.alerts.VerdictLog), with --alerts")
    p.add_argument("--quality-days", type=_count(1), default=7,
                   help="days of alerts and verdicts the quality check covers, ending now (default 7)")
    p.add_argument("--tz", default="UTC", help="time zone of the quality window's calendar days (default UTC)")
    p.add_argument("--metrics", default=None,
                   help="the service's Prometheus metrics: a saved /metrics text file or its http(s) URL")
    p.add_argument("--out", type=Path, default=None, help="write the report to this .json file")
    p.add_argument("--batch-sizes", type=_sizes, default=(1, 100, 1000),
                   help="batch sizes of the timed scoring, comma-separated (default 1,100,1000)")
    p.add_argument("--repeats", type=_count(1), default=20, help="timed calls per batch size (default 20)")
    p.add_argument("--target", type=_target, action="append", default=[], metavar="NAME=VALUE",
                   help="override a check's threshold, e.g. latency_p95=100 or model_age=7 (repeatable)")
    p.add_argument("--alpha", type=_probability, default=0.05,
                   help="false-alarm rate of the drift test (default 0.05)")
    p.add_argument("--drift-method", choices=("mmd", "classifier"), default="mmd",
                   help="embedding drift test (default mmd)")
    p.add_argument("--max-samples", type=_count(4), default=1000,
                   help="current events embedded for the drift test, at most (default 1000)")
    p.add_argument("--permutations", type=_count(1), default=500, help="permutations of the MMD test (default 500)")
    p.add_argument("--seed", type=_count(0), default=0, help="random seed (default 0)")
    p.set_defaults(run=cmd_health)
    return p


def _check_inputs(args: argparse.Namespace) -> None:
    if args.out is not None and args.out.suffix.lower() != ".json":
        raise HealthInputError(f"--out must be a .json file, got {args.out}")
    if not args.model.is_dir():
        raise HealthInputError(f"--model {args.model}: not a model package directory")
    for flag, path in (("--events", args.events), ("--reference", args.reference), ("--quality", args.quality)):
        if path is not None and not path.is_file():
            raise HealthInputError(f"{flag} {path}: " + ("a directory, not a file" if path.is_dir() else "no such file"))
    for flag, path in (("--alerts", args.alerts), ("--verdicts", args.verdicts)):
        if path is not None and not path.is_dir():
            raise HealthInputError(f"{flag} {path}: not a folder")
    if args.verdicts is not None and args.alerts is None:
        raise HealthInputError("--verdicts goes with --alerts (the alert log the verdicts are about)")
    if args.metrics is not None and not _is_url(args.metrics) and not Path(args.metrics).is_file():
        raise HealthInputError(f"--metrics {args.metrics}: no such file (or an http(s):// URL)")


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def _read_quality(path: Path) -> dict:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HealthInputError(f"--quality {path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HealthInputError(f"--quality {path}: expected a JSON object (f1, fpr, ...), got {type(data).__name__}")
    return data


def _alert_quality(args: argparse.Namespace) -> dict:
    """The alert quality of the last ``--quality-days`` days from the alert and verdict logs, as a mapping."""
    from .alerts import AlertLog, VerdictLog, quality_summary

    verdicts = VerdictLog(args.verdicts) if args.verdicts is not None else None
    summary = quality_summary(AlertLog(args.alerts), verdicts, days=args.quality_days, tz=args.tz)
    print(summary.summary())
    return summary.to_dict()


def _read_metrics(source: str):
    from .resources import metrics_from_prometheus

    if _is_url(source):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(source, timeout=10) as response:
                text = response.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise HealthInputError(f"--metrics {source}: could not fetch ({exc})") from None
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HealthInputError(f"--metrics {source}: not readable ({exc})") from None
    try:
        return metrics_from_prometheus(text)
    except ValueError as exc:
        raise HealthInputError(f"--metrics {source}: {exc}") from None


def malformed_events(report) -> int:
    """Events of a :class:`~obsad.ocsf.load.LoadReport` with at least one problem (a rejected record, a value
    that did not parse): distinct positions, a problem without a position counted once each, at least the
    records not loaded, at most the records read."""
    problems = report.problems
    lines = problems["line"] if "line" in problems.columns else problems.index.to_series()
    n = int(lines.dropna().nunique()) + int(lines.isna().sum())
    return int(min(max(n, report.n_input - report.n_loaded), report.n_input))


def model_age_days(package_dir: Path, now=None) -> tuple[float | None, str | None]:
    """Days since the package's manifest was written (its ``created``, UTC), and that time."""
    import datetime as dt
    import json

    from obsad.package import MANIFEST

    try:
        created = json.loads((Path(package_dir) / MANIFEST).read_text(encoding="utf-8")).get("created")
        when = dt.datetime.fromisoformat(str(created))
    except (OSError, ValueError, TypeError, AttributeError):
        return None, None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return (now - when).total_seconds() / 86400.0, when.isoformat()


def _drift(args: argparse.Namespace) -> dict:
    """``obsad drift`` run as it is (its checks, messages and summary), its JSON report read back."""
    import json
    import tempfile

    from .commands import cmd_drift

    with tempfile.TemporaryDirectory(prefix="obsad-health-") as tmp:
        out = Path(tmp) / "drift.json"
        cmd_drift(argparse.Namespace(model=args.model, events=args.events, reference=args.reference, out=out,
                                     method=args.drift_method, alpha=args.alpha, correction="bh",
                                     max_samples=args.max_samples, permutations=args.permutations, seed=args.seed))
        return json.loads(out.read_text(encoding="utf-8"))


def cmd_health(args: argparse.Namespace) -> int:
    """Run ``obsad health``: 0 healthy, 1 a check failed; a user's mistake raises a ``ValueError``
    (:class:`HealthInputError`, ``DriftInputError``, ``OCSFLoadError``, ``PackageError``) that ``obsad``'s
    ``main`` prints with exit code 2."""
    import time

    started = time.perf_counter()
    _check_inputs(args)
    quality = _read_quality(args.quality) if args.quality is not None else None
    if args.alerts is not None:
        print("== alert quality")
        quality = _alert_quality(args)
    service = _read_metrics(args.metrics) if args.metrics is not None else None

    from obsad.io import write_json
    from obsad.ocsf.load import load_events
    from obsad.pipeline import load_pipeline

    from .health import health_report, resolve_targets
    from .resources import time_scoring

    targets = resolve_targets(dict(args.target))
    print("== drift")
    drift = _drift(args)  # verifies the package and reads the events first: a bad input stops here, exit 2
    pipeline = load_pipeline(args.model)
    events, report = load_events(args.events, columns=pipeline.input_columns)
    bad = malformed_events(report)

    print("== timed scoring")
    timing = time_scoring(pipeline, events, batch_sizes=args.batch_sizes, repeats=args.repeats, seed=args.seed)
    print(timing.summary())
    res = timing.resources
    print(f"resources: CPU mean {res.cpu_mean_pct:.0f} % (max {res.cpu_max_pct:.0f} %, {res.cpu_count} cores), "
          f"RSS peak {res.rss_peak_mb:,.0f} MiB, {res.wall_s:.1f} s")

    errors = {"data_error_rate": bad / report.n_input if report.n_input else None, "n_events": report.n_input,
              "n_malformed": bad}
    if service is not None:
        errors.update(api_error_rate=service.error_rate, n_requests=service.n_requests, n_api_errors=service.n_errors,
                      n_client_errors=service.n_client_errors)
        if service.data_error_rate is not None:
            errors["data_source"] = (f"the service refused {service.events_rejected:,} of "
                                     f"{service.events_scored + service.events_rejected:,} events "
                                     f"({100 * service.data_error_rate:.3g} %)")
    latency = timing
    if service is not None and service.p95_ms is not None:
        latency = {**service.to_dict(), "source": "service /metrics histogram"}
    age, created = model_age_days(args.model)
    extra = {"model": str(args.model), "events": str(args.events),
             "reference": str(args.reference) if args.reference is not None else "package reference sample",
             "model_created": created, "drift": drift, "timing": timing.to_dict(),
             "service": None if service is None else service.to_dict(),
             "load": {"n_input": report.n_input, "n_loaded": report.n_loaded, "n_malformed": bad,
                      "problems": report.counts()},
             "quality_input": quality}
    health = health_report(drift=drift, quality=quality, latency=latency, errors=errors, model_age_days=age,
                           targets=targets, extra=extra)
    print(health.summary())
    if args.out is not None:
        write_json(health.to_dict(), args.out)
        print(f"wrote {args.out}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0 if health.healthy else 1
