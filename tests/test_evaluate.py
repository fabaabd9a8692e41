import numpy as np
import pytest

from obsad.evaluate import alignment, effective_rank, uniformity


def test_effective_rank_counts_used_directions():
    rng = np.random.default_rng(0)
    full = rng.normal(size=(2000, 16))
    thin = full[:, :2] @ rng.normal(size=(2, 16))  # rank 2 embedded in 16 dimensions
    assert effective_rank(full) > 14
    assert effective_rank(thin) < 2.5
    assert effective_rank(np.ones((10, 4))) == 0.0


def test_alignment_and_uniformity_separate_collapse_from_spread():
    rng = np.random.default_rng(1)
    spread = rng.normal(size=(500, 8))
    collapsed = np.tile(rng.normal(size=(1, 8)), (500, 1)) + 1e-3 * rng.normal(size=(500, 8))
    assert alignment(spread, spread) == pytest.approx(0.0, abs=1e-6)
    assert alignment(spread, spread[::-1]) > 1.0
    assert uniformity(spread) < uniformity(collapsed) - 1.0
    assert uniformity(collapsed) == pytest.approx(0.0, abs=1e-3)
