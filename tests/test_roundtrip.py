"""The same events, exported flat (Parquet) or nested (JSON Lines), must load and encode identically."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from obsad.features import FeatureEncoder
from obsad.ocsf import load_events, simulate
from obsad.ocsf.nested import to_nested


@pytest.fixture(scope="module")
def both_shapes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roundtrip")
    events = simulate(n_events=6000, days=2, seed=1).events
    events.to_parquet(folder / "flat.parquet")
    with open(folder / "nested.jsonl", "w") as fh:
        for event in to_nested(events):
            fh.write(json.dumps(event) + "\n")
    return load_events(folder / "flat.parquet"), load_events(folder / "nested.jsonl")


def test_flat_and_nested_exports_load_to_the_same_table(both_shapes):
    (flat, flat_report), (nested, nested_report) = both_shapes
    assert flat_report.n_loaded == nested_report.n_loaded == 6000
    assert len(flat_report.problems) == len(nested_report.problems) == 0
    assert list(flat.columns) == list(nested.columns)
    for column in flat.columns:
        a = flat[column].astype(str).where(flat[column].notna(), "<NA>")
        b = nested[column].astype(str).where(nested[column].notna(), "<NA>")
        assert (a == b).all(), column


def test_flat_and_nested_exports_encode_to_the_same_features(both_shapes):
    (flat, _), (nested, _) = both_shapes
    encoder = FeatureEncoder().fit(flat)
    a, b = encoder.transform(flat), encoder.transform(nested)
    assert np.array_equal(a.numeric, b.numeric)
    assert np.array_equal(a.categorical, b.categorical)
    assert a.numeric.shape[1] > 10 and a.categorical.shape[1] > 10


def test_features_tables_read_back_identically(both_shapes, tmp_path):
    from obsad.features import encoded_to_frame, read_encoded

    (flat, _), _ = both_shapes
    encoder = FeatureEncoder().fit(flat)
    features = encoder.transform(flat)
    encoded_to_frame(features, flat["metadata.uid"]).to_parquet(tmp_path / "f.parquet")
    back, uids = read_encoded(tmp_path / "f.parquet", encoder)
    assert np.array_equal(back.numeric, features.numeric) and np.array_equal(back.categorical, features.categorical)
    assert back.cardinalities == features.cardinalities and list(uids) == list(flat["metadata.uid"])
    pd.DataFrame({"event_uid": uids}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="different encoder"):
        read_encoded(tmp_path / "bad.parquet", encoder)
