"""Investigating flagged events (obsad.monitor.investigate): field ranking, neighbours, surprise, recommendation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from obsad.monitor.investigate import (
    FIELD_TABLE_COLUMNS,
    Investigation,
    InvestigationError,
    Investigator,
    attribution_accuracy,
)
from obsad.ocsf import load_events, simulate
from obsad.pipeline import fit_pipeline
from obsad.splits import time_split


@pytest.fixture(scope="module")
def setup():
    """A small simulation split by time; a pipeline fitted (briefly) on its first 70 %."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sim = simulate(6000, days=3, seed=5)
        events, _ = load_events(sim.events)
        split = time_split(events["time"], (0.7, 0.0, 0.3)).to_numpy()
        train = events[split == "train"].reset_index(drop=True)
        test = events[split == "test"].reset_index(drop=True)
        pipeline = fit_pipeline(train, seed=0, progress=False, epochs=1)  # a short fit: the ranking is the subject
        investigator = Investigator(pipeline).fit()
        labelled = set(sim.labels["event_uid"])
        normal = np.flatnonzero(~test["metadata.uid"].isin(labelled).to_numpy())
        yield {"sim": sim, "pipeline": pipeline, "inv": investigator, "test": test, "normal": normal}
    finally:
        torch.set_num_threads(before)


def _column_state(pipeline, column: str) -> dict:
    return next(st for st in pipeline.encoder.columns_ if st["column"] == column)


