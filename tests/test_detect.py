import faiss
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from obsad.detect import (
    BestSingleField,
    FrequencyEncoder,
    IsolationForestDetector,
    KNNDetector,
    LOFDetector,
    RankEnsemble,
    encoded_matrix,
)
from obsad.detect.neighbors import OWN_PROBES_MIN, nearest_lists
from obsad.features.encoder import EncodedFeatures

D = 8
CENTERS = np.random.default_rng(42).normal(0.0, 6.0, size=(3, D))


def _inliers(n, seed):
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(CENTERS), n)
    return (CENTERS[which] + rng.normal(size=(n, D))).astype(np.float32)


def _outliers(n, seed, scale=15.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, D)) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    train = _inliers(5000, 0)
    test = np.vstack([_inliers(1000, 1), _outliers(30, 2)])
    y = np.r_[np.zeros(1000), np.ones(30)]
    fresh = _inliers(40_000, 3)
    return train, test, y, fresh


def _detectors():
    return {
        "knn_cosine": KNNDetector(k=10, metric="cosine"),
        "knn_l2": KNNDetector(k=10, metric="l2"),
        "knn_ivf": KNNDetector(k=10, metric="l2", exact_max=1000),
        "lof": LOFDetector(k=20),
        "iforest": IsolationForestDetector(n_estimators=100, seed=0),
    }


@pytest.fixture(scope="module")
def fitted(data):
    train = data[0]
    return {name: det.fit(train) for name, det in _detectors().items()}


@pytest.mark.parametrize("name", list(_detectors()))
def test_every_detector_ranks_outliers_above_inliers(fitted, data, name):
    _, test, y, _ = data
    scores = fitted[name].score_samples(test)
    assert scores.dtype == np.float64 and scores.shape == (len(test),)
    assert roc_auc_score(y, scores) > 0.95
    det = fitted[name]
    np.testing.assert_allclose(det.decision_function(test), scores - det.threshold_)
    np.testing.assert_array_equal(det.predict(test), scores > det.threshold_)


@pytest.mark.parametrize("name", list(_detectors()))
def test_threshold_flags_about_half_a_percent_of_fresh_normal_data(fitted, data, name):
    fresh = data[3]
    rate = fitted[name].predict(fresh).mean()
    assert 0.0025 <= rate <= 0.0085, rate


def test_percentile_of_maps_scores_among_training_scores(fitted):
    det = fitted["knn_l2"]
    p = det.percentile_of([det.train_scores_[0] - 1.0, det.threshold_, det.train_scores_[-1] + 1.0])
    assert p[0] == 0.0 and p[2] == 100.0
    assert p[1] == pytest.approx(99.5, abs=0.1)


def test_knn_exact_and_ivf_agree(fitted, data):
    _, test, y, _ = data
    exact, ivf = fitted["knn_l2"], fitted["knn_ivf"]
    assert ivf.n_lists_ is not None and exact.n_lists_ is None
    s_exact, s_ivf = exact.score_samples(test), ivf.score_samples(test)
    assert abs(roc_auc_score(y, s_exact) - roc_auc_score(y, s_ivf)) < 0.02
    assert np.corrcoef(s_exact, s_ivf)[0, 1] > 0.98


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("n_probe", [1, 3, 12])
def test_ivf_search_with_our_own_coarse_step_finds_what_faiss_finds(metric, n_probe):
    # from OWN_PROBES_MIN queries on, the lists to scan are chosen by nearest_lists, not by FAISS' quantizer
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 16)).astype(np.float32)
    det = KNNDetector(k=7, metric=metric, exact_max=500, n_probe=n_probe).fit(X)
    assert det.n_lists_ is not None and det.index_.nprobe == n_probe
    queries = det._prepare(rng.normal(size=(OWN_PROBES_MIN + 40, 16)).astype(np.float32))
    near, lists = nearest_lists(queries, det._centroids(), n_probe, metric)
    faiss_near, faiss_lists = faiss.downcast_index(det.index_.quantizer).search(queries, n_probe)
    np.testing.assert_array_equal(lists, faiss_lists)
    np.testing.assert_allclose(near, faiss_near, rtol=1e-4, atol=1e-4)
    raw, idx = det.index_.search(queries, det.k)
    dist, ours = det._search(queries, det.k)
    np.testing.assert_array_equal(ours, idx)
    np.testing.assert_allclose(dist, det._to_distance(raw, idx), rtol=1e-6)
    # a single query takes FAISS' own path, and finds the same as in a batch
    one, one_idx = det._search(queries[:1], det.k)
    np.testing.assert_array_equal(one_idx[0], ours[0])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_knn_training_scores_exclude_the_self_match(metric):
    X = _inliers(400, 7)
    det = KNNDetector(k=5, metric=metric).fit(X)
    for i in (0, 17, 399):
        rest = KNNDetector(k=5, metric=metric).fit(np.delete(X, i, axis=0))
        expected = rest.score_samples(X[i : i + 1])[0]
        assert det.training_scores_[i] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # in-sample scoring would include the zero distance to itself
    assert (det.training_scores_ > det.score_samples(X)).all()


