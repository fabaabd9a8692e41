"""Neighbour detectors: k-NN distance with FAISS (exact, or IVF for large references) and LOF.

``KNNDetector`` scores an event by its mean distance to the ``k`` nearest reference (training) events. Cosine
distance is ``1 - similarity`` on L2-normalised vectors (``IndexFlatIP``); ``l2`` is the Euclidean distance
(``IndexFlatL2`` returns squares, we take the root). References larger than ``exact_max`` use ``IndexIVFFlat``
(trained on a seeded sample; ``n_lists`` defaults to ``sqrt(n_probe * n)``, the fewest distance computations per
query) searched with ``n_probe`` lists (for a batch, the lists are picked by one matrix product,
:func:`nearest_lists`, then scanned by FAISS).
Training scores exclude each reference point's match with itself (searching ``k + 1`` and dropping it), so the
threshold is calibrated on out-of-sample distances.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
from sklearn.neighbors import LocalOutlierFactor

from .base import BaseDetector, as_float32, require_fitted

METRICS = ("cosine", "l2")

#: From this many queries an IVF search picks each query's lists itself (:func:`nearest_lists`, one matrix
#: product) and hands them to FAISS' ``search_preassigned``: FAISS' own coarse step keeps a heap per query and
#: costs about 1.7 ms for 1,000 queries against 283 centroids, the product and ``n_probe`` arg-maxes about 0.6 ms.
OWN_PROBES_MIN = 32
#: Queries per block in :func:`nearest_lists`: bounds the query x centroid matrix (``n_lists`` floats a query).
PROBE_BLOCK = 8192


def nearest_lists(X: np.ndarray, centroids: np.ndarray, n_probe: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_probe`` nearest of ``centroids`` to each row of ``X``, nearest first, as FAISS' coarse quantizer
    returns them: ``(similarities or squared distances [n, n_probe] float32, list ids [n, n_probe] int64)``.

    ``metric``: ``"cosine"`` (rows and centroids compared by inner product, largest first) or ``"l2"`` (smallest
    squared distance first, i.e. largest ``x.c - |c|^2 / 2``).
    """
    n = len(X)
    n_probe = min(int(n_probe), len(centroids))
    half_norms = 0.5 * np.einsum("ij,ij->i", centroids, centroids) if metric == "l2" else None
    ids = np.empty((n, n_probe), dtype=np.int64)
    near = np.empty((n, n_probe), dtype=np.float32)
    for lo in range(0, n, PROBE_BLOCK):
        x = X[lo:lo + PROBE_BLOCK]
        sim = x @ centroids.T
        if half_norms is not None:
            sim -= half_norms
        rows = np.arange(len(x))
        if n_probe <= 8:  # a few arg-maxes beat a partition (and give the order for free)
            for j in range(n_probe):
                best = sim.argmax(axis=1)
                ids[lo:lo + len(x), j] = best
                near[lo:lo + len(x), j] = sim[rows, best]
                sim[rows, best] = -np.inf
        else:
            part = np.argpartition(-sim, n_probe - 1, axis=1)[:, :n_probe]
            order = np.argsort(-np.take_along_axis(sim, part, axis=1), axis=1, kind="stable")
            ids[lo:lo + len(x)] = np.take_along_axis(part, order, axis=1)
            near[lo:lo + len(x)] = np.take_along_axis(sim, ids[lo:lo + len(x)], axis=1)
        if half_norms is not None:  # back to squared distances, as FAISS reports them
            near[lo:lo + len(x)] = (np.einsum("ij,ij->i", x, x)[:, None]
                                    - 2.0 * near[lo:lo + len(x)])
    return near, ids


