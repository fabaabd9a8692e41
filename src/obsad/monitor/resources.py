"""What does scoring cost? CPU, memory and latency of the real scoring path, the service's own latency and error
counts, and a pre-filter tier that trades scored events for recall.

- :class:`ResourceMonitor` — a context manager that samples this process's CPU and resident memory (psutil) on a
  background thread while a block runs; :meth:`ResourceMonitor.stats` gives a :class:`ResourceStats`. The mean
  CPU is the process's CPU time over the wall time (exact, not an average of samples); the peak RSS is the
  largest sample, so a peak shorter than ``interval`` can be missed.
- :func:`time_scoring` — times :meth:`obsad.pipeline.FittedPipeline.score` on contiguous batches of real events
  (batch sizes 1, 100, 1000 by default), as the service and ``obsad score`` call it, and gives latency percentiles
  and events per second per batch size, with the resources each batch size used (:class:`ScoringTimes`).
- :func:`metrics_from_prometheus` — request, error and event counts, and latency percentiles estimated from the
  histogram buckets, from the text the service serves at ``/metrics`` (:mod:`obsad.serve.metrics`)
  (:class:`ServiceMetrics`). The percentiles are interpolated inside a bucket, as Prometheus'
  ``histogram_quantile`` does; the bucket that holds each one is given too, which is all the histogram knows.
- :class:`KnownGoodFilter` and :func:`prefilter_tradeoff` — a cheaper tier in front of the model: events of a
  high-volume *kind* (a combination of the few low-cardinality, always-filled categorical fields the encoder found:
  event class, activity, status, severity-like fields, chosen from its roles) whose training events were almost
  never above the threshold are not scored. :func:`prefilter_tradeoff` measures what that saves (the share of
  events not scored) against what it costs (true anomalies skipped, the recall lost, the alerts lost), for a grid
  of settings; with ``rescore=pipeline`` the kept events are scored alone, as they would be behind the filter
  (the window view then sees fewer events per entity, and its verdicts move).

Nothing here reads a column by name: the kind fields come from the encoder's roles or from the data.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Self

import numpy as np
import pandas as pd

from ..io import json_safe

__all__ = ["KnownGoodFilter", "ResourceMonitor", "ResourceStats", "ScoringTimes", "ServiceMetrics",
           "histogram_quantile", "kind_columns", "metrics_from_prometheus", "prefilter_tradeoff", "time_scoring"]

PERCENTILES = (50, 90, 95, 99)
_MB = 1024.0 * 1024.0


# ------------------------------------------------------------------------------------------------ resources
@dataclass
class ResourceStats:
    """CPU and memory of this process over a block. CPU in percent of one core (200 = two cores busy);
    ``cpu_mean_pct`` = CPU time / wall time; ``cpu_max_pct`` the busiest sampling interval; RSS in MiB."""

    wall_s: float
    cpu_mean_pct: float
    cpu_max_pct: float
    rss_start_mb: float
    rss_mean_mb: float
    rss_peak_mb: float
    n_samples: int
    interval_s: float
    cpu_count: int

    def to_dict(self) -> dict:
        return json_safe(asdict(self))


class ResourceMonitor:
    """Samples the current process's CPU % and RSS every ``interval`` seconds on a daemon thread while the
    ``with`` block runs::

        with ResourceMonitor(interval=0.05) as monitor:
            pipeline.score(events)
        monitor.stats().cpu_mean_pct

    A sample is also taken on entry and on exit, so a block shorter than ``interval`` still has two. The sampler
    costs one psutil call per interval (tens of microseconds).
    """

    def __init__(self, interval: float = 0.05):
        if not float(interval) > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.interval = float(interval)
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        import psutil

        if self._thread is not None:
            raise RuntimeError("this ResourceMonitor is already running")
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._cpu: list[float] = []
        self._rss: list[float] = []
        self._process.cpu_percent(None)  # primes psutil's counter: the next call measures from here
        self._times0 = self._process.cpu_times()
        self._rss.append(self._process.memory_info().rss / _MB)
        self._start = time.perf_counter()
        self._end: float | None = None
        self._thread = threading.Thread(target=self._run, name="obsad-resource-monitor", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        self._cpu.append(float(self._process.cpu_percent(None)))
        self._rss.append(self._process.memory_info().rss / _MB)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._sample()
        self._end = time.perf_counter()
        self._times1 = self._process.cpu_times()
        self._thread = None

    def stats(self) -> ResourceStats:
        """The block's :class:`ResourceStats` (after the block; during it, what has been seen so far)."""
        if not hasattr(self, "_start"):
            raise RuntimeError("ResourceMonitor has not run: use it as `with ResourceMonitor() as m: ...`")
        import psutil

        end = self._end if self._end is not None else time.perf_counter()
        wall = max(end - self._start, 1e-9)
        t1 = self._times1 if self._end is not None else self._process.cpu_times()
        used = (t1.user - self._times0.user) + (t1.system - self._times0.system)
        n_cpu = int(psutil.cpu_count() or 1)
        # a process's CPU times advance in clock ticks (10 ms): over a short sampling interval a few ticks can land
        # at once and read as several times the machine's capacity (488 % on 2 cores, seen); no interval used more
        cpu = np.minimum(np.asarray(self._cpu, dtype=np.float64), 100.0 * n_cpu)
        rss = np.asarray(self._rss, dtype=np.float64)
        mean_cpu = 100.0 * used / wall
        return ResourceStats(wall_s=float(wall), cpu_mean_pct=float(mean_cpu),
                             cpu_max_pct=float(max(cpu.max(initial=0.0), mean_cpu)),
                             rss_start_mb=float(rss[0]), rss_mean_mb=float(rss.mean()),
                             rss_peak_mb=float(rss.max()), n_samples=len(rss), interval_s=self.interval,
                             cpu_count=n_cpu)


