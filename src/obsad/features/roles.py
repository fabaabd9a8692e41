"""Column role inference: decide from the data alone how each column of a flat event table is encoded.

No column is listed by hand. Each column is profiled (dtype family, missing rate, distinct values, and for
strings the templates of its distinct values) and given one role by the first rule that applies:

``drop_constant``
    every value missing, or one single value and nothing missing. (One value *with* missing rows is kept as a
    ``categorical``: its presence tells which kind of event this is.)
``timestamp``
    datetime dtypes; ISO-8601 strings (95 % of distinct values); numbers that can only be epoch times — every
    value between 2000 and 2100 in milliseconds, microseconds or nanoseconds, or in seconds when the name ends in
    ``time``/``_time``/``ts``/``timestamp``. Raw epoch values drift forever; what a model can use is the hour of day and
    day of week.
``categorical``
    booleans; strings with at most ``low_cardinality`` distinct values (unless there are more than 16, they
    read like text and templating at least halves them: ``attempt 1`` .. ``attempt 20`` is one template, while
    ``HTTP/1.1`` vs ``HTTP/2`` stay apart); integer columns that are codes, not
    quantities: the last name token says so (``port``, ``code``, ``status``, ``id``, ``uid``, ``type``, ...) or there
    are at most ``max_code_values`` distinct integers. Arithmetic on port 443 vs 8080 means nothing.
    Vocabularies (here and in every role) admit a value seen at least ``min_count`` times, where
    ``min_count = max(min_frequency, ceil(min_frequency_ratio × filled rows))``: the relative floor (0.01 % by
    default; it only bites above 50,000 filled rows) keeps the chance repeats of a near-unique field out of the
    vocabulary of a big table, where ``min_frequency`` alone would be reached by luck.
``drop_identifier``
    unique-per-event ids (event uids, trace/span/request ids): strings that do not read as text, whose distinct
    ratio (distinct / present) is at least ``identifier_ratio``, and whose templates say nothing either — one
    shape for 95 % of the values (``<UUID>``, ``req-<HEX>``) or as many shapes as values (random tokens).
    Integer columns whose name says id/uid with such a ratio too. As categories they are thousands of one-off values.

    Also integer codes that are mostly one-offs (process ids, ephemeral ports): a code column with more than
    ``max_code_values`` distinct values whose values seen at least ``min_count`` times cover less than
    ``min_code_coverage`` (half) of its filled rows. Most of its rows would share the rare id anyway, and the ids
    of the few values repeated by chance are noise a model can memorise. (With the relative floor this also
    catches values spread evenly over a big table, each seen often but each a tiny share of the rows.)
    **Ports are the exception**: when the last name token says port (``port``, ``sport``, ``dport``, ...) and every
    value is an integer in 0..65535, the column stays ``categorical`` but is encoded as its IANA range — one
    output ``c.range`` with ids for ``<well-known>`` (< 1024), ``<registered>`` (1024..49151) and ``<dynamic>``
    (>= 49152), plus the exact well-known ports seen ``min_count`` times (a client connecting *from* port 22 or
    123 is worth telling apart). A port column with high coverage (``dst_endpoint.port``: a few service ports)
    is a plain categorical.
``text``
    strings that read like text (whitespace, ``/``, query strings, > 64 chars in half of the distinct values:
    messages, URL paths, user agents), and near-unique tokens whose templates collapse to a few shapes
    (``/orders/<NUM>/items``): encoded as the category of their template.
``ip``
    strings of which 95 % of the (sampled) distinct values are IPv4/IPv6 addresses.
``high_cardinality``
    other strings with many distinct values (host names, user names, domains): capped vocabulary plus frequency.
``numeric``
    everything else numeric (numbers stored as strings included, unless zero-padded like ``"007"``);
    heavy-tailed when ``|skew| > heavy_tail_skew`` with ``max|x| > 10 × median|x|`` (a skewed latitude is not a
    tail), or, for non-negative values, ``max > heavy_tail_ratio × median`` (latencies, byte counts) → signed
    log1p before scaling.

Then :func:`find_duplicates` marks ``drop_duplicate`` the second copy of a measure (identical, or perfectly
rank-correlated, on the rows where both are present — ``duration`` vs ``http_response.latency``, ``time`` vs
``time_dt``) and of a categorical field carrying the same partition of the events (``class_uid`` vs
``class_name``), so an anomaly in that quantity is not counted twice.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import text as _text
from . import values as V

NUMERIC = "numeric"
CATEGORICAL = "categorical"
TIMESTAMP = "timestamp"
IP = "ip"
TEXT = "text"
HIGH_CARDINALITY = "high_cardinality"
DROP_CONSTANT = "drop_constant"
DROP_IDENTIFIER = "drop_identifier"
DROP_DUPLICATE = "drop_duplicate"
DROP = "drop"
EXCLUDED = "excluded"

ENCODED_ROLES = (NUMERIC, CATEGORICAL, TIMESTAMP, IP, TEXT, HIGH_CARDINALITY)
DROP_ROLES = (DROP_CONSTANT, DROP_IDENTIFIER, DROP_DUPLICATE, DROP)
#: roles a caller may force through ``overrides``
OVERRIDE_ROLES = ENCODED_ROLES + DROP_ROLES

#: last name tokens that mark an integer column as a port number
PORT_TOKENS = frozenset("port ports sport dport srcport dstport lport rport".split())
#: last name tokens that mark an integer column as a code (a category), not a quantity
CODE_TOKENS = frozenset(
    "id uid ids code codes status type class category activity severity level pid ppid tid gid "
    "protocol proto vlan asn errno signal mode kind action state disposition flag flags version zone rule".split()
) | PORT_TOKENS
#: IANA port ranges: (label, first, last); the labels cannot collide with a port number's string
PORT_RANGES = (("<well-known>", 0, 1023), ("<registered>", 1024, 49151), ("<dynamic>", 49152, 65535))
MAX_PORT = 65535
#: last name tokens that mark a number as an epoch time
TIME_TOKENS = frozenset("time ts timestamp epoch datetime dt".split())

_ISO = r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
_IPV4_FULL = r"^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$"
_EPOCH_RANGES = {  # unit: (low, high) for 2000-01-01 .. 2100-01-01
    "s": (946684800.0, 4102444800.0),
    "ms": (946684800e3, 4102444800e3),
    "us": (946684800e6, 4102444800e6),
    "ns": (946684800e9, 4102444800e9),
}
SAMPLE_DISTINCT = 2000


def name_tokens(name: str) -> list[str]:
    """Lower-case tokens of a column name split on dots, underscores, dashes and camelCase."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [t for t in re.split(r"[\s._\-/]+", spaced.lower()) if t]


