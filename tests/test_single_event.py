"""One event at a time: `plain_record` + `RecordEncoder` + `SingleEventScorer` give the general path's answers.

The general path (``load_events`` -> ``FeatureEncoder.transform`` -> ``FittedPipeline.score(views="event")``) is
the definition; the one-event path must give the same arrays (to the bit), the same score and percentile up to
the float rounding of its numpy network (``obsad.models.frozen``), and the same flag, view and explanation, for
every event it accepts; and decline (``None``) every event that needs more of the loader than flattening.
Inputs: simulated events, nested and flat, clean and messy (tests/messy_events.py).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from messy_events import T0, messy  # tests/ is on the import path (pytest's rootdir insertion)

from obsad.features.record import RecordEncoder
from obsad.ocsf import load_events, simulate
from obsad.ocsf.load import plain_record
from obsad.ocsf.nested import to_nested
from obsad.pipeline import fit_pipeline
from obsad.single_event import SingleEventScorer


DEEP_JSON = json.dumps({"a": json.dumps({"b": json.dumps({"c": json.dumps({"d": json.dumps({"e": 1})})})})})


@pytest.fixture(scope="module")
def fitted():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        events = simulate(n_events=5000, days=2, seed=21).events.sort_values("time", kind="stable")
        events = events.reset_index(drop=True)
        frame, _ = load_events(events.iloc[:3500])
        pipeline = fit_pipeline(frame, epochs=1, seed=0, progress=False)
    finally:
        torch.set_num_threads(before)
    rest = events.iloc[3500:].reset_index(drop=True)
    nested = json.loads(json.dumps(to_nested(rest), default=str))
    flat = json.loads(rest.iloc[:300].to_json(orient="records"))
    inputs = {"nested": nested[:400], "flat": flat, "messy nested": messy(nested[400:900], 3, 0.1),
              "messy flat": messy(flat, 4, 0.05)}
    return pipeline, inputs


def _general(pipeline, event):
    return load_events([event], columns=pipeline.input_columns)


def test_plain_records_encode_exactly_as_the_loaded_table(fitted):
    pipeline, inputs = fitted
    columns = pipeline.input_columns
    encoders = {"memo": RecordEncoder(pipeline.encoder), "tiny memo": RecordEncoder(pipeline.encoder, memo_size=2),
                "prewarmed": RecordEncoder(pipeline.encoder)}
    assert encoders["prewarmed"].prewarm(pipeline.reference) > 100  # the reference's values, encoded as columns
    accepted = {}
    for name, events in inputs.items():
        accepted[name] = 0
        for event in events:
            record = plain_record(event, columns)
            if record is None:
                continue
            accepted[name] += 1
            frame, report = _general(pipeline, event)
            assert report.problems.empty, (name, event)  # nothing to report: the one-event path reports nothing
            want = pipeline.encoder.transform(frame)
            for encoder in encoders.values():
                got = encoder.encode(record)
                np.testing.assert_array_equal(got.numeric, want.numeric, err_msg=str(event))
                np.testing.assert_array_equal(got.categorical, want.categorical, err_msg=str(event))
            if "time" in record:
                assert frame["time"].iloc[0] == pd.Timestamp(record["time"]).tz_localize("UTC")
    # clean exports are plain; messy ones are partly plain and partly declined
    assert accepted["nested"] == len(inputs["nested"]) and accepted["flat"] == len(inputs["flat"])
    assert 0 < accepted["messy nested"] < len(inputs["messy nested"])
    assert 0 < accepted["messy flat"] < len(inputs["messy flat"])


def test_single_event_scores_equal_the_event_view_of_pipeline_score(fitted):
    pipeline, inputs = fitted
    scorer = SingleEventScorer(pipeline)
    n_scored = n_flagged = 0
    for events in inputs.values():
        for event in events[:150]:
            frame = None
            for explain in ("all", "flagged"):
                got = scorer.score(event, explain=explain)
                if got is None:
                    break
                frame = _general(pipeline, event).events if frame is None else frame
                want = pipeline.score(frame, views="event", explain=explain).iloc[0]
                # float rounding of numpy against torch and FAISS: the k-NN distance within 2e-6 (in z units, that
                # divided by the event view's calibration scale)
                tolerance = 2e-6 / pipeline.combiner.scale_[0]
                assert got["score"] == pytest.approx(want["score"], rel=0, abs=tolerance), (explain, event)
                assert abs(want["score"] - pipeline.threshold) > tolerance  # none this close: the flags must agree
                ranks = pipeline.combiner.percentile_of([got["score"], want["score"]])
                assert got["percentile"] == ranks[0] and abs(ranks[0] - ranks[1]) <= 100.0 / len(
                    pipeline.combiner.train_scores_) + 1e-9, (explain, event)  # at most one calibration score apart
                for key in ("is_anomaly", "view", "top_features"):
                    assert got[key] == want[key], (key, explain, event)
                uid = frame["metadata.uid"].iloc[0] if "metadata.uid" in frame.columns else None
                assert got["event_uid"] == (uid if isinstance(uid, str) else got["event_uid"])
            else:
                n_scored += 1
                n_flagged += bool(got["is_anomaly"])
    assert n_scored > 300 and n_flagged > 0  # flagged events (explained by default) were compared too


def test_text_the_loader_coerces_is_coerced_the_same(fitted):
    pipeline, inputs = fitted
    base = inputs["nested"][0]
    columns = ["duration", "status_id", "src_endpoint.port", "time", "message"]
    for value in ("42", "4.5e2", "true", "0042", "null", " 7 ", "-3"):
        event = dict(base, duration=value, status_id=value, message=value, src_endpoint={"port": value})
        record = plain_record(event, columns)
        frame, _ = load_events([event], columns=columns)
        assert record is not None
        for column in ("duration", "status_id", "src_endpoint.port", "message"):
            loaded = frame[column].iloc[0]
            if loaded is None or loaded is np.nan or (not isinstance(loaded, str) and np.isnan(loaded)):
                assert column not in record
            else:
                assert record[column] == loaded and type(record[column]) is type(getattr(loaded, "item",
                                                                                         lambda: loaded)())


@pytest.mark.parametrize("event", [
    {"time": T0, "unmapped": '{"a": 1'},                                    # invalid JSON: reported
    {"time": T0, "unmapped": '[1, 2]'},                                     # a JSON array of scalars as text
    {"time": T0, "unmapped": DEEP_JSON},                                    # JSON in JSON, deeper than expanded
    {"time": T0, "tags": ["a", "b"]},                                       # array of scalars: joined
    {"time": T0, "answers": []},                                            # empty array
    {"time": T0, "answers": [{"type": True}]},                              # a boolean type key
    {"time": T0, "src_endpoint.ip": "1.1.1.1", "src_endpoint": {"ip": "1.1.1.2"}},  # a name given twice
    {"time": T0, "src_endpoint": "x", "src_endpoint.ip": "1.1.1.1"},        # a value and an object
    {"time": T0, "src_endpoint_ip": "1.1.1.1"},                             # an underscore name renamed
    {"time": "2026-03-05T12:00:00Z"},                                       # time as text
    {"time": None, "time_dt": "2026-03-05T12:00:00Z"},                      # time from time_dt
    {"time_dt": "2026-03-05T12:00:00Z"},
    {"time": T0, "time_dt": "garbage"},                                     # a time_dt the loader reports
    {"time": 1e30},                                                         # a time beyond the range
    {"time": T0, "duration": float("nan")},
    {"time": T0, "duration": 2 ** 70},
    {"time": T0, "duration": b"bytes"},
    {},
    [1, 2],
    "text",
])
def test_events_needing_the_loader_are_declined(event):
    assert plain_record(event, ["time", "duration", "src_endpoint.ip", "answers.count", "unmapped.a"]) is None


def test_declined_and_unreadable_events_get_none_from_the_scorer(fitted):
    pipeline, inputs = fitted
    scorer = SingleEventScorer(pipeline)
    assert scorer.score({"time": T0, "unmapped": '{"a": 1'}) is None  # needs the loader (invalid JSON)
    assert scorer.score({"metadata": {"uid": "only-an-id"}}) is None  # no field the model reads: reported there
    assert scorer.score({"no_such_field": 1}) is None
