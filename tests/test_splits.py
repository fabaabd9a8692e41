import numpy as np
import pandas as pd
import pytest

from obsad.splits import time_split


def test_splits_are_ordered_in_time_and_sized_by_fraction():
    rng = np.random.default_rng(0)
    times = pd.Series(pd.to_datetime(rng.integers(0, 10**9, 10_000), unit="ms", utc=True))
    split = time_split(times)
    assert split.value_counts()[["train", "val", "test"]].tolist() == pytest.approx([7000, 1500, 1500], abs=5)
    assert times[split == "train"].max() < times[split == "val"].min()
    assert times[split == "val"].max() < times[split == "test"].min()


def test_equal_timestamps_never_straddle_a_boundary():
    times = pd.Series(np.repeat(np.arange(10), 100))
    split = time_split(times)
    assert (split.groupby(times, observed=True).nunique() == 1).all()


def test_bad_fractions_and_missing_times_are_refused():
    with pytest.raises(ValueError, match="summing to 1"):
        time_split(pd.Series([1, 2, 3]), (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="no time"):
        time_split(pd.Series([1.0, None, 3.0]))
