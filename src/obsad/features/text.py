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


def template_array(arr: pa.Array, masks: Sequence[str] | None = None) -> tuple[pa.Array, list[str]]:
    """Template every string of ``arr`` (nulls stay null). Returns ``(templates, masks_that_matched)``.

    ``masks`` restricts the passes (in canonical order). An encoder fitted on data where, say, no e-mail
    address ever appeared skips that pass at transform: on every training value the pass was the identity,
    so training values template exactly as before, and a value it would have masked yields a template no
    training value had, which lands in the unknown bucket either way.
    """
    if masks is None:
        names: Iterable[str] = MASK_NAMES
    else:
        wanted = set(masks)
        names = [n for n in MASK_NAMES if n in wanted]
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.large_string())
    if masks is not None and _SHORTCUTS and len(arr) * max(len(names), 1) <= _SMALL:
        return _template_few(arr, list(names))
    fired: list[str] = []
    for name in names:
        _, placeholder, pattern = _BY_NAME[name]
        if masks is None:
            hit = pc.match_substring_regex(arr, pattern=pattern)
            if not pc.any(hit).as_py():
                continue
        arr = pc.replace_substring_regex(arr, pattern=pattern, replacement=placeholder)
        fired.append(name)
    return arr, fired


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
    if _SHORTCUTS and len(low) * 2 <= _SMALL:  # the two patterns in Python (``$`` of RE2 is Python's ``\Z``)
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
