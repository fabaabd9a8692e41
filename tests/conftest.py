"""Shared test fixtures."""

import pytest


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread is fastest and is not slowed down by other processes on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
