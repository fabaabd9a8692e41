"""Neighbour detectors: k-NN distance with FAISS (exact, or IVF for large references) and LOF.

``KNNDetector`` scores an event by its mean distance to the ``k`` nearest reference (training) events. Cosine
distance is ``1 - similarity`` on L2-normalised vectors (``IndexFlatIP``); ``l2`` is the Euclidean distance
(``IndexFlatL2`` returns squares, we take the root). References larger than ``exact_max`` use ``IndexIVFFlat``
(trained on a seeded sample; ``n_lists`` defaults to ``sqrt(n_probe * n)``, the fewest distance computations per
query) searched with ``n_probe`` lists.
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
        raw, idx = self.index_.search(Xp, k)
        return self._to_distance(raw, idx), idx

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
