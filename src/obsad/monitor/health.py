"""The health report: every number production monitoring measures, each against its target, in one verdict.

The checklist (Part 8): no embedding drift, F1 > 0.75, false-positive rate < 5 %, P95 latency < 200 ms, API error
rate < 1 %; to which this adds the data error rate (malformed events among those read) and the model's age. Each
is a :class:`HealthCheck` with its value, its target (text and comparison), whether it passes, a detail line and
what to do when it fails. A check with nothing to measure is *not measured* (``passing`` is None): it neither
passes nor fails, and the summary says so — a report of unmeasured checks is not a healthy report.

Drift is the controlled test of :mod:`obsad.monitor.drift` (its p-value against its ``alpha``: "no drift" is
rejected at most ``alpha`` of the time on an unchanged stream), not the seed's "fewer than 15 % of the dimensions"
rule, which has no stated false-alarm rate.

:func:`health_report` takes plain numbers or the results of the measuring functions (a
:class:`~obsad.monitor.drift.DriftResult`, :class:`~obsad.monitor.resources.ScoringTimes`,
:class:`~obsad.monitor.resources.ServiceMetrics`, any alert-quality summary as a mapping or an object with
``to_dict()``); ``obsad health`` (:mod:`obsad.monitor.health_commands`) measures them on a model package.
"""

from __future__ import annotations

import datetime as _dt
import math
import operator
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["CHECKS", "DEFAULT_TARGETS", "HealthCheck", "HealthReport", "Target", "health_report", "resolve_targets"]

_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


@dataclass(frozen=True)
class Target:
    """What a check must satisfy: ``value <comparison> threshold``; ``unit`` for printing (``"%"`` prints a
    share in percent, ``"ms"``, ``"days"``, ``""``); ``action``: what to do when it fails. The drift target's
    threshold None means "the test's own alpha"."""

    comparison: str
    threshold: float | None
    label: str
    unit: str = ""
    action: str = ""

    def __post_init__(self) -> None:
        if self.comparison not in _COMPARE:
            raise ValueError(f"comparison must be one of {sorted(_COMPARE)}, got {self.comparison!r}")

    def text(self, threshold: float | None = None) -> str:
        t = self.threshold if threshold is None else threshold
        return f"{self.comparison} {_fmt(t, self.unit)}"


#: The checks, in report order.
CHECKS = ("drift", "f1", "fpr", "latency_p95", "api_error_rate", "data_error_rate", "model_age")

#: The checklist's targets; override any with ``targets={name: Target | threshold}``.
DEFAULT_TARGETS: dict[str, Target] = {
    "drift": Target(">", None, "embedding drift (p-value)", "",
                    "look at the fields that moved; retrain on recent events if the change is there to stay"),
    "f1": Target(">", 0.75, "alert F1", "", "investigate the missed and false alerts; retrain if it persists"),
    "fpr": Target("<", 0.05, "false-positive rate", "%", "tune the threshold or retrain"),
    "latency_p95": Target("<", 200.0, "P95 latency", "ms",
                          "optimise the model (quantisation, caching, smaller batches) or add capacity"),
    "api_error_rate": Target("<", 0.01, "API error rate", "%", "debug the service's errors; scale the infrastructure"),
    "data_error_rate": Target("<", 0.01, "data error rate (malformed events)", "%",
                              "fix the export or the parser upstream: the model does not see these events"),
    "model_age": Target("<=", 30.0, "model age", "days", "retrain on recent events"),
}


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if unit == "%":
        return f"{100.0 * value:.3g} %"
    if unit == "days":
        return f"{value:,.1f} days"
    if unit == "ms":
        return (f"{value:,.1f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}") + " ms"
    return f"{value:.4g}"


