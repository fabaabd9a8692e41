"""Log template mining: Drain3 with per-format masking, statistical refinement of the mined templates, a vocabulary
learnt on training lines only, and Loghub's grouping accuracy.

A log *message* (the part of a line after the header fields, which :mod:`obsad.logs.formats` splits off) is turned
into a *template id* in four steps:

1. **mask** the variable parts that a regex recognises for sure (exceptions, block ids, IPs, host names, UUIDs,
   request ids, paths, hex, numbers) with Drain3's own masker (:attr:`drain3.TemplateMiner.masker`):
   ``blk_-160...`` -> ``<BLK>``. Masks are applied in order, specific before generic (a UUID must not be eaten digit
   by digit by ``<NUM>``);
2. **de-duplicate** the masked strings: a million HDFS lines collapse to a few hundred distinct masked strings, so
   Drain3 (pure Python) sees each distinct string once, in order of first appearance, and ids are broadcast back;
3. **mine** (``fit``: :meth:`drain3.drain.Drain.add_log_message`, clusters may be created and generalised) or
   **match** (``transform``: :meth:`drain3.drain.Drain.match`, no cluster created, ``-1`` when nothing matches);
4. **refine** (``fit``) each mined template where the training lines show that a wildcard is not a parameter: Drain
   merges messages that differ in one word (``VM Started`` / ``VM Stopped``) because they are similar enough, and a
   ``<NUM>`` mask hides a constant code (``status: 404``). Where a ``<*>`` position holds only a few distinct words
   (at most ``refine_max_values``), each value seen often enough (``refine_min_count`` lines) gets a template of its
   own with that word as literal text; a ``<NUM>`` position is refined the same way, but only where its numbers are
   short codes (at most three digits, see :func:`_refine`) and they either never vary or select a different message
   (they fix another field that is otherwise free). ``transform`` applies the same split.

The vocabulary ``templates_`` comes from the training messages alone, so a template first seen later is *unseen*
(``-1``) and measurable (:func:`unseen_rate`) instead of silently joining the vocabulary. A refined template's
*base* (the Drain template, wildcard kept) stays in the vocabulary as its catch-all: a message that matches the base
but carries a value at a refined position that training never showed (a third user name, a ``status: 500``) gets
the base's id, not ``-1``. A new value where the statistics saw only a handful is not an unseen *event*: the message
has the shape of a known event and refinement only chose to name its frequent values; calling it unseen would turn
every new user name or return code into an alarm. Persistence is plain JSON (the templates, the refinements and the
masks): Drain3's own snapshots are jsonpickle, which can run code on load.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from drain3 import TemplateMiner
from drain3.drain import LogCluster
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from obsad.io import read_json, write_json

__all__ = ["MASKS", "DrainParser", "grouping_accuracy", "unseen_rate"]

MASK_PREFIX, MASK_SUFFIX = "<", ">"
WILDCARD = MASK_PREFIX + "*" + MASK_SUFFIX  # Drain3's param_str
NUM_NAME = "NUM"
NUM_TOKEN = MASK_PREFIX + NUM_NAME + MASK_SUFFIX
MATCH_STRATEGY = "always"  # Drain3's exhaustive match: no false "unseen" from its tree search shortcut
SAVE_KIND, SAVE_VERSION = "obsad.logs.parse.DrainParser", 2

# ---------------------------------------------------------------------------------------------------------- masks
# Every pattern matches within one line and only looks at its neighbours through *negative* lookarounds, so a
# token boundary is "not a word character" rather than "a space": ``/10.1.2.3:50010`` and ``(0x1f)`` are masked.
_HEX_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

# An exception and its message, to the end of the line, in any language's usual spelling: a Java fully-qualified
# class (``java.io.IOException: Broken pipe``, ``java.io.EOFException``, ``java.net.SocketTimeoutException: 63000
# millis timeout ...``) or a ``SomethingError: text`` / ``SomethingException: text`` (Python, ``libvirtError:``).
# The class and the text vary with the failure while the sentence around them is the event; left to Drain, each
# message length makes its own template (Drain groups by token count first). It runs late, just before NUM: it
# swallows the rest of the line, so what earlier masks did there does not matter (they never touch a class name: no
# slash, no hex run, no lowercase-only host name), and by then the id masks have made most messages duplicates,
# which it scans once (see ``DrainParser._mask_unique``). A bare ``Exception`` / ``Error:`` (no class name) and a
# lowercase ``error:`` are prose, not masked: ``Got exception while serving`` keeps its words.
EXC = (r"(?<![\w.$])(?:(?:[A-Za-z_$][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error)\b"
       r"|[A-Za-z_][\w.]*(?:Error|Exception):(?=\s|$)).*", "EXC")
# A file-system path: two or more ``/segment``s starting a token. The URL of an HTTP request line (``"GET /v2/...``)
# is the *event* (which API was called), so it is left alone; only the ids inside it are masked later, which keeps
# ``/v2/<HEX>/servers/detail`` and ``/v2/<HEX>/servers/<UUID>`` apart.
# The pattern starts with the literal ``/`` and checks what precedes it afterwards (``(?<!X/)`` after the slash is
# ``(?<!X)`` before it): Python's ``re`` then jumps from slash to slash instead of trying every position.
PATH = ("/(?<![^\\s\"'=(\\[]/)" + "".join(f"(?<!{m} /)" for m in _HTTP_METHODS)
        + r"[^\s/\"'()\[\]{},;]+(?:/[^\s/\"'()\[\]{},;]+)+/?", "PATH")
BLK = (r"blk_-?\d+", "BLK")
REQ = (rf"req-(?<![\w-]req-){_HEX_UUID}(?![\w-])", "REQ")  # literal first, as PATH
UUID = (rf"(?<![\w-]){_HEX_UUID}(?![\w-])", "UUID")
IP = (r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?!\w|\.\d)", "IP")
# A host name: three or more dot-separated DNS labels (lowercase letters, digits, inner hyphens; no underscore) ending
# in an alphabetic top-level label, as in ``cp-1.slowvm1.tcloud-pg0.utah.cloudlab.us``. Each host otherwise makes
# its own template. Two dots at least keep file names (``job.jar``, ``part-00296.``) out; the alphabetic last label
# keeps IPs and versions (``1.2.3``) out; lowercase labels and the ban on a following ``.x``/``(``/word character keep
# Java/Python qualified names (``java.nio.channels.SocketChannel``, ``nova.compute.resource_tracker``) out.
# A port stays outside: ``<HOST>:8774``.
HOST = (r"(?<![\w.$-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.){2,}[a-z]{2,63}(?![\w$(-]|\.\w)", "HOST")
# ``0x...`` or a long hex string with at least one letter (a tenant / user id); all-digit strings are numbers.
HEX = (r"(?<![\w-])(?:0[xX][0-9a-fA-F]+|(?=[0-9]*[a-fA-F])[0-9a-fA-F]{16,})(?![\w-])", "HEX")
# Integers, decimals and sizes (``67108864``, ``0.2477829``, ``1.5GB``); not version numbers glued to a word or a
# slash (``HTTP/1.1``, ``job_2008``), and a sentence's final dot is not part of the number. Every number is masked,
# small ones included: most small numbers are counts, indices and sizes (``PacketResponder 1``, ``vcpus 2``), and a
# raw number would also route Drain's tree and block its merges. Codes are recovered after mining instead: NUM is the
# last mask, so the text before it is the same message with its numbers raw, and refinement reads the numbers
# there (see :func:`_refine`).
NUM = (r"(?<![\w./-])[-+]?\d+(?:\.\d+)?(?:[kKMGTP]i?B|[kKMGTP]|ms|us|ns|s|%)?(?!\w|\.\d)", NUM_NAME)

MASKS: dict[str, list[tuple[str, str]]] = {
    "hdfs": [PATH, BLK, IP, HOST, HEX, EXC, NUM],
    "openstack": [PATH, REQ, UUID, IP, HOST, HEX, EXC, NUM],
}

# Drain routes a message down its tree by token count and then its first ``depth - 3`` tokens; only messages in the
# same leaf can merge, and inside a leaf anything at least ``sim_threshold`` alike does. An OpenStack API line starts
# ``<IP> "GET /v2/<HEX>/servers/detail``: at depth 4 every API call (GET or POST, any endpoint) shares the ``<IP>``
# leaf and collapses into one template; depth 6 routes on the method and the endpoint as well.
DEFAULT_DEPTH: dict[str, int] = {"hdfs": 4, "openstack": 6}

# A number that can be a code (an HTTP / SMTP / FTP status, an exit status 0-255): a plain integer of at most three
# digits. Longer numbers, decimals and numbers with a unit are measurements or ids, never refined.
_CODE = re.compile(r"\d{1,3}")


def _check_masks(masks) -> list[tuple[str, str]]:
    """``masks`` as a list of ``(regex, name)`` pairs; the regexes compile and the names render as tokens."""
    out = []
    for item in masks:
        if isinstance(item, str) or len(item) != 2:
            raise ValueError(f"a mask is a (regex, name) pair, got {item!r}")
        pattern, name = str(item[0]), str(item[1])
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise ValueError(f"mask name must be an identifier such as 'PORT', got {name!r}")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"mask {name!r}: bad regex {pattern!r}: {err}") from None
        out.append((pattern, name))
    return out


# ---------------------------------------------------------------------------------------------------------- helpers
def _as_messages(messages) -> np.ndarray:
    """Messages as a 1-D object array of str; a lone string (a classic slip: it would iterate characters) is refused."""
    if isinstance(messages, (str, bytes)):
        raise TypeError("messages must be a sequence of strings, not a single string")
    if isinstance(messages, (pd.Series, pd.Index, np.ndarray)):
        arr = np.asarray(messages, dtype=object)
    else:
        arr = np.asarray(list(messages), dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"messages must be 1-D, got shape {arr.shape}")
    if len(arr) and pd.isna(arr).any():
        raise ValueError(f"messages contain {int(pd.isna(arr).sum())} missing value(s) (None / NaN)")
    return arr


def unseen_rate(ids) -> float:
    """Share of template ids that are ``-1`` (matched no training template); ``nan`` for no ids."""
    ids = np.asarray(ids)
    return float(np.mean(ids == -1)) if ids.size else float("nan")


def grouping_accuracy(true_ids, predicted_ids) -> float:
    """Loghub's grouping accuracy: the share of lines whose predicted group is exactly their true group.

    A line counts as correct when the set of lines sharing its predicted template equals the set sharing its true
    template, i.e. when its (true, predicted) pair is as frequent as its true label and as its predicted label. Any
    merge or split of true groups costs all the lines involved; labels can be any hashable values (``-1`` is one group).
    """
    true_ids, predicted_ids = np.asarray(true_ids), np.asarray(predicted_ids)
    if true_ids.shape != predicted_ids.shape or true_ids.ndim != 1:
        raise ValueError(f"true_ids and predicted_ids must be 1-D of equal length, got shapes {true_ids.shape} "
                         f"and {predicted_ids.shape}")
    if true_ids.size == 0:
        raise ValueError("grouping accuracy of no lines is undefined")
    t = pd.factorize(true_ids, use_na_sentinel=False)[0]
    p = pd.factorize(predicted_ids, use_na_sentinel=False)[0]
    pair = pd.factorize(t.astype(np.int64) * (int(p.max()) + 1) + p)[0]
    n_pair, n_true, n_pred = np.bincount(pair)[pair], np.bincount(t)[t], np.bincount(p)[p]
    return float(np.mean((n_pair == n_true) & (n_pair == n_pred)))


# ---------------------------------------------------------------------------------------------------------- refinement
class _Refinement:
    """How one base template is split: which token positions, and which value tuple there names which template.

    ``positions[i]`` is a token position of the base template; ``kinds[i]`` says where its value is read: ``"word"``
    (a ``<*>``: the masked token itself) or ``"num"`` (a token with one ``<NUM>``: the raw number in its place, read
    from the message masked without NUM). ``children`` maps a value tuple to a template id; any other tuple is the
    base's (the catch-all).
    """

    __slots__ = ("base", "positions", "kinds", "children", "_cuts", "needs_raw")

    def __init__(self, base: int, base_tokens: Sequence[str], positions, kinds, children: dict):
        self.base, self.positions, self.kinds = int(base), [int(p) for p in positions], [str(k) for k in kinds]
        self.children = {tuple(str(v) for v in key): int(tid) for key, tid in children.items()}
        if len(self.positions) != len(self.kinds) or any(k not in ("word", "num") for k in self.kinds):
            raise ValueError(f"bad refinement of template {base}: positions {positions}, kinds {kinds}")
        self._cuts = []
        for p, kind in zip(self.positions, self.kinds):
            if not 0 <= p < len(base_tokens):
                raise ValueError(f"refinement of template {base}: position {p} is outside its "
                                 f"{len(base_tokens)} tokens")
            token = base_tokens[p]
            if kind == "word":
                if token != WILDCARD:
                    raise ValueError(f"refinement of template {base}: token {p} is {token!r}, not {WILDCARD}")
                self._cuts.append(None)
            else:
                if token.count(NUM_TOKEN) != 1:
                    raise ValueError(f"refinement of template {base}: token {p} ({token!r}) has no single {NUM_TOKEN}")
                prefix, suffix = token.split(NUM_TOKEN)
                self._cuts.append((len(prefix), len(suffix)))
        self.needs_raw = "num" in self.kinds

    def key(self, full_tokens: Sequence[str], raw_tokens: Sequence[str] | None) -> tuple:
        """The value tuple of a message that matched the base: masked tokens at ``word``, raw numbers at ``num``."""
        out = []
        for p, cut in zip(self.positions, self._cuts):
            if cut is None:
                out.append(full_tokens[p])
            else:
                token = raw_tokens[p]
                out.append(token[cut[0]:len(token) - cut[1]])
        return tuple(out)

    def resolve(self, full_tokens, raw_tokens) -> int:
        """The template id of a message that matched the base: a named value tuple's template, else the base."""
        if self.needs_raw and (raw_tokens is None or len(raw_tokens) != len(full_tokens)):
            return self.base
        return self.children.get(self.key(full_tokens, raw_tokens), self.base)

    def to_dict(self) -> dict:
        return {"template": self.base, "positions": list(self.positions), "kinds": list(self.kinds),
                "children": [[list(key), tid] for key, tid in self.children.items()]}