class KNNDetector(BaseDetector):
    """Mean distance to the ``k`` nearest reference points (FAISS).

    ``reference_max`` keeps a seeded random sample of at most that many training rows as the reference (all
    training rows are still scored to calibrate the threshold). ``n_threads`` sets FAISS' OpenMP threads only
    when given.
    """

    def __init__(
        self,
        k: int = 10,
        metric: str = "cosine",
        exact_max: int = 50_000,
        n_lists: int | None = None,
        n_probe: int = 8,
        reference_max: int | None = None,
        seed: int = 0,
        n_threads: int | None = None,
        threshold_percentile: float = 99.5,
    ):
        self.k = k
        self.metric = metric
        self.exact_max = exact_max
        self.n_lists = n_lists
        self.n_probe = n_probe
        self.reference_max = reference_max
        self.seed = seed
        self.n_threads = n_threads
        self.threshold_percentile = threshold_percentile

    # ------------------------------------------------------------------ helpers
    def _prepare(self, X) -> np.ndarray:
        X = as_float32(X)
        if self.metric == "cosine":
            X = X.copy()
            faiss.normalize_L2(X)  # in place; zero rows stay zero
        return X

    def _to_distance(self, raw: np.ndarray, idx: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            d = 1.0 - raw.astype(np.float64)
        else:
            d = np.sqrt(np.maximum(raw.astype(np.float64), 0.0))
        d[idx < 0] = np.nan  # FAISS pads with -1 when fewer than k results were found (IVF)
        return d

    def _search(self, Xp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.n_lists_ is not None and len(Xp) >= OWN_PROBES_MIN:
            index = self.index_
            near, lists = nearest_lists(Xp, self._centroids(), index.nprobe, self.metric)
            raw, idx = index.search_preassigned(Xp, k, lists, near)
        else:
            raw, idx = self.index_.search(Xp, k)
        return self._to_distance(raw, idx), idx

    def _centroids(self) -> np.ndarray:
        """The IVF index's list centroids (float32 ``[n_lists, d]``), read from its quantizer once."""
        cached = getattr(self, "_centroid_cache", None)
        if cached is None or cached[0] is not self.index_:
            quantizer = faiss.downcast_index(self.index_.quantizer)
            cached = (self.index_, np.ascontiguousarray(quantizer.reconstruct_n(0, quantizer.ntotal)))
            self._centroid_cache = cached  # replaced whole: safe for concurrent readers
        return cached[1]

    @staticmethod
    def _mean(d: np.ndarray) -> np.ndarray:
        valid = ~np.isnan(d)
        n = valid.sum(axis=1)
        total = np.where(valid, d, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.maximum(n, 1), np.inf)

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_reference(cls, reference, train_scores, threshold: float, **params) -> "KNNDetector":
        """A fitted detector rebuilt from what a package stores, without refitting.

        ``reference``: the reference points (rows of the original feature space, before normalisation);
        ``train_scores``: the training scores that ``threshold_`` and ``percentile_of`` are based on;
        ``params``: the constructor's hyper-parameters (``k``, ``metric``, ...). The index is exact, so the
        rebuilt detector scores exactly like a detector fitted with an exact index on the same reference.
        ``kneighbors`` indices are rows of ``reference``.
        """
        ref = as_float32(reference)
        det = cls(**{**params, "exact_max": max(len(ref), 1), "reference_max": None})
        if det.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {det.metric!r}")
        if len(ref) <= det.k:
            raise ValueError(f"need more than k={det.k} reference points, got {len(ref)}")
        prepared = det._prepare(ref)
        index = faiss.IndexFlatIP(prepared.shape[1]) if det.metric == "cosine" else faiss.IndexFlatL2(prepared.shape[1])
        index.add(np.ascontiguousarray(prepared))
        det.index_ = index
        det.n_lists_ = None
        det.reference_rows_ = np.arange(len(ref))
        det.n_features_in_ = prepared.shape[1]
        det.train_scores_ = np.sort(np.asarray(train_scores, dtype=np.float64))
        det.threshold_ = float(threshold)
        return det

    def index_bytes(self) -> np.ndarray:
        """The FAISS index in FAISS' own binary format, as a ``uint8`` array (no pickle; store it with a checksum)."""
        require_fitted(self, "index_")
        return np.asarray(faiss.serialize_index(self.index_), dtype=np.uint8)

    @classmethod
    def from_index(cls, index_bytes, n_reference: int, train_scores, threshold: float, **params) -> "KNNDetector":
        """A fitted detector rebuilt from :meth:`index_bytes` (exact or IVF), without refitting.

        ``kneighbors`` indices are positions ``0 .. n_reference - 1`` in the reference the index was built on.
        """
        det = cls(**params)
        if det.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {det.metric!r}")
        index = faiss.deserialize_index(np.ascontiguousarray(np.asarray(index_bytes, dtype=np.uint8)))
        if index.ntotal != int(n_reference):
            raise ValueError(f"the index holds {index.ntotal} vectors, expected {n_reference}")
        if index.ntotal <= det.k:
            raise ValueError(f"need more than k={det.k} reference points, got {index.ntotal}")
        if hasattr(index, "nprobe"):
            index.nprobe = min(int(det.n_probe), int(index.nlist))
            det.n_lists_ = int(index.nlist)
        else:
            det.n_lists_ = None
        det.index_ = index
        det.reference_rows_ = np.arange(index.ntotal)
        det.n_features_in_ = int(index.d)
        det.train_scores_ = np.sort(np.asarray(train_scores, dtype=np.float64))
        det.threshold_ = float(threshold)
        return det

    # ------------------------------------------------------------------ fit / score
    def _fit(self, X, y=None) -> np.ndarray:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.n_threads is not None:
            faiss.omp_set_num_threads(int(self.n_threads))
        Xp = self._prepare(X)
        n, d = Xp.shape
        rng = np.random.default_rng(self.seed)
        if self.reference_max is not None and n > self.reference_max:
            rows = np.sort(rng.choice(n, size=int(self.reference_max), replace=False))
        else:
            rows = np.arange(n)
        ref = np.ascontiguousarray(Xp[rows])
        n_ref = ref.shape[0]
        if n_ref <= self.k:
            raise ValueError(f"need more than k={self.k} reference points, got {n_ref}")
        faiss_metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        flat = faiss.IndexFlatIP(d) if self.metric == "cosine" else faiss.IndexFlatL2(d)
        if n_ref > self.exact_max:
            # a query compares with n_lists centroids, then scans n_probe lists of n / n_lists points: the sum is
            # smallest at n_lists = sqrt(n_probe * n); no more than FAISS' k-means trains well (39 points each)
            balanced = int(round(math.sqrt(max(int(self.n_probe), 1) * n_ref)))
            n_lists = int(self.n_lists) if self.n_lists else max(1, min(balanced, n_ref // 39))
            n_lists = min(n_lists, n_ref)
            index = faiss.IndexIVFFlat(flat, d, n_lists, faiss_metric)
            n_train = min(n_ref, max(64 * n_lists, 10_000))
            sample = ref[np.sort(rng.choice(n_ref, size=n_train, replace=False))]
            index.cp.seed = int(self.seed)
            index.train(np.ascontiguousarray(sample))
            index.nprobe = min(int(self.n_probe), n_lists)
            self.quantizer_ = flat  # keep the quantizer alive alongside the index
            self.n_lists_ = n_lists
        else:
            index = flat
            self.n_lists_ = None
        index.add(ref)
        self.index_ = index
        self.reference_rows_ = rows
        self.n_features_in_ = d

        # Training scores: search k + 1 and drop each row's self-match (or, when it is not among the
        # results, e.g. under many exact duplicates or an IVF miss, the farthest of the k + 1).
        dist, idx = self._search(Xp, self.k + 1)
        self_id = np.full(n, -1, dtype=np.int64)
        self_id[rows] = np.arange(n_ref)
        drop = idx == self_id[:, None]
        drop[self_id < 0] = False
        no_self = ~drop.any(axis=1)
        drop[no_self, -1] = True
        kept = dist[~drop].reshape(n, self.k)
        return self._mean(kept)

    def _score(self, X) -> np.ndarray:
        dist, _ = self._search(self._prepare(X), self.k)
        return self._mean(dist)

    def score_and_neighbors(self, X) -> tuple[np.ndarray, np.ndarray]:
        """``score_samples(X)`` and the rows of the ``k`` nearest reference events, from one search."""
        require_fitted(self, "index_")
        dist, idx = self._search(self._prepare(X), self.k)
        rows = np.where(idx >= 0, self.reference_rows_[np.maximum(idx, 0)], -1)
        return self._mean(dist), rows

    def kneighbors(self, X, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distances (float64, ascending) and indices of the ``k`` nearest reference events.

        Indices are rows of the training ``X`` given to ``fit`` (-1 where FAISS found fewer than ``k``);
        a training event queried here finds itself first.
        """
        require_fitted(self, "index_")
        dist, idx = self._search(self._prepare(X), int(k or self.k))
        rows = np.where(idx >= 0, self.reference_rows_[np.maximum(idx, 0)], -1)
        return dist, rows


class LOFDetector(BaseDetector):
    """Local Outlier Factor (scikit-learn, ``novelty=True``); score = ``-score_samples`` (the LOF itself).

    Training scores are LOF's own leave-self-out factors (``negative_outlier_factor_``).
    """

    def __init__(self, k: int = 20, metric: str = "minkowski", n_jobs: int | None = None,
                 threshold_percentile: float = 99.5):
        self.k = k
        self.metric = metric
        self.n_jobs = n_jobs
        self.threshold_percentile = threshold_percentile

    def _fit(self, X, y=None) -> np.ndarray:
        X = as_float32(X)
        self.lof_ = LocalOutlierFactor(n_neighbors=self.k, metric=self.metric, novelty=True, n_jobs=self.n_jobs)
        self.lof_.fit(X)
        self.n_features_in_ = X.shape[1]
        return -self.lof_.negative_outlier_factor_

    def _score(self, X) -> np.ndarray:
        return -self.lof_.score_samples(as_float32(X))