@dataclass
class Inference:
    role: str
    reason: str
    hints: dict = field(default_factory=dict)


class ColumnProfile:
    """Everything role inference and fitting need about one column, computed lazily and once."""

    def __init__(self, name: str, series: pd.Series):
        self.name = name
        self.series = series
        self.kind = V.column_kind(series)
        self.n = len(series)
        self.n_missing = int(series.isna().sum())
        self.n_present = self.n - self.n_missing

    @property
    def missing_rate(self) -> float:
        return self.n_missing / self.n if self.n else 0.0

    @cached_property
    def factorized(self) -> tuple[np.ndarray, pa.Array]:
        """(codes, distinct canonical strings) — see :func:`obsad.features.values.factorize`."""
        return V.factorize(self.series, self.kind)

    @cached_property
    def counts(self) -> np.ndarray:
        codes, uniques = self.factorized
        return np.bincount(codes[codes >= 0], minlength=len(uniques)).astype(np.int64)

    @cached_property
    def n_unique(self) -> int:
        if self.n_present == 0:
            return 0
        if self.kind in (V.KIND_NUMBER, V.KIND_DATETIME):
            x = self.floats if self.kind == V.KIND_NUMBER else V.to_epoch_ms(self.series, kind=self.kind)[0]
            return int(pd.unique(x[~np.isnan(x)]).size)
        _, uniques = self.factorized
        if self.kind == V.KIND_STRING:
            return len(uniques)
        return len(pc.unique(uniques))

    @cached_property
    def floats(self) -> np.ndarray:
        return V.to_float(self.series, self.kind)[0]

    @cached_property
    def sample(self) -> np.ndarray:
        """Up to 2000 distinct values (first seen first) as Python strings, for shape tests."""
        _, uniques = self.factorized
        return np.asarray(uniques[:SAMPLE_DISTINCT].to_numpy(zero_copy_only=False), dtype=object)

    @cached_property
    def sample_templates(self) -> np.ndarray:
        arr, _ = _text.template_array(pa.array(self.sample, type=pa.large_string()))
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)

    @cached_property
    def templates(self) -> tuple[pa.Array, list[str]]:
        """Template of each distinct value, and the masks that fired."""
        _, uniques = self.factorized
        return _text.template_array(uniques)

    @cached_property
    def partition_key(self) -> str:
        codes, _ = self.factorized
        return hashlib.blake2b(np.ascontiguousarray(codes).tobytes(), digest_size=16).hexdigest()