def test_knn_duplicate_point_is_scored_against_its_twin_not_itself():
    X = np.vstack([_inliers(300, 8), _inliers(1, 9), _inliers(1, 9)])
    det = KNNDetector(k=1, metric="l2").fit(X)
    assert det.training_scores_[-1] == pytest.approx(0.0, abs=1e-6)
    assert det.training_scores_[0] > 0.0  # unique point: distance to its true nearest other point


def test_knn_kneighbors_returns_training_rows_and_reference_sampling(data):
    train = data[0]
    det = KNNDetector(k=3, metric="l2", reference_max=1000, seed=1).fit(train)
    assert len(det.training_scores_) == len(train) and det.index_.ntotal == 1000
    rows = det.reference_rows_[:5]
    dist, idx = det.kneighbors(train[rows], k=2)
    np.testing.assert_array_equal(idx[:, 0], rows)
    assert np.allclose(dist[:, 0], 0.0, atol=1e-3) and (np.diff(dist, axis=1) >= 0).all()


@pytest.mark.parametrize(
    "det", [KNNDetector(), LOFDetector(), IsolationForestDetector(), BestSingleField(), RankEnsemble([KNNDetector()])]
)
def test_not_fitted_raises(det):
    with pytest.raises(NotFittedError):
        det.score_samples(np.zeros((2, D), dtype=np.float32))
    with pytest.raises(NotFittedError):
        det.predict(np.zeros((2, D), dtype=np.float32))


def test_frequency_encoder_uses_training_counts_and_maps_unseen_to_zero():
    train = np.array([[2, 0], [2, 3], [3, 3], [2, 3]])
    enc = FrequencyEncoder().fit(train)
    out = enc.transform(np.array([[2, 3], [3, 0], [9, 5], [4, 2]]))
    expected = np.log1p([[3, 3], [1, 1], [0, 0], [0, 0]])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    with pytest.raises(NotFittedError):
        FrequencyEncoder().transform(train)


def _features(numeric, categorical):
    return EncodedFeatures(
        numeric=np.asarray(numeric, dtype=np.float32),
        categorical=np.asarray(categorical, dtype=np.int64),
        numeric_names=[f"n{i}" for i in range(np.shape(numeric)[1])],
        categorical_names=[f"c{i}" for i in range(np.shape(categorical)[1])],
        cardinalities=[10] * np.shape(categorical)[1],
        sources={},
    )


def test_encoded_matrix_is_numeric_then_training_frequencies():
    train = _features([[0.5], [1.5], [2.5]], [[2], [2], [4]])
    test = _features([[9.0]], [[7]])
    enc = FrequencyEncoder().fit(train)
    m_train = encoded_matrix(train)
    np.testing.assert_allclose(m_train, [[0.5, np.log1p(2)], [1.5, np.log1p(2)], [2.5, np.log1p(1)]], rtol=1e-6)
    m_test = encoded_matrix(test, enc)
    assert m_test.dtype == np.float32 and m_test.tolist() == [[9.0, 0.0]]


def test_best_single_field_picks_the_informative_column_and_direction():
    rng = np.random.default_rng(0)
    n = 2000
    y = np.zeros(n, dtype=bool)
    y[:40] = True
    X = rng.normal(size=(n, 4))
    X[y, 2] -= 4.0  # anomalies are LOW in column 2
    X[y, 0] += 0.3  # weakly high in column 0
    det = BestSingleField().fit(X, y)
    assert det.column_ == 2 and det.direction_ == "low" and det.auroc_ > 0.95
    np.testing.assert_allclose(det.score_samples(X), -X[:, 2])
    forced = BestSingleField(direction="high").fit(X, y)
    assert forced.direction_ == "high" and forced.column_ == 0
    with pytest.raises(ValueError, match="labels"):
        BestSingleField().fit(X)