# ------------------------------------------------------------------------------------------------ timed scoring
@dataclass
class ScoringTimes:
    """Latency of :meth:`FittedPipeline.score` per batch size.

    ``rows``: one dict per batch size: ``batch_size``, ``views``, ``n_calls``, ``p50_ms`` .. ``p99_ms`` (per call),
    ``mean_ms``, ``events_per_s`` (events scored / time spent in the calls), ``cpu_mean_pct``, ``rss_peak_mb``.
    ``resources``: the whole measurement's :class:`ResourceStats` (warm-up calls included). ``skipped``: batch
    sizes larger than the events given."""

    rows: list[dict]
    resources: ResourceStats
    n_events: int
    skipped: list[int] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def latency(self, batch_size: int | None = None) -> dict:
        """The row of ``batch_size`` (default: the smallest measured, the latency of one request of one event)."""
        if not self.rows:
            raise ValueError("no batch size was timed")
        if batch_size is None:
            return min(self.rows, key=lambda r: r["batch_size"])
        for row in self.rows:
            if row["batch_size"] == int(batch_size):
                return row
        raise ValueError(f"batch size {batch_size} was not timed (timed: {[r['batch_size'] for r in self.rows]})")

    def to_dict(self) -> dict:
        return json_safe({"rows": self.rows, "resources": self.resources.to_dict(), "n_events": self.n_events,
                           "skipped": self.skipped})

    def summary(self) -> str:
        lines = [f"scoring latency ({self.n_events:,} events available; per call):"]
        for r in self.rows:
            lines.append(f"  batch {r['batch_size']:>6,} ({r['views']:<5}): p50 {r['p50_ms']:8.1f} ms  p95 "
                         f"{r['p95_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  {r['events_per_s']:>10,.0f} events/s  "
                         f"CPU {r['cpu_mean_pct']:5.0f} %  peak RSS {r['rss_peak_mb']:,.0f} MiB")
        if self.skipped:
            lines.append(f"  not timed (larger than the events given): {', '.join(map(str, self.skipped))}")
        return "\n".join(lines)