def _all_numbers(values: np.ndarray) -> bool:
    num = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    return bool((~np.isnan(num)).all())


def _fraction(values: np.ndarray, pattern: str) -> float:
    if len(values) == 0:
        return 0.0
    hit = pc.fill_null(pc.match_substring_regex(pa.array(values, type=pa.large_string()), pattern=pattern), False)
    return float(np.mean(hit.to_numpy(zero_copy_only=False)))


def is_ip_string(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip("[]"))
        return True
    except ValueError:
        return False


def ip_fraction(values: np.ndarray) -> float:
    """Share of values that are IPv4 or IPv6 addresses."""
    if len(values) == 0:
        return 0.0
    hit = pc.fill_null(pc.match_substring_regex(pa.array(values, type=pa.large_string()), pattern=_IPV4_FULL), False)
    v4 = hit.to_numpy(zero_copy_only=False)
    n = int(v4.sum())
    for v, ok in zip(values, v4):
        if not ok and ":" in v and is_ip_string(v):
            n += 1
    return n / len(values)


def _epoch_unit(name: str, x: np.ndarray) -> str | None:
    """The epoch unit if every finite value is a plausible 2000-2100 epoch time in it (see module docstring)."""
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    tokens = name_tokens(name)
    time_named = bool(tokens) and (tokens[-1] in TIME_TOKENS or name.lower().endswith("time"))
    for unit in ("ns", "us", "ms"):
        a, b = _EPOCH_RANGES[unit]
        if a <= lo and hi <= b:
            return unit
    a, b = _EPOCH_RANGES["s"]
    if time_named and a <= lo and hi <= b:
        return "s"
    return None


def heavy_tail(x: np.ndarray, skew_threshold: float, ratio_threshold: float) -> tuple[bool, str]:
    """Whether finite values ``x`` are heavy-tailed, with the statistic that says so."""
    if x.size < 3:
        return False, "too few values"
    with np.errstate(all="ignore"):
        mean = float(np.mean(x))
        std = float(np.std(x))
        skew = float(np.mean(((x - mean) / std) ** 3)) if std > 0 and np.isfinite(std) else 0.0
        med = float(np.median(x))
        mx = float(np.max(x))
        mn = float(np.min(x))
        abs_med = float(np.median(np.abs(x)))
        abs_max = float(np.max(np.abs(x)))
    if not np.isfinite(skew):
        skew = float("inf")
    wide = abs_max > 10.0 * abs_med  # a tail worth compressing spans at least an order of magnitude
    if abs(skew) > skew_threshold and wide:
        return True, f"skewness {skew:.1f}"
    if mn >= 0 and med > 0 and mx > ratio_threshold * med:
        return True, f"max/median {mx / med:.0f}"
    return False, f"skewness {skew:.1f}"