def test_rank_ensemble_scores_are_ranks_and_match_its_worst_member(data):
    train, _, _, fresh = data
    rng = np.random.default_rng(11)
    test = np.vstack([_inliers(1000, 12), _outliers(30, 13, scale=7.0)])
    y = np.r_[np.zeros(1000), np.ones(30)]
    # one member sees all features, one sees only noise columns (a weak view): scales differ a lot
    noise_train = rng.normal(size=(len(train), 3)).astype(np.float32) * 1000
    noise_test = rng.normal(size=(len(test), 3)).astype(np.float32) * 1000
    members = [KNNDetector(k=10, metric="l2"), IsolationForestDetector(n_estimators=50), LOFDetector(k=20)]
    ens = RankEnsemble(members).fit([train, noise_train, train])
    scores = ens.score_samples([test, noise_test, test])
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    member_auc = [roc_auc_score(y, m.score_samples(x)) for m, x in zip(members, [test, noise_test, test])]
    assert roc_auc_score(y, scores) >= min(member_auc)
    assert roc_auc_score(y, scores) > 0.9
    ranks = ens.member_ranks([test, noise_test, test])
    np.testing.assert_allclose(ranks.mean(axis=1), scores)
    fresh_noise = rng.normal(size=(len(fresh), 3)).astype(np.float32) * 1000
    rate = ens.predict([fresh, fresh_noise, fresh]).mean()
    assert 0.0025 <= rate <= 0.0085, rate


def test_knn_rebuilt_from_reference_scores_like_the_fitted_one():
    from obsad.detect import KNNDetector

    rng = np.random.default_rng(3)
    train = rng.normal(size=(400, 8)).astype(np.float32)
    test = rng.normal(size=(50, 8)).astype(np.float32)
    fitted = KNNDetector(k=5, metric="cosine").fit(train)
    rebuilt = KNNDetector.from_reference(train, fitted.train_scores_, fitted.threshold_, k=5, metric="cosine")
    np.testing.assert_allclose(rebuilt.score_samples(test), fitted.score_samples(test), rtol=1e-6)
    assert rebuilt.threshold_ == fitted.threshold_
    np.testing.assert_array_equal(rebuilt.predict(test), fitted.predict(test))
    with pytest.raises(ValueError, match="more than k"):
        KNNDetector.from_reference(train[:3], fitted.train_scores_, 0.1, k=5)



@pytest.mark.parametrize("width", [1, 2, 4, 8, 9])
def test_row_max_is_the_max_over_columns_nan_and_infinities_included(width):
    from obsad.detect.base import row_max

    rng = np.random.default_rng(width)
    values = rng.standard_normal((500, width))
    values[rng.random(values.shape) < 0.05] = -np.inf
    values[rng.random(values.shape) < 0.02] = np.inf
    values[rng.random(values.shape) < 0.02] = np.nan
    got = row_max(values)
    np.testing.assert_array_equal(got, values.max(axis=1))
    assert got.dtype == values.dtype
    assert row_max(values[:0]).shape == (0,)
    assert not np.shares_memory(got, values)


def test_rows_as_lists_names_each_rows_codes_in_order():
    """Rows of codes (-1 = none) -> their names, for narrow rows (packed into one integer) and rows too wide to
    pack (a 2-d unique): the list a loop over each row gives."""
    from obsad.detect.windows import _rows_as_lists

    rng = np.random.default_rng(2)
    names = [f"field{i}" for i in range(150)]
    for width in (1, 3, 12):
        codes = rng.integers(-1, len(names), size=(500, width))
        codes[rng.random(500) < 0.2] = -1
        got = _rows_as_lists(codes, names)
        assert got.dtype == object and len(got) == 500
        assert list(got) == [[names[c] for c in row if c >= 0] for row in codes]
    assert len(_rows_as_lists(np.empty((0, 3), dtype=np.int64), names)) == 0