def resolve_targets(targets: Mapping[str, Any] | None = None) -> dict[str, Target]:
    """``DEFAULT_TARGETS`` with ``targets`` laid over it: a :class:`Target`, or a number (a new threshold)."""
    out = dict(DEFAULT_TARGETS)
    for name, value in (targets or {}).items():
        if name not in out:
            raise ValueError(f"unknown health check {name!r}; the checks are {', '.join(CHECKS)}")
        if isinstance(value, Target):
            out[name] = value
        else:
            try:
                threshold = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"target of {name!r} must be a number or a Target, got {value!r}") from None
            if not math.isfinite(threshold):
                raise ValueError(f"target of {name!r} must be finite, got {value!r}")
            out[name] = replace(out[name], threshold=threshold)
    return out


@dataclass
class HealthCheck:
    """One line of the report. ``passing``: True / False, or None when not measured; ``value`` None then."""

    name: str
    label: str
    value: float | None
    target: str
    comparison: str
    threshold: float | None
    passing: bool | None
    detail: str = ""
    action: str = ""
    unit: str = ""

    @property
    def measured(self) -> bool:
        return self.passing is not None

    @property
    def status(self) -> str:
        return "not measured" if self.passing is None else "pass" if self.passing else "FAIL"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["status"] = self.status
        if out["value"] is not None and not math.isfinite(out["value"]):
            out["value"] = None
        return out

    def line(self) -> str:
        mark = {True: "✓", False: "✗", None: "–"}[self.passing]
        value = "not measured" if self.passing is None else _fmt(self.value, self.unit)
        text = f"{mark} {self.label}: {value} (target {self.target})"
        if self.detail:
            text += f" — {self.detail}"
        if self.passing is False and self.action:
            text += f"\n    action: {self.action}"
        return text


@dataclass
class HealthReport:
    """The checks and when they were made. ``healthy``: at least one check was measured and every measured check
    passes; ``failing`` and ``not_measured`` name the others."""

    checks: list[HealthCheck]
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    extra: dict = field(default_factory=dict)

    @property
    def failing(self) -> list[str]:
        return [c.name for c in self.checks if c.passing is False]

    @property
    def not_measured(self) -> list[str]:
        return [c.name for c in self.checks if c.passing is None]

    @property
    def healthy(self) -> bool:
        return any(c.measured for c in self.checks) and not self.failing

    def check(self, name: str) -> HealthCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {"healthy": self.healthy, "failing": self.failing, "not_measured": self.not_measured,
                "created": self.created, "checks": [c.to_dict() for c in self.checks], **self.extra}

    def summary(self) -> str:
        rule = "=" * 70
        lines = [rule, f"HEALTH CHECK ({self.created})", rule]
        lines += [c.line() for c in self.checks]
        lines.append(rule)
        measured = sum(c.measured for c in self.checks)
        if self.healthy:
            verdict = f"HEALTHY ✓ ({measured} of {len(self.checks)} checks measured, all pass)"
        elif not measured:
            verdict = "UNKNOWN – nothing was measured"
        else:
            verdict = f"UNHEALTHY ✗ (failing: {', '.join(self.failing)})"
        lines.append(f"OVERALL: {verdict}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the inputs
def _as_mapping(obj) -> dict | None:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "to_dict"):
        out = obj.to_dict()
        if isinstance(out, Mapping):
            return dict(out)
    raise TypeError(f"expected a mapping or an object with to_dict(), got {type(obj).__name__}")


def _number(mapping: Mapping | None, *keys: str) -> float | None:
    """The first key present with a finite number."""
    if not mapping:
        return None
    for key in keys:
        value = mapping.get(key)
        if value is None or isinstance(value, bool):
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            return v
    return None


def _check(name: str, target: Target, value: float | None, detail: str = "", *, threshold: float | None = None,
           passing: bool | None = None) -> HealthCheck:
    threshold = target.threshold if threshold is None else threshold
    if value is not None and passing is None and threshold is not None:
        passing = bool(_COMPARE[target.comparison](value, threshold))
    if value is None and passing is None:
        detail = detail or "no input"
    return HealthCheck(name=name, label=target.label, value=value, target=target.text(threshold),
                       comparison=target.comparison, threshold=threshold, passing=passing, detail=detail,
                       action=target.action, unit=target.unit)