def time_scoring(pipeline, events: pd.DataFrame, batch_sizes: Sequence[int] = (1, 100, 1000), repeats=20, *,
                 views: str | None = None, warmup: int = 1, seed: int = 0, interval: float = 0.02) -> ScoringTimes:
    """Time ``pipeline.score`` on ``repeats`` contiguous batches of each size drawn from ``events`` (seeded start
    positions; contiguous, so the window view sees batches as they arrive), after ``warmup`` untimed calls.

    ``repeats``: one number, or ``{batch_size: calls}``. ``views``: ``None`` scores a lone event with the event view
    and a batch with every view, as the service does (:func:`obsad.serve.scoring.resolve_views`); ``"all"`` or
    ``"event"`` for every size. Batch sizes larger than the events are skipped (listed in ``skipped``).
    """
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
    n = len(events)
    if n == 0:
        raise ValueError("no events to time scoring on")
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    if views not in (None, "all", "event"):
        raise ValueError(f"views must be None, 'all' or 'event', got {views!r}")
    rng = np.random.default_rng([int(seed), 17])
    rows, skipped = [], [b for b in sizes if b > n]
    with ResourceMonitor(interval=interval) as whole:
        for b in (b for b in sizes if b <= n):
            calls = int(repeats.get(b, 20) if isinstance(repeats, Mapping) else repeats)
            if calls < 1:
                raise ValueError(f"repeats must be >= 1, got {calls} for batch size {b}")
            used_views = views or ("event" if b <= 1 else "all")
            starts = rng.integers(0, n - b + 1, size=calls + int(warmup))
            for s in starts[:int(warmup)]:
                pipeline.score(events.iloc[s:s + b], views=used_views)
            seconds = np.empty(calls)
            with ResourceMonitor(interval=interval) as part:
                for i, s in enumerate(starts[int(warmup):]):
                    batch = events.iloc[s:s + b]
                    t0 = time.perf_counter()
                    pipeline.score(batch, views=used_views)
                    seconds[i] = time.perf_counter() - t0
            ms = seconds * 1000.0
            q = np.percentile(ms, PERCENTILES)
            res = part.stats()
            rows.append({"batch_size": b, "views": used_views, "n_calls": calls,
                         **{f"p{p}_ms": float(v) for p, v in zip(PERCENTILES, q)},
                         "mean_ms": float(ms.mean()), "events_per_s": float(b * calls / seconds.sum()),
                         "cpu_mean_pct": res.cpu_mean_pct, "rss_peak_mb": res.rss_peak_mb})
    return ScoringTimes(rows=rows, resources=whole.stats(), n_events=n, skipped=skipped)


# ------------------------------------------------------------------------------------------------ /metrics
@dataclass
class ServiceMetrics:
    """Counts and latency read from the service's ``/metrics`` text (totals since the service started).

    ``n_requests`` / ``n_errors`` (status >= ``error_status``, server errors) / ``n_client_errors`` (4xx) over the
    endpoints counted; ``error_rate`` = errors / requests (None without requests); ``latency`` = ``p50_ms`` ..
    ``p99_ms`` estimated from the histogram, ``bounds``: ``{p95: [low_ms, high_ms]}``, the bucket each one lies in
    (``high`` None when above the last finite bucket); ``events_scored``, ``events_rejected`` (refused by the
    per-event checks), ``data_error_rate`` = rejected / (scored + rejected), ``anomalies_flagged``."""

    n_requests: int
    n_errors: int
    n_client_errors: int
    error_rate: float | None
    latency_count: int
    latency_mean_ms: float | None
    latency: dict
    bounds: dict
    events_scored: int | None
    events_rejected: int | None
    data_error_rate: float | None
    anomalies_flagged: int | None
    endpoints: list[str] | None
    by_status: dict

    @property
    def p95_ms(self) -> float | None:
        return self.latency.get("p95_ms")

    def to_dict(self) -> dict:
        return json_safe(asdict(self))


