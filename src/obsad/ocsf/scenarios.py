"""The labelled anomaly scenarios the simulator injects, and their signatures.

Each :class:`Scenario` says what kind of incident it is (``category``: security or operations), whether
its events are anomalous one by one (``shape='point'``) or only together (``'collective'``: a burst, a
drift), which entity it belongs to, and its **signature**: ``fields``, the flat columns whose values the
scenario sets. Every other column of its events is drawn exactly as for normal events of the same
class (the generators call the simulator's own draw functions and only then change the signature's
primary attributes), so a detector that explains an alert should name fields from this list.

The incidents are meant to look like the real thing, not like impossible values: a brute force is
hundreds of ordinary failed logons from one address, an exfiltration is ordinary-looking HTTPS flows
that carry far more bytes than usual to an address nobody else talks to, a latency creep is a service
slowly getting slower over days.

**When they happen.** Real incidents recur, and a detector is trained on the past and judged on the
future. So every scenario has an incident in the last 15 % of the window (inside what a time split,
:func:`obsad.splits.time_split`, tests on), and every scenario with two or more incidents also has
one in the first 60 % (inside what it trains on: the training data is contaminated, as in
production). A collective scenario with two incidents has one early and one late, on two different
entities (laptops, services) that share its event budget (:func:`plan`); a lone brute force (small
runs) is late; of a point scenario's incidents 30 % (at least one) are late, one is early and the rest
fall anywhere. Inside its part of the window an incident keeps its rhythm: at the local hours of the
person or service, on a weekday or a weekend as the scenario prefers where that part has such a day
(a week from Monday ends on a weekend, so late incidents there happen on the weekend, and its first
60 % holds no weekend night, so an early off-hours admin session is on a weeknight); brute force at
any hour; the latency creep over the window's last days. Everything follows from the seed.

=========================  ==========  ==========  ===============================================
name                       category    shape       what happens
=========================  ==========  ==========  ===============================================
brute_force                security    collective  one internet IP tries many (partly invented)
                                                   user names against the SSO portal in minutes
impossible_travel          security    point       a user logs on from a far country minutes after
                                                   logging on from home
off_hours_admin            security    point       an admin account creates users, keys and
                                                   policies at 1-4 am, on a weekend if it can
data_exfiltration          security    collective  one laptop uploads hundreds of MB per flow to an
                                                   external address never seen before
port_scan                  security    collective  one laptop probes many ports on a few servers:
                                                   refused, short, tiny connections
dns_tunnelling             security    collective  one laptop sends long random-looking subdomains of
                                                   one domain, mostly TXT, answered with TTL 0
rare_process_lineage       security    point       an Office application spawns a shell or script
                                                   host with an encoded / download command line
timeout_burst              operations  collective  one list / search endpoint's requests hang until
                                                   the 30 s proxy timeout (504) for half an hour
error_storm                operations  collective  one service answers 5xx fast for a quarter hour
latency_creep              operations  collective  one endpoint gets slowly slower over the last days
=========================  ==========  ==========  ===============================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import population as popmod

_GEO = ("location.city", "location.country")
_HTTP_OUTCOME = (
    "http_response.code", "http_response.latency", "duration", "http_response.length", "status_id", "status",
    "status_detail", "severity_id", "severity", "message",
)


@dataclass(frozen=True)
class Scenario:
    """One kind of labelled anomaly.

    ``entity`` is the kind of thing it belongs to (``user``, ``ip``, ``host``, ``service``) and
    ``entity_field`` the column that carries that entity in the events (the label's ``entity`` value is
    that column's value). ``fields`` is the signature: the flat columns the scenario changes.
    """

    name: str
    category: str  # "security" | "operations"
    shape: str  # "point" | "collective"
    description: str
    fields: tuple[str, ...]
    entity: str
    entity_field: str = ""
    class_uid: int = 0
    generate: Callable = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Size:
    """How many events a scenario adds (``added``) in how many separate incidents (``instances``)."""

    added: int
    instances: int


@dataclass
class Injection:
    """What a generator returns: new primary attributes ``P`` of class ``cls`` (``rows`` None), or the
    indices ``rows`` of normal events of ``cls`` it changed in place. ``entity`` is per row;
    ``label=False`` marks supporting normal events (e.g. the home logon before an impossible one)."""

    cls: str
    P: dict | None
    entity: np.ndarray
    rows: np.ndarray | None = None
    label: bool = True


# --------------------------------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------------------------------


def _split(total: int, k: int) -> list[int]:
    base = [total // k] * k
    for i in range(total - sum(base)):
        base[i] += 1
    return base


def plan(n_events: int, days: int) -> dict[str, Size]:
    """Deterministic event budget per scenario: about 1.5 % of ``n_events`` in all.

    ``instances`` is how many separate incidents share a scenario's events: exfiltration, port scan, DNS
    tunnelling, timeout burst and error storm happen twice (two laptops, two services), brute force
    twice from 50k events on; see the module docstring for where in the window they go.
    """
    s = n_events / 100_000
    k_travel = max(3, round(20 * s))
    k_admin = max(2, round(4 * s))
    k_proc = max(3, round(8 * s))
    return {
        "brute_force": Size(max(60, round(350 * s)), 2 if n_events >= 50_000 else 1),
        "impossible_travel": Size(2 * k_travel, k_travel),  # a normal home logon + the far one
        "off_hours_admin": Size(sum(3 + (i % 2) for i in range(k_admin)), k_admin),
        "data_exfiltration": Size(max(12, round(50 * s)), 2),
        "port_scan": Size(max(80, round(300 * s)), 2),
        "dns_tunnelling": Size(max(60, round(250 * s)), 2),
        "rare_process_lineage": Size(sum(1 + (i % 2) for i in range(k_proc)), k_proc),
        "timeout_burst": Size(max(40, round(150 * s)), 2),
        "error_storm": Size(max(50, round(200 * s)), 2),
        "latency_creep": Size(0, 1),
    }


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


#: Where incidents go, as shares of the window's time: an ``"early"`` incident ends within the first 60 %,
#: a ``"late"`` one starts within the last 15 %. A time split by event counts (70 / 15 / 15) trains on
#: the first ~64 % of a week's time (the weekend is quiet) and tests on its last ~21 %, so early
#: incidents land in its training part and late ones in its test part.
EARLY_END = 0.60
LATE_START = 0.85
#: Share of a point scenario's incidents placed late (at least one); one more is placed early, the rest
#: anywhere in the window.
LATE_SHARE = 0.3


def _bounds(sim, phase: str | None) -> tuple[int, int]:
    """Epoch-ms interval of the window that ``phase`` (``"early"``, ``"late"`` or None: all) covers."""
    span = sim.end_ms - sim.start_ms
    if phase == "early":
        return sim.start_ms, sim.start_ms + int(EARLY_END * span)
    if phase == "late":
        return sim.start_ms + int(np.ceil(LATE_START * span)), sim.end_ms
    return sim.start_ms, sim.end_ms


def _phases(sim, k: int) -> list[str | None]:
    """Where each of ``k`` incidents of a scenario goes: a lone one late; otherwise ``LATE_SHARE`` of them
    (at least one) late, one early, the rest anywhere, in an order drawn from the seed."""
    if k <= 1:
        return ["late"] * k
    n_late = max(1, int(round(LATE_SHARE * k)))
    out = ["late"] * n_late + ["early"] + [None] * (k - n_late - 1)
    return [out[i] for i in sim.rng.permutation(k).tolist()]


def _any_hour(sim, phase: str | None, length_ms: int) -> int:
    """Start (epoch ms) of an incident lasting up to ``length_ms`` at any hour inside ``phase``."""
    lo, hi = _bounds(sim, phase)
    return lo + int(sim.rng.integers(0, max(1, hi - lo - length_ms)))


def _burst_times(sim, n: int, t0: int, span_ms: int) -> np.ndarray:
    return np.sort(t0 + sim.rng.integers(0, span_ms, n)).astype(np.int64)


def _local_time(sim, day: int, hour: float, tz: int) -> int:
    """Epoch ms of local ``hour`` on window day ``day`` in time zone ``tz``."""
    return int(sim.start_ms + day * 86_400_000 + (hour - tz) * 3_600_000)


def _days(sim, tz: int, weekend: bool) -> list[int]:
    out = []
    for d in range(sim.days):
        dow = ((sim.start_ms + d * 86_400_000 + 12 * 3_600_000 - tz * 3_600_000) // 86_400_000 + 3) % 7
        if (dow >= 5) == weekend:
            out.append(d)
    return out or list(range(sim.days))


def _local_start(sim, tz: int, weekend: bool, phase: str | None, hours: tuple[float, float], length_ms: int) -> int:
    """Start (epoch ms) of an incident that begins between local ``hours`` (time zone ``tz``) and lasts up
    to ``length_ms``, all of it inside ``phase``, on a weekend day or a weekday as ``weekend`` asks.

    The day is drawn among those whose whole start interval fits the phase, of the asked kind where the
    phase has one (else of any kind); in a window too short for that, among days whose start interval
    overlaps the phase (the hour is then drawn in the overlap); failing that, the start is clamped into it.
    """
    rng = sim.rng
    lo, hi = _bounds(sim, phase)
    hi = max(lo, hi - length_ms)  # latest start that still ends inside the phase
    kind = set(_days(sim, tz, weekend))
    whole, part = [], []
    for d in range(sim.days):
        a, b = _local_time(sim, d, hours[0], tz), _local_time(sim, d, hours[1], tz)
        if lo <= a and b <= hi:
            whole.append((d, a, b))
        elif max(a, lo) <= min(b, hi):
            part.append((d, max(a, lo), min(b, hi)))
    for cands in ([c for c in whole if c[0] in kind], whole, [c for c in part if c[0] in kind], part):
        if cands:
            _, a, b = cands[int(rng.integers(len(cands)))]
            return int(a + rng.uniform(0.0, 1.0) * (b - a))
    d = sorted(kind)[int(rng.integers(len(kind)))]
    return int(np.clip(_local_time(sim, d, float(rng.uniform(*hours)), tz), lo, hi))


def _new_ips(sim, n: int) -> list[str]:
    taken = set(sim.pop.customer_ip.tolist()) | set(sim.pop.saas_ip.tolist()) | set(sim.bot_ip.tolist())
    return popmod._public_ips(sim.rng, n, taken)


def _city(name: str) -> int:
    return popmod.CITY_INDEX[name]


_ATTACK_CITIES = ("Hanoi", "Sao Paulo", "Moscow", "Lagos", "Jakarta", "Shanghai", "Buenos Aires")
_GUESSED_NAMES = ("admin", "administrator", "test", "info", "support", "backup", "scanner", "helpdesk", "root",
                  "j.smith", "m.mueller", "sales", "hr", "it-admin", "office", "webmaster", "user1", "guest")
_B32 = np.array(list("abcdefghijklmnopqrstuvwxyz234567"))
_B64 = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"))


def _randstr(rng, alphabet: np.ndarray, lengths: np.ndarray) -> list[str]:
    total = int(lengths.sum())
    chars = alphabet[rng.integers(0, len(alphabet), total)]
    out, pos = [], 0
    for k in lengths.tolist():
        out.append("".join(chars[pos:pos + k]))
        pos += k
    return out


# --------------------------------------------------------------------------------------------------
# generators: (sim, normal primary attributes per class, size) -> list[Injection]
# --------------------------------------------------------------------------------------------------


def _brute_force(sim, normal, size: Size) -> list[Injection]:
    from .simulate import SSO_APPS

    rng, pop = sim.rng, sim.pop
    humans = pop.humans()
    portal = [a[0] for a in SSO_APPS].index("office365")
    out = []
    ips = _new_ips(sim, size.instances)
    phases = _phases(sim, size.instances)
    for i, m in enumerate(_split(size.added, size.instances)):
        t0 = _any_hour(sim, phases[i], 2 * 3_600_000)
        t = _burst_times(sim, m, t0, int(rng.integers(20, 60)) * 60_000)
        u = rng.choice(humans, size=m)
        success = np.zeros(m, dtype=bool)
        success[rng.integers(0, m, 1 + (m > 150))] = True  # a credential that worked
        P = sim.draw_auth(t, u, app=portal, fail=~success, logoff=False)
        invented = (rng.random(m) < 0.3) & ~success
        guesses = np.array(_GUESSED_NAMES, dtype=object)[rng.integers(0, len(_GUESSED_NAMES), m)]
        P["uname"] = np.where(invented, guesses, pop.user_name[u]).astype(object)
        P["u"] = np.where(invented, -1, u)
        P["reason"] = np.where(success, -1, np.where(invented, 4, 0))
        P["is_mfa"] = np.where(success, "false", P["is_mfa"]).astype(object)
        P["src_ip"] = np.full(m, ips[i], dtype=object)
        P["city"] = np.full(m, _city(_ATTACK_CITIES[int(rng.integers(len(_ATTACK_CITIES)))]), dtype=np.int64)
        tool = ("python-requests/2.28.1", None, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36")[i % 3]
        P["ua"] = np.full(m, tool, dtype=object)
        out.append(Injection("auth", P, np.full(m, ips[i], dtype=object)))
    return out


def _impossible_travel(sim, normal, size: Size) -> list[Injection]:
    from .simulate import SSO_APPS

    rng, pop = sim.rng, sim.pop
    travellers = {tr[0] for tr in pop.travel}
    cand = np.array([u for u in pop.users_with_role("engineer", "sales", "finance", "support", "hr")
                     if u not in travellers])
    users = rng.choice(cand, size=size.instances, replace=False)
    apps = np.array([a[1] for a in SSO_APPS])
    far = [i for i, c in enumerate(popmod.CITIES) if c[0] in popmod.FAR_COUNTRIES]
    ips = _new_ips(sim, size.instances)
    phases = _phases(sim, size.instances)
    out = []
    for k, u in enumerate(users.tolist()):
        tz = int(pop.user_tz[u])
        t_home = _local_start(sim, tz, weekend=False, phase=phases[k], hours=(8.5, 17.0), length_ms=90 * 60_000)
        gap = int(rng.integers(6, 90)) * 60_000
        uu = np.array([u, u])
        app = rng.choice(len(apps), size=2, p=apps / apps.sum())
        P = sim.draw_auth(np.array([t_home, t_home + gap], dtype=np.int64), uu, app=app,
                          fail=np.array([False, False]), logoff=np.array([False, False]))
        home = {key: (v[:1] if isinstance(v, np.ndarray) else v) for key, v in P.items()}
        away = {key: (v[1:] if isinstance(v, np.ndarray) else v) for key, v in P.items()}
        away["src_ip"] = np.array([ips[k]], dtype=object)
        away["city"] = np.array([far[int(rng.integers(len(far)))]], dtype=np.int64)
        name = pop.user_name[u]
        out.append(Injection("auth", home, np.array([name], dtype=object), label=False))
        out.append(Injection("auth", away, np.array([name], dtype=object)))
    return out


def _off_hours_admin(sim, normal, size: Size) -> list[Injection]:
    from .simulate import API_OP_INDEX

    rng, pop = sim.rng, sim.pop
    admins = pop.users_with_role("admin")
    scripts = (
        ("CreateUser", "AttachUserPolicy", "CreateAccessKey"),
        ("CreateUser", "AttachUserPolicy", "CreateAccessKey", "StopLogging"),
        ("PutBucketPolicy", "CreateAccessKey", "AuthorizeSecurityGroupIngress"),
        ("CreateAccessKey", "PutRolePolicy", "ScheduleKeyDeletion", "StopLogging"),
    )
    phases = _phases(sim, size.instances)
    out = []
    for i in range(size.instances):
        u = int(admins[i % len(admins)])
        m = 3 + (i % 2)
        script = [s for s in scripts if len(s) == m][int(rng.integers(2))]
        tz = int(pop.user_tz[u])
        t0 = _local_start(sim, tz, weekend=True, phase=phases[i], hours=(1.0, 4.0), length_ms=30 * 60_000)
        t = (t0 + np.cumsum(rng.integers(40_000, 400_000, m))).astype(np.int64)
        ops = np.array([API_OP_INDEX[o] for o in script], dtype=np.int64)
        P = sim.draw_api(t, np.full(m, u), ops)
        P["err"] = np.full(m, -1)
        new_user = ("support-temp", "svc-backup2", "ci-deployer", "audit-readonly")[i % 4]
        P["target_user"] = np.full(m, new_user, dtype=object)
        P["policy"] = np.full(m, "AdministratorAccess", dtype=object)
        out.append(Injection("api", P, np.full(m, pop.user_name[u], dtype=object)))
    return out


def _laptops(sim, size: Size, *roles: str):
    """Distinct owners of the given roles for the scenario's incidents (one laptop each), with where in
    the window each incident goes."""
    owners = sim.pop.users_with_role(*roles)
    users = sim.rng.choice(owners, size=size.instances, replace=False)
    return users.tolist(), _phases(sim, size.instances), _split(size.added, size.instances)


def _data_exfiltration(sim, normal, size: Size) -> list[Injection]:
    rng, pop = sim.rng, sim.pop
    far = [_city(c) for c in ("Moscow", "Singapore", "Hanoi", "Sao Paulo")]
    out = []
    for u, phase, n in zip(*_laptops(sim, size, "engineer", "finance")):
        host = int(pop.user_host[u])
        tz = int(pop.user_tz[u])
        t0 = _local_start(sim, tz, weekend=False, phase=phase, hours=(19.0, 21.0), length_ms=3 * 3_600_000)
        t = _burst_times(sim, n, t0, int(rng.uniform(1.5, 3.0) * 3_600_000))
        P = sim.draw_net(t, np.full(n, "lap_saas", dtype=object), np.full(n, host), np.full(n, -1),
                         np.zeros(n, dtype=np.int64), np.full(n, 443, dtype=np.int64))
        P["dst_ip"] = np.full(n, _new_ips(sim, 1)[0], dtype=object)
        P["dst_city"] = np.full(n, far[int(rng.integers(len(far)))], dtype=np.int64)
        bo = np.round(np.exp(np.log(3.2e8) + 0.5 * rng.standard_normal(n))).astype(np.int64)
        bi = np.round(bo * rng.uniform(0.004, 0.02, n)).astype(np.int64)
        mss = rng.integers(1200, 1449, n)
        P["bytes_out"], P["bytes_in"] = bo, bi
        P["packets_out"] = bo // mss + 2
        P["packets_in"] = np.maximum(1, bi // 52)  # mostly ACKs
        P["duration"] = np.round(bo / rng.uniform(2e6, 9e6, n) * 1000).astype(np.int64)
        out.append(Injection("net", P, np.full(n, pop.host_ip[host], dtype=object)))
    return out


_SCAN_PORTS = (21, 22, 23, 25, 53, 80, 110, 111, 135, 139, 143, 443, 445, 993, 995, 1433, 1521, 2049, 2375,
               3306, 3389, 5432, 5900, 5985, 6379, 8000, 8080, 8443, 8888, 9000, 9200, 11211, 27017)


def _port_scan(sim, normal, size: Size) -> list[Injection]:
    from .population import SERVERS

    rng, pop = sim.rng, sim.pop
    targets = np.array([pop.host_by_name(h) for h in ("dc-01", "fs-01", "db-orders-01", "app-orders-02", "jira-01")])
    listening = {}
    for prefix, count, _role, _os, ports in SERVERS:
        for k in range(1, count + 1):
            listening[f"{prefix}-{k:02d}"] = set(ports)
    out = []
    for u, phase, n in zip(*_laptops(sim, size, "sales", "support", "hr", "engineer")):
        host = int(pop.user_host[u])
        tz = int(pop.user_tz[u])
        t0 = _local_start(sim, tz, weekend=False, phase=phase, hours=(10.0, 16.0), length_ms=25 * 60_000)
        t = _burst_times(sim, n, t0, int(rng.integers(12, 25)) * 60_000)
        dst = targets[rng.integers(0, len(targets), n)]
        common = rng.random(n) < 0.7
        port = np.where(common, np.array(_SCAN_PORTS)[rng.integers(0, len(_SCAN_PORTS), n)], rng.integers(1, 10_000, n))
        P = sim.draw_net(t, np.full(n, "refused", dtype=object), np.full(n, host), dst, np.full(n, -1), port)
        open_ = np.array([int(p) in listening[pop.host_name[d]] for d, p in zip(dst.tolist(), port.tolist())])
        act = np.where(open_, 6, np.where(rng.random(n) < 0.85, 5, 4))
        P["activity"] = act
        P["bytes_out"] = np.where(open_, rng.integers(120, 400, n), rng.integers(60, 75, n)).astype(np.int64)
        P["bytes_in"] = np.where(open_, rng.integers(60, 1200, n),
                                 np.where(act == 4, 0, rng.integers(40, 55, n))).astype(np.int64)
        P["packets_out"] = np.where(open_, rng.integers(3, 5, n), 1).astype(np.int64)
        P["packets_in"] = np.where(open_, rng.integers(2, 4, n), np.where(act == 4, 0, 1)).astype(np.int64)
        P["duration"] = np.where(open_, rng.integers(1, 15, n), rng.integers(0, 2, n)).astype(np.int64)
        out.append(Injection("net", P, np.full(n, pop.host_ip[host], dtype=object)))
    return out


def _dns_tunnelling(sim, normal, size: Size) -> list[Injection]:
    rng, pop = sim.rng, sim.pop
    syl = ("vor", "tan", "qui", "mex", "lor", "dax", "pel", "rin", "sof", "cab")
    zone = "".join(syl[int(i)] for i in rng.integers(0, len(syl), 3)) + "-stats.net"  # one operator, one zone
    out = []
    for u, phase, n in zip(*_laptops(sim, size, "engineer", "finance", "sales")):
        host = int(pop.user_host[u])
        tz = int(pop.user_tz[u])
        t0 = _local_start(sim, tz, weekend=False, phase=phase, hours=(9.0, 13.0), length_ms=6 * 3_600_000)
        t = _burst_times(sim, n, t0, int(rng.uniform(3.0, 6.0) * 3_600_000))
        labels = _randstr(rng, _B32, rng.integers(38, 60, n))
        qname = np.array([f"{lab}.{seq:04x}.{zone}" for lab, seq in zip(labels, rng.integers(0, 65_536, n).tolist())],
                         dtype=object)
        qtype = np.where(rng.random(n) < 0.8, "TXT", "A").astype(object)
        P = sim.draw_dns(t, np.full(n, host), qname, qtype, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool))
        payload = _randstr(rng, _B64, rng.integers(40, 180, n))
        octs = rng.integers(1, 255, (n, 3))
        P["answers"] = np.array([
            (f'[{{"class": "IN", "type": "TXT", "rdata": "{p}", "ttl": 0}}]' if tp == "TXT" else
             f'[{{"class": "IN", "type": "A", "rdata": "100.{a}.{b}.{c}", "ttl": 0}}]')
            for p, tp, (a, b, c) in zip(payload, qtype.tolist(), octs.tolist())
        ], dtype=object)
        P["rcode"] = np.zeros(n, dtype=np.int64)
        out.append(Injection("dns", P, np.full(n, pop.host_ip[host], dtype=object)))
    return out


def _rare_process_lineage(sim, normal, size: Size) -> list[Injection]:
    from .simulate import _LINEAGE_INDEX

    rng, pop = sim.rng, sim.pop
    laptops = np.flatnonzero((pop.host_role == "laptop") & np.char.startswith(pop.host_os.astype(str), "Windows"))
    office = [h for h in laptops.tolist() if pop.user_role[pop.host_owner[h]] in ("finance", "sales", "hr", "support", "exec")]
    hosts = rng.choice(office, size=size.instances, replace=False)
    first = (("WINWORD.EXE", "powershell.exe"), ("EXCEL.EXE", "cmd.exe"), ("OUTLOOK.EXE", "wscript.exe"))
    second = (("powershell.exe", "whoami.exe"), ("powershell.exe", "rundll32.exe"))
    benign = _LINEAGE_INDEX[("explorer.exe", "WINWORD.EXE")]
    phases = _phases(sim, size.instances)
    out = []
    for i, h in enumerate(hosts.tolist()):
        m = 1 + (i % 2)
        owner = int(pop.host_owner[h])
        tz = int(pop.user_tz[owner])
        t0 = _local_start(sim, tz, weekend=False, phase=phases[i], hours=(8.5, 17.5), length_ms=120_000)
        t = (t0 + np.concatenate([[0], np.cumsum(rng.integers(3_000, 60_000, m - 1))])).astype(np.int64)
        P = sim.draw_proc(t, np.full(m, h), np.full(m, benign))
        stage1 = first[i % len(first)]
        lin = [_LINEAGE_INDEX[stage1]] + [_LINEAGE_INDEX[second[i % 2]]] * (m - 1)
        P["lin"] = np.array(lin, dtype=np.int64)
        name = pop.user_name[owner]
        b64 = _randstr(rng, _B64, np.array([int(rng.integers(180, 400))]))[0]
        ip = _new_ips(sim, 1)[0]
        cmds = []
        for k, li in enumerate(lin):
            from .simulate import LINEAGES

            tmpl = LINEAGES[li][6]
            cmds.append(tmpl.format(b64=b64 + "=" * (k % 2), ip=ip, name=f"upd{int(rng.integers(100, 999))}",
                                    user=name, n=int(rng.integers(10_000, 99_999)), hex=f"{int(rng.integers(1 << 31)):08x}"))
        P["cmd"] = np.array(cmds, dtype=object)
        P["terminate"] = np.zeros(m, dtype=bool)
        out.append(Injection("proc", P, np.full(m, pop.host_name[h], dtype=object)))
    return out


def _http_incident(sim, n: int, phase: str | None, service: str, path: str | None, kinds: tuple[int, ...],
                   kind_p: tuple[float, ...], span_min: tuple[int, int]):
    from .population import ENDPOINTS
    from .simulate import _APP_SERVERS

    rng, pop = sim.rng, sim.pop
    ep_idx = [i for i, e in enumerate(ENDPOINTS) if e.service == service and (path is None or e.path == path)]
    t0 = _local_start(sim, 1, weekend=False, phase=phase, hours=(10.0, 20.0), length_ms=span_min[1] * 60_000)
    t = _burst_times(sim, n, t0, int(rng.integers(*span_min)) * 60_000)
    kind = rng.choice(np.array(kinds), size=n, p=np.array(kind_p))
    w = np.array([ENDPOINTS[i].weight for i in ep_idx])
    ep = np.array(ep_idx)[rng.choice(len(ep_idx), size=n, p=w / w.sum())]
    client = np.empty(n, dtype=np.int64)
    cw = pop.customer_weight / pop.customer_weight.sum()
    edge = kind == 0
    client[edge] = rng.choice(len(cw), size=edge.sum(), p=cw)
    app = _APP_SERVERS(pop)
    client[~edge] = rng.choice(app, size=(~edge).sum())
    return sim.draw_http(t, kind, client, ep)


def _services(sim, size: Size, usual, others):
    """The services the scenario's incidents hit: ``usual`` first, then others drawn from ``others`` (all
    distinct), each with where in the window its incident goes and its share of the events."""
    picks = [usual] + [others[i] for i in sim.rng.permutation(len(others))[: size.instances - 1].tolist()]
    return picks, _phases(sim, size.instances), _split(size.added, size.instances)


#: (service, path): list and search endpoints behind a database query that can turn slow
_SLOW_QUERY = (("orders", "/api/orders"), ("search", "/api/search"),
               ("catalog", "/api/catalog/categories/{cat}/products"))
#: services called inside the cluster, whose failures their callers see (none of the above, and not
#: inventory, which creeps: one entity, one kind of incident)
_STORM_SERVICES = ("payments", "auth-api", "reporting")


def _timeout_burst(sim, normal, size: Size) -> list[Injection]:
    from .simulate import TIMEOUT_MS

    rng = sim.rng
    out = []
    for (service, path), phase, n in zip(*_services(sim, size, _SLOW_QUERY[0], _SLOW_QUERY[1:])):
        P = _http_incident(sim, n, phase, service, path, (0, 2), (0.6, 0.4), (20, 40))
        hang = rng.random(n) < 0.7
        slow = np.minimum(TIMEOUT_MS - 1,
                          np.round(np.exp(np.log(9_000) + 0.5 * rng.standard_normal(n)))).astype(np.int64)
        P["latency"] = np.where(hang, TIMEOUT_MS, slow).astype(np.int64)
        P["code"] = np.where(hang, 504, np.where(rng.random(n) < 0.9, 200, 500)).astype(np.int64)
        P["size"] = np.where(hang, 24, P["size"]).astype(np.int64)
        out.append(Injection("http", P, np.full(n, service, dtype=object)))
    return out


def _error_storm(sim, normal, size: Size) -> list[Injection]:
    rng = sim.rng
    out = []
    for service, phase, n in zip(*_services(sim, size, _STORM_SERVICES[0], _STORM_SERVICES[1:])):
        P = _http_incident(sim, n, phase, service, None, (2,), (1.0,), (8, 20))
        code = rng.choice(np.array([503, 502, 500]), size=n, p=[0.5, 0.3, 0.2])
        lat = np.where(code == 503, rng.uniform(0.5, 4.0, n),
                       np.where(code == 502, np.exp(np.log(30) + 0.5 * rng.standard_normal(n)),
                                np.exp(np.log(120) + 0.6 * rng.standard_normal(n))))
        P["code"] = code.astype(np.int64)
        P["latency"] = np.maximum(1, np.round(lat)).astype(np.int64)
        P["size"] = np.round(np.exp(np.log(280) + 0.3 * rng.standard_normal(n))).astype(np.int64)
        out.append(Injection("http", P, np.full(n, service, dtype=object)))
    return out


def _latency_creep(sim, normal, size: Size) -> list[Injection]:
    from .population import ENDPOINTS
    from .simulate import TIMEOUT_MS

    P = normal["http"]
    ep = [i for i, e in enumerate(ENDPOINTS) if e.service == "inventory" and e.path == "/api/inventory/{sku}"][0]
    span = (2.5 if sim.days >= 4 else sim.days / 2) * 86_400_000
    onset = sim.end_ms - span
    rows = np.flatnonzero((P["ep"] == ep) & (P["t"] >= onset) & (P["code"] < 500))
    frac = (P["t"][rows] - onset) / span
    factor = 1.0 + 3.0 * frac ** 1.3
    P["latency"][rows] = np.minimum(TIMEOUT_MS - 1, np.round(P["latency"][rows] * factor)).astype(np.int64)
    return [Injection("http", None, np.full(len(rows), "inventory", dtype=object), rows=rows)]


# --------------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------------
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "brute_force", "security", "collective",
            "Credential stuffing: one internet address tries hundreds of logons against the SSO portal in under "
            "an hour, over many real and guessed user names, from a script; almost all fail, one or two succeed.",
            ("src_endpoint.ip", "src_endpoint.location.city", "src_endpoint.location.country",
             "src_endpoint.location.lat", "src_endpoint.location.long", "user.name", "user.uid", "user.email_addr",
             "user.type_id", "user.type", "service.name", "http_request.user_agent", "status_id", "status",
             "status_code", "status_detail", "severity_id", "severity", "is_mfa", "session.uid", "message"),
            "ip", "src_endpoint.ip", 3002, _brute_force),
        Scenario(
            "impossible_travel", "security", "point",
            "A user signs on from a country far from home (another continent) minutes after a normal sign-on "
            "from their usual address: a stolen session or password used elsewhere.",
            ("src_endpoint.ip", "src_endpoint.location.city", "src_endpoint.location.country",
             "src_endpoint.location.lat", "src_endpoint.location.long"),
            "user", "user.name", 3002, _impossible_travel),
        Scenario(
            "off_hours_admin", "security", "point",
            "An administrator account makes privileged cloud API calls (create user, attach AdministratorAccess, "
            "create access key, stop the audit trail, schedule key deletion) between 1 and 4 am, on a weekend "
            "when it can.",
            ("time", "time_dt", "api.operation", "api.service.name", "activity_id", "activity_name", "type_uid",
             "type_name", "resources", "unmapped"),
            "user", "actor.user.name", 6003, _off_hours_admin),
        Scenario(
            "data_exfiltration", "security", "collective",
            "One laptop sends hundreds of megabytes per HTTPS flow to an external address nobody in the company "
            "has talked to, for two or three hours in the evening.",
            ("dst_endpoint.ip", "dst_endpoint.location.city", "dst_endpoint.location.country", "traffic.bytes_out",
             "traffic.bytes_in", "traffic.packets_out", "traffic.packets_in", "duration", "start_time", "observables"),
            "host", "src_endpoint.ip", 4001, _data_exfiltration),
        Scenario(
            "port_scan", "security", "collective",
            "One laptop probes dozens of ports on a handful of servers within minutes: refused or failed, "
            "millisecond-long, tiny connections, a few that answer.",
            ("dst_endpoint.ip", "dst_endpoint.port", "activity_id", "activity_name", "type_uid", "type_name",
             "traffic.bytes_in", "traffic.bytes_out", "traffic.packets_in", "traffic.packets_out", "duration",
             "start_time"),
            "host", "src_endpoint.ip", 4001, _port_scan),
        Scenario(
            "dns_tunnelling", "security", "collective",
            "One laptop sends hours of queries for long random-looking subdomains of a single domain, mostly TXT, "
            "answered with encoded payloads and TTL 0: data smuggled through DNS.",
            ("query.hostname", "query.type", "answers"),
            "host", "src_endpoint.ip", 4003, _dns_tunnelling),
        Scenario(
            "rare_process_lineage", "security", "point",
            "An Office application (Word, Excel, Outlook) starts a shell or script host with an encoded or "
            "download-and-run command line, sometimes followed by reconnaissance: a malicious document.",
            ("process.name", "process.file.name", "process.file.path", "process.cmd_line",
             "process.parent_process.name", "message"),
            "host", "device.hostname", 1007, _rare_process_lineage),
        Scenario(
            "timeout_burst", "operations", "collective",
            "A slow query behind one list or search endpoint (orders list, product search, category listing): "
            "for half an hour most requests hang until the proxy's 30 s timeout and get a 504, the rest are "
            "very slow.",
            _HTTP_OUTCOME,
            "service", "dst_endpoint.svc_name", 4002, _timeout_burst),
        Scenario(
            "error_storm", "operations", "collective",
            "One service called inside the cluster (payments, auth, reporting) fails for a quarter of an hour: "
            "a burst of fast 503 / 502 / 500 answers to its callers.",
            _HTTP_OUTCOME,
            "service", "dst_endpoint.svc_name", 4002, _error_storm),
        Scenario(
            "latency_creep", "operations", "collective",
            "One endpoint (inventory lookups) gets gradually slower over the last two and a half days, up to "
            "four times its usual latency, with no errors: a leak or a growing table.",
            ("http_response.latency", "duration"),
            "service", "dst_endpoint.svc_name", 4002, _latency_creep),
    )
}
