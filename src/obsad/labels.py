"""Analyst labels for anyone's events: a label file read, checked and aligned with the events it names.

A label file is Parquet or CSV with a ``label`` column (a class name; ordinary events carry the normal label,
``normal`` by default) and one way to find the event: ``row`` (the 0-based position of the event in the events
file) or a column named like a field of the events (``id_column``, e.g. ``metadata.uid``). Every problem is
refused with one message that says which labels and why, before anything is trained: a model trained on half
of a label file is worse than no model, because nobody knows it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["LabelError", "read_labels"]

ROW_COLUMN = "row"
LABEL_COLUMN = "label"


class LabelError(ValueError):
    """A label file that cannot be used as it is; the message says what to fix."""


def _examples(values, n: int = 5) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f" and {len(values) - n} more" if len(values) > n else "")


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise LabelError(f"{path}: no such label file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:  # pyarrow and the CSV parser raise many types for unreadable files
        raise LabelError(f"{path}: not a readable {suffix[1:]} file ({type(exc).__name__}: {exc})") from exc
    raise LabelError(f"{path}: a label file must be .parquet or .csv, got {suffix or 'no suffix'!r}")


def read_labels(path: str | os.PathLike, events: pd.DataFrame, *, id_column: str | None = None,
                n_input: int | None = None) -> pd.Series:
    """One entry per event (same order and index as ``events``): the class name, or ``None`` where unlabelled.

    ``id_column``: match the file's column of that name with the events' field of that name; otherwise the
    file's ``row`` column gives positions in the events file. ``n_input``: how many events the file held
    (``LoadReport.n_input``); when some could not be loaded, positions no longer match and ``row`` is refused.
    Raises :class:`LabelError` on any problem.
    """
    path = Path(path)
    table = _read(path)
    if LABEL_COLUMN not in table.columns:
        raise LabelError(f"{path}: no {LABEL_COLUMN!r} column (columns: {_examples(table.columns, 10)})")
    if table.empty:
        raise LabelError(f"{path}: no labels in the file")
    names = table[LABEL_COLUMN]
    blank = names.isna() | (names.astype(str).str.strip() == "")
    if blank.any():
        raise LabelError(f"{path}: {int(blank.sum())} label(s) are empty (file rows "
                         f"{_examples(np.flatnonzero(blank.to_numpy()))}); give every listed event a class name")
    names = names.astype(str).str.strip().to_numpy(dtype=object)
    if id_column is not None:
        positions = _positions_by_id(path, table, events, id_column)
    else:
        if ROW_COLUMN not in table.columns:
            raise LabelError(f"{path}: no {ROW_COLUMN!r} column to find the events by position; add one "
                             f"(0-based position in the events file) or name an id column (--id-column)")
        if n_input is not None and n_input != len(events):
            raise LabelError(f"{path}: {n_input - len(events):,} event(s) of the events file could not be loaded, "
                             f"so positions in it no longer match; find the events by an id column instead "
                             f"(--id-column)")
        positions = _positions_by_row(path, table[ROW_COLUMN], len(events))
    out = np.full(len(events), None, dtype=object)
    frame = pd.DataFrame({"position": positions, "label": names})
    conflicts = frame.groupby("position")["label"].nunique()
    conflicts = conflicts[conflicts > 1]
    if len(conflicts):
        raise LabelError(f"{path}: {len(conflicts)} event(s) have conflicting labels (event positions "
                         f"{_examples(conflicts.index.tolist())}); keep one label per event")
    out[frame["position"].to_numpy()] = frame["label"].to_numpy()
    return pd.Series(out, index=events.index, name=LABEL_COLUMN, dtype=object)


def _positions_by_row(path: Path, rows: pd.Series, n_events: int) -> np.ndarray:
    numbers = pd.to_numeric(rows, errors="coerce")
    whole = numbers.notna() & (numbers == np.floor(numbers.fillna(0)))
    if not whole.all():
        bad = rows[~whole.to_numpy()].tolist()
        raise LabelError(f"{path}: {len(bad)} value(s) of {ROW_COLUMN!r} are not whole numbers: {_examples(bad)}")
    positions = numbers.to_numpy(dtype=np.int64)
    outside = (positions < 0) | (positions >= n_events)
    if outside.any():
        raise LabelError(f"{path}: {int(outside.sum())} {ROW_COLUMN!r} value(s) match no event (the events file "
                         f"has rows 0 to {n_events - 1}): {_examples(positions[outside].tolist())}")
    return positions


def _positions_by_id(path: Path, table: pd.DataFrame, events: pd.DataFrame, id_column: str) -> np.ndarray:
    if id_column not in table.columns:
        raise LabelError(f"{path}: no {id_column!r} column (the id column named); columns: "
                         f"{_examples(table.columns, 10)}")
    if id_column not in events.columns:
        raise LabelError(f"the events have no field {id_column!r} to match the labels' ids with")
    keys = events[id_column].astype("string").to_numpy(dtype=object, na_value=None)
    wanted = table[id_column].astype("string").to_numpy(dtype=object, na_value=None)
    index = pd.Index(keys)
    if not index.is_unique:
        counts = pd.Series(keys).value_counts()
        shared = set(counts[counts > 1].index) & set(wanted)
        if shared:
            raise LabelError(f"{path}: {len(shared)} id(s) match several events each, so a label would apply to "
                             f"all of them: {_examples(sorted(map(str, shared)))}; use a unique id or 'row'")
        index = pd.Index(pd.Series(keys).drop_duplicates(keep=False))
        position = pd.Series(np.arange(len(keys)))[~pd.Series(keys).duplicated(keep=False)].to_numpy()
    else:
        position = np.arange(len(keys))
    found = index.get_indexer(pd.Index(wanted))
    missing = found < 0
    if missing.any():
        raise LabelError(f"{path}: {int(missing.sum())} id(s) in {id_column!r} match no event: "
                         f"{_examples([w for w, m in zip(wanted, missing) if m])}")
    return position[found]
