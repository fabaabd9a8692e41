"""Known-answer tests of the neighbourhood measures in obsad.evaluate (Part 5)."""

import numpy as np
import pytest
from scipy.stats import skew

from obsad.evaluate import (
    hubness,
    jitter,
    knn_search,
    label_chance,
    mutual_neighbour_rate,
    neighbour_label_agreement,
    neighbour_overlap,
    percentile_among,
    perturbation_stability,
    relative_displacement,
    swap_one_field,
)

LINE = np.array([[0.0], [1.0], [3.0], [7.0]])  # nearest neighbours: 0->1, 1->0, 3->1, 7->3


def test_knn_search_leaves_self_out_and_orders_by_distance():
    dist, idx = knn_search(LINE, k=2, metric="l2")
    assert idx.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    np.testing.assert_allclose(dist, [[1, 3], [1, 2], [2, 3], [4, 6]])


def test_knn_search_excludes_a_duplicate_tie_and_keeps_k():
    z = np.array([[0.0], [0.0], [0.0], [5.0]])  # three identical points
    _, idx = knn_search(z, k=2, metric="l2")
    assert idx.shape == (4, 2)
    assert all(i not in row for i, row in enumerate(idx[:3].tolist()))
    _, idx = knn_search(z, z[[0]], k=1, metric="l2", exclude=np.array([0]))
    assert idx[0, 0] in (1, 2)


def test_neighbour_overlap_counts_shared_neighbours():
    a = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    b = np.array([[4, 3, 2, 1], [1, 2, 9, 8]])
    assert neighbour_overlap(a, b).tolist() == [1.0, 0.5]
    with pytest.raises(ValueError):
        neighbour_overlap(a, b[:, :3])


def test_stability_is_one_without_perturbation_and_low_under_scrambling():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 8))
    assert perturbation_stability(z, z, k=5).mean() == 1.0
    scrambled = rng.normal(size=z.shape)  # every event replaced by an unrelated one
    assert perturbation_stability(z, scrambled, k=5).mean() < 0.1


def test_relative_displacement_units():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2000, 16))
    assert relative_displacement(z, z).max() == pytest.approx(0.0, abs=1e-6)
    other = z[rng.permutation(len(z))]
    assert relative_displacement(z, other, metric="l2").mean() == pytest.approx(1.0, abs=0.05)
    small = relative_displacement(z, z + 0.01 * rng.normal(size=z.shape), metric="l2").mean()
    assert 0.0 < small < 0.02
    # cosine: length is ignored, and an orthogonal move is sqrt(2) / mean chord of random pairs (~sqrt(2)) ~ 1
    assert relative_displacement(z, 3 * z).max() == pytest.approx(0.0, abs=1e-6)
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(relative_displacement(a, a[::-1]), [1.0, 1.0])


def test_jitter_moves_measures_not_flags():
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.normal(10, 4, size=5000), rng.integers(0, 2, size=5000)]).astype(np.float32)
    y = jitter(x, 0.1, rng=np.random.default_rng(3))
    assert np.array_equal(y[:, 1], x[:, 1])
    assert (y[:, 0] - x[:, 0]).std() == pytest.approx(0.1 * x[:, 0].std(), rel=0.05)
    z = jitter(x, 0.1, rng=np.random.default_rng(3), columns=[1])
    assert np.array_equal(z[:, 0], x[:, 0]) and not np.array_equal(z[:, 1], x[:, 1])


def test_swap_one_field_changes_one_field_from_the_same_group():
    n = 3000
    rng = np.random.default_rng(4)
    groups = rng.integers(0, 3, size=n)
    # field "a": a number and its flag; field "b": a category; field "c": a category. Values encode the group.
    num = np.column_stack([groups * 100 + rng.integers(0, 50, size=n), rng.integers(0, 2, size=n)]).astype(np.float32)
    cat = np.column_stack([groups * 10 + rng.integers(2, 9, size=n), groups * 10 + rng.integers(2, 9, size=n)])
    new_num, new_cat, changed = swap_one_field(num, cat, ["a", "a"], ["b", "c"], rng=np.random.default_rng(5),
                                               groups=groups)
    field_changed = np.column_stack([(new_num != num).any(axis=1), new_cat[:, 0] != cat[:, 0],
                                     new_cat[:, 1] != cat[:, 1]])
    assert (field_changed.sum(axis=1) == changed).all()  # exactly one field per changed event
    assert changed.mean() > 0.99  # no-op draws are redrawn
    assert (new_num[:, 0] // 100 == groups).all() and (new_cat // 10 == groups[:, None]).all()  # same group
    assert set(np.flatnonzero(field_changed.any(axis=0))) == {0, 1, 2}  # every field gets chosen


def test_mutual_neighbours_and_hubness_on_a_line():
    _, idx = knn_search(LINE, k=1, metric="l2")
    assert mutual_neighbour_rate(idx) == 0.5  # 0<->1 mutual; 3->1 and 7->3 not
    counts = np.array([1, 2, 1, 0])  # k-occurrence of each point
    assert hubness(idx, n=4) == pytest.approx(skew(counts))
    star = np.array([[0], [0], [0], [0], [1]])  # everyone points to 0; 0 points to 1
    assert hubness(star, n=5) == pytest.approx(skew(np.bincount(star.ravel(), minlength=5)))
    assert hubness(star, n=5) > 1.0


def test_label_agreement_against_chance():
    labels = np.array(["x", "x", "x", "y", "y", "z"])
    idx = np.array([[1, 2], [0, 3], [3, 4], [4, 5], [3, 0], [0, 1]])
    np.testing.assert_allclose(neighbour_label_agreement(idx, labels), [1, 0.5, 0, 0.5, 0.5, 0])
    np.testing.assert_allclose(label_chance(labels), [0.4, 0.4, 0.4, 0.2, 0.2, 0.0])
    # only rows 3 and 5 searched, against all six
    np.testing.assert_allclose(neighbour_label_agreement(idx[[3, 5]], labels, labels[[3, 5]]), [0.5, 0])
    with pytest.raises(ValueError):
        neighbour_label_agreement(idx[[3, 5]], labels)


def test_percentile_among():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(percentile_among(ref, [0.5, 2.0, 2.5, 9.0]), [0, 50, 50, 100])
    with pytest.raises(ValueError):
        percentile_among([], [1.0])