def histogram_quantile(q: float, bounds: np.ndarray, cumulative: np.ndarray) -> tuple[float | None, float, float | None]:
    """The ``q`` quantile of a cumulative histogram (upper ``bounds`` ascending, ``+inf`` last; ``cumulative``
    counts), interpolated linearly inside its bucket as Prometheus' ``histogram_quantile`` does (the first bucket
    starts at 0). Returns ``(estimate, low, high)``: ``high`` None and the estimate the last finite bound when the
    quantile lies in the ``+Inf`` bucket; ``(None, nan, None)`` without observations."""
    bounds = np.asarray(bounds, dtype=np.float64)
    cumulative = np.asarray(cumulative, dtype=np.float64)
    total = float(cumulative[-1]) if len(cumulative) else 0.0
    if total <= 0:
        return None, math.nan, None
    rank = float(q) * total
    i = int(np.searchsorted(cumulative, rank, side="left"))
    i = min(i, len(bounds) - 1)
    low = 0.0 if i == 0 else float(bounds[i - 1])
    high = float(bounds[i])
    if not math.isfinite(high):
        return low, low, None
    below = 0.0 if i == 0 else float(cumulative[i - 1])
    inside = float(cumulative[i]) - below
    share = (rank - below) / inside if inside > 0 else 1.0
    return low + (high - low) * share, low, high


