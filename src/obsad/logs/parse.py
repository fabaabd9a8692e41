"""Log template mining: Drain3 with per-format masking, a vocabulary learnt on training lines only, and Loghub's
grouping accuracy.

A log *message* (the part of a line after the header fields, which :mod:`obsad.logs.formats` splits off) is turned
into a *template id* in three steps:

1. **mask** the variable parts that a regex recognises for sure (block ids, IPs, UUIDs, request ids, paths, hex,
   numbers) with Drain3's own masker (:attr:`drain3.TemplateMiner.masker`): ``blk_-160...`` -> ``<BLK>``. Masks are
   applied in order, specific before generic (a UUID must not be eaten digit by digit by ``<NUM>``);
2. **de-duplicate** the masked strings: a million HDFS lines collapse to a few hundred distinct masked strings, so
   Drain3 (pure Python) sees each distinct string once, in order of first appearance, and ids are broadcast back;
3. **mine** (``fit``: :meth:`drain3.drain.Drain.add_log_message`, clusters may be created and generalised) or
   **match** (``transform``: :meth:`drain3.drain.Drain.match`, no cluster created, ``-1`` when nothing matches).

The vocabulary ``templates_`` comes from the training messages alone, so a template first seen later is *unseen*
(``-1``) and measurable (:func:`unseen_rate`) instead of silently joining the vocabulary. Persistence is plain JSON
(the templates plus the masks): Drain3's own snapshots are jsonpickle, which can run code on load.
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
MATCH_STRATEGY = "always"  # Drain3's exhaustive match: no false "unseen" from its tree search shortcut
SAVE_KIND, SAVE_VERSION = "obsad.logs.parse.DrainParser", 1

# ---------------------------------------------------------------------------------------------------------- masks
# Every pattern matches within one line and only looks at its neighbours through *negative* lookarounds, so a
# token boundary is "not a word character" rather than "a space": ``/10.1.2.3:50010`` and ``(0x1f)`` are masked.
_HEX_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

# A file-system path: two or more ``/segment``s starting a token. The URL of an HTTP request line (``"GET /v2/...``)
# is the *event* (which API was called), so it is left alone; only the ids inside it are masked later, which keeps
# ``/v2/<HEX>/servers/detail`` and ``/v2/<HEX>/servers/<UUID>`` apart.
PATH = ("(?<![^\\s\"'=(\\[])" + "".join(f"(?<!{m} )" for m in _HTTP_METHODS)
        + r"(?:/[^\s/\"'()\[\]{},;]+){2,}/?", "PATH")
BLK = (r"blk_-?\d+", "BLK")
REQ = (rf"(?<![\w-])req-{_HEX_UUID}(?![\w-])", "REQ")
UUID = (rf"(?<![\w-]){_HEX_UUID}(?![\w-])", "UUID")
IP = (r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?!\w|\.\d)", "IP")
# ``0x...`` or a long hex string with at least one letter (a tenant / user id); all-digit strings are numbers.
HEX = (r"(?<![\w-])(?:0[xX][0-9a-fA-F]+|(?=[0-9]*[a-fA-F])[0-9a-fA-F]{16,})(?![\w-])", "HEX")
# Integers, decimals and sizes (``67108864``, ``0.2477829``, ``1.5GB``); not version numbers glued to a word or a
# slash (``HTTP/1.1``, ``job_2008``), and a sentence's final dot is not part of the number.
NUM = (r"(?<![\w./-])[-+]?\d+(?:\.\d+)?(?:[kKMGTP]i?B|[kKMGTP]|ms|us|ns|s|%)?(?!\w|\.\d)", "NUM")

MASKS: dict[str, list[tuple[str, str]]] = {
    "hdfs": [PATH, BLK, IP, HEX, NUM],
    "openstack": [PATH, REQ, UUID, IP, HEX, NUM],
}

# Drain routes a message down its tree by token count and then its first ``depth - 3`` tokens; only messages in the
# same leaf can merge, and inside a leaf anything at least ``sim_threshold`` alike does. An OpenStack API line starts
# ``<IP> "GET /v2/<HEX>/servers/detail``: at depth 4 every API call (GET or POST, any endpoint) shares the ``<IP>``
# leaf and collapses into one template; depth 6 routes on the method and the endpoint as well.
DEFAULT_DEPTH: dict[str, int] = {"hdfs": 4, "openstack": 6}


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


# ---------------------------------------------------------------------------------------------------------- parser
class DrainParser(BaseEstimator):
    """Drain3 template mining with per-format masks and a train-only vocabulary (sklearn-style).

    Parameters
    ----------
    format: ``"hdfs"`` or ``"openstack"``: which :data:`MASKS` to apply.
    sim_threshold, depth, max_children, max_clusters: Drain3's ``drain_sim_th``, ``drain_depth`` (tree depth; the
        first ``depth - 3`` tokens route a message; ``None``: the format's :data:`DEFAULT_DEPTH`),
        ``drain_max_children``, ``drain_max_clusters`` (``None``: no LRU eviction).
    extra_masks: more ``(regex, name)`` pairs, applied *before* the format's masks (specific before generic).

    Learned attributes: ``templates_`` (template strings; id = index, in order of first appearance in training),
    ``n_templates_``, ``counts_`` (training lines per template), ``masks_`` (the ordered masks applied), ``depth_``
    (the depth used), ``miner_`` (a Drain3 :class:`~drain3.TemplateMiner` whose clusters are exactly ``templates_``,
    cluster id = template id: it masks and matches, it never mines).

    Drain3's numeric-token heuristic (``parametrize_numeric_tokens``: any token with a digit is a wildcard in the
    routing tree) is off: the masks already parametrise numbers, and the heuristic would route ``/v2/...`` URLs and
    ``HTTP/1.1`` as if they were parameters.
    """

    def __init__(self, format: str = "hdfs", sim_threshold: float = 0.4, depth: int | None = None,
                 max_children: int = 100, max_clusters: int | None = None, extra_masks: Sequence[tuple[str, str]] = ()):
        self.format = format
        self.sim_threshold = sim_threshold
        self.depth = depth
        self.max_children = max_children
        self.max_clusters = max_clusters
        self.extra_masks = extra_masks

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
        """Mine templates on ``messages`` and return each one's template id (int64).

        Drain generalises a cluster's template as it sees more messages, so ids are given after mining, from each
        cluster's *final* template. Clusters whose final templates are equal share one id. These are cluster
        memberships: :meth:`transform` of a training line gives the same id unless the line also fits a more general
        template (Drain3's ``match`` prefers the one with the most ``<*>``), which Drain rarely leaves behind.
        """
        arr = _as_messages(messages)
        if len(arr) == 0:
            raise ValueError("cannot mine templates from no messages")
        masks, depth = self._masks(), self._depth()
        miner = TemplateMiner(config=self._config(masks, depth, self.max_clusters))
        codes, uniques = pd.factorize(self._apply_masker(miner, arr))
        # Each distinct masked string once, in order of first appearance. Keep the cluster objects: with
        # max_clusters an evicted cluster leaves the tree, but its last template is still its lines' template.
        add = miner.drain.add_log_message
        clusters = [add(u)[0] for u in uniques]
        final = np.array([c.get_template() for c in clusters], dtype=object)
        template_of_unique, templates = pd.factorize(final)  # first appearance of uniques = first appearance of lines
        ids = template_of_unique.astype(np.int64)[codes]

        self.masks_, self.depth_ = masks, depth
        self.templates_ = [str(t) for t in templates]
        self.n_templates_ = len(self.templates_)
        self.counts_ = np.bincount(ids, minlength=self.n_templates_).astype(np.int64)
        self.miner_ = self._matcher(masks, depth, self.templates_)
        return ids

    def transform(self, messages) -> np.ndarray:
        """Template ids (int64) of ``messages``; ``-1`` where no training template matches. Creates no template.

        A message matches a template of the same token count whose every non-``<*>`` token is equal (Drain3's
        ``match``, exhaustive search); among several, Drain3 takes the most general one.
        """
        check_is_fitted(self, "templates_")
        arr = _as_messages(messages)
        if len(arr) == 0:
            return np.empty(0, dtype=np.int64)
        codes, uniques = pd.factorize(self._apply_masker(self.miner_, arr))
        match = self.miner_.drain.match
        clusters = [match(u, MATCH_STRATEGY) for u in uniques]
        ids_of_unique = np.array([-1 if c is None else c.cluster_id for c in clusters], dtype=np.int64)
        return ids_of_unique[codes]

    unseen_rate = staticmethod(unseen_rate)

    def template_table(self) -> pd.DataFrame:
        """One row per template: ``template_id``, ``template``, ``count`` (training lines)."""
        check_is_fitted(self, "templates_")
        return pd.DataFrame({"template_id": np.arange(self.n_templates_, dtype=np.int64),
                             "template": pd.Series(self.templates_, dtype=object),
                             "count": np.asarray(self.counts_, dtype=np.int64)})

    # ------------------------------------------------------------------ persistence (plain JSON, no pickle)
    def to_dict(self) -> dict:
        """Parameters, masks and templates as a plain JSON-able dict (what :meth:`save` writes).

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
                "counts": [int(c) for c in self.counts_]}

    @classmethod
    def from_dict(cls, doc: dict, source: str = "parser state") -> "DrainParser":
        """Rebuild the parser :meth:`to_dict` described (``ValueError`` naming ``source`` if it is not one)."""
        if not isinstance(doc, dict) or doc.get("kind") != SAVE_KIND:
            raise ValueError(f"{source}: not a saved DrainParser")
        if doc.get("version") != SAVE_VERSION:
            raise ValueError(f"{source}: unsupported DrainParser file version {doc.get('version')!r}")
        params = dict(doc["params"])
        params["extra_masks"] = tuple(tuple(m) for m in params.get("extra_masks", ()))
        parser = cls(**params)
        templates, counts = [str(t) for t in doc["templates"]], np.asarray(doc["counts"], dtype=np.int64)
        if len(templates) != len(counts):
            raise ValueError(f"{source}: {len(templates)} templates but {len(counts)} counts")
        parser.masks_, parser.depth_ = _check_masks(doc["masks"]), int(doc["drain3"]["depth"])
        parser.templates_, parser.n_templates_, parser.counts_ = templates, len(templates), counts
        parser.miner_ = parser._matcher(parser.masks_, parser.depth_, templates)
        return parser

    def save(self, path: str | os.PathLike):
        """Write :meth:`to_dict` as plain JSON (atomic); :meth:`load` rebuilds an identical parser."""
        return write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DrainParser":
        """Read a parser written by :meth:`save`."""
        return cls.from_dict(read_json(path), source=str(path))
