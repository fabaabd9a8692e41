"""Has the stream of events drifted away from the data a model was fitted on? Two-sample tests on embeddings, with
a known false-alarm rate, and per-field tests that say what moved.

A window of current events and a reference sample are two samples; "no drift" is the hypothesis that both come
from the same distribution. :class:`DriftDetector` tests it on the events' embeddings with a multivariate test
whose false-alarm rate is ``alpha`` by construction, and on every raw field with
:func:`obsad.monitor.fields.field_tests` (Benjamini-Hochberg corrected), so that an alarm says which fields moved
and by how much. The embedding test decides ``drift``; the per-field table explains it.

- ``method="mmd"`` (default): the kernel maximum mean discrepancy. The pooled embeddings are whitened with their
  own covariance (:func:`whiten_pooled`: embeddings are very anisotropic, and an isotropic kernel would only see
  changes along their few widest directions), then compared with a Gaussian kernel
  ``k(x, y) = exp(-|x - y|^2 / (2 s^2))``, ``s`` the median heuristic: the median distance between random pairs of
  pooled rows. Both are functions of the pooled sample alone, so the permutation test stays exact. The statistic
  is the **unbiased** estimator MMD^2_u (a U-statistic: within-sample sums exclude the diagonal; it can be
  negative). Its null distribution is the permutation distribution: ``n_permutations`` random relabellings of the
  pooled sample, ``p = (1 + #{permuted >= observed}) / (1 + n_permutations)``, a valid p-value: the false-alarm
  rate is at most ``alpha`` whenever the two samples are exchangeable. The pooled kernel matrix ``K`` is computed
  once and every permutation is a column of a 0/1 membership matrix ``A``: one product ``K @ A`` gives every
  permutation's within- and between-sample sums.
- ``method="classifier"``: a classifier two-sample test. A logistic regression (or, ``classifier="boosting"``, a
  histogram gradient-boosted model) learns to tell current from reference embeddings on a random stratified half
  of the pooled sample; its scores on the other half give the statistic, the held-out AUC. Under no drift the
  held-out scores of both samples are exchangeable, so the one-sided Mann-Whitney U test of the held-out scores
  (the permutation null of the AUC, normal approximation with tie correction) gives the p-value. One split, no
  cross-validation: out-of-fold scores from different folds would not be exchangeable.
- ``method="ks_fraction"``: the rule this replaces, kept to show why: a Kolmogorov-Smirnov test per embedding
  dimension at ``alpha``, "drift" when more than ``fraction`` of the dimensions reject (:func:`ks_fraction_rule`).
  Its false-alarm rate is not ``alpha``: the dimensions are tested without correction and are correlated, so
  rejections come in clumps (about 0.1 on the simulator's embeddings and on correlated Gaussians); and it uses
  every event of a window, so its sensitivity, hence its alarm rate on any small real change, grows with the
  window.

Sizes. The current window is subsampled (seeded) to at most ``max_samples`` embeddings and the reference to at
most ``max_reference`` (default four times as many), so a test costs the same for a window of 5,000 events or 5
million (about 0.4 s for 1,000 + 4,000 embeddings and 500 permutations on two cores), and its sensitivity is the
one :func:`power_curve` measures at that size, however large the window. The reference should be several times
larger than the tested window: the guarantee is over both samples, and against one fixed reference sample the
false-alarm rate over many windows is ``alpha`` only on average over the reference samples one might have drawn;
with a reference four to ten times the window it stays close to ``alpha`` for any one of them.

Which reference. The reference must be a sample of the stream *as the model sees new events*: a model package's
own training sample is not quite one (the encoder learnt its vocabularies and value frequencies from those very
events: a value seen once in training is "known" in the training sample and "unseen" in new data), and against it
the embedding tests alarm more often than ``alpha`` on unchanged events (``bench/bench_drift.py`` measures it).
Events the model was not fitted on (a held-out slice, the first day after deployment) give the stated rate. The
per-field tests read raw values and are not affected.

Time. Embeddings encode the hour of the day and the day of the week: a window of one night against a reference of
whole weeks differs, and the test says so; the per-field table then names the timestamp (hour of day / day of
week). Compare windows that cover the cycles the reference covers, or a reference of the same hours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from ..io import json_safe
from .fields import CORRECTIONS, field_tests, infer_field_kinds

__all__ = ["DriftDetector", "DriftResult", "METHODS", "classifier_test", "clopper_pearson", "ks_fraction_rule",
           "mmd_test", "power_curve", "whiten_pooled"]

METHODS = ("mmd", "classifier", "ks_fraction")
_MEDIAN_PAIRS = 50_000
CLASSIFIERS = ("logistic", "boosting")


# ------------------------------------------------------------------------------------------------ the result
@dataclass
class DriftResult:
    """The answer of one drift test.

    ``drift``: the embedding test rejected "no drift" at ``alpha``; ``p_value`` (None for ``ks_fraction``, which
    has none); ``statistic`` (MMD^2_u, the held-out AUC, or the share of dimensions rejecting); ``method``;
    ``window_size`` (current events given); ``fields``: one dict per raw field (``field``, ``kind``, ``p_value``,
    ``p_value_adjusted``, ``shift``, ``effect``, ``missing_reference``, ``missing_current``, ``detail``), most
    significant first, empty when no fields were given. ``details``: what the test used (samples, bandwidth, ...).
    """

    drift: bool
    p_value: float | None
    statistic: float
    method: str
    window_size: int
    fields: list[dict] = field(default_factory=list)
    alpha: float = 0.05
    correction: str = "bh"
    details: dict = field(default_factory=dict)

    @property
    def drifted_fields(self) -> list[str]:
        """The fields whose adjusted p-value is below ``alpha``."""
        return [f["field"] for f in self.fields if f["p_value_adjusted"] is not None
                and f["p_value_adjusted"] < self.alpha]

    def fields_frame(self) -> pd.DataFrame:
        from .fields import FIELD_COLUMNS

        return pd.DataFrame(self.fields, columns=FIELD_COLUMNS)

    def to_dict(self) -> dict:
        """A JSON-ready dict (no NaN: a missing number is None)."""
        return json_safe(asdict(self))

    def summary(self, max_fields: int = 10) -> str:
        if self.method == "ks_fraction":
            test = f"{self.statistic:.0%} of the dimensions reject at {self.alpha:g}"
        else:
            name = "MMD^2_u" if self.method == "mmd" else "held-out AUC"
            test = f"p = {self.p_value:.4g}, {name} = {self.statistic:.4g}, alpha = {self.alpha:g}"
        used = self.details.get("n_reference_used"), self.details.get("n_current_used")
        lines = [f"drift: {'YES' if self.drift else 'no'} ({self.method}: {test}; {self.window_size:,} current "
                 f"events, {used[1]:,} of them and {used[0]:,} reference events tested)"]
        if self.fields:
            moved = self.drifted_fields
            how = "Benjamini-Hochberg" if self.correction == "bh" else "Bonferroni"
            lines.append(f"fields that moved ({how}-adjusted p < {self.alpha:g}): {len(moved)} of {len(self.fields)}")
            shown = [f for f in self.fields if f["field"] in set(moved)][:max_fields]
            shown = shown or self.fields[:min(3, max_fields)]
            if not moved:
                lines.append("closest to moving:")
            width = max(len(f["field"]) for f in shown)
            for f in shown:
                shift = "-" if f["shift"] is None else f"{f['shift']:.4g}"
                p_adj = f["p_value_adjusted"]
                p_adj = "-" if p_adj is None else "<1e-300" if p_adj == 0 else f"{p_adj:.3g}"
                lines.append(f"  {f['field']:<{width}}  {f['kind']:<11}  p_adj {p_adj:<9}  shift {shift:<10} "
                             f"{f['detail']}".rstrip())
            if len(moved) > len(shown):
                lines.append(f"  ... and {len(moved) - len(shown)} more")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ helpers
def _matrix(x, name: str, min_rows: int = 2) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [events, dimensions], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    if len(a) < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} events, got {len(a)}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return a


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(stream)])


def _subsample(n: int, max_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_samples is None or n <= max_samples:
        return np.arange(n)
    return np.sort(rng.choice(n, size=int(max_samples), replace=False))


def _squared_distances(z: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``z`` (in ``z``'s dtype), with an exact zero diagonal."""
    sq = np.einsum("ij,ij->i", z, z)
    d2 = z @ z.T
    d2 *= -2.0
    d2 += sq[:, None]
    d2 += sq[None, :]
    np.fill_diagonal(d2, 0.0)
    np.maximum(d2, 0.0, out=d2)
    return d2


