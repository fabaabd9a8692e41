"""Spark batch scoring (obsad.spark) against the local engine, on Spark in local mode.

One SparkSession (``local[2]``, two shuffle partitions, no UI) and one small fitted package serve every test.
The scored file is shuffled, so that input order is neither time order nor partition order, and spans two days,
so that the window view (entities over hours, drift over consecutive hours) decides some events.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from obsad.cli import main
from obsad.ocsf import load_events, simulate
from obsad.ocsf.nested import to_nested
from obsad.pipeline import fit_pipeline, load_pipeline

COLUMNS = ["event_uid", "time", "score", "percentile", "is_anomaly", "view", "top_features"]
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


@pytest.fixture(scope="session")
def spark():
    from obsad.spark import MissingSparkError, require_pyspark, spark_session

    try:
        require_pyspark()
    except MissingSparkError as exc:  # pyspark or Java missing: nothing here can run
        pytest.skip(str(exc))
    session = spark_session("local[2]", partitions=2, app_name="obsad tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    """A package fitted on a simulated baseline, and another simulated two-day export, shuffled, to score."""
    import torch

    root = tmp_path_factory.mktemp("spark")
    base = simulate(n_events=6000, days=2, seed=11)
    normal = base.events[~base.events["metadata.uid"].isin(set(base.labels["event_uid"]))]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pipeline = fit_pipeline(load_events(normal).events, epochs=1, seed=0, progress=False)
    finally:
        torch.set_num_threads(before)
    model = pipeline.save(root / "model")
    export = simulate(n_events=5000, days=2, seed=12).events.sample(frac=1.0, random_state=3).reset_index(drop=True)
    flat = root / "events.parquet"
    export.to_parquet(flat, index=False)
    nested = root / "events.jsonl"
    nested.write_text("".join(json.dumps(e, default=str) + "\n" for e in to_nested(export)))
    return {"model": model, "pipeline": load_pipeline(model), "export": export, "flat": flat, "nested": nested,
            "root": root}


def loaded(fitted, source) -> pd.DataFrame:
    """The events of ``source`` as the local engine loads them."""
    return load_events(source, columns=fitted["pipeline"].input_columns).events


def local_scores(fitted, source, explain="flagged") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The local engine's scores of ``source`` and the events it loaded."""
    events = loaded(fitted, source)
    return fitted["pipeline"].score(events, explain=explain).reset_index(drop=True), events


def assert_same_scores(got: pd.DataFrame, want: pd.DataFrame, pipeline, events: pd.DataFrame) -> None:
    assert list(got.columns) == COLUMNS
    assert got["event_uid"].tolist() == want["event_uid"].tolist()  # same rows, in input order
    assert (got["time"].to_numpy() == want["time"].to_numpy()).all()
    np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), rtol=1e-5, atol=1e-5)
    # a percentile is a rank among the calibration scores: float rounding may move a score across one of them
    one_rank = 100.0 / len(pipeline.combiner.train_scores_)
    assert np.abs(got["percentile"].to_numpy() - want["percentile"].to_numpy()).max() <= one_rank + 1e-9
    assert got["is_anomaly"].tolist() == want["is_anomaly"].tolist()
    assert got["view"].tolist() == want["view"].tolist()
    assert got["top_features"].tolist() == want["top_features"].tolist()


def test_flat_parquet_scores_equal_the_local_engine_with_every_explanation(spark, fitted):
    from obsad.spark import collect_scores, score_dataframe

    want, events = local_scores(fitted, fitted["flat"], explain="all")
    assert (want["view"] == "window").sum() > 20 and (want["view"] == "event").sum() > 20  # both views decide
    scored = score_dataframe(spark.read.parquet(str(fitted["flat"])), fitted["model"], explain="all", partitions=3)
    got = collect_scores(scored)
    assert_same_scores(got, want, fitted["pipeline"], events)
    assert got["event_uid"].tolist() == fitted["export"]["metadata.uid"].tolist()  # the file's order, not time order
    window_rows = got["view"] == "window"
    assert (got.loc[window_rows, "top_features"] != "").all()  # window-view explanations, equal to the local ones


def test_nested_struct_input_equals_the_local_engine_on_the_same_file(spark, fitted):
    from pyspark.sql.types import StructType

    from obsad.spark import collect_scores, read_events, score_dataframe

    frame = read_events(spark, fitted["nested"])
    assert any(isinstance(f.dataType, StructType) for f in frame.schema.fields)  # objects arrive as structs
    got = collect_scores(score_dataframe(frame, fitted["model"], ship=False))  # workers read the path itself
    want, events = local_scores(fitted, fitted["nested"])
    assert want["is_anomaly"].any()
    assert_same_scores(got, want, fitted["pipeline"], events)


def test_in_memory_flat_frame_keeps_input_order_across_partitions(spark, fitted):
    from obsad.spark import collect_scores, score_dataframe

    part = fitted["export"].iloc[:2000]  # another batch: other windows, other per-hour counts
    frame = spark.createDataFrame(part)  # flat dotted columns, in pandas' row order
    assert frame.rdd.getNumPartitions() > 1
    got = collect_scores(score_dataframe(frame, fitted["model"], partitions=3))  # spread by row id, then restored
    assert got["event_uid"].tolist() == part["metadata.uid"].tolist()
    want, events = local_scores(fitted, part)
    assert_same_scores(got, want, fitted["pipeline"], events)
    none = collect_scores(score_dataframe(frame, fitted["model"], explain="none"))
    assert (none["top_features"] == "").all() and none["score"].tolist() == got["score"].tolist()


def test_cli_spark_engine_writes_what_the_local_engine_writes(spark, fitted, capsys):
    local_out, spark_out = fitted["root"] / "local.parquet", fitted["root"] / "spark.parquet"
    common = ["score", "--model", str(fitted["model"]), "--events", str(fitted["flat"])]
    assert main(common + ["--out", str(local_out)]) == 0
    capsys.readouterr()
    assert main(common + ["--out", str(spark_out), "--engine", "spark", "--master", "local[2]",
                          "--partitions", "2"]) == 0
    printed = capsys.readouterr()
    assert "with Spark (local[2])" in printed.out and "wrote" in printed.out
    assert "Traceback" not in printed.err
    got, want = pd.read_parquet(spark_out), pd.read_parquet(local_out)
    assert (got.dtypes == want.dtypes).all()
    assert_same_scores(got, want, fitted["pipeline"], loaded(fitted, fitted["flat"]))


def test_cli_spark_engine_without_pyspark_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"format": "obsad-pipeline"}')
    monkeypatch.setitem(sys.modules, "pyspark", None)  # `import pyspark` now fails, as where it is not installed
    code = main(["score", "--engine", "spark", "--model", str(model), "--events", str(tmp_path / "e.parquet"),
                 "--out", str(tmp_path / "out.parquet")])
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install 'obsad[spark]'" in err and "Traceback" not in err