def _weighted_counts(values: Sequence, weights: np.ndarray) -> dict:
    """``value -> summed weight``, in order of first appearance."""
    out: dict = {}
    for v, w in zip(values, weights):
        out[v] = out.get(v, 0) + int(w)
    return out


def _refine(tokens: Sequence[str], full_rows: Sequence[Sequence[str]], raw_rows: Sequence[Sequence[str]] | None,
            weights: np.ndarray, max_values: int, min_count: int, min_share: float, is_masked) -> tuple | None:
    """Which positions of one mined template to refine, and on which value tuples; ``None`` to leave it whole.

    ``full_rows`` are the masked token lists of the template's distinct training messages (``raw_rows``: the same
    messages masked without NUM, or ``None``), ``weights`` their line counts. Returns ``(positions, kinds, keys,
    children)``: ``keys[i]`` is row ``i``'s value tuple, ``children`` the tuples (in order of first appearance) that
    get a template of their own. Rules, meant for any log:

    * a ``<*>`` position is a *word* candidate when it shows at most ``max_values`` distinct tokens and none of them
      holds a mask (a mask there means the masker already found a variable in that slot). An event's wording varies
      over a handful of verbs or states (``Started``/``Stopped``/``Paused``/``Resumed``); a parameter (a user, a file,
      a message) soon shows more values than that;
    * a ``<NUM>`` position is a *number* candidate only when all its raw numbers are codes (:data:`_CODE`: at most
      three digits, no sign, decimals or unit), at most ``max_values`` of them, and either (a) one single value over
      at least ``min_count`` lines: a number that never varies is text, like the status of a DELETE; or (b) some
      code, over ``min_count`` lines at least, *fixes another position that is free* (more than ``max_values``
      values over the template), as a ``404`` fixes the body length that varies with every ``200``: the code then
      selects a different message, not a different quantity. Small numbers that merely vary (a responder index
      ``0``/``1``/``2``, a flavour's ``1``/``20``/``40`` GB) are quantities and stay ``<NUM>``;
    * candidates are taken left to right while the combinations of their values stay at most ``max_values`` (a
      few correlated positions, such as ``memory: ... MB`` / ``disk: ... GB``, split together; independent ones
      cannot multiply templates);
    * a combination seen on at least ``min_count`` lines and ``min_share`` of the template's lines becomes a template
      of its own; rarer ones stay with the base. ``min_share`` defaults to 0: rare values are often the interesting
      events (one ``Interrupted.`` among thousands of ``terminating``), and ``min_count`` already refuses to name a
      value on too little evidence.
    """
    n_lines = int(weights.sum())
    if raw_rows is not None and any(len(row) != len(tokens) for row in raw_rows):
        raw_rows = None  # the raw view does not line up token for token (a NUM mask that spans spaces): no numbers
    values: dict[int, list] = {}
    kinds: dict[int, str] = {}
    for p, token in enumerate(tokens):
        if token == WILDCARD:
            values[p], kinds[p] = [row[p] for row in full_rows], "word"
        elif raw_rows is not None and token.count(NUM_TOKEN) == 1:
            prefix, suffix = token.split(NUM_TOKEN)
            values[p] = [row[p][len(prefix):len(row[p]) - len(suffix)] for row in raw_rows]
            kinds[p] = "num"
    if not values:
        return None
    counts = {p: _weighted_counts(v, weights) for p, v in values.items()}
    free = [p for p, c in counts.items() if len(c) > max_values]

    def fixes_a_free_position(p: int) -> bool:
        column = values[p]
        for value, count in counts[p].items():
            if count < min_count:
                continue
            rows = [i for i, v in enumerate(column) if v == value]
            if any(len({values[q][i] for i in rows}) == 1 for q in free if q != p):
                return True
        return False

    candidates = []
    for p, c in counts.items():
        if len(c) > max_values:
            continue
        if kinds[p] == "word":
            if not any(is_masked(v) for v in c):
                candidates.append(p)
        elif all(_CODE.fullmatch(v) for v in c):
            if (len(c) == 1 and n_lines >= min_count) or (len(c) > 1 and fixes_a_free_position(p)):
                candidates.append(p)
    chosen: list[int] = []
    keys: list[tuple] = []
    for p in candidates:
        trial = [k + (v,) for k, v in zip(keys, values[p])] if chosen else [(v,) for v in values[p]]
        if len(set(trial)) <= max_values:
            chosen.append(p)
            keys = trial
    if not chosen:
        return None
    combos = _weighted_counts(keys, weights)
    children = [k for k, c in combos.items() if c >= min_count and c >= min_share * n_lines]
    if not children:
        return None
    return chosen, [kinds[p] for p in chosen], keys, children


