"""Templating of free text and structured ids: mask what varies per event, keep what names the event.

``/orders/88231/items`` and ``/orders/1002/items`` are two one-off categories; ``/orders/<NUM>/items`` is one
meaningful value. The masks run in a fixed order, each a vectorised RE2 regex
(:func:`pyarrow.compute.replace_substring_regex`), so a column of a million messages is templated without a
Python loop:

1. ``<UUID>``  — 8-4-4-4-12 hex UUIDs;
2. ``<EMAIL>`` — e-mail addresses;
3. ``<IP>``    — IPv4 (an optional ``:port`` stays outside and becomes ``:<NUM>``) and IPv6 addresses;
4. ``<NUM>``   — standalone numbers (``31``, ``3.5``, ``88231``), before hex so ``882311`` is a number, not an id;
5. ``<HEX>``   — hex tokens of 6 characters or more containing a digit (``8f3a91c2``, trace ids), or of 8 or
   more without one (``deadbeef``) — shorter all-letter tokens are words (``facade``, ``decade``) and survive;
6. ``<TOK>``   — long random tokens: 16+ word characters or dashes containing a digit (session keys, base62 ids);
7. ``<NUM>``   — any digit run left inside a word (``web-<NUM>``, ``user_<NUM>``, ``v<NUM>``).

Placeholders contain no digits, so a later mask never rewrites an earlier placeholder. The patterns use only
RE2 syntax (no look-arounds): "at least N characters and at least one digit" is spelled as an alternation over
the position of the first digit.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _with_digit(min_len: int, cls: str, non_digit: str) -> str:
    """RE2 for a whole token of ``cls`` characters, at least ``min_len`` long, containing at least one digit."""
    alts = []
    for k in range(min_len - 1):
        lead = f"{non_digit}{{{k}}}" if k else ""
        alts.append(f"{lead}\\d{cls}{{{min_len - 1 - k},}}")
    alts.append(f"{non_digit}{{{min_len - 1},}}\\d{cls}*")
    return r"\b(?:" + "|".join(alts) + r")\b"


_H = "[0-9A-Fa-f]"
_IPV4 = r"\b(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\b"
_IPV6 = (
    rf"(?:\b(?:{_H}{{1,4}}:){{7}}{_H}{{1,4}}\b"
    rf"|\b(?:{_H}{{1,4}}:){{1,6}}(?::{_H}{{1,4}}){{1,6}}\b"
    rf"|\b(?:{_H}{{1,4}}:){{1,7}}:"
    rf"|::(?:{_H}{{1,4}}:){{0,6}}{_H}{{1,4}}\b)"
)

#: (name, placeholder, RE2 pattern), applied in this order.
MASKS: tuple[tuple[str, str, str], ...] = (
    ("uuid", "<UUID>", rf"\b{_H}{{8}}-{_H}{{4}}-{_H}{{4}}-{_H}{{4}}-{_H}{{12}}\b"),
    ("email", "<EMAIL>", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    ("ip", "<IP>", rf"{_IPV4}|{_IPV6}"),
    ("number", "<NUM>", r"\b\d+(?:\.\d+)?\b"),
    ("hex", "<HEX>", _with_digit(6, "[0-9A-Fa-f]", "[A-Fa-f]")[:-3] + r"|[A-Fa-f]{8,})\b"),
    ("token", "<TOK>", _with_digit(16, r"[\w-]", "[A-Za-z_-]")),
    ("digits", "<NUM>", r"\d+"),
)
MASK_NAMES: tuple[str, ...] = tuple(m[0] for m in MASKS)
_BY_NAME = {m[0]: m for m in MASKS}

#: A few values are templated with Python's ``re`` (ASCII classes, as RE2's): Arrow compiles each RE2 pattern
#: again on every call, 15-350 µs a pattern whatever the number of values, the whole cost of templating one event.
#: Same patterns, same leftmost-first matches, same replacements (no pattern matches the empty string). Python
#: takes up to ``_SMALL`` values x patterns (0.5-4 µs each, by length); ``_SHORTCUTS = False`` always takes the
#: Arrow path (tests/test_small_batches.py compares them).
_SMALL = 64
_SHORTCUTS = True
_PY_MASKS = {name: re.compile(pattern, re.ASCII) for name, _, pattern in MASKS}


#: :func:`shared_templates` memoises :func:`template_array` calls over at least this many values (the window
#: view's entity keys and the encoder template the same distinct values of a text column, often a few dozen).
_MEMO_MIN_VALUES = 16


class _TemplateMemo:
    """Results of :func:`template_array` with given masks, keyed by the exact values and masks (see
    :func:`shared_templates`). Keys are the values' bytes: equal inputs, not equal objects, share a result. At most
    ``max_entries`` results and ``max_bytes`` of keys are kept (least recently used dropped first); a second
    caller of a result still being computed waits for it."""

    def __init__(self, max_entries: int = 64, max_bytes: int = 64 << 20) -> None:
        self.max_entries, self.max_bytes = int(max_entries), int(max_bytes)
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, Future] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def key(arr: pa.Array, masks: Sequence[str]) -> tuple | None:
        """The memo key of a string array without nulls: (masks, its characters, its value boundaries)."""
        if not isinstance(arr, pa.Array) or arr.null_count or not (
                pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            return None
        width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
        offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset: arr.offset + len(arr) + 1]
        chars = arr.buffers()[2]
        data = chars[int(offsets[0]): int(offsets[-1])].to_pybytes() if chars is not None else b""
        return tuple(masks), data, (offsets.astype(np.int64) - offsets[0]).tobytes()

    def get_or_compute(self, key: tuple, compute) -> tuple[pa.Array, list[str]]:
        with self._lock:
            pending = self._entries.get(key)
            owner = pending is None
            if owner:
                pending = self._entries[key] = Future()
                self._bytes += len(key[1]) + len(key[2])
                while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                    old, _ = self._entries.popitem(last=False)
                    self._bytes -= len(old[1]) + len(old[2])
            else:
                self._entries.move_to_end(key)
        if owner:
            try:
                pending.set_result(compute())
            except BaseException as exc:
                pending.set_exception(exc)
                with self._lock:
                    if self._entries.pop(key, None) is not None:
                        self._bytes -= len(key[1]) + len(key[2])
                raise
        return pending.result()


_MEMO: _TemplateMemo | None = None
_MEMO_USERS = 0
_MEMO_LOCK = threading.Lock()


@contextmanager
def shared_templates():
    """Within this block (one scoring call, or several at once on threads), :func:`template_array` with masks
    reuses the result for values it templated already. Scoring a batch templates each text column's distinct
    values twice, in the encoder and in the window view's entity keys: the second call takes the first one's
    result instead of running the regexes again. The memo lives while a block is open and is dropped when the
    last one closes, so nothing carries over from one batch to the next."""
    global _MEMO, _MEMO_USERS
    with _MEMO_LOCK:
        if _MEMO_USERS == 0:
            _MEMO = _TemplateMemo()
        _MEMO_USERS += 1
    try:
        yield
    finally:
        with _MEMO_LOCK:
            _MEMO_USERS -= 1
            if _MEMO_USERS == 0:
                _MEMO = None


def template_array(arr: pa.Array, masks: Sequence[str] | None = None) -> tuple[pa.Array, list[str]]:
    """Template every string of ``arr`` (nulls stay null). Returns ``(templates, masks_that_matched)``.

    ``masks`` restricts the passes (in canonical order). An encoder fitted on data where, say, no e-mail
    address ever appeared skips that pass at transform: on every training value the pass was the identity,
    so training values template exactly as before, and a value it would have masked yields a template no
    training value had, which lands in the unknown bucket either way. With ``masks``, inside
    :func:`shared_templates`, a result for the same values is reused.
    """
    memo = _MEMO
    key = None
    if memo is not None and masks is not None and _SHORTCUTS and len(arr) >= _MEMO_MIN_VALUES:
        key = memo.key(arr, masks)
    if key is None:
        return _template_array(arr, masks)
    out, fired = memo.get_or_compute(key, lambda: _template_array(arr, masks))
    return (out if out.type == arr.type else out.cast(arr.type)), list(fired)


def _template_array(arr: pa.Array, masks: Sequence[str] | None = None) -> tuple[pa.Array, list[str]]:
    """:func:`template_array` without the memo."""
    if masks is None:
        names: Iterable[str] = MASK_NAMES
    else:
        wanted = set(masks)
        names = [n for n in MASK_NAMES if n in wanted]
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.large_string())
    if masks is not None and _SHORTCUTS and len(arr) * max(len(names), 1) <= _SMALL and _all_short(arr):
        return _template_few(arr, list(names))
    fired: list[str] = []
    in_python = _python_masks(arr, names) if masks is not None and _SHORTCUTS else set()
    values: list | None = None  # the values as Python strings while Python's re holds them
    out_type = arr.type
    for name in names:
        _, placeholder, pattern = _BY_NAME[name]
        if masks is None:
            hit = pc.match_substring_regex(arr, pattern=pattern)
            if not pc.any(hit).as_py():
                continue
        if name in in_python:
            if values is None:
                values = arr.to_pylist()
            sub = _PY_MASKS[name].sub
            values = [None if v is None else sub(placeholder, v) for v in values]
        else:
            if values is not None:
                arr, values = pa.array(values, type=out_type), None
            arr = pc.replace_substring_regex(arr, pattern=pattern, replacement=placeholder)
        fired.append(name)
    return (arr if values is None else pa.array(values, type=out_type)), fired


#: Per mask, up to how many bytes of values (all together) Python's ``re`` templates faster than Arrow. Arrow
#: compiles the RE2 pattern again on every call (10-360 µs by pattern) and then scans most patterns faster per
#: character; Python pays per value and per character but compiles once. The token and uuid patterns scan
#: faster in Python at any size measured; the others break even at a few thousand bytes
#: (``python bench/bench_templating.py`` measures both engines on the simulator's text columns).
_PY_BYTES = {"uuid": 20_000, "email": 1_000, "ip": 4_000, "number": 2_000, "hex": 2_500, "token": 20_000,
             "digits": 1_500}


def _python_masks(arr: pa.Array, names: Iterable[str]) -> set[str]:
    """The masks that :func:`_template_array` applies with Python's ``re`` to ``arr`` (see ``_PY_BYTES``): none
    when a value is longer than ``_PY_MAX_CHARS`` (Python's engine backtracks; RE2 is linear)."""
    n, offset = len(arr), arr.offset
    if n == 0:
        return set()
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=width, count=offset + n + 1)[offset:]
    size = int(offsets[-1] - offsets[0])
    wanted = {name for name in names if size <= _PY_BYTES.get(name, 0)}
    if wanted and int(np.diff(offsets).max()) > _PY_MAX_CHARS:  # bytes: at least the characters
        return set()
    return wanted