def metrics_from_prometheus(text: str, *, endpoints: Sequence[str] | None = ("/v1/score", "/v1/similar"),
                            prefix: str = "obsad_", error_status: int = 500) -> ServiceMetrics:
    """Parse a Prometheus exposition ``text`` written by the service (:class:`obsad.serve.metrics.ServeMetrics`).

    ``endpoints``: the endpoints whose requests and latency count (default the scoring endpoints; the scrapes of
    ``/metrics`` and the probes of ``/healthz`` would dilute both); ``None`` for every endpoint. ``prefix``: the
    metric names' prefix. Raises ``ValueError`` when the text is not a Prometheus exposition or holds none of the
    service's request metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = None if endpoints is None else {str(e) for e in endpoints}
    requests = prefix + "requests_total"
    bucket, count, total = (prefix + "request_seconds_" + s for s in ("bucket", "count", "sum"))
    singles = {prefix + "events_scored_total": "events_scored", prefix + "events_rejected_total": "events_rejected",
               prefix + "anomalies_flagged_total": "anomalies_flagged"}
    by_status: dict[str, float] = {}
    buckets: dict[float, float] = {}
    lat_count = lat_sum = 0.0
    found = False
    values: dict[str, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ValueError(f"not a Prometheus metrics text ({exc})") from exc
    for family in families:
        found = found or family.name in (prefix + "requests", requests, prefix + "request_seconds")
        for s in family.samples:
            endpoint_ok = wanted is None or s.labels.get("endpoint") in wanted
            if s.name == requests:
                if endpoint_ok:
                    status = str(s.labels.get("status", ""))
                    by_status[status] = by_status.get(status, 0.0) + float(s.value)
            elif s.name == bucket:
                if endpoint_ok:
                    le = float("inf") if s.labels.get("le") in ("+Inf", "Inf", "inf") else float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + float(s.value)
            elif s.name == count and endpoint_ok:
                lat_count += float(s.value)
            elif s.name == total and endpoint_ok:
                lat_sum += float(s.value)
            elif s.name in singles:
                values[singles[s.name]] = float(s.value)
    if not found:
        raise ValueError(f"no {requests} or {prefix}request_seconds metrics in the text: is it the /metrics of "
                         "obsad serve?")

    def status_code(key: str) -> int:
        return int(key) if key.isdigit() else -1

    n_requests = round(sum(by_status.values()))
    n_errors = round(sum(v for k, v in by_status.items() if status_code(k) >= int(error_status)))
    n_client = round(sum(v for k, v in by_status.items() if 400 <= status_code(k) < 500))
    latency, bounds = {}, {}
    if buckets:
        les = np.array(sorted(buckets))
        cum = np.array([buckets[le] for le in les])
        if not math.isinf(les[-1]):  # a histogram always ends at +Inf; tolerate a truncated text
            les, cum = np.r_[les, np.inf], np.r_[cum, max(cum[-1], lat_count)]
        for p in PERCENTILES:
            est, low, high = histogram_quantile(p / 100.0, les, cum)
            latency[f"p{p}_ms"] = None if est is None else est * 1000.0
            bounds[f"p{p}"] = [None if math.isnan(low) else low * 1000.0, None if high is None else high * 1000.0]
    scored, rejected = values.get("events_scored"), values.get("events_rejected")
    data_rate = None
    if scored is not None and rejected is not None and scored + rejected > 0:
        data_rate = rejected / (scored + rejected)
    return ServiceMetrics(
        n_requests=n_requests, n_errors=n_errors, n_client_errors=n_client,
        error_rate=(n_errors / n_requests) if n_requests else None, latency_count=round(lat_count),
        latency_mean_ms=(1000.0 * lat_sum / lat_count) if lat_count else None, latency=latency, bounds=bounds,
        events_scored=None if scored is None else round(scored),
        events_rejected=None if rejected is None else round(rejected), data_error_rate=data_rate,
        anomalies_flagged=None if values.get("anomalies_flagged") is None else round(values["anomalies_flagged"]),
        endpoints=None if wanted is None else sorted(wanted), by_status={k: round(v) for k, v in by_status.items()})


# ------------------------------------------------------------------------------------------------ pre-filter
_MISSING = "<missing>"
_SEP = " & "


def kind_columns(encoder=None, events: pd.DataFrame | None = None, *, max_values: int = 16,
                 max_missing: float = 0.05, max_columns: int = 4) -> list[str]:
    """The fields that say what *kind* of event a row is: low-cardinality (2 to ``max_values`` distinct values),
    almost always filled (missing rate at most ``max_missing``) categorical fields — event class, activity,
    status, severity in OCSF. From a fitted encoder's roles (``categorical``, not port ranges), or from the data
    (strings, booleans, integer codes) when no encoder is given. At most ``max_columns``, fewest values first
    (ties by name): every added field splits the kinds further, and a kind must stay high-volume to be skipped."""
    candidates: list[tuple[int, str]] = []
    if encoder is not None:
        for st in encoder.columns_:
            if st.get("role") != "categorical" or st.get("port_ranges"):
                continue
            n_unique, missing = int(st.get("n_unique", 0)), float(st.get("missing_rate", 1.0))
            if 2 <= n_unique <= max_values and missing <= max_missing:
                candidates.append((n_unique, str(st["column"])))
    elif events is not None:
        for name in events.columns:
            s = events[name]
            if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_float_dtype(s):
                continue
            if len(s) == 0 or float(s.isna().mean()) > max_missing:
                continue
            try:
                n_unique = int(s.nunique(dropna=True))
            except TypeError:  # lists or dicts in the cells
                continue
            if 2 <= n_unique <= max_values:
                candidates.append((n_unique, str(name)))
    else:
        raise ValueError("kind_columns needs a fitted encoder or the events")
    return [name for _, name in sorted(candidates)[:int(max_columns)]]


def _canonical_codes(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes of a column's values and the canonical string of each distinct value (missing -> ``<missing>``),
    computed once per distinct value."""
    from obsad.features.values import canonical

    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    texts = (canonical(v) for v in np.asarray(uniques, dtype=object))
    names = np.array([_MISSING if t is None else t for t in texts] + [_MISSING], dtype=object)
    return np.where(codes < 0, len(names) - 1, codes).astype(np.int64), names