def infer_role(p: ColumnProfile, cfg) -> Inference:
    """The role of one column by the first rule that applies (module docstring). ``cfg`` is the encoder."""
    if p.n_present == 0:
        return Inference(DROP_CONSTANT, "all values missing")
    if p.kind == V.KIND_DATETIME:
        if p.n_unique <= 1 and p.n_missing == 0:
            return Inference(DROP_CONSTANT, "one single instant")
        return Inference(TIMESTAMP, "datetime dtype")
    if p.n_unique <= 1:
        if p.n_missing == 0:
            return Inference(DROP_CONSTANT, "one single value")
        return Inference(CATEGORICAL, "one value when present: presence is the signal")
    if p.kind == V.KIND_BOOL:
        return Inference(CATEGORICAL, "boolean")
    if p.kind == V.KIND_NUMBER:
        return _numeric_role(p, p.floats, cfg, note="")
    # strings (and mixed object columns, read as canonical strings)
    sample = p.sample
    zero_padded = _fraction(sample, r"^0\d") > 0  # "007", "01234": codes that only look like numbers
    if not zero_padded and _all_numbers(sample):
        _, uniques = p.factorized
        everything = np.asarray(uniques.to_numpy(zero_copy_only=False), dtype=object)
        if len(uniques) <= len(sample) or _all_numbers(everything):
            return _numeric_role(p, p.floats, cfg, note=" (numbers stored as strings)", as_strings=True)
    if _fraction(sample, _ISO) >= 0.95:
        return Inference(TIMESTAMP, "ISO-8601 date strings")
    if ip_fraction(sample) >= 0.95:
        return Inference(IP, "IP address strings")
    textlike = _text.text_like_fraction(sample)
    shapes = int(len(pd.unique(p.sample_templates)))
    if p.n_unique <= cfg.low_cardinality:
        if textlike >= 0.5 and p.n_unique > 16 and shapes <= 0.5 * p.n_unique:
            return Inference(
                TEXT, f"reads like text ({textlike:.0%} of values), {p.n_unique} values in {shapes} shapes"
            )
        return Inference(CATEGORICAL, f"{p.n_unique} distinct strings (<= {cfg.low_cardinality})")
    ratio = p.n_unique / p.n_present
    if textlike >= 0.5:
        return Inference(TEXT, f"reads like text ({textlike:.0%} of values)")
    if ratio >= cfg.identifier_ratio:
        # the shape test runs on the first 2000 distinct values
        shape_counts = pd.Series(p.sample_templates).value_counts()
        top_share = float(shape_counts.iloc[0]) / len(sample)
        if top_share >= 0.95:
            return Inference(
                DROP_IDENTIFIER,
                f"unique per event (distinct ratio {ratio:.2f}), {top_share:.0%} one shape {shape_counts.index[0]!r}",
            )
        if shapes > cfg.text_template_ratio * len(sample):
            return Inference(
                DROP_IDENTIFIER,
                f"unique per event (distinct ratio {ratio:.2f}), random: {shapes} shapes in {len(sample)} values",
            )
        return Inference(TEXT, f"near-unique ids with structure ({shapes} shapes in {len(sample)} values)")
    domain = _text.domain_like_fraction(sample) >= 0.8
    why = f"{p.n_unique} distinct strings (distinct ratio {ratio:.2f})"
    return Inference(HIGH_CARDINALITY, why, {"domain": domain})


def _numeric_role(p: ColumnProfile, x: np.ndarray, cfg, note: str, as_strings: bool = False) -> Inference:
    finite = x[np.isfinite(x)]
    hints = {"as_strings": as_strings}
    unit = _epoch_unit(p.name, x)
    if unit is not None:
        return Inference(TIMESTAMP, f"epoch {unit} values (2000-2100){note}", {"unit": unit})
    with np.errstate(invalid="ignore"):
        integral = finite.size > 0 and bool(np.all(finite == np.round(finite)))
    if integral:
        tokens = name_tokens(p.name)
        last = tokens[-1] if tokens else ""
        ratio = p.n_unique / max(p.n_present, 1)
        if last in CODE_TOKENS:
            if last in ("id", "uid", "ids") and ratio >= cfg.identifier_ratio and p.n_unique > cfg.low_cardinality:
                return Inference(DROP_IDENTIFIER, f"integer ids unique per event (distinct ratio {ratio:.2f}){note}")
            if p.n_unique > cfg.max_code_values:
                min_count = vocabulary_min_count(p.n_present, cfg.min_frequency, cfg.min_frequency_ratio)
                coverage = code_coverage(finite, min_count)
                if coverage < cfg.min_code_coverage:
                    why = (f"mostly one-offs: values seen >= {min_count} times cover {coverage:.1%} of "
                           f"{p.n_present:,} filled rows ({p.n_unique:,} distinct)")
                    if last in PORT_TOKENS and finite.min() >= 0 and finite.max() <= MAX_PORT:
                        return Inference(
                            CATEGORICAL,
                            f"port numbers, {why}: encoded as IANA range (well-known/registered/dynamic){note}",
                            {"as_numbers": True, "port_ranges": True},
                        )
                    return Inference(DROP_IDENTIFIER, f"identifier-like integer codes, {why}{note}")
            return Inference(CATEGORICAL, f"integer code (name ends in '{last}'){note}", {"as_numbers": True})
        if p.n_unique <= cfg.max_code_values:
            return Inference(
                CATEGORICAL, f"integers with {p.n_unique} distinct values (<= {cfg.max_code_values}){note}",
                {"as_numbers": True},
            )
    heavy, why = heavy_tail(finite, cfg.heavy_tail_skew, cfg.heavy_tail_ratio)
    hints["log"] = heavy
    if heavy:
        return Inference(NUMERIC, f"heavy-tailed ({why}): signed log1p, robust scaling{note}", hints)
    return Inference(NUMERIC, f"numeric ({why}): robust scaling{note}", hints)