def _child_template(tokens: Sequence[str], positions, kinds, key) -> str:
    """The base template with the refined positions' values written in (a number goes where its ``<NUM>`` was)."""
    out = list(tokens)
    for p, kind, value in zip(positions, kinds, key):
        out[p] = value if kind == "word" else out[p].replace(NUM_TOKEN, value, 1)
    return " ".join(out)


# ---------------------------------------------------------------------------------------------------------- parser
class DrainParser(BaseEstimator):
    """Drain3 template mining with per-format masks, refinement, and a train-only vocabulary (sklearn-style).

    Parameters
    ----------
    format: ``"hdfs"`` or ``"openstack"``: which :data:`MASKS` to apply.
    sim_threshold, depth, max_children, max_clusters: Drain3's ``drain_sim_th``, ``drain_depth`` (tree depth; the
        first ``depth - 3`` tokens route a message; ``None``: the format's :data:`DEFAULT_DEPTH`),
        ``drain_max_children``, ``drain_max_clusters`` (``None``: no LRU eviction).
    extra_masks: more ``(regex, name)`` pairs, applied *before* the format's masks (specific before generic).
    refine_max_values, refine_min_count, refine_min_share: the refinement after mining (see :func:`_refine`): a
        position is split on when it shows at most ``refine_max_values`` values; a value (combination) gets a template
        of its own from ``refine_min_count`` training lines and ``refine_min_share`` of its template's lines.
        ``refine_max_values=0`` turns refinement off (plain Drain3).

    Learned attributes: ``templates_`` (template strings; id = index: templates with training lines in order of first
    appearance, then catch-alls that refinement emptied), ``n_templates_``, ``counts_`` (training lines per
    template), ``parents_`` (per template, the id of the base template it was refined from; its own id if it was not),
    ``refinements_`` (base id -> how it splits), ``masks_`` (the ordered masks applied), ``depth_`` (the depth used),
    ``miner_`` (a Drain3 :class:`~drain3.TemplateMiner` whose clusters are exactly ``templates_``, cluster id =
    template id: it masks and matches, it never mines).

    Drain3's numeric-token heuristic (``parametrize_numeric_tokens``: any token with a digit is a wildcard in the
    routing tree) is off: the masks already parametrise numbers, and the heuristic would route ``/v2/...`` URLs and
    ``HTTP/1.1`` as if they were parameters.

    ``sim_threshold`` stays 0.4 (Drain3's default) now that refinement follows, for what each side costs on any log.
    The two errors Drain can make are not alike: a *merge* of events that differ in a few words is undone by
    refinement (each event's words at the ``<*>`` are few and constant), but a *split* of one event (its lines looked
    too different, e.g. a free-text reason of the same length) is never undone, so the threshold should stay low
    enough to merge lines that share most of their tokens, and a higher one splits such events. Much lower
    thresholds cost something refinement cannot see: a template generalised to mostly ``<*>`` also matches the lines
    of an event that training never showed, which then are not counted as unseen. 0.4 merges lines that share at
    least 40 % of their tokens (after masking) and no less.
    """

    def __init__(self, format: str = "hdfs", sim_threshold: float = 0.4, depth: int | None = None,
                 max_children: int = 100, max_clusters: int | None = None, extra_masks: Sequence[tuple[str, str]] = (),
                 refine_max_values: int = 8, refine_min_count: int = 10, refine_min_share: float = 0.0):
        self.format = format
        self.sim_threshold = sim_threshold
        self.depth = depth
        self.max_children = max_children
        self.max_clusters = max_clusters
        self.extra_masks = extra_masks
        self.refine_max_values = refine_max_values
        self.refine_min_count = refine_min_count
        self.refine_min_share = refine_min_share

    # ------------------------------------------------------------------ configuration
    def _masks(self) -> list[tuple[str, str]]:
        if self.format not in MASKS:
            raise ValueError(f"unknown log format {self.format!r}; known: {sorted(MASKS)}")
        return _check_masks(self.extra_masks) + list(MASKS[self.format])

    def _depth(self) -> int:
        depth = DEFAULT_DEPTH[self.format] if self.depth is None else int(self.depth)
        if depth < 3:
            raise ValueError(f"depth must be >= 3 (Drain3's minimum), got {self.depth}")
        return depth

    def _refine_params(self) -> tuple[int, int, float]:
        max_values, min_count, min_share = self.refine_max_values, self.refine_min_count, self.refine_min_share
        if max_values is None or int(max_values) != max_values or int(max_values) < 0:
            raise ValueError(f"refine_max_values must be an integer >= 0 (0: no refinement), got {max_values!r}")
        if min_count is None or int(min_count) != min_count or int(min_count) < 1:
            raise ValueError(f"refine_min_count must be an integer >= 1, got {min_count!r}")
        if min_share is None or not 0.0 <= float(min_share) <= 1.0:
            raise ValueError(f"refine_min_share must be in [0, 1], got {min_share!r}")
        return int(max_values), int(min_count), float(min_share)

    def _config(self, masks: Iterable[tuple[str, str]], depth: int, max_clusters) -> TemplateMinerConfig:
        """A Drain3 config with its real attributes set (Drain3 reads these attributes, not dict keys)."""
        if not 0.0 <= float(self.sim_threshold) <= 1.0:
            raise ValueError(f"sim_threshold must be in [0, 1], got {self.sim_threshold}")
        if int(self.max_children) < 2:
            raise ValueError(f"max_children must be >= 2, got {self.max_children}")
        if max_clusters is not None and int(max_clusters) < 1:
            raise ValueError(f"max_clusters must be None or >= 1, got {max_clusters}")
        cfg = TemplateMinerConfig()
        cfg.drain_sim_th = float(self.sim_threshold)
        cfg.drain_depth = int(depth)
        cfg.drain_max_children = int(self.max_children)
        cfg.drain_max_clusters = None if max_clusters is None else int(max_clusters)
        cfg.drain_extra_delimiters = []
        cfg.masking_instructions = [MaskingInstruction(pattern, name) for pattern, name in masks]
        cfg.mask_prefix, cfg.mask_suffix = MASK_PREFIX, MASK_SUFFIX
        cfg.parametrize_numeric_tokens = False
        cfg.profiling_enabled = False
        return cfg

    def _matcher(self, masks, depth: int, templates: Sequence[str]) -> TemplateMiner:
        """A fresh Drain3 miner whose clusters are ``templates`` (cluster id = template id), for ``match`` only.

        Rebuilt the same way after fit and after load, so the two give identical ids by construction.
        """
        miner = TemplateMiner(config=self._config(masks, depth, None))  # no eviction: every template stays matchable
        drain = miner.drain
        for tid, template in enumerate(templates):
            cluster = LogCluster(drain.get_content_as_tokens(template), tid)
            drain.id_to_cluster[tid] = cluster
            drain.add_seq_to_prefix_tree(drain.root_node, cluster)
        drain.clusters_counter = len(templates)
        return miner

    # ------------------------------------------------------------------ masking
    @staticmethod
    def _apply_masker(miner: TemplateMiner, messages: np.ndarray) -> np.ndarray:
        mask = miner.masker.mask
        try:
            return np.array([mask(m) for m in messages], dtype=object)
        except TypeError as err:
            raise TypeError(f"messages must be strings: {err}") from None

    @staticmethod
    def _raw_view_possible(masks: Sequence[tuple[str, str]]) -> bool:
        """Numbers can be read raw when NUM is the last mask: the text before it is the message with numbers intact."""
        return bool(masks) and masks[-1][1] == NUM_NAME

    def _mask_unique(self, miner: TemplateMiner, messages: np.ndarray, raw: bool):
        """Mask ``messages`` with Drain3's masker and de-duplicate: ``(codes, raw_uniques, full_of_raw, full_uniques)``.

        Drain3's masker applies its instructions one after the other, each a pure function of the text, so each
        instruction (Drain3's own :meth:`~drain3.masking.MaskingInstruction.mask`) here runs once per *distinct*
        output of the previous one: after the id masks a million lines are a few thousand strings, and the generic
        masks (host, exception, number) scan those only. The result is the masker's, line for line.

        ``raw_uniques`` are the distinct messages masked by all instructions but the last, in order of first
        appearance (``codes``: each line's); with ``raw`` and NUM last they are the messages with their numbers still
        raw, otherwise they are the fully masked strings. ``full_of_raw`` maps each to its masked string in
        ``full_uniques`` (also in order of first appearance).
        """
        masker = miner.masker
        instructions = list(masker.masking_instructions)
        prefix, suffix = masker.mask_prefix, masker.mask_suffix
        split = len(instructions) - 1 if raw else len(instructions)
        codes, current = np.arange(len(messages), dtype=np.int64), messages
        try:
            for mi in instructions[:split]:
                step, current = pd.factorize(np.array([mi.mask(m, prefix, suffix) for m in current], dtype=object))
                codes = step[codes]
            if not raw:
                step, current = pd.factorize(current)  # no instruction at all: still de-duplicate
                return step[codes], current, np.arange(len(current), dtype=np.int64), current
            mi = instructions[-1]
            full_of_raw, full = pd.factorize(np.array([mi.mask(m, prefix, suffix) for m in current], dtype=object))
        except TypeError as err:
            raise TypeError(f"messages must be strings: {err}") from None
        return codes, current, full_of_raw, full

    def mask(self, messages) -> np.ndarray:
        """The masked messages (object array of str), as Drain3's masker sees them: for inspection and tests."""
        masks = getattr(self, "masks_", None) or self._masks()
        miner = getattr(self, "miner_", None) or TemplateMiner(config=self._config(masks, self._depth(), None))
        return self._apply_masker(miner, _as_messages(messages))

    # ------------------------------------------------------------------ fit / transform
    def fit(self, messages, y=None):
        """Mine templates on training messages; see :meth:`fit_transform`."""
        self.fit_transform(messages)
        return self

    def fit_transform(self, messages, y=None) -> np.ndarray:
        """Mine and refine templates on ``messages`` and return each one's template id (int64).

        Drain generalises a cluster's template as it sees more messages, so ids are given after mining, from each
        cluster's *final* template; clusters whose final templates are equal share one id. Each template is then
        refined on its own lines (:func:`_refine`). These are cluster memberships: :meth:`transform` of a training
        line gives the same id unless the line also fits a more general template (Drain3's ``match`` prefers the one
        with the most ``<*>``), which Drain rarely leaves behind.
        """
        arr = _as_messages(messages)
        if len(arr) == 0:
            raise ValueError("cannot mine templates from no messages")
        masks, depth = self._masks(), self._depth()
        max_values, min_count, min_share = self._refine_params()
        miner = TemplateMiner(config=self._config(masks, depth, self.max_clusters))
        raw = max_values > 0 and self._raw_view_possible(masks)
        codes, raw_uniques, full_of_raw, full = self._mask_unique(miner, arr, raw)
        # Each distinct masked string once, in order of first appearance. Keep the cluster objects: with
        # max_clusters an evicted cluster leaves the tree, but its last template is still its lines' template.
        add = miner.drain.add_log_message
        clusters = [add(u)[0] for u in full]
        final = np.array([c.get_template() for c in clusters], dtype=object)
        base_of_full, bases = pd.factorize(final)  # first appearance of uniques = first appearance of lines
        base_of_raw = base_of_full[full_of_raw]
        label_of_raw = bases[base_of_raw].astype(object)  # each distinct message's template string
        splits = []  # (base template, tokens, positions, kinds, {key: child template}) per refined base
        if max_values > 0:
            weights = np.bincount(codes, minlength=len(raw_uniques))
            names = sorted({name for _, name in masks} | {"*"})
            masked = re.compile(re.escape(MASK_PREFIX) + "(?:" + "|".join(map(re.escape, names)) + ")"
                                + re.escape(MASK_SUFFIX)).search
            order = np.argsort(base_of_raw, kind="stable")
            bounds = np.searchsorted(base_of_raw[order], np.arange(len(bases) + 1))
            full_tokens = [u.split() for u in full]
            for b, template in enumerate(bases):
                if WILDCARD not in template and not (raw and NUM_TOKEN in template):
                    continue
                rows = order[bounds[b]:bounds[b + 1]]
                tokens = template.split()
                use_raw = raw and NUM_TOKEN in template
                found = _refine(tokens, [full_tokens[f] for f in full_of_raw[rows]],
                                [raw_uniques[r].split() for r in rows] if use_raw else None,
                                weights[rows], max_values, min_count, min_share, masked)
                if found is None:
                    continue
                positions, kinds, keys, children = found
                named = {k: _child_template(tokens, positions, kinds, k) for k in children}
                for r, k in zip(rows, keys):
                    if k in named:
                        label_of_raw[r] = named[k]
                splits.append((template, tokens, positions, kinds, named))
        id_of_raw, seen = pd.factorize(label_of_raw)
        ids = id_of_raw.astype(np.int64)[codes]
        templates = [str(t) for t in seen]
        index = {t: i for i, t in enumerate(templates)}
        for template, *_ in splits:  # a catch-all whose lines all went to its children: matchable, never seen
            if template not in index:
                index[template] = len(templates)
                templates.append(template)
        refinements = {}
        for template, tokens, positions, kinds, named in splits:
            base = index[template]
            refinements[base] = _Refinement(base, tokens, positions, kinds, {k: index[t] for k, t in named.items()})

        self.masks_, self.depth_ = masks, depth
        self._set_vocabulary(templates, np.bincount(ids, minlength=len(templates)), refinements)
        return ids

    def _set_vocabulary(self, templates: list[str], counts, refinements: dict) -> None:
        self.templates_ = templates
        self.n_templates_ = len(templates)
        self.counts_ = np.asarray(counts, dtype=np.int64)
        self.refinements_ = dict(sorted(refinements.items()))
        parents = np.arange(self.n_templates_, dtype=np.int64)
        for base, refinement in self.refinements_.items():
            for child in refinement.children.values():
                if child != base:
                    parents[child] = base
        self.parents_ = parents
        self.miner_ = self._matcher(self.masks_, self.depth_, templates)

    def transform(self, messages) -> np.ndarray:
        """Template ids (int64) of ``messages``; ``-1`` where no training template matches. Creates no template.

        A message matches a template of the same token count whose every non-``<*>`` token is equal (Drain3's
        ``match``, exhaustive search); among several, Drain3 takes the most general one. Where that one was refined,
        the message's values at the refined positions pick the refined template, or keep the base (catch-all) for a
        value training never named.
        """
        check_is_fitted(self, "templates_")
        arr = _as_messages(messages)
        if len(arr) == 0:
            return np.empty(0, dtype=np.int64)
        refinements = getattr(self, "refinements_", {})
        raw = any(r.needs_raw for r in refinements.values())
        codes, raw_uniques, full_of_raw, full = self._mask_unique(self.miner_, arr, raw)
        match = self.miner_.drain.match
        clusters = [match(u, MATCH_STRATEGY) for u in full]
        id_of_full = np.array([-1 if c is None else c.cluster_id for c in clusters], dtype=np.int64)
        id_of_raw = id_of_full[full_of_raw]
        if refinements:
            refined = np.isin(id_of_full, np.fromiter(refinements, dtype=np.int64))
            tokens: dict[int, list[str]] = {}
            resolved: dict[int, int] = {}  # per full string, for refinements on words only
            for r in np.flatnonzero(refined[full_of_raw]):
                f = int(full_of_raw[r])
                refinement = refinements[int(id_of_full[f])]
                if not refinement.needs_raw and f in resolved:
                    id_of_raw[r] = resolved[f]
                    continue
                if f not in tokens:
                    tokens[f] = full[f].split()
                tid = refinement.resolve(tokens[f], raw_uniques[r].split() if refinement.needs_raw else None)
                id_of_raw[r] = resolved[f] = tid
        return id_of_raw[codes]

    unseen_rate = staticmethod(unseen_rate)

    def template_table(self) -> pd.DataFrame:
        """One row per template: ``template_id``, ``template``, ``count`` (training lines)."""
        check_is_fitted(self, "templates_")
        return pd.DataFrame({"template_id": np.arange(self.n_templates_, dtype=np.int64),
                             "template": pd.Series(self.templates_, dtype=object),
                             "count": np.asarray(self.counts_, dtype=np.int64)})

    # ------------------------------------------------------------------ persistence (plain JSON, no pickle)
    def to_dict(self) -> dict:
        """Parameters, masks, templates and refinements as a plain JSON-able dict (what :meth:`save` writes).

        The masks are stored as applied, so a later change to :data:`MASKS` does not change a saved parser.
        """
        check_is_fitted(self, "templates_")
        params = self.get_params()
        params["extra_masks"] = [list(m) for m in _check_masks(params["extra_masks"])]
        return {"kind": SAVE_KIND, "version": SAVE_VERSION, "params": params,
                "drain3": {"depth": int(self.depth_), "mask_prefix": MASK_PREFIX, "mask_suffix": MASK_SUFFIX,
                           "parametrize_numeric_tokens": False, "match_strategy": MATCH_STRATEGY},
                "masks": [list(m) for m in self.masks_],
                "templates": list(self.templates_),
                "counts": [int(c) for c in self.counts_],
                "refinements": [r.to_dict() for r in self.refinements_.values()]}

    @classmethod
    def from_dict(cls, doc: dict, source: str = "parser state") -> "DrainParser":
        """Rebuild the parser :meth:`to_dict` described (``ValueError`` naming ``source`` if it is not one).

        A version-1 file (written before refinement existed) loads as the plain Drain parser it was.
        """
        if not isinstance(doc, dict) or doc.get("kind") != SAVE_KIND:
            raise ValueError(f"{source}: not a saved DrainParser")
        version = doc.get("version")
        if version not in (1, SAVE_VERSION):
            raise ValueError(f"{source}: unsupported DrainParser file version {version!r}")
        params = dict(doc["params"])
        params["extra_masks"] = tuple(tuple(m) for m in params.get("extra_masks", ()))
        if version == 1:
            params["refine_max_values"] = 0
        parser = cls(**params)
        templates, counts = [str(t) for t in doc["templates"]], np.asarray(doc["counts"], dtype=np.int64)
        if len(templates) != len(counts):
            raise ValueError(f"{source}: {len(templates)} templates but {len(counts)} counts")
        refinements = {}
        for item in doc.get("refinements", []):
            base = int(item["template"])
            children = {tuple(key): int(tid) for key, tid in item["children"]}
            if not 0 <= base < len(templates) or any(not 0 <= t < len(templates) for t in children.values()):
                raise ValueError(f"{source}: refinement of template {base} names a template that does not exist")
            try:
                refinements[base] = _Refinement(base, templates[base].split(), item["positions"], item["kinds"],
                                                children)
            except ValueError as err:
                raise ValueError(f"{source}: {err}") from None
        parser.masks_, parser.depth_ = _check_masks(doc["masks"]), int(doc["drain3"]["depth"])
        if any(r.needs_raw for r in refinements.values()) and not cls._raw_view_possible(parser.masks_):
            raise ValueError(f"{source}: a refinement reads raw numbers but the last mask is not {NUM_NAME}")
        parser._set_vocabulary(templates, counts, refinements)
        return parser

    def save(self, path: str | os.PathLike):
        """Write :meth:`to_dict` as plain JSON (atomic); :meth:`load` rebuilds an identical parser."""
        return write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DrainParser":
        """Read a parser written by :meth:`save`."""
        return cls.from_dict(read_json(path), source=str(path))