#: Python's regular expressions backtrack: on a long value some of these patterns take time quadratic in its
#: length (the token and e-mail masks: ~5 s and ~1 s on 32,000 characters of ``a-a-a-...``; the registered domain
#: on a long value without a dot), where RE2 (Arrow) is linear. A value longer than this goes to Arrow whatever
#: the number of values, so that one crafted event cannot hold a scoring process for minutes.
_PY_MAX_CHARS = 256


def _all_short(arr: pa.Array) -> bool:
    """Whether every value of a (small) string array has at most ``_PY_MAX_CHARS`` characters."""
    if len(arr) == 0 or arr.null_count == len(arr):
        return True
    return pc.max(pc.utf8_length(arr)).as_py() <= _PY_MAX_CHARS


def _template_few(arr: pa.Array, names: list[str]) -> tuple[pa.Array, list[str]]:
    """:func:`template_array` with given masks for a few values, in Python (see ``_SMALL``)."""
    values = arr.to_pylist()
    for name in names:
        sub, placeholder = _PY_MASKS[name].sub, _BY_NAME[name][1]
        values = [None if v is None else sub(placeholder, v) for v in values]
    return pa.array(values, type=arr.type), names


def template(value: str | None) -> str | None:
    """Template one string (convenience for tests and explanations; columns go through :func:`template_array`)."""
    if value is None:
        return None
    out, _ = template_array(pa.array([value], type=pa.large_string()))
    return out[0].as_py()