# ------------------------------------------------------------------------------------------------ MMD
def whiten_pooled(z: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """``z`` centred and whitened with the covariance of its own rows (eigenvalues floored at ``ridge`` times the
    largest, so that dead or nearly constant dimensions are not blown up): Euclidean distances become Mahalanobis
    distances. A function of the pooled sample only, so a permutation test on its output stays exact."""
    z = np.asarray(z, dtype=np.float64)
    z = z - z.mean(axis=0)
    cov = (z.T @ z) / max(1, len(z) - 1)
    w, v = np.linalg.eigh(cov)
    top = float(w.max()) if len(w) else 0.0
    if top <= 0:
        return z
    return z @ (v / np.sqrt(np.maximum(w, ridge * top)))


def mmd_test(x, y, *, n_permutations: int = 500, seed: int = 0, bandwidth: float | None = None,
             whiten: bool = True, chunk: int = 128) -> tuple[float, float, float]:
    """Kernel MMD permutation test of ``x`` ``[m, d]`` against ``y`` ``[n, d]`` (both used whole: subsample first).

    Returns ``(mmd2_u, p_value, bandwidth)``. ``whiten`` (default): the pooled sample is first whitened
    (:func:`whiten_pooled`): embeddings are very anisotropic (a few directions carry most of the variance), and an
    isotropic kernel on them sees a change only along those (on the simulator's events, with a model trained for
    one epoch, whitening took the power for a new value in 20 % of the events from 0.1 to 1.0 at 1,000 events).
    The bandwidth is the median heuristic on the pooled (whitened) sample: the median distance of at most 50,000
    random pairs of pooled rows, drawn independently of which sample they belong to, so that every relabelling
    sees the same kernel; or ``bandwidth`` when given.

    Cost: one ``(m + n)^2`` kernel matrix and its product with an ``(m + n) x (n_permutations + 1)`` 0/1
    membership matrix, in blocks of ``chunk`` permutations. Distances and kernel are float32 (half the time of
    float64; the statistic moves in its 4th significant digit, far below the spread of its permutation
    distribution); the sums are accumulated in float64.
    """
    x, y = _matrix(x, "x"), _matrix(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} dimensions, y {y.shape[1]}")
    if int(n_permutations) < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    m, n = len(x), len(y)
    big = m + n
    z = np.vstack([x, y])
    # centred (distances do not change; float32 loses less in |a|^2 + |b|^2 - 2ab), then whitened
    z = (whiten_pooled(z) if whiten else z - z.mean(axis=0)).astype(np.float32)
    rng = _rng(seed, 7)
    d2 = _squared_distances(z)
    if bandwidth is None:
        # the median over at most 50,000 random pairs of distinct pooled rows, drawn without looking at the labels
        i = rng.integers(0, big, size=min(_MEDIAN_PAIRS, big * (big - 1) // 2))
        j = (i + rng.integers(1, big, size=len(i))) % big
        pairs = d2[i, j]
        pairs = pairs[pairs > 0]
        s = float(np.sqrt(np.median(pairs.astype(np.float64)))) if len(pairs) else 1.0
    else:
        s = float(bandwidth)
    if not s > 0:
        raise ValueError(f"bandwidth must be > 0, got {s}")
    d2 *= np.float32(-0.5 / (s * s))
    k = np.exp(d2, out=d2)  # float32, diagonal exactly 1
    row = k.sum(axis=1, dtype=np.float64)
    total = row.sum()
    n_total = int(n_permutations) + 1
    stats_ = np.empty(n_total)
    for lo in range(0, n_total, chunk):
        hi = min(lo + chunk, n_total)
        keys = rng.random((hi - lo, big))
        if lo == 0:
            keys[0] = np.arange(big)  # column 0: the observed split (the first m rows are x)
        in_x = np.argpartition(keys, m - 1, axis=1)[:, :m]  # a random m-subset per permutation
        member = np.zeros((big, hi - lo), dtype=np.float32)
        member[in_x, np.arange(hi - lo)[:, None]] = 1.0
        kx = k @ member
        xx = np.einsum("ij,ij->j", member, kx, dtype=np.float64)  # x' K x (diagonal included)
        one_x = row @ member  # 1' K x
        yy = total - 2.0 * one_x + xx
        xy = one_x - xx
        stats_[lo:hi] = (xx - m) / (m * (m - 1)) + (yy - n) / (n * (n - 1)) - 2.0 * xy / (m * n)
    observed = stats_[0]
    # a permuted statistic equal to the observed one up to float32 rounding (relative to the kernel's mean value,
    # the size of each term) counts as "at least as large": conservative
    tol = 1e-6 * total / (big * big)
    p = (1.0 + np.count_nonzero(stats_[1:] >= observed - tol)) / float(n_total)
    return float(observed), float(p), s


# ------------------------------------------------------------------------------------------------ classifier
def classifier_test(x, y, *, seed: int = 0, classifier: str = "logistic") -> tuple[float, float]:
    """Classifier two-sample test of ``x`` (reference) against ``y`` (current): ``(held-out AUC, p_value)``.

    A model fitted on a random stratified half of the pooled sample scores the other half; the p-value is the
    one-sided Mann-Whitney U test of the held-out scores (current higher), exact in level under no drift up to the
    normal approximation.
    """
    x, y = _matrix(x, "x", 4), _matrix(y, "y", 4)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} dimensions, y {y.shape[1]}")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
    rng = _rng(seed, 11)
    z = np.vstack([x, y])
    label = np.r_[np.zeros(len(x)), np.ones(len(y))]
    train = np.zeros(len(z), dtype=bool)
    for cls in (0, 1):
        rows = rng.permutation(np.flatnonzero(label == cls))
        train[rows[: len(rows) // 2]] = True
    if classifier == "logistic":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500))
    else:
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=15, early_stopping=False,
                                               random_state=int(rng.integers(2**31 - 1)))
    model.fit(z[train], label[train])
    score = model.predict_proba(z[~train])[:, 1]
    held = label[~train]
    cur, ref = score[held == 1], score[held == 0]
    test = stats.mannwhitneyu(cur, ref, alternative="greater", method="asymptotic")
    auc = float(test.statistic) / (len(cur) * len(ref))
    return auc, float(test.pvalue)


# ------------------------------------------------------------------------------------------------ the old rule
def ks_fraction_rule(reference, current, alpha: float = 0.05, fraction: float = 0.15) -> DriftResult:
    """The rule to retire: a two-sample KS test per embedding dimension at ``alpha`` (no correction), "drift" when
    more than ``fraction`` of the dimensions reject. ``statistic`` = the share of dimensions that reject;
    ``details["p_values"]`` = the per-dimension p-values. It has no p-value of its own and no controlled
    false-alarm rate."""
    x, y = _matrix(reference, "reference"), _matrix(current, "current")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference has {x.shape[1]} dimensions, current {y.shape[1]}")
    p = np.atleast_1d(stats.ks_2samp(x, y, axis=0, method="asymp").pvalue)
    share = float(np.mean(p < alpha))
    return DriftResult(drift=share > fraction, p_value=None, statistic=share, method="ks_fraction",
                       window_size=len(y), alpha=float(alpha),
                       details={"fraction": float(fraction), "n_dimensions": int(x.shape[1]),
                                "n_reference_used": len(x), "n_current_used": len(y),
                                "p_values": p.tolist()})


# ------------------------------------------------------------------------------------------------ the detector
class DriftDetector:
    """Drift of current events against a reference, on embeddings (and raw fields), scikit-learn style.

    Parameters
    ----------
    method: ``"mmd"`` (default), ``"classifier"`` or ``"ks_fraction"`` (the old rule, for comparison).
    alpha: the false-alarm rate of the embedding test, and the level of the per-field adjusted p-values.
    n_permutations: permutations of the MMD test (the p-value's resolution is ``1 / (1 + n_permutations)``).
    max_samples: the current window is subsampled (seeded) to at most this many embeddings: the test's sensitivity
        is that of a window of this size, however large the window.
    max_reference: the reference is subsampled (seeded, once, at ``fit``) to at most this many (default
        ``4 * max_samples``). Keep it several times ``max_samples``: against one fixed reference sample, the
        false-alarm rate over many windows is ``alpha`` only on average over reference samples; it is close to
        ``alpha`` for *this* reference when the reference is much larger than the windows (its own sampling noise
        then matters little).
    seed: every random choice (subsamples, permutations, the classifier's split) derives from it.
    correction: ``"bh"`` (Benjamini-Hochberg, default) or ``"bonferroni"`` for the per-field p-values.
    field_kinds: ``{column: "numeric" | "categorical" | "timestamp"}`` for the per-field tests (default: inferred
        from the reference fields' dtypes; :func:`obsad.monitor.fields.field_kinds_from_encoder` for a model's columns).
    classifier: ``"logistic"`` or ``"boosting"`` (``method="classifier"``).
    fraction: the share of dimensions of ``ks_fraction``.
    whiten: whiten the pooled embeddings before the MMD's kernel (see :func:`mmd_test`).

    ``fit(reference_embeddings, reference_fields=None)``, then ``test(current_embeddings, current_fields=None)``.
    """

    def __init__(self, method: str = "mmd", alpha: float = 0.05, n_permutations: int = 500,
                 max_samples: int = 1000, max_reference: int | None = None, seed: int = 0, correction: str = "bh",
                 field_kinds: Mapping[str, str] | None = None, classifier: str = "logistic",
                 fraction: float = 0.15, whiten: bool = True):
        self.method = method
        self.alpha = alpha
        self.n_permutations = n_permutations
        self.max_samples = max_samples
        self.max_reference = max_reference
        self.seed = seed
        self.correction = correction
        self.field_kinds = field_kinds
        self.classifier = classifier
        self.fraction = fraction
        self.whiten = whiten

    def _check_params(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < float(self.alpha) < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if int(self.n_permutations) < 1:
            raise ValueError(f"n_permutations must be >= 1, got {self.n_permutations!r}")
        for name in ("max_samples", "max_reference"):
            value = getattr(self, name)
            if value is not None and int(value) < 4:
                raise ValueError(f"{name} must be >= 4, got {value!r}")
        if int(self.seed) < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed!r}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {self.correction!r}")
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {self.classifier!r}")

    @property
    def reference_cap(self) -> int:
        """The most reference embeddings a test uses: ``max_reference``, default ``4 * max_samples``."""
        return int(self.max_reference) if self.max_reference is not None else 4 * int(self.max_samples)

    def reference_rows(self, n: int) -> np.ndarray:
        """The rows of a reference of ``n`` events that :meth:`fit` keeps (embed only those)."""
        return _subsample(int(n), self.reference_cap, _rng(self.seed, 1))

    def current_rows(self, n: int, seed: int | None = None) -> np.ndarray:
        """The rows of a window of ``n`` events that :meth:`test` uses (embed only those, and pass
        ``window_size=n``)."""
        return _subsample(int(n), int(self.max_samples), _rng(int(self.seed if seed is None else seed), 2))

    def fit(self, reference_embeddings, reference_fields: pd.DataFrame | None = None) -> "DriftDetector":
        """Keep a seeded subsample of at most ``max_reference`` reference embeddings and, when given, the raw
        reference events for the per-field tests (every row: they are cheap to test)."""
        self._check_params()
        ref = _matrix(reference_embeddings, "reference_embeddings", 4)
        rows = _subsample(len(ref), self.reference_cap, _rng(self.seed, 1))
        self.reference_ = np.ascontiguousarray(ref[rows])
        self.n_reference_ = len(ref)
        self.reference_fields_ = None
        self.field_kinds_ = None
        if reference_fields is not None:
            if not isinstance(reference_fields, pd.DataFrame):
                raise TypeError(f"reference_fields must be a DataFrame of raw events, got "
                                f"{type(reference_fields).__name__}")
            self.reference_fields_ = reference_fields
            kinds = infer_field_kinds(reference_fields) if self.field_kinds is None else dict(self.field_kinds)
            self.field_kinds_ = kinds
        return self

    def test(self, current_embeddings, current_fields: pd.DataFrame | None = None, *,
             seed: int | None = None, window_size: int | None = None) -> DriftResult:
        """Test a window: ``current_embeddings`` ``[n, d]`` (subsampled to ``max_samples``) and, when the
        detector was fitted with reference fields, the window's raw events ``current_fields`` (every row) for the
        per-field table. ``seed`` overrides the detector's for this window (the same window and seed, the same
        answer). ``window_size``: the number of events in the window when ``current_embeddings`` holds only the
        :meth:`current_rows` of it."""
        if not hasattr(self, "reference_"):
            raise RuntimeError("DriftDetector is not fitted: call fit(reference_embeddings) first")
        self._check_params()
        seed = int(self.seed if seed is None else seed)
        cur = _matrix(current_embeddings, "current_embeddings", 4)
        if cur.shape[1] != self.reference_.shape[1]:
            raise ValueError(f"current embeddings have {cur.shape[1]} dimensions, the reference "
                             f"{self.reference_.shape[1]}")
        used = cur[self.current_rows(len(cur), seed)]
        ref = self.reference_
        details = {"n_reference": int(self.n_reference_), "n_reference_used": len(ref), "n_current_used": len(used)}
        if self.method == "mmd":
            statistic, p, bandwidth = mmd_test(ref, used, n_permutations=int(self.n_permutations), seed=seed,
                                               whiten=bool(self.whiten))
            details.update(bandwidth=bandwidth, n_permutations=int(self.n_permutations), estimator="unbiased MMD^2",
                           kernel="gaussian, median heuristic bandwidth on the pooled sample",
                           whitened=bool(self.whiten))
            drift = p <= self.alpha
        elif self.method == "classifier":
            statistic, p = classifier_test(ref, used, seed=seed, classifier=self.classifier)
            details.update(classifier=self.classifier, null="Mann-Whitney U on held-out scores (one-sided)")
            drift = p <= self.alpha
        else:
            old = ks_fraction_rule(ref, used, alpha=float(self.alpha), fraction=float(self.fraction))
            statistic, p, drift = old.statistic, None, old.drift
            details.update({k: v for k, v in old.details.items() if k != "p_values"})
        fields: list[dict] = []
        if current_fields is not None:
            if self.reference_fields_ is None:
                raise ValueError("current_fields given, but the detector was fitted without reference_fields")
            if not isinstance(current_fields, pd.DataFrame):
                raise TypeError(f"current_fields must be a DataFrame of raw events, got "
                                f"{type(current_fields).__name__}")
            table = field_tests(self.reference_fields_, current_fields, self.field_kinds_,
                                correction=self.correction)
            fields = json_safe(table.to_dict(orient="records"))
        return DriftResult(drift=bool(drift), p_value=None if p is None else float(p), statistic=float(statistic),
                           method=self.method, window_size=int(len(cur) if window_size is None else window_size),
                           fields=fields, alpha=float(self.alpha),
                           correction=self.correction, details=details)


# ------------------------------------------------------------------------------------------------ measurement
def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) ``level`` confidence interval of a binomial proportion ``k / n``."""
    a = (1.0 - level) / 2.0
    low = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1.0 - a, k + 1, n - k))
    return low, high


Pool = np.ndarray | tuple[np.ndarray, pd.DataFrame]


def power_curve(detector: DriftDetector, pools: Mapping[str, Pool], window_sizes, *, n_windows: int = 100,
                seed: int = 0, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Alarm rate of a fitted ``detector`` per kind of drift and window size.

    ``pools``: ``{name: embeddings}`` (or ``(embeddings, raw events)``, row for row, to time the per-field tests
    too), each a pool of events of one kind (no drift, a shifted field, ...) disjoint from the reference. For every
    pool and window size, ``n_windows`` windows are drawn without replacement from the pool (seeded) and tested,
    each with its own seed. Name the pool without drift ``"no drift"``: its rate is the false-alarm rate.

    Returns one row per (drift, window_size): ``drift``, ``window_size``, ``n_windows``, ``alarms``, ``rate``,
    ``ci_low``, ``ci_high`` (95 % Clopper-Pearson), ``method``, ``alpha``.
    """
    if not hasattr(detector, "reference_"):
        raise RuntimeError("fit the detector on the reference first")
    rows = []
    for p_i, (name, pool) in enumerate(pools.items()):
        emb, raw = (pool if isinstance(pool, tuple) else (pool, None))
        emb = np.asarray(emb)
        for size in window_sizes:
            size = int(size)
            if size > len(emb):
                raise ValueError(f"pool {name!r} has {len(emb)} events, fewer than a window of {size}")
            rng = np.random.default_rng([int(seed), p_i, size])
            alarms = 0
            for w in range(int(n_windows)):
                take = rng.choice(len(emb), size=size, replace=False)
                fields = raw.iloc[take] if raw is not None else None
                result = detector.test(emb[take], fields, seed=int(rng.integers(2**31 - 1)))
                alarms += bool(result.drift)
            low, high = clopper_pearson(alarms, int(n_windows))
            rows.append({"drift": name, "window_size": size, "n_windows": int(n_windows), "alarms": alarms,
                         "rate": alarms / int(n_windows), "ci_low": low, "ci_high": high,
                         "method": detector.method, "alpha": float(detector.alpha)})
            if progress is not None:
                progress(f"{name}, window {size}: {alarms}/{n_windows}")
    return pd.DataFrame(rows)