def vocabulary_min_count(n_present: int, min_frequency: int, min_frequency_ratio: float) -> int:
    """Least count for a value to enter a vocabulary: ``max(min_frequency, ceil(ratio × filled rows))``."""
    return max(int(min_frequency), int(np.ceil(float(min_frequency_ratio) * int(n_present) - 1e-9)))


def code_coverage(values: np.ndarray, min_count: int) -> float:
    """Share of the (finite) values whose value is seen at least ``min_count`` times."""
    if values.size == 0:
        return 1.0
    _, counts = np.unique(values, return_counts=True)
    return float(counts[counts >= min_count].sum()) / float(values.size)


def _rank(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = np.arange(len(a), dtype=np.float64)
    # average ties so equal values share a rank
    sa = a[order]
    starts = np.flatnonzero(np.r_[True, sa[1:] != sa[:-1]])
    ends = np.r_[starts[1:], len(a)]
    mean_rank = (starts + ends - 1) / 2.0
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _rank(a), _rank(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = float(np.sqrt(np.dot(ra, ra) * np.dot(rb, rb)))
    if den == 0.0:
        return 0.0
    return float(np.dot(ra, rb) / den)


def same_measure(a: np.ndarray, b: np.ndarray, min_shared: int = 30, max_rows: int = 100_000) -> str | None:
    """Why ``a`` and ``b`` are one measure (identical / perfectly rank-correlated where both present), else None."""
    both = np.isfinite(a) & np.isfinite(b)
    idx = np.flatnonzero(both)
    if idx.size < min_shared:
        return None
    if idx.size > max_rows:
        idx = idx[np.linspace(0, idx.size - 1, max_rows).astype(np.int64)]
    xa, xb = a[idx], b[idx]
    if np.array_equal(xa, xb):
        return f"identical on {both.sum()} shared rows"
    if np.unique(xa[:1000]).size < 2 or np.unique(xb[:1000]).size < 2:
        if np.unique(xa).size < 2 or np.unique(xb).size < 2:
            return None
    quick = _rank_corr(xa[:2000], xb[:2000])
    if abs(quick) < 0.999:
        return None
    rho = _rank_corr(xa, xb)
    if abs(rho) >= 1 - 1e-9:
        return f"perfectly rank-correlated (spearman {rho:+.3f}) on {both.sum()} shared rows"
    return None


def find_duplicates(
    measures: list[tuple[str, np.ndarray, int]],
    partitions: list[tuple[str, np.ndarray, str]],
) -> dict[str, tuple[str, str]]:
    """Columns to drop as duplicates: ``{dropped: (kept, reason)}``.

    ``measures``: (name, float values with NaN for missing, priority) of numeric or timestamp columns; two are
    one measure when identical or perfectly rank-correlated on their shared rows (:func:`same_measure`). The one
    kept has more values present (so nothing it covers is lost), then the lower priority (a native datetime
    before an ISO string or epoch number), then the first name in sorted order.
    ``partitions``: (name, factorize codes, hash) of categorical-like columns that are not near-unique (two
    unique-per-event columns always share a partition, which says nothing); two with the same codes (the same
    partition of the events, e.g. ``class_uid``/``class_name``) are one field; the first name is kept.
    """
    dropped: dict[str, tuple[str, str]] = {}
    order = sorted(measures, key=lambda m: (-int(np.isfinite(m[1]).sum()), m[2], m[0]))
    kept: list[tuple[str, np.ndarray]] = []
    for name, x, _ in order:
        for kname, kx in kept:
            why = same_measure(kx, x)
            if why:
                dropped[name] = (kname, why)
                break
        else:
            kept.append((name, x))
    seen: dict[str, tuple[str, np.ndarray]] = {}
    for name, codes, key in sorted(partitions, key=lambda p: p[0]):
        if key in seen and np.array_equal(seen[key][1], codes):
            dropped[name] = (seen[key][0], "same partition of the events (one-to-one values)")
        else:
            seen.setdefault(key, (name, codes))
    return dropped