def text_like_fraction(values: np.ndarray) -> float:
    """Share of (distinct) values that read like text rather than a name or id.

    Text-like: contains whitespace, a ``/`` (paths, URLs), ``=``/``?``/``&`` (query strings), or is longer than
    64 characters. Hostnames, user names and domains contain none of these; messages, URL paths and user agents do.
    """
    if len(values) == 0:
        return 0.0
    arr = pa.array(values, type=pa.large_string())
    hit = pc.match_substring_regex(arr, pattern=r"\s|/|[=?&]")
    long = pc.greater(pc.utf8_length(arr), 64)
    both = pc.or_(pc.fill_null(hit, False), pc.fill_null(long, False))
    return float(np.mean(both.to_numpy(zero_copy_only=False)))


_DOMAIN = r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)+[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]\.?$"
_SECOND_LEVEL = "co|com|net|org|gov|edu|ac|ltd|plc|or|ne|go|mil|nic|gob"


def domain_like_fraction(values: np.ndarray) -> float:
    """Share of (distinct) values shaped like a dotted host or domain name with an alphabetic top-level label,
    or like an e-mail address."""
    if len(values) == 0:
        return 0.0
    arr = pa.array(values, type=pa.large_string())
    arr = pc.replace_substring_regex(arr, pattern=r"^[A-Za-z0-9._%+-]+@", replacement="")
    hit = pc.fill_null(pc.match_substring_regex(arr, pattern=_DOMAIN), False)
    return float(np.mean(hit.to_numpy(zero_copy_only=False)))