def _modified_batch(setup, column: str, value, pick) -> tuple[pd.DataFrame, int]:
    """The scored period with one normal event (the first that ``pick`` accepts) given ``value`` in ``column``."""
    test = setup["test"].copy()
    candidates = [r for r in setup["normal"].tolist() if pick(test, r)]
    assert candidates, f"no normal event to modify for {column}"
    row = candidates[len(candidates) // 2]
    if isinstance(value, str) and not pd.api.types.is_string_dtype(test[column].dtype):
        test[column] = test[column].astype(object)
    test.loc[test.index[row], column] = value
    return test, row


def _present(column: str):
    return lambda frame, row: pd.notna(frame[column].iat[row])


def test_an_extreme_number_is_ranked_first(setup):
    inv, pipeline = setup["inv"], setup["pipeline"]
    numeric = [c for c, kind in zip(inv.columns_, inv.kinds_) if kind == "numeric"]
    assert numeric
    for column in numeric[:2]:  # two numeric fields, each on its own event
        ref = pd.to_numeric(pipeline.reference[column], errors="coerce")
        extreme = float(np.nanmax(np.abs(ref.to_numpy()))) * 1000.0 + 1e6
        batch, row = _modified_batch(setup, column, extreme, _present(column))
        (found,) = inv.investigate(batch, [row])
        assert found.row == row
        assert found.fields["field"].iat[0] == column, found.fields.head(5)
        top = found.fields.iloc[0]
        assert top["value"] == pytest.approx(extreme)
        assert top["delta"] == pytest.approx(extreme - top["typical"])
        assert top["delta_robust"] > 3  # far out in the encoder's robust units
        # beyond every reference value: the smallest two-sided tail the reference can show, 2 / (n + 1)
        bonferroni = inv.bonferroni_bits_[inv.columns_.index(column)]
        assert top["surprise"] == pytest.approx(inv.max_bits_ - 1.0 - bonferroni)
        # the recommendation names the field and its value, and is built from this event's numbers
        assert f"{column} = " in found.recommendation
        assert f"{top['evidence']:.1f} bits" in found.recommendation
        # neighbours: reference rows, nearest first, shown with their raw fields
        assert 0 < len(found.neighbours) <= inv.n_neighbours
        distances = [n["distance"] for n in found.neighbours]
        assert distances == sorted(distances)
        for n in found.neighbours:
            raw = pipeline.reference.iloc[n["reference_row"]]
            assert n["fields"]["metadata.uid"] == raw["metadata.uid"]
            present = {k for k, v in raw.items() if pd.notna(v)}
            assert set(n["fields"]) == present


def test_a_value_never_seen_is_ranked_first(setup):
    inv, pipeline = setup["inv"], setup["pipeline"]
    # a categorical field without rare values in the reference (so "never seen" is itself rare), read as strings
    chosen = None
    for c, (column, kind) in enumerate(zip(inv.columns_, inv.kinds_)):
        st = _column_state(pipeline, column)
        if kind != "categorical" or st["role"] != "categorical" or st.get("as_numbers") or st.get("port_ranges"):
            continue
        if len(st.get("vocab") or []) < 3 or pipeline.reference[column].dtype.kind in "biuf":
            continue
        j = pipeline.encoder.categorical_names_.index(column)
        if (pipeline.arrays["reference_categorical"][:, j] == 1).mean() == 0:
            chosen = column
            break
    assert chosen is not None
    unseen = "zz-value-never-seen-7f3a"
    batch, row = _modified_batch(setup, chosen, unseen, _present(chosen))
    (found,) = inv.investigate(batch, [row])
    top = found.fields.iloc[0]
    assert top["field"] == chosen, found.fields.head(5)
    assert top["value"] == unseen
    assert top["frequency"] == 0.0 and bool(top["differs"]) and top["shared"] == 0.0
    assert chosen in found.recommendation and unseen in found.recommendation


def test_surprise_grows_as_values_get_rarer(setup):
    inv, pipeline = setup["inv"], setup["pipeline"]
    ref = pipeline.reference
    # a number: its median, its 99th percentile and far beyond, each in the same event
    column = next(c for c, kind in zip(inv.columns_, inv.kinds_) if kind == "numeric")
    x = pd.to_numeric(ref[column], errors="coerce").dropna().to_numpy()
    values = [float(np.median(x)), float(np.quantile(x, 0.99)), float(x.max()) * 100.0 + 1e6]
    if pd.api.types.is_integer_dtype(ref[column].dtype):
        values = [round(v) for v in values]
    found = []
    for v in values:
        batch, row = _modified_batch(setup, column, v, _present(column))
        (inv_,) = inv.investigate(batch, [row])
        found.append(float(inv_.fields.set_index("field").at[column, "surprise"]))
    assert found[0] < found[1] < found[2], found
    # a category: its most common value, then its least common one the encoder keeps
    for column, kind in zip(inv.columns_, inv.kinds_):
        st = _column_state(pipeline, column)
        if kind == "categorical" and st["role"] == "categorical" and len(st.get("vocab") or []) >= 5 \
                and not st.get("as_numbers") and ref[column].dtype.kind not in "biuf":
            break
    else:
        pytest.fail("no categorical field with five values")
    common, rare = st["vocab"][0], st["vocab"][-1]
    counts = ref[column].astype(str).value_counts()
    assert counts.get(common, 0) > counts.get(rare, 0)
    bits = []
    for v in (common, rare):
        batch, row = _modified_batch(setup, column, v, _present(column))
        (inv_,) = inv.investigate(batch, [row])
        bits.append(float(inv_.fields.set_index("field").at[column, "surprise"]))
    assert bits[0] < bits[1], (common, rare, bits)


def test_to_dict_is_json_and_summary_reads(setup):
    inv, test = setup["inv"], setup["test"]
    scores = setup["pipeline"].score(test)
    flagged = np.flatnonzero(scores["is_anomaly"].to_numpy())
    rows = np.r_[flagged[:3], setup["normal"][:1]]
    found = inv.investigate(test, rows, scores=scores)
    assert [f.row for f in found] == rows.tolist()
    for f in found:
        assert isinstance(f, Investigation)
        assert list(f.fields.columns) == FIELD_TABLE_COLUMNS
        assert f.fields["rank"].tolist() == list(range(1, len(inv.columns_) + 1))
        assert sorted(f.fields["field"]) == sorted(inv.columns_)
        assert (np.diff(f.fields["evidence"].to_numpy()) <= 1e-9).all()  # most telling first
        text = json.dumps(f.to_dict(), allow_nan=False)
        back = json.loads(text)
        assert back["fields"][0]["field"] == f.fields["field"].iat[0]
        assert back["event"]["metadata.uid"] == test["metadata.uid"].iat[f.row]
        assert f.fields["field"].iat[0] in f.summary()
        assert f.is_anomaly == bool(scores["is_anomaly"].iat[f.row])
        assert ("Flagged" if f.is_anomaly else "Not flagged") in f.recommendation
        if f.window is not None and f.view == "window":
            assert f.window["decided"] and f.window["column"] in inv.columns_
    # a window-decided alert takes the window view's evidence into its ranking
    decided = [f for f in found if f.view == "window"]
    for f in decided:
        assert f.fields["window"].max() > 0


def test_default_rows_are_the_flagged_events_and_bad_rows_are_refused(setup):
    inv, test = setup["inv"], setup["test"]
    batch = test.iloc[:1500]
    scores = setup["pipeline"].score(batch)
    ranked = inv.rank(batch, scores=scores)
    assert ranked.rows.tolist() == np.flatnonzero(scores["is_anomaly"].to_numpy()).tolist()
    assert ranked.evidence.shape == (len(ranked.rows), len(inv.columns_))
    with pytest.raises(InvestigationError):
        inv.investigate(batch, [len(batch)])
    with pytest.raises(InvestigationError):
        inv.investigate(batch, [-1])
    with pytest.raises(InvestigationError):
        inv.investigate(batch, np.ones(3, dtype=bool))
    assert inv.investigate(batch, []) == []


def test_a_pipeline_without_window_view(setup):
    import dataclasses

    pipeline, test = setup["pipeline"], setup["test"]
    alone = dataclasses.replace(pipeline, window=None)
    scores = pipeline.score(test, views="event")
    inv = Investigator(alone, n_neighbours=5).fit()
    rows = np.flatnonzero(scores["is_anomaly"].to_numpy())[:2]
    found = inv.investigate(test, rows, scores=scores)
    assert len(found) == len(rows)
    for f in found:
        assert f.view == "event" and f.window is None
        assert (f.fields["window"] == 0).all()
        assert len(f.neighbours) == 5
        json.dumps(f.to_dict(), allow_nan=False)


def test_attribution_accuracy_is_well_above_chance(setup):
    acc = attribution_accuracy(setup["pipeline"], setup["test"], setup["sim"].labels, investigator=setup["inv"])
    overall = acc.table.loc["all"]
    assert overall["events"] >= 20
    assert overall["investigator"] >= max(0.8, overall["chance"] + 0.3), acc.summary()
    assert set(acc.table.columns) >= {"events", "investigator", "current", "chance"}
    json.dumps(acc.to_dict(), allow_nan=False)
    assert math.isfinite(acc.overall)


def test_no_field_or_scenario_name_is_hard_coded():
    from obsad.ocsf.scenarios import SCENARIOS

    source = (Path(__file__).parents[1] / "src" / "obsad" / "monitor" / "investigate.py").read_text()
    names = {f for s in SCENARIOS.values() for f in s.fields} | set(SCENARIOS)
    assert not [name for name in names if f'"{name}"' in source or f"'{name}'" in source]
