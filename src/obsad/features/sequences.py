"""Windows of consecutive events of one entity: the input of the event-sequence encoder.

A brute force, a slow scan or a service that degrades is many events, each ordinary on its own. The sequence
encoder (:class:`obsad.models.EventSequenceEncoder`) reads them together: the events of one entity (a user, an
address, a host) within one time bucket, in time order, at most ``max_len`` of them (a busy entity's hour is cut
into several windows). Windows are cut by time *and* by count, so a window always spans a bounded time and
holds a bounded number of events.

Which columns are entities is read from the feature encoder's roles (addresses and high-cardinality
identifiers), never from column names: :func:`entity_columns`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["EntityWindows", "entity_columns", "entity_windows", "event_max", "window_labels", "window_tokens"]

#: Roles of the columns whose values are entities worth following over time.
ENTITY_ROLES = ("ip", "high_cardinality")


def entity_columns(encoder) -> list[str]:
    """The encoder's entity columns (roles in :data:`ENTITY_ROLES`), in the encoder's order."""
    return [st["column"] for st in encoder.columns_ if st["role"] in ENTITY_ROLES]


@dataclass
class EntityWindows:
    """``index[w, p]``: the row of the ``p``-th event of window ``w`` (``-1`` = padding); ``column[w]`` and
    ``entity[w]``: which column and value the window follows; ``start_ms[w]``: its time bucket's start."""

    index: np.ndarray
    column: np.ndarray
    entity: np.ndarray
    start_ms: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def valid(self) -> np.ndarray:
        return self.index >= 0

    def take(self, windows) -> "EntityWindows":
        return EntityWindows(self.index[windows], self.column[windows], self.entity[windows], self.start_ms[windows])


def entity_windows(events: pd.DataFrame, columns: list[str], times_ms: np.ndarray, *, window: str = "1h",
                   max_len: int = 32) -> EntityWindows:
    """Every window of every entity column: events of one entity value in one time bucket, in time order,
    cut every ``max_len`` events. Events without a time or without a value in a column are in no window of it.

    Vectorised: one sort per column, then group starts and ranks from differences of the sorted keys.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    window_ms = float(pd.Timedelta(window).total_seconds() * 1000.0)
    if window_ms <= 0:
        raise ValueError(f"window must be a positive duration, got {window!r}")
    times_ms = np.asarray(times_ms, dtype=np.float64)
    if len(times_ms) != len(events):
        raise ValueError(f"times_ms must have one entry per event ({len(events)}), got {len(times_ms)}")
    parts = []
    for column in columns:
        if column not in events.columns:
            continue
        codes, uniques = pd.factorize(events[column], use_na_sentinel=True)
        rows = np.flatnonzero((codes >= 0) & ~np.isnan(times_ms))
        if not len(rows):
            continue
        bucket = np.floor(times_ms[rows] / window_ms).astype(np.int64)
        order = np.lexsort((times_ms[rows], bucket, codes[rows]))
        rows, bucket, code = rows[order], bucket[order], codes[rows][order]
        new_group = np.r_[True, (code[1:] != code[:-1]) | (bucket[1:] != bucket[:-1])]
        group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(rows)), 0))
        rank = np.arange(len(rows)) - group_start
        new_window = new_group | (rank % max_len == 0)
        window_id = np.cumsum(new_window) - 1
        n_windows = int(window_id[-1]) + 1
        index = np.full((n_windows, max_len), -1, dtype=np.int64)
        index[window_id, rank % max_len] = rows
        first = np.flatnonzero(new_window)
        parts.append(EntityWindows(index, np.full(n_windows, column, dtype=object),
                                   np.asarray(uniques, dtype=object)[code[first]].astype(str),
                                   bucket[first] * window_ms))
    if not parts:
        return EntityWindows(np.empty((0, max_len), dtype=np.int64), np.empty(0, dtype=object),
                             np.empty(0, dtype=object), np.empty(0))
    return EntityWindows(np.concatenate([p.index for p in parts]), np.concatenate([p.column for p in parts]),
                         np.concatenate([p.entity for p in parts]), np.concatenate([p.start_ms for p in parts]))


def window_tokens(representations: np.ndarray, windows: EntityWindows) -> tuple[np.ndarray, np.ndarray]:
    """Tokens ``[n_windows, max_len, d]`` (each event's representation, zeros at padding) and ``valid``."""
    reps = np.asarray(representations, dtype=np.float32)
    valid = windows.valid
    tokens = reps[np.maximum(windows.index, 0)]
    tokens[~valid] = 0.0
    return tokens, valid


def window_labels(windows: EntityWindows, event_labels: np.ndarray) -> np.ndarray:
    """A class id per window from the labelled events in it (``event_labels``: ``-1`` unlabelled, ``0`` normal,
    ``> 0`` an anomalous class): ``-1`` when none of its events is labelled, else the largest id among them, so
    that one labelled anomaly makes the window anomalous."""
    labels = np.asarray(event_labels, dtype=np.int64)
    per_event = np.where(windows.valid, labels[np.maximum(windows.index, 0)], -1)
    return per_event.max(axis=1) if len(per_event) else np.empty(0, dtype=np.int64)


def event_max(windows: EntityWindows, window_scores: np.ndarray, n_events: int) -> tuple[np.ndarray, np.ndarray]:
    """Each event's highest score over the windows it belongs to (``-inf`` where in none), and that window."""
    scores = np.asarray(window_scores, dtype=np.float64)
    valid = windows.valid
    rows = windows.index[valid]
    owner = np.broadcast_to(np.arange(len(windows))[:, None], windows.index.shape)[valid]
    order = np.lexsort((-scores[owner], rows))  # by event, best window first
    rows, owner = rows[order], owner[order]
    first = np.r_[True, rows[1:] != rows[:-1]]
    best = np.full(n_events, -np.inf)
    which = np.full(n_events, -1, dtype=np.int64)
    best[rows[first]] = scores[owner[first]]
    which[rows[first]] = owner[first]
    return best, which