def _drift_check(drift, target: Target) -> HealthCheck:
    d = _as_mapping(drift)
    if d is None:
        return _check("drift", target, None, threshold=0.05 if target.threshold is None else target.threshold)
    alpha = target.threshold if target.threshold is not None else _number(d, "alpha")
    alpha = 0.05 if alpha is None else alpha
    p = _number(d, "p_value")
    moved = d.get("drifted_fields")
    if moved is None and isinstance(d.get("fields"), list):
        a = _number(d, "alpha") or alpha
        moved = [f.get("field") for f in d["fields"] if isinstance(f, Mapping)
                 and f.get("p_value_adjusted") is not None and f["p_value_adjusted"] < a]
    bits = []
    if d.get("method"):
        bits.append(f"{d['method']} test")
    if d.get("window_size") is not None:
        bits.append(f"{int(d['window_size']):,} events")
    if moved:
        bits.append(f"fields that moved: {', '.join(map(str, moved[:5]))}" + (" ..." if len(moved) > 5 else ""))
    if p is None:  # a rule without a p-value (ks_fraction): its own verdict
        flag = d.get("drift")
        return _check("drift", target, None, "; ".join(bits) or "no p-value", threshold=alpha,
                      passing=None if flag is None else not bool(flag))
    return _check("drift", target, p, "; ".join(bits), threshold=alpha)


def _quality_checks(quality, targets: Mapping[str, Target]) -> list[HealthCheck]:
    q = _as_mapping(quality)
    f1 = _number(q, "f1", "f1_score")
    fpr = _number(q, "fpr", "false_positive_rate")
    precision, recall = _number(q, "precision"), _number(q, "recall")
    n_labels = _number(q, "n_labels", "n_labelled", "labels", "labelled")
    bits = []
    if precision is not None:
        bits.append(f"precision {precision:.2f}")
    if recall is not None:
        bits.append(f"recall {recall:.2f}")
    if n_labels is not None:
        bits.append(f"{int(n_labels):,} labels")
    alerts = _number(q, "alerts", "n_alerts")
    if alerts is not None:
        bits.append(f"{int(alerts):,} alerts")
    if q is not None and f1 is None and precision is not None and recall is not None and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
        bits.append("F1 from precision and recall")

    def interval(name: str) -> str:
        low, high = _number(q, f"{name}_low", f"{name}_ci_low"), _number(q, f"{name}_high", f"{name}_ci_high")
        pair = q.get(f"{name}_interval") if q else None  # (low, high), as the alert-quality summary writes it
        if (low is None or high is None) and isinstance(pair, (list, tuple)) and len(pair) == 2:
            low, high = _number({"v": pair[0]}, "v"), _number({"v": pair[1]}, "v")
        level = _number(q, "level")
        level = 0.95 if level is None else level
        return f"{100 * level:g} % interval [{low:.3g}, {high:.3g}]" if low is not None and high is not None else ""

    common = "; ".join(bits)
    f1_detail = "; ".join(x for x in (interval("f1"), common) if x)
    fpr_detail = "; ".join(x for x in (interval("fpr"), common) if x)
    if q is not None and f1 is None:
        f1_detail = f1_detail or "undefined (no labelled alerts or no true positives)"
    if q is not None and fpr is None:
        fpr_detail = fpr_detail or "undefined (no labelled negatives)"
    return [_check("f1", targets["f1"], f1, f1_detail), _check("fpr", targets["fpr"], fpr, fpr_detail)]