def event_kinds(events: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """One key per event, ``col=value & col=value``, over ``columns`` (a missing column reads ``<missing>``). The
    work per row is a factorisation per column and one ``np.unique`` over the code matrix; strings are built once
    per distinct kind."""
    n = len(events)
    if not columns:
        return np.full(n, "", dtype=object)
    codes, names = [], []
    for c in columns:
        if c in events.columns:
            k, u = _canonical_codes(events[c])
        else:
            k, u = np.zeros(n, dtype=np.int64), np.array([_MISSING], dtype=object)
        codes.append(k)
        names.append(u)
    sizes = [len(u) for u in names]
    if math.prod(sizes) < 2**62:  # one int64 per row (mixed radix): a 1-D unique instead of a row-wise one
        radix = np.cumprod([1] + sizes[:-1], dtype=np.int64)
        packed = np.zeros(n, dtype=np.int64)
        for k, r in zip(codes, radix):
            packed += k * r
        uniq, inverse = np.unique(packed, return_inverse=True)
        combos = (uniq[:, None] // radix[None, :]) % np.asarray(sizes, dtype=np.int64)[None, :]
    else:
        combos, inverse = np.unique(np.column_stack(codes), axis=0, return_inverse=True)
    keys = np.array([_SEP.join(f"{c}={names[j][code]}" for j, (c, code) in enumerate(zip(columns, combo)))
                     for combo in combos], dtype=object)
    return keys[np.asarray(inverse).reshape(-1)] if n else np.empty(0, dtype=object)


def _upper_bound(k: np.ndarray, n: np.ndarray, level: float = 0.95) -> np.ndarray:
    """The upper end of the two-sided ``level`` Clopper-Pearson interval of ``k / n``, vectorised (1 when k = n)."""
    from scipy import stats

    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    full = k >= n
    upper = stats.beta.ppf(1.0 - (1.0 - level) / 2.0, k + 1, np.where(full, 1.0, n - k))
    return np.where(full, 1.0, upper)


def _flags(scores, threshold: float | None, n: int, what: str) -> np.ndarray:
    """Flagged events from a score frame (its ``is_anomaly``), booleans, or scores with a ``threshold``."""
    if isinstance(scores, pd.DataFrame):
        if "is_anomaly" not in scores.columns:
            raise ValueError(f"{what}: a scores frame needs an 'is_anomaly' column (FittedPipeline.score's output)")
        flags = scores["is_anomaly"].to_numpy(dtype=bool)
    else:
        a = np.asarray(scores)
        if a.dtype == bool:
            flags = a
        elif threshold is None:
            raise ValueError(f"{what}: numeric scores need a threshold (or pass booleans / a scores frame)")
        else:
            flags = a.astype(np.float64) > float(threshold)
    flags = flags.reshape(-1)
    if len(flags) != n:
        raise ValueError(f"{what}: {len(flags)} scores for {n} events")
    return flags


class KnownGoodFilter:
    """A pre-filter tier: skip events of high-volume kinds that the model almost never flags.

    Parameters
    ----------
    min_count: a kind is high-volume when at least this many training events have it.
    max_flag_rate: ... and known good when at most this share of them scored above the threshold.
    columns: the kind fields (default: :func:`kind_columns` from the encoder given to :meth:`fit`, else from the
        training events).
    max_values, max_missing, max_columns: how :func:`kind_columns` chooses them.

    ``fit(events, scores, threshold=None, encoder=None)`` keeps one row per kind (count, flagged, flag rate and its
    95 % upper Clopper-Pearson bound: how sure "almost never" is); ``mask(events)`` is True for the events to skip.
    A kind never seen in training is always scored. :meth:`with_params` re-decides for other settings without
    refitting. Skipped events are not scored at all, so an anomaly among them is missed whatever its score: the
    price is measured by :func:`prefilter_tradeoff` on labelled events, never assumed.
    """

    def __init__(self, min_count: int = 100, max_flag_rate: float = 0.001, columns: Sequence[str] | None = None,
                 max_values: int = 16, max_missing: float = 0.05, max_columns: int = 4):
        self.min_count = min_count
        self.max_flag_rate = max_flag_rate
        self.columns = columns
        self.max_values = max_values
        self.max_missing = max_missing
        self.max_columns = max_columns

    def _check_params(self) -> None:
        if int(self.min_count) < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count!r}")
        if not 0.0 <= float(self.max_flag_rate) <= 1.0:
            raise ValueError(f"max_flag_rate must be in [0, 1], got {self.max_flag_rate!r}")

    def fit(self, events: pd.DataFrame, scores, threshold: float | None = None, *, encoder=None) -> KnownGoodFilter:
        """``events``: the training events; ``scores``: their scores (with ``threshold``), flags, or the frame of
        :meth:`FittedPipeline.score`."""
        self._check_params()
        if not isinstance(events, pd.DataFrame):
            raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
        flags = _flags(scores, threshold, len(events), "fit")
        if self.columns is not None:
            columns = [str(c) for c in self.columns]
        else:
            columns = kind_columns(encoder, events if encoder is None else None, max_values=self.max_values,
                                   max_missing=self.max_missing, max_columns=self.max_columns)
        if not columns:
            raise ValueError("no kind field: no low-cardinality, always-filled categorical field in these events; "
                             "pass columns=")
        self.columns_ = columns
        kinds = pd.Series(event_kinds(events, columns))
        table = pd.DataFrame({"kind": kinds, "flagged": flags}).groupby("kind", sort=True)["flagged"].agg(
            count="size", flagged="sum").reset_index()
        table["flag_rate"] = table["flagged"] / table["count"]
        table["flag_rate_upper"] = _upper_bound(table["flagged"].to_numpy(), table["count"].to_numpy())
        self.kinds_ = table
        self.n_train_ = len(events)
        self._decide()
        return self

    def _decide(self) -> None:
        t = self.kinds_
        known = (t["count"] >= int(self.min_count)) & (t["flag_rate"] <= float(self.max_flag_rate))
        self.kinds_ = t.assign(known_good=known.to_numpy())
        self.known_good_ = sorted(t.loc[known, "kind"].tolist())
        self.train_share_skipped_ = float(t.loc[known, "count"].sum() / max(self.n_train_, 1))

    def with_params(self, *, min_count: int | None = None, max_flag_rate: float | None = None) -> KnownGoodFilter:
        """A copy with other settings, decided from the same kind table (no refit)."""
        self._require_fitted()
        other = KnownGoodFilter(self.min_count if min_count is None else min_count,
                                self.max_flag_rate if max_flag_rate is None else max_flag_rate, self.columns,
                                self.max_values, self.max_missing, self.max_columns)
        other._check_params()
        other.columns_, other.kinds_, other.n_train_ = list(self.columns_), self.kinds_.copy(), self.n_train_
        other._decide()
        return other

    def _require_fitted(self) -> None:
        if not hasattr(self, "kinds_"):
            raise RuntimeError("KnownGoodFilter is not fitted: call fit(training events, their scores) first")

    def mask(self, events: pd.DataFrame) -> np.ndarray:
        """True for the events to skip (their kind is known good)."""
        self._require_fitted()
        kinds = event_kinds(events, self.columns_)
        return pd.Index(self.known_good_).get_indexer(kinds) >= 0 if len(kinds) else np.zeros(0, dtype=bool)

    def to_dict(self) -> dict:
        """The fitted state as JSON-ready data (settings, kind fields, the kind table)."""
        self._require_fitted()
        return json_safe({"min_count": int(self.min_count), "max_flag_rate": float(self.max_flag_rate),
                           "columns": self.columns_, "n_train": self.n_train_,
                           "train_share_skipped": self.train_share_skipped_,
                           "kinds": self.kinds_.to_dict(orient="records")})

    @classmethod
    def from_dict(cls, state: Mapping) -> KnownGoodFilter:
        """Rebuild a fitted filter from :meth:`to_dict`."""
        out = cls(state["min_count"], state["max_flag_rate"], state["columns"])
        out.columns_, out.n_train_ = list(state["columns"]), int(state["n_train"])
        out.kinds_ = pd.DataFrame(state["kinds"], columns=["kind", "count", "flagged", "flag_rate", "flag_rate_upper",
                                                           "known_good"]).drop(columns="known_good")
        out._decide()
        return out


def _grid_settings(grid) -> list[dict]:
    if isinstance(grid, Mapping):
        keys = list(grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(list(grid[k]) for k in keys))]
    return [dict(g) for g in grid]


