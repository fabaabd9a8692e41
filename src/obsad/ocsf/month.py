"""A month of production for the monitoring chapter: the world changes under a model fitted on a baseline.

:func:`simulate_month` simulates ``baseline_days`` days on which a first model is fitted (no change happens in
them), then ``days`` days of "production" in which the world moves the way it does in real operations, and
returns a :class:`Month`: one raw export like :func:`obsad.ocsf.simulate.simulate`'s, its labels, and the ground
truth of every change (what, when, which columns), so a notebook can run a monitor day by day and score what it
said.

The default timeline (:func:`default_changes`; day numbers count production days from 0, so with the default
start, Monday 5 October 2026, and 7 baseline days, day 0 is Monday 12 October):

==========  ======================  =================================================================
days        change                  what happens
==========  ======================  =================================================================
0-6         (none)                  an ordinary week: only the simulator's own incidents
7-          ``new_service``         a recommendations service goes live: new endpoints, paths, hosts,
                                    port; about 8 % of HTTP and a share of the service mesh's flows
9-11        ``holiday_lull``        a holiday Wednesday to Friday: people's events drop to ~20 %,
                                    machines carry on (volume and mix change)
14-19       ``slow_burn``           one external address tries one account's password on the SSO
                                    portal once an hour, for six days (labelled, security)
21-         ``schema_change``       a producer upgrade renames a field, adds one and stops sending one
22-27       ``latency_regression``  one service's latency grows linearly from x1 to x3 (labelled,
                                    operations)
==========  ======================  =================================================================

Another ``days`` (at least 14) keeps the shape: the first week (below 21 days, a quarter of the month, at least 3
days) is ordinary, the rest is placed in proportion; the weekdays then follow from ``start`` and ``baseline_days``. The lull falls on working days on purpose: a lull over a weekend, when people are
already away, would hardly change anything.

How each change is made (every random draw comes from a generator keyed by the seed and the change's name, so a
change does the same thing whatever other changes the month has, and a month without it differs only by it):

* **new service** (:class:`NewService`): its hosts are added to the population (next addresses of the
  application servers' subnet); its HTTP events are drawn by the simulator's own ``draw_http`` for clients (the
  shop's customers on the edge, the application servers in the mesh), ids, codes and outcomes, each new endpoint
  borrowing an existing endpoint's error rates, spreads, method and content type, then moved to the new
  endpoint's medians, paths, hosts and port; its mesh flows are drawn by ``draw_net``. Volumes are shares of the
  HTTP and network events of the same days.
* **lull** (kind ``lull``): on its days, events of people -- staff (by user, laptop or address) and the shop's
  customers -- are kept with probability ``share``; service accounts, servers, bots and the mesh carry on.
  Labelled events are never removed (incidents still happen). The draw is a keyed hash of each event's uid, so
  the exact duplicates of an event stay or go together.
* **schema change** (kind ``schema``): chosen from the *baseline* data by the package's own encoder
  (:class:`obsad.features.encoder.FeatureEncoder` on :func:`obsad.ocsf.load_events` of the baseline): the
  renamed column is the most filled column the encoder encodes as a categorical (else numeric) and that at most
  ``max_fill`` of the events carry (a field of some producers, not of all); its values move to
  ``<name>_v2``. The producer's events (those that carried the renamed field) gain ``metadata.processed_time``
  (epoch ms, the event time plus a pipeline lag). The column that goes missing is the most filled numeric (else
  categorical) encoded column carried only by those same events; from the change's day it is always null.
  The choice is recorded in the change's ``fields``: ``[renamed, new name, added, dropped]``. Parameters
  ``rename``, ``rename_to``, ``add``, ``drop`` impose them instead.
* **latency regression** (kind ``latency_regression``): the duration of one service's HTTP events
  (``duration`` and ``http_response.latency``, one measure) is multiplied by a factor that grows linearly over
  the change's days from 1 to ``factor`` (3), kept under the proxy timeout; errors are untouched. The service is
  the busiest one that none of the simulator's own operations incidents hits (so the two never mix), unless
  ``service`` names one. It is operations drift, not an attack, but its events are labelled (scenario
  ``latency_regression``, category ``operations``, shape ``collective``) so alert-quality metrics can count it;
  ``labelled=False`` turns that off.
* **slow burn** (kind ``slow_burn``): one attempt an hour at a random minute, every hour of its days: a failed
  sign-on (invalid credentials) of one real account on the SSO portal, drawn with the simulator's
  ``draw_auth``, from one external address in a far country with an old desktop browser's user agent. Labelled
  ``slow_burn`` / ``security`` / ``collective``, entity the address. It is **not** a distribution change: 24
  events a day among thousands move no distribution a drift test can see; finding it is the detectors' job.

The simulator's own incidents (:mod:`obsad.ocsf.scenarios`) still happen, over the whole window (baseline
included, as in production), with their labels. Labels of the month use two scenario names that are not keys of
:data:`obsad.ocsf.scenarios.SCENARIOS`: ``slow_burn`` and ``latency_regression`` (see :data:`MONTH_SCENARIOS`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from . import population as popmod
from .population import CITIES, ENDPOINTS, SSO_APPS, Population
from .simulate import _APP_SERVERS, CLASSES, TIMEOUT_MS, Block, _assemble, _parse_start, _Sim, simulate

__all__ = [
    "DISTRIBUTION_KINDS",
    "KINDS",
    "MONTH_SCENARIOS",
    "RECOMMENDATIONS",
    "Change",
    "Month",
    "MonthError",
    "NewEndpoint",
    "NewService",
    "default_changes",
    "human_driven",
    "schema_columns",
    "simulate_month",
    "write_month",
]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

NEW_SERVICE = "new_service"
LULL = "lull"
SCHEMA = "schema"
LATENCY_REGRESSION = "latency_regression"
SLOW_BURN = "slow_burn"
KINDS = (NEW_SERVICE, LULL, SCHEMA, LATENCY_REGRESSION, SLOW_BURN)
#: kinds that change the distribution of the events: what a drift monitor is expected to see
DISTRIBUTION_KINDS = frozenset({NEW_SERVICE, LULL, SCHEMA, LATENCY_REGRESSION})
#: scenario name -> (category, shape, description) of the month's labelled changes
MONTH_SCENARIOS = {
    "slow_burn": ("security", "collective",
                  "One external address tries one account's password on the SSO portal once an hour for days."),
    "latency_regression": ("operations", "collective",
                           "One service's latency grows linearly over days, up to three times its usual value."),
}
_LABEL_SCENARIO = {SLOW_BURN: "slow_burn", LATENCY_REGRESSION: "latency_regression"}
_DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    NEW_SERVICE: {"http_share": 0.08, "net_share": 0.025, "edge_share": 0.55},
    LULL: {"share": 0.2},
    SCHEMA: {"max_fill": 0.6, "add": "metadata.processed_time"},
    LATENCY_REGRESSION: {"factor": 3.0},
    SLOW_BURN: {},
}
#: an old desktop browser: what a careful attacker's script sends so that it looks like a person
_SLOW_BURN_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/109.0.0.0 Safari/537.36")
_SLOW_BURN_FIELDS = ("src_endpoint.ip", "src_endpoint.location.city", "src_endpoint.location.country",
                     "src_endpoint.location.lat", "src_endpoint.location.long", "service.name",
                     "http_request.user_agent", "status_id", "status", "status_code", "status_detail", "severity_id",
                     "severity", "is_mfa", "session.uid", "message")
_LATENCY_FIELDS = ("http_response.latency", "duration")
_HTTP_UID = CLASSES["http"][0]
_NET_UID = CLASSES["net"][0]


class MonthError(ValueError):
    """A month that cannot be simulated as asked (bad days, overlapping names, unknown kinds, ...)."""


# --------------------------------------------------------------------------------------------------
# what changes
# --------------------------------------------------------------------------------------------------
@dataclass
class Change:
    """One change of the world during production.

    ``start_day`` / ``end_day`` are production days counted from 0, ``end_day`` inclusive (None: to the end of
    the month). ``fields`` are the flat columns it touches (filled in by :func:`simulate_month` where they are
    chosen from the data); ``labelled``: its events count as anomalies (slow burn, latency regression only);
    ``params``: the kind's settings (see the module docstring), defaults filled in by :func:`simulate_month`.
    """

    name: str
    kind: str
    start_day: int
    end_day: int | None = None
    fields: tuple[str, ...] = ()
    description: str = ""
    labelled: bool = False
    params: dict = field(default_factory=dict)

    def last_day(self, days: int) -> int:
        """The last production day it is active on (inclusive)."""
        return days - 1 if self.end_day is None else int(self.end_day)

    def active(self, day: int, days: int) -> bool:
        return self.start_day <= day <= self.last_day(days)

    @property
    def drift(self) -> bool:
        """Does it change the distribution of the events (what a drift monitor should see)?"""
        return self.kind in DISTRIBUTION_KINDS

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "start_day": int(self.start_day),
                "end_day": None if self.end_day is None else int(self.end_day), "fields": list(self.fields),
                "description": self.description, "labelled": bool(self.labelled), "params": _jsonable(self.params)}


@dataclass(frozen=True)
class NewEndpoint:
    """A route of a new service. ``template`` names an existing endpoint (service, path) whose method, error rates,
    spreads and content type it shares; ``latency_ms`` / ``size_bytes`` are its own medians. ``path`` and
    ``query`` may hold ``{id}``, ``{sku}``, ``{uuid}`` and ``{page}``."""

    template: tuple[str, str]
    path: str
    weight: float
    latency_ms: float
    size_bytes: float
    edge: bool = False
    mesh: bool = True
    query: str | None = None


@dataclass(frozen=True)
class NewService:
    """A service that goes live during the month: its names, port, hosts and routes."""

    name: str
    edge_hostname: str | None
    internal_hostname: str
    port: int
    host_prefix: str
    n_hosts: int
    endpoints: tuple[NewEndpoint, ...]


RECOMMENDATIONS = NewService(
    name="recommendations",
    edge_hostname="api.example.com",
    internal_hostname="recommendations.prod.svc.cluster.local",
    port=8090,
    host_prefix="app-recs",
    n_hosts=2,
    endpoints=(
        NewEndpoint(("catalog", "/api/catalog/products/{id}"), "/api/recommendations/products/{sku}", 6, 70, 5_200,
                    edge=True, query="limit=12&page={page}"),
        NewEndpoint(("orders", "/api/orders/{id}/items"), "/api/recommendations/customers/{id}", 3, 110, 7_800),
        NewEndpoint(("notifications", "/api/notify/email"), "/api/recommendations/events", 4, 18, 300, edge=True),
    ),
)


def default_changes(days: int = 28) -> list[Change]:
    """The month's default changes (see the module docstring), placed for ``days`` production days (at least 14).

    The first 7 days (a quarter of the month below 21 days) are ordinary; the rest follows the 28-day timeline in
    proportion, so every change keeps at least one day and none starts on the day another starts.
    """
    if int(days) < 14:
        raise MonthError(f"default_changes needs days >= 14 (got {days}); pass changes explicitly")
    days = int(days)
    ordinary = 7 if days >= 21 else max(3, days // 4)
    rest = days - ordinary

    def at(x: int) -> int:
        return ordinary + round(x * rest / 21)

    def span(a: int, b: int, after: int) -> tuple[int, int]:
        s = max(after + 1, at(a))
        return s, max(s, at(b + 1) - 1)

    new = at(0)
    lull = span(2, 4, new)
    burn = span(7, 12, lull[1])
    schema = max(burn[0] + 1, at(14))
    reg = span(15, 20, schema)
    return [
        Change("new_service", NEW_SERVICE, new, None, description="A recommendations service goes live."),
        Change("holiday_lull", LULL, lull[0], lull[1],
               description="A holiday: people's events drop to about a fifth, machines carry on."),
        Change("slow_burn", SLOW_BURN, burn[0], burn[1], labelled=True,
               description="One external address tries one account's password on the SSO portal once an hour."),
        Change("schema_change", SCHEMA, schema, None,
               description="A producer upgrade renames a field, adds one and stops sending one."),
        Change("latency_regression", LATENCY_REGRESSION, reg[0], reg[1], labelled=True,
               description="One service's latency grows linearly from x1 to x3."),
    ]


# --------------------------------------------------------------------------------------------------
# the month
# --------------------------------------------------------------------------------------------------
@dataclass
class Month:
    """A simulated month: baseline days, then production days during which ``changes`` happen.

    ``events``: the raw export (like ``simulate(...).events``: same columns and dtypes, plus any column a change
    adds), sorted by time; ``labels``: one row per anomalous event (the simulator's incidents and the labelled
    changes); ``changes``: one row per change (``name``, ``kind``, ``start``, ``end`` -- the end instant, exclusive,
    the month's end for a change that lasts --, ``start_day``, ``end_day``, ``fields``, ``description``,
    ``labelled``); ``start``: the first baseline instant (UTC).
    """

    events: pd.DataFrame
    labels: pd.DataFrame
    changes: pd.DataFrame
    start: pd.Timestamp
    baseline_days: int
    days: int
    seed: int = 0
    events_per_day: int = 0
    change_list: list[Change] = field(default_factory=list)
    population: Population | None = field(default=None, repr=False)

    @property
    def production_start(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(days=self.baseline_days)

    @property
    def end(self) -> pd.Timestamp:
        return self.production_start + pd.Timedelta(days=self.days)

    def _ms(self, ts: pd.Timestamp) -> int:
        return int(ts.value // 1_000_000)

    def _slice(self, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
        t = self.events["time"].to_numpy()
        a, b = np.searchsorted(t, [self._ms(lo), self._ms(hi)], side="left")
        return self.events.iloc[a:b]

    def baseline(self) -> pd.DataFrame:
        """The baseline events (before the first production day): what a first model is fitted on."""
        return self._slice(self.start, self.production_start)

    def production(self) -> pd.DataFrame:
        """Every production event."""
        return self._slice(self.production_start, self.end)

    def day_bounds(self, i: int) -> tuple[pd.Timestamp, pd.Timestamp]:
        """Start and (exclusive) end of production day ``i`` (0-based), UTC."""
        i = self._check_day(i)
        lo = self.production_start + pd.Timedelta(days=i)
        return lo, lo + pd.Timedelta(days=1)

    def day(self, i: int) -> pd.DataFrame:
        """The events of production day ``i`` (0-based)."""
        return self._slice(*self.day_bounds(i))

    def changes_on(self, i: int) -> list[str]:
        """Names of the changes active on production day ``i``."""
        i = self._check_day(i)
        return [c.name for c in self.change_list if c.active(i, self.days)]

    def change(self, name: str) -> Change:
        for c in self.change_list:
            if c.name == name:
                return c
        raise MonthError(f"no change named {name!r}; the month has {[c.name for c in self.change_list]}")

    def truth(self) -> pd.DataFrame:
        """One row per production day: ``day``, ``date`` (its start, UTC), ``weekday``, ``n_events``,
        ``n_labelled`` (events with a label), ``changes`` (active), ``starting`` (changes that start that day),
        ``drift_changes`` (active changes that move the distribution) and ``drift_expected`` (there is one). The
        slow burn alone is not a distribution change: it adds 24 labelled events a day and moves nothing a drift
        test can see."""
        t = self.events["time"].to_numpy()
        labelled = self.events["metadata.uid"].isin(self.labels["event_uid"]).to_numpy()
        rows = []
        for i in range(self.days):
            lo, hi = self.day_bounds(i)
            a, b = np.searchsorted(t, [self._ms(lo), self._ms(hi)], side="left")
            active = [c for c in self.change_list if c.active(i, self.days)]
            drift = [c.name for c in active if c.drift]
            rows.append({
                "day": i, "date": lo, "weekday": lo.day_name(), "n_events": int(b - a),
                "n_labelled": int(labelled[a:b].sum()), "changes": [c.name for c in active],
                "starting": [c.name for c in active if c.start_day == i], "drift_changes": drift,
                "drift_expected": bool(drift),
            })
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        """The month's description as JSON-able data (what :func:`write_month` writes as ``month_changes.json``)."""
        truth = self.truth()
        truth["date"] = truth["date"].map(_iso)
        return {
            "start": _iso(self.start), "production_start": _iso(self.production_start), "end": _iso(self.end),
            "baseline_days": int(self.baseline_days), "days": int(self.days), "seed": int(self.seed),
            "events_per_day": int(self.events_per_day), "n_events": len(self.events),
            "n_labelled": len(self.labels),
            "changes": [dict(c.to_dict(), start=_iso(s), end=_iso(e)) for c, (s, e) in
                        zip(self.change_list, self._change_spans())],
            "truth": _jsonable(truth.to_dict(orient="records")),
        }

    def _change_spans(self) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        p = self.production_start
        return [(p + pd.Timedelta(days=c.start_day), p + pd.Timedelta(days=c.last_day(self.days) + 1))
                for c in self.change_list]

    def _check_day(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= int(i) < self.days:
            raise MonthError(f"production day must be an integer in [0, {self.days}), got {i!r}")
        return int(i)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _iso(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in x]
    if isinstance(x, pd.Timestamp):
        return _iso(x)
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    return x


def _rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one change: keyed by the seed and the change's name only."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _uniform_by_uid(uids: np.ndarray, seed: int, name: str) -> np.ndarray:
    """A uniform number in [0, 1) per event, a keyed hash of its uid: duplicates (same uid) get the same one."""
    key = f"{zlib.crc32(f'{seed}:{name}'.encode()):016x}"
    h = pd.util.hash_array(np.asarray(uids, dtype=object), hash_key=key, categorize=True)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def human_driven(events: pd.DataFrame, population: Population) -> np.ndarray:
    """Which events a person caused, as opposed to a service or a machine: a staff member (by user name, laptop or
    address) or one of the shop's customers (by address). Service accounts, servers, the mesh and bots are
    machines. This reads the simulator's own world (``population``), so it only applies to simulated events."""
    pop = population
    humans = pop.humans()
    names = pop.user_name[humans].tolist()
    name_set = set(names) | {f"CORP\\{n}" for n in names}
    laptops = set(pop.host_name[pop.host_role == "laptop"].tolist())
    ips = (set(pop.user_internal_ip[humans].tolist()) | set(pop.user_public_ip[humans].tolist())
           | set(pop.customer_ip.tolist()))
    out = np.zeros(len(events), dtype=bool)
    for col, values in (("user.name", name_set), ("actor.user.name", name_set), ("device.hostname", laptops),
                        ("src_endpoint.ip", ips)):
        if col in events.columns:
            out |= events[col].isin(values).to_numpy(dtype=bool)
    return out


def _fill_template(template: str | None, rng: np.random.Generator, sim: _Sim, n: int) -> np.ndarray:
    """Fill ``{id}``, ``{sku}``, ``{uuid}``, ``{page}`` of a path / query template for ``n`` requests (vectorised)."""
    if template is None:
        return np.full(n, None, dtype=object)
    parts = re.split(r"(\{[a-z]+\})", template)
    out = np.full(n, "", dtype=np.dtypes.StringDType())
    for p in parts:
        if p == "{id}":
            piece = rng.integers(10_000, 999_999, n).astype(str)
        elif p == "{sku}":
            piece = np.strings.add("SKU-", rng.integers(10_000, 99_999, n).astype(str))
        elif p == "{page}":
            piece = rng.integers(1, 6, n).astype(str)
        elif p == "{uuid}":
            piece = sim.uuids(n).astype(str)
        elif p.startswith("{"):
            raise MonthError(f"unknown placeholder {p} in {template!r}")
        else:
            piece = p
        out = np.strings.add(out, piece)
    return out.astype(object)


def _frame(blocks: list[Block], uids: np.ndarray, like: pd.DataFrame) -> pd.DataFrame:
    """Rendered blocks as rows of the export ``like`` (same columns, same dtypes), built as ``simulate`` builds its."""
    order, cols, total = _assemble(blocks)
    times = np.concatenate([b.cols["time"] for b in blocks]).astype(np.int64)
    table = pa.table({c: cols[c] for c in order if c != "time"})
    table = table.add_column(0, "metadata.uid", pa.array(np.asarray(uids, dtype=object), type=pa.large_string()))
    iso = np.strings.add(np.datetime_as_string(times.astype("datetime64[ms]"), unit="ms"), "Z")
    table = table.add_column(0, "time_dt", pa.array(iso.astype(object), type=pa.large_string()))
    table = table.add_column(0, "time", pa.array(times, type=pa.int64()))
    df = table.combine_chunks().to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    df["time"] = df["time"].astype(np.int64)
    unknown = sorted(set(df.columns) - set(like.columns))
    if unknown:
        raise RuntimeError(f"new events have columns the export lacks: {unknown}")
    out = {c: (df[c] if c in df.columns else pd.Series(index=df.index, dtype=like[c].dtype)).astype(like[c].dtype)
           for c in like.columns}
    return pd.DataFrame(out, index=pd.RangeIndex(total))


def _label_frame(uids: np.ndarray, scenario: str, entity: np.ndarray, fields: Sequence[str]) -> pd.DataFrame:
    category, shape, _ = MONTH_SCENARIOS[scenario]
    n = len(uids)
    return pd.DataFrame({
        "event_uid": pd.array(np.asarray(uids, dtype=object), dtype="str"),
        "scenario": pd.array([scenario] * n, dtype="str"),
        "category": pd.array([category] * n, dtype="str"),
        "shape": pd.array([shape] * n, dtype="str"),
        "entity": pd.array(np.asarray(entity, dtype=object).astype(str), dtype="str"),
        "fields": [list(fields) for _ in range(n)],
    })


def _check_changes(changes: Sequence[Change], days: int) -> list[Change]:
    out: list[Change] = []
    names: set[str] = set()
    for c in changes:
        if not isinstance(c, Change):
            raise MonthError(f"changes must be Change objects, got {type(c).__name__}")
        if not c.name or c.name in names:
            raise MonthError(f"change names must be unique and non-empty, got {c.name!r} twice or empty")
        names.add(c.name)
        if c.kind not in KINDS:
            raise MonthError(f"change {c.name!r}: unknown kind {c.kind!r}; expected one of {KINDS}")
        if isinstance(c.start_day, bool) or not isinstance(c.start_day, (int, np.integer)) \
                or not 0 <= c.start_day < days:
            raise MonthError(f"change {c.name!r}: start_day must be in [0, {days}), got {c.start_day!r}")
        if c.end_day is not None and (not isinstance(c.end_day, (int, np.integer)) or isinstance(c.end_day, bool)
                                      or not c.start_day <= c.end_day < days):
            raise MonthError(f"change {c.name!r}: end_day must be None or in [start_day, {days}), got {c.end_day!r}")
        if c.labelled and c.kind not in _LABEL_SCENARIO:
            raise MonthError(f"change {c.name!r}: a {c.kind} change has no anomalous events to label")
        out.append(dataclasses.replace(c, fields=tuple(c.fields), params={**_DEFAULT_PARAMS[c.kind], **c.params}))
    services = [c.params.get("service", RECOMMENDATIONS).name for c in out if c.kind == NEW_SERVICE]
    if len(services) != len(set(services)):
        raise MonthError(f"two new_service changes bring the same service: {services}")
    return out


# --------------------------------------------------------------------------------------------------
# the changes, one function per kind
# --------------------------------------------------------------------------------------------------
class _World:
    """What the changes share: the base simulation's export, labels, population and time frame."""

    def __init__(self, events: pd.DataFrame, labels: pd.DataFrame, pop: Population, seed: int, prod_ms: int,
                 days: int):
        self.events = events
        self.labels = labels
        self.pop = pop
        self.seed = seed
        self.prod_ms = prod_ms
        self.days = days
        self.new_services: list[str] = []

    def window(self, c: Change) -> tuple[int, int]:
        """Epoch-ms interval [start, end) of a change."""
        return self.prod_ms + c.start_day * DAY_MS, self.prod_ms + (c.last_day(self.days) + 1) * DAY_MS

    def sim(self, rng: np.random.Generator, c: Change, pop: Population | None = None) -> _Sim:
        """The simulator's machinery over the change's days (times follow the rhythms of those days)."""
        lo, _ = self.window(c)
        return _Sim(rng, self.pop if pop is None else pop, lo, c.last_day(self.days) - c.start_day + 1)

    def count(self, class_uid: int, c: Change) -> int:
        lo, hi = self.window(c)
        t = self.events["time"].to_numpy()
        return int(((t >= lo) & (t < hi) & (self.events["class_uid"] == class_uid).to_numpy(dtype=bool)).sum())


def _add_hosts(pop: Population, spec: NewService) -> tuple[Population, np.ndarray]:
    """The population with the new service's servers appended: the next addresses of the application servers'
    subnet, their most common OS."""
    app = np.flatnonzero(pop.host_role == "app")
    ips = pd.Series(pop.host_ip[app])
    subnet = ips.str.rsplit(".", n=1).str[0].value_counts().index[0]
    taken = {ip for ip in pop.host_ip.tolist() if ip.startswith(subnet + ".")}
    last = max(int(ip.rsplit(".", 1)[1]) for ip in taken)
    new_ips = [f"{subnet}.{last + 1 + k}" for k in range(spec.n_hosts)]
    if last + spec.n_hosts > 254:
        raise MonthError(f"no room for {spec.n_hosts} more hosts in {subnet}.0/24")
    os_name = pd.Series(pop.host_os[app]).value_counts().index[0]
    os_type = int(pop.host_os_type_id[app][pop.host_os[app] == os_name][0])
    names = [f"{spec.host_prefix}-{k:02d}" for k in range(1, spec.n_hosts + 1)]
    if set(names) & set(pop.host_name.tolist()):
        raise MonthError(f"host names {names} already exist")
    k = spec.n_hosts
    idx = np.arange(pop.n_hosts, pop.n_hosts + k)
    ext = dataclasses.replace(
        pop,
        host_name=np.concatenate([pop.host_name, np.array(names, dtype=object)]),
        host_ip=np.concatenate([pop.host_ip, np.array(new_ips, dtype=object)]),
        host_os=np.concatenate([pop.host_os, np.full(k, os_name, dtype=object)]),
        host_os_type_id=np.concatenate([pop.host_os_type_id, np.full(k, os_type, dtype=np.int64)]),
        host_type_id=np.concatenate([pop.host_type_id, np.ones(k, dtype=np.int64)]),
        host_role=np.concatenate([pop.host_role, np.full(k, "app", dtype=object)]),
        host_owner=np.concatenate([pop.host_owner, np.full(k, -1, dtype=np.int64)]),
        host_activity=np.concatenate([pop.host_activity, np.full(k, float(np.median(pop.host_activity[app])))]),
        host_tz=np.concatenate([pop.host_tz, np.zeros(k, dtype=np.int64)]),
        service_servers={**pop.service_servers, spec.name: idx},
    )
    return ext, idx


def _new_service(world: _World, c: Change) -> tuple[Change, list[Block], np.ndarray]:
    spec: NewService = c.params.get("service", RECOMMENDATIONS)
    if spec.name in world.pop.service_servers:
        raise MonthError(f"service {spec.name!r} already exists")
    rng = _rng(world.seed, c.name)
    pop, hosts = _add_hosts(world.pop, spec)
    world.pop = pop
    world.new_services.append(spec.name)
    sim = world.sim(rng, c, pop)
    blocks = []

    # ---- HTTP: customers on the edge and the other services in the mesh
    n = round(c.params["http_share"] * world.count(_HTTP_UID, c))
    eps = spec.endpoints
    tmpl = np.empty(len(eps), dtype=np.int64)
    for j, e in enumerate(eps):
        match = [i for i, x in enumerate(ENDPOINTS) if (x.service, x.path) == tuple(e.template)]
        if not match:
            raise MonthError(f"new endpoint {e.path!r}: no endpoint {e.template} to borrow from")
        tmpl[j] = match[0]
    w_edge = np.array([e.weight if e.edge else 0.0 for e in eps])
    w_mesh = np.array([e.weight if e.mesh else 0.0 for e in eps])
    edge_share = c.params["edge_share"] if w_edge.sum() > 0 else 0.0
    if w_mesh.sum() == 0:
        edge_share = 1.0
    kind = np.where(rng.random(n) < edge_share, 0, 2).astype(np.int64)
    edge = kind == 0
    local = np.empty(n, dtype=np.int64)
    if edge.any():
        local[edge] = rng.choice(len(eps), size=int(edge.sum()), p=w_edge / w_edge.sum())
    if (~edge).any():
        local[~edge] = rng.choice(len(eps), size=int((~edge).sum()), p=w_mesh / w_mesh.sum())
    client = np.zeros(n, dtype=np.int64)
    t = np.empty(n, dtype=np.int64)
    m = np.flatnonzero(edge)
    cw = pop.customer_weight / pop.customer_weight.sum()
    client[m] = rng.choice(len(cw), size=len(m), p=cw)
    t[m] = sim.times(np.full(len(m), "customer", dtype=object), sim.city_tz[pop.customer_city[client[m]]])
    m = np.flatnonzero(~edge)
    callers = np.setdiff1d(_APP_SERVERS(pop), hosts)
    client[m] = rng.choice(callers, size=len(m))
    t[m] = sim.times(np.full(len(m), "server", dtype=object), np.ones(len(m), dtype=np.int64))
    P = sim.draw_http(t, kind, client, tmpl[local])
    # move the template's draws to the new endpoints: medians, paths, queries, hosts
    lat_ratio = np.array([e.latency_ms / ENDPOINTS[tmpl[j]].latency_ms for j, e in enumerate(eps)])[local]
    size_ratio = np.array([e.size_bytes / ENDPOINTS[tmpl[j]].size_bytes for j, e in enumerate(eps)])[local]
    code = P["code"].copy()
    scaled = (code != 503) & (code != 504)
    lat = P["latency"].astype(np.float64)
    lat[scaled] = np.maximum(1, np.round(lat[scaled] * lat_ratio[scaled]))
    body = (code < 400) & (code != 304)
    size = P["size"].astype(np.float64)
    size[body] = np.maximum(1, np.round(size[body] * size_ratio[body]))
    timeout = lat >= TIMEOUT_MS
    lat[timeout] = TIMEOUT_MS
    code[timeout] = 504
    size[timeout] = 24
    P["latency"], P["size"], P["code"] = lat.astype(np.int64), size.astype(np.int64), code
    path = np.empty(n, dtype=object)
    qs = np.full(n, None, dtype=object)
    for j, e in enumerate(eps):
        rows = np.flatnonzero(local == j)
        path[rows] = _fill_template(e.path, rng, sim, len(rows))
        if e.query is not None:
            present = rng.random(len(rows)) < 0.85
            qs[rows[present]] = _fill_template(e.query, rng, sim, int(present.sum()))
    P["path"], P["qs"] = path, qs
    P["server"] = hosts[rng.integers(0, len(hosts), n)]
    b = sim.render_http(P)
    internal = np.full(n, spec.internal_hostname, dtype=object)
    b.cols["http_request.url.hostname"] = internal if spec.edge_hostname is None else \
        np.where(edge, spec.edge_hostname, internal).astype(object)
    b.cols["dst_endpoint.svc_name"] = np.full(n, spec.name, dtype=object)
    b.cols["dst_endpoint.port"] = np.full(n, spec.port, dtype=np.int64)
    trace = np.asarray(P["trace"].tolist(), dtype=np.dtypes.StringDType())
    b.cols["unmapped"] = np.strings.add(
        np.strings.add('{"trace_id": "', trace),
        f'", "upstream_cluster": "outbound|{spec.port}||{spec.internal_hostname}"}}').astype(object)
    e500 = np.flatnonzero(code == 500)
    ref = np.asarray(P["ref"][e500].tolist(), dtype=np.dtypes.StringDType())
    b.cols["status_detail"][e500] = np.strings.add(
        np.strings.add(f"Internal Server Error: unhandled exception in {spec.name} handler (ref ", ref), ")"
    ).astype(object)
    blocks.append(b)

    # ---- network: the other application servers open flows to the new hosts
    n_net = round(c.params["net_share"] * world.count(_NET_UID, c))
    if n_net:
        t_net = sim.times(np.full(n_net, "server", dtype=object), np.zeros(n_net, dtype=np.int64))
        src = rng.choice(callers, size=n_net)
        dst = hosts[rng.integers(0, len(hosts), n_net)]
        Pn = sim.draw_net(t_net, np.full(n_net, "srv_mesh", dtype=object), src, dst, np.full(n_net, -1),
                          np.full(n_net, spec.port, dtype=np.int64))
        blocks.append(sim.render_net(Pn))

    uids = sim.uuids(sum(bl.n for bl in blocks))
    fields = ("dst_endpoint.svc_name", "dst_endpoint.hostname", "dst_endpoint.ip", "dst_endpoint.port",
              "http_request.url.hostname", "http_request.url.path", "http_request.url.query_string", "message",
              "unmapped")
    desc = (f"Service {spec.name!r} goes live: {len(eps)} endpoints on {spec.n_hosts} new hosts "
            f"({', '.join(pop.host_ip[hosts].tolist())}, port {spec.port}); {n} HTTP events "
            f"({c.params['http_share']:.0%} of HTTP) and {n_net} mesh flows.")
    done = dataclasses.replace(c, fields=c.fields or fields, description=f"{c.description} {desc}".strip(),
                               params={**c.params, "service": spec, "hosts": pop.host_name[hosts].tolist(),
                                       "ips": pop.host_ip[hosts].tolist(),
                                       "n_http": n, "n_net": n_net})
    return done, blocks, uids


def _slow_burn(world: _World, c: Change) -> tuple[Change, list[Block], np.ndarray, pd.DataFrame]:
    rng = _rng(world.seed, c.name)
    sim = world.sim(rng, c)
    pop = sim.pop
    lo, hi = world.window(c)
    n = (hi - lo) // HOUR_MS
    t = (lo + np.arange(n, dtype=np.int64) * HOUR_MS + rng.integers(0, HOUR_MS, n)).astype(np.int64)
    user = c.params.get("user")
    if user is None:
        travellers = {tr[0] for tr in pop.travel}
        cand = np.array([u for u in pop.humans().tolist() if u not in travellers])
        u = int(rng.choice(cand))
    else:
        hit = np.flatnonzero(pop.user_name == user)
        if not len(hit):
            raise MonthError(f"slow burn: no user {user!r}")
        u = int(hit[0])
    portal = [a[0] for a in SSO_APPS].index("office365")
    P = sim.draw_auth(t, np.full(n, u, dtype=np.int64), app=portal, fail=True, logoff=False)
    ip = c.params.get("ip")
    if ip is None:
        taken = set(world.events["src_endpoint.ip"].dropna().unique().tolist()) | set(pop.customer_ip.tolist()) \
            | set(pop.saas_ip.tolist()) | set(sim.bot_ip.tolist())
        ip = popmod._public_ips(rng, 1, taken)[0]
    far = [i for i, city in enumerate(CITIES) if city[0] in popmod.FAR_COUNTRIES]
    city = int(far[int(rng.integers(len(far)))])
    P["src_ip"] = np.full(n, ip, dtype=object)
    P["city"] = np.full(n, city, dtype=np.int64)
    P["ua"] = np.full(n, _SLOW_BURN_UA, dtype=object)
    P["reason"] = np.zeros(n, dtype=np.int64)  # invalid credentials, never a lock-out: slow enough not to trip it
    P["u"] = np.full(n, u, dtype=np.int64)
    P["uname"] = np.full(n, pop.user_name[u], dtype=object)
    P["is_mfa"] = np.full(n, "false", dtype=object)
    block = sim.render_auth(P)
    uids = sim.uuids(n)
    labels = _label_frame(uids, "slow_burn", np.full(n, ip, dtype=object), c.fields or _SLOW_BURN_FIELDS) \
        if c.labelled else None
    desc = (f"{ip} ({CITIES[city][1]}, {CITIES[city][0]}) tries {pop.user_name[u]}'s password on the SSO portal "
            f"once an hour: {n} failed sign-ons over {n // 24} days.")
    done = dataclasses.replace(c, fields=c.fields or _SLOW_BURN_FIELDS,
                               description=f"{c.description} {desc}".strip(),
                               params={**c.params, "user": str(pop.user_name[u]), "ip": ip, "n_events": int(n)})
    return done, [block], uids, labels


def _lull(world: _World, c: Change, events: pd.DataFrame, protected: np.ndarray) -> tuple[Change, np.ndarray]:
    """Rows to keep: people's events on the lull days survive with probability ``share``."""
    share = float(c.params["share"])
    if not 0.0 <= share <= 1.0:
        raise MonthError(f"change {c.name!r}: share must be in [0, 1], got {share}")
    lo, hi = world.window(c)
    t = events["time"].to_numpy()
    rows = np.flatnonzero((t >= lo) & (t < hi))
    keep = np.ones(len(events), dtype=bool)
    part = events.iloc[rows]
    human = human_driven(part, world.pop) & ~protected[rows]
    u = _uniform_by_uid(part["metadata.uid"].to_numpy(dtype=object), world.seed, c.name)
    keep[rows] = ~human | (u < share)
    n_h = int(human.sum())
    desc = (f"People's events (staff and customers) kept with probability {share:g}: {n_h - int((~keep).sum())} "
            f"of {n_h} kept; machines' events unchanged.")
    done = dataclasses.replace(c, description=f"{c.description} {desc}".strip(),
                               params={**c.params, "n_people": n_h, "n_removed": int((~keep).sum())})
    return done, keep


def _latency_regression(world: _World, c: Change, events: pd.DataFrame,
                        protected: np.ndarray) -> tuple[Change, pd.DataFrame | None]:
    """Multiply one service's HTTP durations, in place, by a factor growing linearly from 1 to ``factor``."""
    lo, hi = world.window(c)
    factor = float(c.params["factor"])
    if not factor > 0:
        raise MonthError(f"change {c.name!r}: factor must be positive, got {factor}")
    t = events["time"].to_numpy()
    http = (events["class_uid"] == _HTTP_UID).to_numpy(dtype=bool) & ~protected
    svc = events["dst_endpoint.svc_name"]
    service = c.params.get("service")
    if service is None:
        ops = set(world.labels.loc[world.labels["category"] == "operations", "entity"].tolist())
        inside = http & (t >= lo) & (t < hi)
        counts = svc[inside].value_counts()
        counts = counts[~counts.index.isin(ops | set(world.new_services))]
        if counts.empty:
            raise MonthError(f"change {c.name!r}: no service left to slow down")
        top = counts.max()
        service = min(counts.index[counts == top].tolist())
    code = pd.to_numeric(events["http_response.code"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    rows = np.flatnonzero(http & (svc == service).to_numpy(dtype=bool) & (t >= lo) & (t < hi) & (code < 500))
    frac = (t[rows] - lo) / float(hi - lo)
    mult = 1.0 + (factor - 1.0) * frac
    for col in _LATENCY_FIELDS:
        v = events[col].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
        new = np.minimum(TIMEOUT_MS - 1, np.round(v * mult)).astype(np.int64)
        events.iloc[rows, events.columns.get_loc(col)] = pd.array(new, dtype="Int64")
    uids = pd.unique(events["metadata.uid"].to_numpy(dtype=object)[rows])
    labels = _label_frame(uids, "latency_regression", np.full(len(uids), service, dtype=object),
                          c.fields or _LATENCY_FIELDS) if c.labelled else None
    desc = (f"Service {service!r}: duration x1 -> x{factor:g} linearly over {(hi - lo) // DAY_MS} days "
            f"({len(uids)} events).")
    done = dataclasses.replace(c, fields=c.fields or _LATENCY_FIELDS, description=f"{c.description} {desc}".strip(),
                               params={**c.params, "service": service, "n_events": len(uids)})
    return done, labels


def schema_columns(baseline: pd.DataFrame, max_fill: float = 0.6, rename: str | None = None) -> tuple[str, str]:
    """(renamed, dropped) columns for a schema change, chosen from baseline raw events by the package's encoder.

    Candidates are raw columns the encoder encodes as categorical or numeric, filled in at most ``max_fill`` of the
    events and loaded only from their own column (no value from a JSON object). The renamed one (unless ``rename``
    names it) is the most filled categorical (else numeric); the dropped one the most filled numeric (else
    categorical) whose filled rows lie within the renamed one's (the same producer), else among all. Ties go by
    name."""
    from ..features.encoder import FeatureEncoder
    from ..features.roles import CATEGORICAL, NUMERIC
    from .load import load_events

    if not 0 < max_fill <= 1:
        raise MonthError(f"max_fill must be in (0, 1], got {max_fill!r}")
    if rename is not None and rename not in baseline.columns:
        raise MonthError(f"schema change: no column {rename!r} in the events")
    loaded = load_events(baseline).events
    roles = FeatureEncoder(n_jobs=1).fit(loaded).roles_
    cands = []
    for col in baseline.columns:
        role = roles.get(col)
        if role not in (CATEGORICAL, NUMERIC) or col not in loaded.columns:
            continue
        filled = int(baseline[col].notna().sum())
        if filled != int(loaded[col].notna().sum()):
            continue
        fill = filled / max(1, len(baseline))
        if 0 < fill <= max_fill:
            cands.append((col, role, fill))
    if rename is None:
        if not cands:
            raise MonthError(f"schema change: no encoded column filled in at most {max_fill:.0%} of the baseline; "
                             "name the columns with params rename / drop")
        rename = min(cands, key=lambda x: (x[1] != CATEGORICAL, -x[2], x[0]))[0]
    if not [x for x in cands if x[0] != rename]:
        raise MonthError("schema change: no other encoded column to drop; name it with params drop")
    within = baseline[rename].notna().to_numpy()
    rest = [x for x in cands if x[0] != rename]
    inside = [x for x in rest if not (baseline[x[0]].notna().to_numpy() & ~within).any()]
    drop = min(inside or rest, key=lambda x: (x[1] != NUMERIC, -x[2], x[0]))[0]
    return rename, drop


def _schema(world: _World, c: Change, events: pd.DataFrame, baseline: pd.DataFrame) -> Change:
    """Rename, add and drop columns of ``events`` (in place) from the change's start."""
    rng = _rng(world.seed, c.name)
    p = c.params
    rename, drop = p.get("rename"), p.get("drop")
    if rename is None or drop is None:
        rename, auto_drop = schema_columns(baseline, float(p["max_fill"]), rename)
        drop = auto_drop if drop is None else drop
    rename_to = p.get("rename_to") or f"{rename}_v2"
    add = p["add"]
    for col in (rename, drop):
        if col not in events.columns:
            raise MonthError(f"schema change: no column {col!r} in the events")
    for col in (rename_to, add):
        if col in events.columns:
            raise MonthError(f"schema change: column {col!r} already exists; pick another name")
    if len({rename, drop}) < 2 or len({rename_to, add}) < 2:
        raise MonthError("schema change: the renamed, dropped and added columns must differ")
    lo, _ = world.window(c)
    after = events["time"].to_numpy() >= lo
    producer = after & events[rename].notna().to_numpy()
    events[rename_to] = events[rename].where(after)
    events[rename] = events[rename].mask(after)
    lag = np.round(np.exp(np.log(1_500.0) + 0.8 * rng.standard_normal(len(events)))).astype(np.int64)
    added = pd.array(events["time"].to_numpy() + lag, dtype="Int64")
    added[~producer] = pd.NA
    events[add] = added
    events[drop] = events[drop].mask(after)
    desc = (f"{rename!r} renamed {rename_to!r}; the same producer's events ({int(producer.sum())}) gain {add!r}; "
            f"{drop!r} is no longer sent.")
    return dataclasses.replace(c, fields=(rename, rename_to, add, drop), description=f"{c.description} {desc}".strip(),
                               params={**p, "rename": rename, "rename_to": rename_to, "drop": drop})


# --------------------------------------------------------------------------------------------------
# the month
# --------------------------------------------------------------------------------------------------
def simulate_month(days: int = 28, baseline_days: int = 7, events_per_day: int = 4000, seed: int = 0,
                   start: str | int | pd.Timestamp = "2026-10-05T00:00:00Z",
                   changes: Iterable[Change] | None = None) -> Month:
    """Simulate ``baseline_days`` unchanged days then ``days`` production days with ``changes``.

    The simulator (:func:`obsad.ocsf.simulate.simulate`, same ``seed``) draws ``events_per_day`` events a day on
    average over the whole window, its own labelled incidents included; then the changes are applied in this
    order whatever their order in the list: events added (new services, slow burns), events removed (lulls),
    values changed (latency regressions), columns changed (schema changes). ``changes=None`` means
    :func:`default_changes` ``(days)``; ``[]`` gives the same month with no change.
    """
    for name, v, least in (("days", days, 1), ("baseline_days", baseline_days, 1), ("events_per_day", events_per_day, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
            raise MonthError(f"{name} must be an integer >= {least}, got {v!r}")
    total_days = int(baseline_days + days)
    n_events = int(events_per_day) * total_days
    if n_events < 5_000:
        raise MonthError(f"the month needs at least 5000 events in all (events_per_day x {total_days} days), "
                         f"got {n_events}")
    specs = _check_changes(default_changes(days) if changes is None else list(changes), int(days))
    start_ms = _parse_start(start)
    prod_ms = start_ms + int(baseline_days) * DAY_MS
    base = simulate(n_events=n_events, days=total_days, seed=int(seed), start=start_ms)
    world = _World(base.events, base.labels, base.population, int(seed), prod_ms, int(days))
    resolved: dict[str, Change] = {}

    # 1. events added
    blocks: list[Block] = []
    uid_parts: list[np.ndarray] = []
    new_labels: list[pd.DataFrame] = []
    for c in specs:
        if c.kind == NEW_SERVICE:
            resolved[c.name], bl, uids = _new_service(world, c)
        elif c.kind == SLOW_BURN:
            resolved[c.name], bl, uids, lab = _slow_burn(world, c)
            if lab is not None:
                new_labels.append(lab)
        else:
            continue
        blocks += bl
        uid_parts.append(uids)
    events = base.events
    if blocks:
        uids = np.concatenate(uid_parts)
        if pd.Index(uids).has_duplicates or events["metadata.uid"].isin(uids).any():
            raise RuntimeError("drawn event uids collide")  # 128-bit random ids: never in practice
        events = pd.concat([events, _frame(blocks, uids, events)], ignore_index=True)
    labels = pd.concat([base.labels, *new_labels], ignore_index=True) if new_labels else base.labels.copy()

    # 2. events removed (labelled events never are), then one sort by time
    keep = np.ones(len(events), dtype=bool)
    protected = events["metadata.uid"].isin(labels["event_uid"]).to_numpy()
    for c in specs:
        if c.kind == LULL:
            resolved[c.name], kept = _lull(world, c, events, protected)
            keep &= kept
    rows = np.flatnonzero(keep)
    order = rows[np.argsort(events["time"].to_numpy()[rows], kind="stable")]
    if len(order) != len(events) or (order != np.arange(len(events))).any():
        events = events.take(order).reset_index(drop=True)

    # 3. values changed
    for c in specs:
        if c.kind == LATENCY_REGRESSION:
            protected = events["metadata.uid"].isin(labels["event_uid"]).to_numpy()
            resolved[c.name], lab = _latency_regression(world, c, events, protected)
            if lab is not None:
                labels = pd.concat([labels, lab], ignore_index=True)

    # 4. columns changed
    baseline = base.events.iloc[:int(np.searchsorted(base.events["time"].to_numpy(), prod_ms, side="left"))]
    for c in sorted((c for c in specs if c.kind == SCHEMA), key=lambda c: (c.start_day, c.name)):
        resolved[c.name] = _schema(world, c, events, baseline)

    # labels in the order their events first appear
    uid_col = events["metadata.uid"].drop_duplicates()
    first = pd.Series(uid_col.index.to_numpy(), index=uid_col.to_numpy())
    pos = labels["event_uid"].map(first)
    if pos.isna().any():
        raise RuntimeError("a label lost its event")
    labels = labels.iloc[np.argsort(pos.to_numpy(), kind="stable")].reset_index(drop=True)

    change_list = [resolved[c.name] for c in specs]
    month = Month(events=events, labels=labels, changes=pd.DataFrame(), start=pd.Timestamp(start_ms, unit="ms",
                  tz="UTC"), baseline_days=int(baseline_days), days=int(days), seed=int(seed),
                  events_per_day=int(events_per_day), change_list=change_list, population=world.pop)
    spans = month._change_spans()
    month.changes = pd.DataFrame({
        "name": pd.array([c.name for c in change_list], dtype="str"),
        "kind": pd.array([c.kind for c in change_list], dtype="str"),
        "start": pd.DatetimeIndex([s for s, _ in spans], tz="UTC") if spans else pd.DatetimeIndex([], tz="UTC"),
        "end": pd.DatetimeIndex([e for _, e in spans], tz="UTC") if spans else pd.DatetimeIndex([], tz="UTC"),
        "start_day": np.array([c.start_day for c in change_list], dtype=np.int64),
        "end_day": np.array([c.last_day(int(days)) for c in change_list], dtype=np.int64),
        "fields": [list(c.fields) for c in change_list],
        "description": pd.array([c.description for c in change_list], dtype="str"),
        "labelled": np.array([bool(c.labelled) for c in change_list], dtype=bool),
    })
    return month


def write_month(out_dir: str | os.PathLike, days: int = 28, baseline_days: int = 7, events_per_day: int = 4000,
                seed: int = 0, start: str | int | pd.Timestamp = "2026-10-05T00:00:00Z",
                changes: Iterable[Change] | None = None, *,
                month: Month | None = None) -> dict[str, Path]:
    """Write ``month_events.parquet``, ``month_labels.parquet`` and ``month_changes.json`` atomically into
    ``out_dir``: ``month`` when given, else the month the other arguments simulate."""
    from ..io import write_json, write_parquet

    if month is None:
        month = simulate_month(days=days, baseline_days=baseline_days, events_per_day=events_per_day, seed=seed,
                               start=start, changes=changes)
    out = Path(out_dir)
    return {
        "events": write_parquet(month.events, out / "month_events.parquet"),
        "labels": write_parquet(month.labels, out / "month_labels.parquet"),
        "changes": write_json(month.to_dict(), out / "month_changes.json"),
    }
