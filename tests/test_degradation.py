"""The degradation experiment of Part 1: deterministic, correctly shaped, and showing what the chapter claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from obsad.experiments import (
    DeepMLP,
    ResidualBlock,
    deterministic_cpu,
    gradient_correlation,
    gradient_norms,
    load_digits_split,
    run_experiment,
    train,
)
from obsad.runtime import seed_everything


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


def _model(depth: int, residual: bool, seed: int = 0) -> DeepMLP:
    seed_everything(seed)
    return DeepMLP(64, 10, depth, width=32, residual=residual)


def test_digits_split_is_standardised_on_the_training_part(digits):
    X, y, X_test, y_test = digits
    assert X.dtype == torch.float32 and y.dtype == torch.long
    assert X.shape[1] == X_test.shape[1] == 64 and len(X) + len(X_test) == 1797
    assert set(y.tolist()) == set(range(10))
    assert torch.allclose(X.mean(dim=0), torch.zeros(64), atol=1e-5)


@pytest.mark.parametrize("residual", [False, True])
def test_shapes_and_layer_count(digits, residual):
    X, y, _, _ = digits
    model = _model(10, residual)
    assert model(X[:7]).shape == (7, 10)
    assert len(model.linear_layers()) == 10
    assert model.name == f"{'residual' if residual else 'plain'}-10"
    norms = gradient_norms(model, X[:64], y[:64])
    assert norms.shape == (10,) and np.all(np.isfinite(norms)) and np.all(norms > 0)
    assert all(p.grad is None for p in model.parameters())  # measuring gradients leaves no trace


def test_plain_and_residual_have_the_same_parameters():
    plain, residual = _model(12, False), _model(12, True)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in residual.parameters())


def test_invalid_depths_are_refused():
    with pytest.raises(ValueError):
        DeepMLP(64, 10, depth=1)
    with pytest.raises(ValueError):
        DeepMLP(64, 10, depth=9, residual=True)


def test_a_residual_block_with_a_silent_branch_is_the_identity():
    seed_everything(0)
    block = ResidualBlock(16)
    x = torch.randn(5, 16)
    assert not torch.equal(block(x), x)
    with torch.no_grad():
        block.linear2.weight.zero_()
        block.linear2.bias.zero_()
    assert torch.equal(block(x), x)


def test_same_seed_same_curve_other_seed_other_curve(digits):
    X, y, X_test, y_test = digits

    def curve(seed):
        with deterministic_cpu():
            return train(_model(8, False, seed), X, y, epochs=3, lr=0.03, batch_size=128, X_test=X_test,
                         y_test=y_test, seed=seed)

    first, again, other = curve(0), curve(0), curve(1)
    assert list(first.columns) == ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
    assert len(first) == 4 and first["epoch"].tolist() == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    assert not np.allclose(first["train_loss"], other["train_loss"])
    assert first["train_loss"].iloc[-1] < first["train_loss"].iloc[0]


def test_deterministic_cpu_restores_the_settings():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with deterministic_cpu():
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_at_initialisation_the_plain_first_layer_gets_far_less_gradient(digits, seed):
    X, y, _, _ = digits
    seed_everything(seed)
    plain = DeepMLP(64, 10, 32, width=64, residual=False)
    seed_everything(seed)
    residual = DeepMLP(64, 10, 32, width=64, residual=True)
    g_plain, g_residual = gradient_norms(plain, X, y), gradient_norms(residual, X, y)
    assert g_plain[0] < g_residual[0] / 2
    assert g_plain[0] < g_plain[-1] / 4  # and it shrinks from the head towards the input


def test_gradients_of_a_deep_plain_network_shatter(digits):
    X, y, _, _ = digits
    scales = [0.1]
    shallow = gradient_correlation(_model(2, False), X[:256], y[:256], scales)
    plain = gradient_correlation(_model(32, False), X[:256], y[:256], scales)
    residual = gradient_correlation(_model(32, True), X[:256], y[:256], scales)
    assert plain[0] < residual[0] - 0.2 and residual[0] < shallow[0]


def test_small_experiment_deep_residual_trains_better_than_deep_plain():
    result = run_experiment(plain_depths=(16,), residual_depths=(16,), lrs=(0.03,), epochs=4, extra_seeds=(),
                            scales=(0.1,))
    grid = result.grid()
    assert list(grid.index) == ["plain-16", "residual-16"]
    assert grid.loc["residual-16", 0.03] < 0.5 * grid.loc["plain-16", 0.03]
    assert set(result.gradients["stage"]) == {"init", "trained"}
    assert len(result.gradients) == 2 * 2 * 16
    assert result.best().loc["residual-16", "seeds"] == 1