def registered_domain(arr: pa.Array) -> pa.Array:
    """Registered domain of each host name (or e-mail address): the last two labels, or three under a two-letter
    country code with a common second-level label (``api.example.co.uk`` → ``example.co.uk``). Lower-cased;
    values without a dot read ``<none>``. A heuristic, not the Public Suffix List: it only has to group hosts
    under their organisation so a new host under a known domain differs from a never-seen domain.
    """
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.large_string())
    low = pc.utf8_lower(pc.utf8_rtrim(arr, characters="."))
    if _SHORTCUTS and len(low) * 2 <= _SMALL and _all_short(low):  # in Python (``$`` of RE2 is Python's ``\Z``)
        return pa.array([None if v is None else _py_domain(v) for v in low.to_pylist()], type=low.type)
    low = pc.replace_substring_regex(low, pattern=r"^.*@", replacement="")  # e-mail: its domain
    ext = pc.extract_regex(low, pattern=_DOMAIN_OF)
    dom = pc.struct_field(ext, [0])
    none = pa.scalar("<none>", type=dom.type)
    return pc.if_else(pc.and_(pc.is_null(dom), pc.is_valid(low)), none, dom)


_DOMAIN_OF = rf"(?P<d>[^.]+\.(?:{_SECOND_LEVEL})\.[a-z]{{2}}$|[^.]+\.[^.]+$)"
_PY_MAILBOX = re.compile(r"^.*@")
_PY_DOMAIN = re.compile(_DOMAIN_OF.replace("$", r"\Z"))


def _py_domain(value: str) -> str:
    found = _PY_DOMAIN.search(_PY_MAILBOX.sub("", value))
    return found.group("d") if found else "<none>"