def prefilter_tradeoff(filter_or_grid, events: pd.DataFrame, scores, is_anomaly_truth, *,
                       threshold: float | None = None, grid: Mapping | Iterable[Mapping] | None = None,
                       rescore=None) -> pd.DataFrame:
    """Events saved versus recall lost, one row per pre-filter setting, on labelled ``events``.

    ``filter_or_grid``: a fitted :class:`KnownGoodFilter` (one row, or one per setting of ``grid``:
    ``{"min_count": [...], "max_flag_rate": [...]}`` for every combination, or a list of such dicts), or a sequence
    of fitted filters. ``scores``: the model's scores of ``events`` (with ``threshold``), its flags, or the frame of
    :meth:`FittedPipeline.score`; ``is_anomaly_truth``: booleans, one per event.

    By default a kept event keeps the verdict it had when every event was scored. A window view fed only the kept
    events sees fewer events per entity and window, so its verdicts can move: pass the fitted pipeline as
    ``rescore`` to score the kept events alone, once per distinct set of skipped kinds (``recall_lost`` can then
    be negative, and is no longer monotone in the settings).

    Columns: ``min_count``, ``max_flag_rate``, ``kinds_skipped``, ``events``, ``skipped``, ``share_saved`` (events
    not scored), ``anomalies``, ``anomalies_skipped`` (true anomalies the filter skips), ``recall`` (the model's,
    every event scored), ``recall_filtered`` (true anomalies flagged among the kept events), ``recall_lost``,
    ``alerts`` (every event scored), ``alerts_lost`` (of those, on skipped events), ``share_alerts_lost``,
    ``alerts_filtered`` (alerts raised on the kept events), ``rescored``.
    """
    if isinstance(filter_or_grid, KnownGoodFilter):
        base = filter_or_grid
        filters = [base] if grid is None else [base.with_params(**s) for s in _grid_settings(grid)]
    else:
        filters = list(filter_or_grid)
        if grid is not None:
            raise ValueError("grid= goes with one fitted KnownGoodFilter, not a sequence of filters")
        if not filters or not all(isinstance(f, KnownGoodFilter) for f in filters):
            raise TypeError("filter_or_grid must be a fitted KnownGoodFilter or a sequence of them")
    n = len(events)
    flags = _flags(scores, threshold, n, "scores")
    truth = np.asarray(is_anomaly_truth, dtype=bool).reshape(-1)
    if len(truth) != n:
        raise ValueError(f"is_anomaly_truth: {len(truth)} labels for {n} events")
    n_anomalies, n_alerts = int(truth.sum()), int(flags.sum())
    recall = (flags & truth).sum() / n_anomalies if n_anomalies else math.nan
    kinds_cache: dict[tuple, np.ndarray] = {}
    rescored: dict[tuple, np.ndarray] = {}
    rows = []
    for f in filters:
        f._require_fitted()
        key = tuple(f.columns_)
        if key not in kinds_cache:  # the kinds of the events once per set of kind fields, not once per setting
            kinds_cache[key] = event_kinds(events, f.columns_)
        skip = pd.Index(f.known_good_).get_indexer(kinds_cache[key]) >= 0
        if rescore is None:
            after = flags & ~skip
        else:
            known = (key, tuple(f.known_good_))
            if known not in rescored:  # settings that skip the same kinds share one scoring
                kept = np.flatnonzero(~skip)
                after = np.zeros(n, dtype=bool)
                if len(kept):
                    after[kept] = rescore.score(events.iloc[kept], explain="none")["is_anomaly"].to_numpy(dtype=bool)
                rescored[known] = after
            after = rescored[known]
        found = int((after & truth).sum())
        rows.append({
            "min_count": int(f.min_count), "max_flag_rate": float(f.max_flag_rate),
            "kinds_skipped": len(f.known_good_), "events": n, "skipped": int(skip.sum()),
            "share_saved": float(skip.mean()) if n else math.nan,
            "anomalies": n_anomalies, "anomalies_skipped": int((truth & skip).sum()),
            "recall": float(recall), "recall_filtered": found / n_anomalies if n_anomalies else math.nan,
            "recall_lost": float(recall - found / n_anomalies) if n_anomalies else math.nan,
            "alerts": n_alerts, "alerts_lost": int((flags & skip).sum()),
            "share_alerts_lost": float((flags & skip).sum() / n_alerts) if n_alerts else math.nan,
            "alerts_filtered": int(after.sum()), "rescored": rescore is not None,
        })
    return pd.DataFrame(rows)
