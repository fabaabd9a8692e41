"""Time-ordered splits: train on the past, validate and test on the future.

Events are not exchangeable: a random split puts minutes of the same incident, and the same entity's
habits, on both sides and flatters every detector. Splitting by time is what deployment looks like.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def time_split(times: pd.Series, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> pd.Series:
    """Label each event ``train``/``val``/``test`` by time so that each split holds ``fractions`` of events.

    Boundaries are instants (quantiles of ``times``): every train event happens before every validation
    event, and every validation event before every test event. Events with no time go to ``train``
    only if the caller says so; here they are refused, because their place in time is unknown.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    t = pd.Series(times)
    if t.isna().any():
        raise ValueError(f"{int(t.isna().sum())} events have no time; drop or fix them before splitting")
    values = t.to_numpy()
    order = np.argsort(values, kind="stable")
    n = len(values)
    cut1 = int(round(fractions[0] * n))
    cut2 = int(round((fractions[0] + fractions[1]) * n))
    # Move each cut to the first event of its instant, so equal timestamps never straddle two splits.
    sorted_t = values[order]
    cut1 = int(np.searchsorted(sorted_t, sorted_t[min(cut1, n - 1)], side="left")) if n else 0
    cut2 = int(np.searchsorted(sorted_t, sorted_t[min(cut2, n - 1)], side="left")) if n else 0
    labels = np.empty(n, dtype=object)
    labels[order[:cut1]] = SPLITS[0]
    labels[order[cut1:cut2]] = SPLITS[1]
    labels[order[cut2:]] = SPLITS[2]
    return pd.Series(pd.Categorical(labels, categories=list(SPLITS)), index=t.index, name="split")