def _latency_check(latency, target: Target) -> HealthCheck:
    if latency is None:
        return _check("latency_p95", target, None)
    if hasattr(latency, "latency") and hasattr(latency, "rows"):  # ScoringTimes: one request of the smallest batch
        row = latency.latency()
        detail = (f"timed scoring, batch of {row['batch_size']:,} ({row['views']} view{'s' if row['views'] == 'all' else ''}), "
                  f"{row['n_calls']} calls; p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms")
        return _check("latency_p95", target, float(row["p95_ms"]), detail)
    d = _as_mapping(latency)
    nested = d.get("latency") if isinstance(d.get("latency"), Mapping) else {}
    p95 = _number(d, "p95_ms")
    p95 = _number(nested, "p95_ms") if p95 is None else p95
    bits = []
    if d.get("source"):
        bits.append(str(d["source"]))
    requests, calls = _number(d, "latency_count", "n_requests"), _number(d, "n_calls")
    if requests is not None:
        bits.append(f"{int(requests):,} requests")
    elif calls is not None:
        bits.append(f"{int(calls):,} calls")
    bounds = d.get("bounds", {}).get("p95") if isinstance(d.get("bounds"), Mapping) else None
    if bounds:
        low, high = bounds
        bits.append(f"within the histogram bucket {_fmt(low, 'ms')} – " + ("+Inf" if high is None else _fmt(high, "ms")))
    return _check("latency_p95", target, p95, "; ".join(bits))


def _error_checks(errors, targets: Mapping[str, Target]) -> list[HealthCheck]:
    e = _as_mapping(errors)
    api = _number(e, "api_error_rate")
    data = _number(e, "data_error_rate")
    api_bits, data_bits = [], []
    n_req, n_err = _number(e, "n_requests"), _number(e, "n_api_errors", "n_errors")
    if n_req is not None:
        api_bits.append(f"{int(n_err or 0):,} server error(s) in {int(n_req):,} requests")
    if _number(e, "n_client_errors"):
        api_bits.append(f"{int(_number(e, 'n_client_errors')):,} client errors (4xx) not counted")
    n_ev, n_bad = _number(e, "n_events", "n_input"), _number(e, "n_malformed")
    if n_ev is not None:
        data_bits.append(f"{int(n_bad or 0):,} malformed of {int(n_ev):,} events read")
    if e and e.get("data_source"):
        data_bits.append(str(e["data_source"]))
    return [_check("api_error_rate", targets["api_error_rate"], api, "; ".join(api_bits)),
            _check("data_error_rate", targets["data_error_rate"], data, "; ".join(data_bits))]


def health_report(*, drift=None, quality=None, latency=None, errors=None, model_age_days: float | None = None,
                  targets: Mapping[str, Any] | None = None, extra: Mapping | None = None) -> HealthReport:
    """The health report from what was measured; anything left None is "not measured".

    ``drift``: a :class:`~obsad.monitor.drift.DriftResult` or its ``to_dict()`` (passes when ``p_value`` >
    alpha: the target's threshold, else the test's own ``alpha``). ``quality``: a mapping (or an object with
    ``to_dict()``) with ``f1``, ``fpr`` and optionally ``precision``, ``recall``, ``n_labels`` (or ``labelled``),
    ``alerts``, intervals as ``fpr_low`` / ``fpr_high`` or ``fpr_interval: [low, high]`` (and ``level``); a
    :class:`obsad.monitor.alerts.QualitySummary` is read through its ``to_dict()``; NaN or None is not measured. ``latency``: :class:`~obsad.monitor.resources.ScoringTimes` (its
    smallest batch), :class:`~obsad.monitor.resources.ServiceMetrics`, or a mapping with ``p95_ms``. ``errors``: a
    mapping with ``api_error_rate`` (and ``n_requests``, ``n_api_errors``) and/or ``data_error_rate`` (and
    ``n_events``, ``n_malformed``). ``model_age_days``: days since the package was written. ``targets``: overrides
    of :data:`DEFAULT_TARGETS`. ``extra``: more JSON-ready data for :meth:`HealthReport.to_dict`."""
    t = resolve_targets(targets)
    checks = [_drift_check(drift, t["drift"]), *_quality_checks(quality, t), _latency_check(latency, t["latency_p95"]),
              *_error_checks(errors, t)]
    age = None if model_age_days is None else float(model_age_days)
    if age is not None and not math.isfinite(age):
        age = None
    checks.append(_check("model_age", t["model_age"], age))
    order = {name: i for i, name in enumerate(CHECKS)}
    checks.sort(key=lambda c: order[c.name])
    return HealthReport(checks=checks, extra=dict(extra or {}))
