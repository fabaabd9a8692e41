"""Tests for obsad.ocsf.load: formats, flattening, name mapping, JSON columns, arrays, coercion, time, problems."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from obsad.ocsf.load import LoadReport, LoadResult, OCSFLoadError, load_events, ocsf_dotted_name

T0 = 1_700_000_000_000  # epoch ms


def nested_event(i: int, **extra) -> dict:
    ev = {
        "time": T0 + i * 1000,
        "class_uid": 4002,
        "type_uid": 400201,
        "status_detail": f"ok {i}",
        "src_endpoint": {"ip": f"10.0.0.{i % 250}", "port": 40000 + i},
        "http_response": {"code": 200},
        "metadata": {"product": {"name": "Demo", "vendor_name": "obsad"}, "uid": f"u{i}"},
    }
    ev.update(extra)
    return ev


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(row if isinstance(row, str) else json.dumps(row))
            fh.write("\n")
    return path


def problems_of(report: LoadReport, reason: str) -> pd.DataFrame:
    return report.problems[report.problems["reason"] == reason]


# ------------------------------------------------------------------------------------------------ formats
def test_nested_jsonl_is_flattened_to_sorted_dotted_columns(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [nested_event(i) for i in range(20)])
    events, report = load_events(path)
    assert len(events) == 20 and report.n_input == 20 and report.n_loaded == 20
    assert list(events.columns) == sorted(events.columns)
    for col in ("src_endpoint.ip", "src_endpoint.port", "http_response.code", "metadata.product.name", "type_uid"):
        assert col in events.columns
    assert "src_endpoint" not in events.columns
    assert events["src_endpoint.port"].dtype == "Int64"
    assert events.loc[3, "src_endpoint.ip"] == "10.0.0.3"
    assert str(events["time"].dtype) == "datetime64[ms, UTC]"
    assert events.loc[0, "time"] == pd.Timestamp(T0, unit="ms", tz="UTC")
    assert report.problems.empty


def test_load_result_unpacks_and_has_attributes(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [nested_event(i) for i in range(3)])
    result = load_events(path)
    assert isinstance(result, LoadResult)
    events, report = result
    assert events is result.events and report is result.report


def test_json_array_file(tmp_path):
    rows = [nested_event(i) for i in range(5)]
    rows.insert(2, 42)  # not an object: element 2
    path = tmp_path / "e.json"
    path.write_text(json.dumps(rows, indent=2))
    events, report = load_events(path)
    assert len(events) == 5 and report.n_input == 6
    assert report.format == "JSON array" and report.position == "element"
    bad = problems_of(report, "not_an_object")
    assert bad["line"].tolist() == [2]


def test_json_suffix_with_json_lines_content(tmp_path):
    path = write_jsonl(tmp_path / "e.json", [nested_event(i) for i in range(4)])
    events, report = load_events(path)
    assert len(events) == 4 and report.format == "JSON Lines"


def test_format_detected_by_content_and_gzip(tmp_path):
    rows = [nested_event(i) for i in range(4)]
    raw = "\n".join(json.dumps(r) for r in rows).encode()
    path = tmp_path / "export.log.gz"
    path.write_bytes(gzip.compress(raw))
    events, _ = load_events(path)
    assert len(events) == 4 and "src_endpoint.ip" in events.columns
    pq_path = tmp_path / "no_suffix"
    pd.DataFrame({"class_uid": [1, 2], "time": [T0, T0 + 1]}).to_parquet(pq_path)
    events, report = load_events(pq_path)
    assert report.format == "Parquet" and len(events) == 2


def test_flat_parquet_with_dotted_names(tmp_path):
    df = pd.DataFrame(
        {
            "time": [T0, T0 + 1000, T0 + 2000],
            "src_endpoint.ip": ["10.0.0.1", "10.0.0.2", None],
            "http_response.code": [200, 404, 500],
            "class_uid": [4002, 4002, 3002],
        }
    )
    path = tmp_path / "flat.parquet"
    df.to_parquet(path)
    events, report = load_events(path)
    assert list(events.columns) == ["class_uid", "http_response.code", "src_endpoint.ip", "time"]
    assert events["http_response.code"].tolist() == [200, 404, 500]
    assert events["http_response.code"].dtype == "Int64"
    assert pd.isna(events.loc[2, "src_endpoint.ip"])
    assert report.position == "row"


def test_parquet_struct_columns_are_flattened(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "time": [T0, T0 + 1],
            "src_endpoint": [{"ip": "10.0.0.1", "port": 1}, None],
            "resources": [[{"type": "bucket"}, {"type": "object"}], []],
        }
    )
    pq.write_table(table, tmp_path / "s.parquet")
    events, _ = load_events(tmp_path / "s.parquet")
    assert events["src_endpoint.ip"].tolist()[0] == "10.0.0.1" and pd.isna(events["src_endpoint.ip"][1])
    assert events["resources.count"].tolist() == [2, 0]
    assert events["resources.types"].tolist() == ["bucket|object", ""]


def test_underscore_names_mapped_with_the_ocsf_schema(tmp_path):
    df = pd.DataFrame(
        {
            "time": [T0, T0 + 1],
            "src_endpoint_ip": ["10.0.0.1", "10.0.0.2"],
            "http_response_code": [200, 503],
            "metadata_product_vendor_name": ["acme", "acme"],
            "actor_user_name": ["ann", "bob"],
            "type_uid": [400201, 400201],
            "class_uid": [4002, 4002],
            "status_detail": ["fine", "slow"],
            "category_uid": [4, 4],
            "my_custom_field": ["x", "y"],
        }
    )
    path = tmp_path / "u.parquet"
    df.to_parquet(path)
    events, report = load_events(path)
    cols = set(events.columns)
    assert {"src_endpoint.ip", "http_response.code", "metadata.product.vendor_name", "actor.user.name"} <= cols
    assert {"type_uid", "class_uid", "status_detail", "category_uid", "my_custom_field"} <= cols
    assert "type.uid" not in cols and "status.detail" not in cols and "class.uid" not in cols
    assert report.renamed["src_endpoint_ip"] == "src_endpoint.ip"
    assert "type_uid" not in report.renamed


def test_ocsf_dotted_name_rules():
    assert ocsf_dotted_name("src_endpoint_ip") == "src_endpoint.ip"
    assert ocsf_dotted_name("dst_endpoint_port") == "dst_endpoint.port"
    assert ocsf_dotted_name("http_request_url_path") == "http_request.url.path"
    assert ocsf_dotted_name("metadata_product_name") == "metadata.product.name"
    for keep in ("type_uid", "class_uid", "status_detail", "activity_id", "time_dt", "not_an_ocsf_name", "a.b_c"):
        assert ocsf_dotted_name(keep) == keep


def test_flat_dotted_and_underscore_forms_together_are_merged(tmp_path):
    df = pd.DataFrame({"src_endpoint.ip": ["a", None, "c"], "src_endpoint_ip": ["a", "b", "X"], "time": [T0] * 3})
    events, report = load_events(df)
    assert events["src_endpoint.ip"].tolist() == ["a", "b", "c"]
    assert "src_endpoint_ip" not in events.columns
    conflicts = problems_of(report, "conflicting_values")
    assert conflicts["line"].tolist() == [2] and conflicts["field"].tolist() == ["src_endpoint.ip"]


# ------------------------------------------------------------------------------------- JSON-string columns
def test_json_string_object_column_plus_flat_column_not_double_counted(tmp_path):
    n = 10
    df = pd.DataFrame(
        {
            "time": [T0 + i for i in range(n)],
            "src_endpoint.ip": ["10.0.0.%d" % i if i != 4 else None for i in range(n)],
            "src_endpoint": [
                json.dumps({"ip": ("10.0.0.%d" % i) if i != 7 else "192.168.0.1", "port": 5000 + i}) for i in range(n)
            ],
            "unmapped": [json.dumps({"region": "eu", "shard": i % 3}) for i in range(n)],
        }
    )
    path = tmp_path / "j.parquet"
    df.to_parquet(path)
    events, report = load_events(path)
    assert "src_endpoint" not in events.columns and "unmapped" not in events.columns
    assert [c for c in events.columns if c.startswith("src_endpoint")] == ["src_endpoint.ip", "src_endpoint.port"]
    assert events.loc[4, "src_endpoint.ip"] == "10.0.0.4"  # filled from the JSON
    assert events.loc[7, "src_endpoint.ip"] == "10.0.0.7"  # flat value kept
    conflicts = problems_of(report, "conflicting_values")
    assert len(conflicts) == 1 and conflicts["line"].tolist() == [7]
    assert "192.168.0.1" in conflicts["detail"].iloc[0]
    assert events["src_endpoint.port"].dtype == "Int64" and events.loc[3, "src_endpoint.port"] == 5003
    assert events["unmapped.shard"].tolist() == [i % 3 for i in range(n)]
    assert report.expanded["unmapped"] == ["unmapped.region", "unmapped.shard"]


def test_nested_and_flat_in_the_same_jsonl(tmp_path):
    rows = [{"time": T0, "src_endpoint": {"ip": "1.1.1.1"}, "src_endpoint.ip": "1.1.1.1"},
            {"time": T0, "src_endpoint": {"ip": "2.2.2.2"}, "src_endpoint.ip": "9.9.9.9"},
            {"time": T0, "src_endpoint": {"ip": "3.3.3.3"}}]
    events, report = load_events(write_jsonl(tmp_path / "m.jsonl", rows))
    assert events["src_endpoint.ip"].tolist() == ["1.1.1.1", "9.9.9.9", "3.3.3.3"]
    assert problems_of(report, "conflicting_values")["line"].tolist() == [2]


def test_arrays_of_objects_summarised(tmp_path):
    rows = [
        nested_event(0, resources=[{"type": "bucket", "uid": "a"}, {"type": "bucket"}, {"type": "object"}],
                     observables=[{"name": "ip", "type_id": 2}, {"name": "user"}]),
        nested_event(1, resources=[], observables=[{"type": "IP Address", "type_id": 2}]),
        nested_event(2),
    ]
    events, report = load_events(write_jsonl(tmp_path / "a.jsonl", rows))
    assert events["resources.count"].tolist()[:2] == [3, 0] and pd.isna(events["resources.count"][2])
    assert events["resources.count"].dtype == "Int64"
    assert events["resources.types"].tolist()[:2] == ["bucket|object", ""]
    assert events["observables.types"].tolist()[:2] == ["2|user", "IP Address"]
    assert "resources" not in events.columns


def test_json_string_arrays_and_scalar_arrays(tmp_path):
    df = pd.DataFrame(
        {
            "time": [T0, T0, T0],
            "resources": [json.dumps([{"type": "a"}, {"type": "b"}]), "[]", None],
            "categories": [["web", "news"], [], None],
        }
    )
    events, report = load_events(df)
    assert events["resources.count"].tolist()[:2] == [2, 0] and pd.isna(events["resources.count"][2])
    assert events["resources.types"].tolist()[:2] == ["a|b", ""]
    assert events["categories"].tolist()[:2] == ["web|news", ""] and pd.isna(events["categories"][2])


# ------------------------------------------------------------------------------------------- type drift
def test_numbers_as_strings_and_booleans_coerced(tmp_path):
    rows = [nested_event(i, http_response={"code": str(200 + i % 3)}, is_alert="true" if i % 2 else "false",
                         ratio=str(i / 4)) for i in range(30)]
    events, report = load_events(write_jsonl(tmp_path / "c.jsonl", rows))
    assert events["http_response.code"].dtype == "Int64"
    assert events["http_response.code"].tolist()[:3] == [200, 201, 202]
    assert events["is_alert"].dtype == "boolean" and events["is_alert"].tolist()[:2] == [False, True]
    assert events["ratio"].dtype == np.float64 and events.loc[1, "ratio"] == 0.25
    assert "all 30 values" in report.coerced["http_response.code"]
    assert "is_alert" in report.coerced


def test_boolean_texts_coerced_with_their_gaps():
    """Boolean texts in any case and spacing become ``boolean``; empty and null-like texts and absent values are
    missing; a value that is not a boolean is missing and reported."""
    flags = [" TRUE", "false", None, "", "null", "True ", "FALSE", "maybe"] + ["true", "false"] * 60
    events, report = load_events(pd.DataFrame({"time": [T0] * len(flags), "flag": flags}))
    assert events["flag"].dtype == "boolean"
    expected = [True, False, None, None, None, True, False, None] + [True, False] * 60
    assert [None if v is pd.NA else v for v in events["flag"].tolist()] == expected
    assert problems_of(report, "wrong_type")["line"].tolist() == [7]
    assert "1 unparseable" in report.coerced["flag"]


def test_mostly_numeric_column_coerced_and_rest_reported(tmp_path):
    codes = [str(200 + i % 5) for i in range(200)]
    codes[57] = "abc"
    df = pd.DataFrame({"time": [T0 + i for i in range(200)], "status_code": codes})
    events, report = load_events(df)
    assert events["status_code"].dtype == "Int64" and pd.isna(events.loc[57, "status_code"])
    bad = problems_of(report, "wrong_type")
    assert bad["line"].tolist() == [57] and "'abc'" in bad["detail"].iloc[0]
    # below the threshold the column stays text and nothing is reported
    codes2 = [str(i) for i in range(50)] + ["x%d" % i for i in range(5)]
    events2, report2 = load_events(pd.DataFrame({"time": [T0] * 55, "status_code": codes2}))
    assert pd.api.types.is_string_dtype(events2["status_code"]) and report2.problems.empty


def test_leading_zeros_and_version_strings_stay_text():
    df = pd.DataFrame({"time": [T0] * 3, "zip": ["00123", "04567", "11111"], "metadata.version": ["1.1", "1.2", "1.3"]})
    events, report = load_events(df)
    assert events["zip"].tolist() == ["00123", "04567", "11111"]
    assert events["metadata.version"].tolist() == ["1.1", "1.2", "1.3"]


def test_object_in_some_rows_scalar_in_others_reports_minority(tmp_path):
    rows = [nested_event(i) for i in range(10)]
    rows[6]["src_endpoint"] = "10.9.9.9"
    events, report = load_events(write_jsonl(tmp_path / "o.jsonl", rows))
    assert "src_endpoint" not in events.columns and "src_endpoint.ip" in events.columns
    bad = problems_of(report, "wrong_type")
    assert bad["line"].tolist() == [7] and bad["field"].tolist() == ["src_endpoint"]


# --------------------------------------------------------------------------------------------------- time
def test_time_epoch_ms_seconds_and_iso(tmp_path):
    expected = pd.Timestamp(T0, unit="ms", tz="UTC")
    rows = [{"time": T0, "a": 1}, {"time": T0 // 1000, "a": 2}, {"time": "2023-11-14T22:13:20Z", "a": 3},
            {"time": "2023-11-14T23:13:20+01:00", "a": 4}, {"time": T0 / 1000 + 0.5, "a": 5}]
    events, report = load_events(rows)
    assert str(events["time"].dtype) == "datetime64[ms, UTC]"
    assert (events["time"][:4] == expected).all()
    assert events["time"][4] == expected + pd.Timedelta(milliseconds=500)
    assert report.problems.empty


def test_time_from_time_dt_and_duplicate_time_dt_dropped(tmp_path):
    iso = pd.Timestamp(T0, unit="ms", tz="UTC").isoformat()
    df = pd.DataFrame({"time_dt": [iso, iso], "x": [1, 2]})
    events, report = load_events(df)
    assert events["time"].tolist() == [pd.Timestamp(T0, unit="ms", tz="UTC")] * 2
    assert "time_dt" not in events.columns
    same = pd.DataFrame({"time": [T0, T0 + 5], "time_dt": [iso, pd.Timestamp(T0 + 5, unit="ms", tz="UTC").isoformat()]})
    events2, report2 = load_events(same)
    assert "time_dt" not in events2.columns and any("time_dt" in n for n in report2.notes)
    differs = pd.DataFrame({"time": [T0, T0], "time_dt": [iso, "2020-01-01T00:00:00Z"]})
    events3, _ = load_events(differs)
    assert "time_dt" in events3.columns


def test_missing_time_filled_from_time_dt():
    iso = "2023-11-14T22:13:20.000Z"
    rows = [{"time": T0, "time_dt": iso}, {"time": None, "time_dt": iso}, {"time_dt": iso}]
    events, _ = load_events(rows)
    assert events["time"].notna().all()


# ---------------------------------------------------------------------------------------------- problems
def test_malformed_lines_reported_with_line_numbers(tmp_path):
    rows = [nested_event(i) for i in range(12)]
    lines: list = list(rows)
    lines.insert(2, "this is not json")                 # line 3
    lines.insert(5, "[1, 2, 3]")                        # line 6
    lines.insert(7, "17")                               # line 8
    lines[9] = nested_event(99, time="yesterday")       # line 10
    lines[10] = nested_event(98, http_response={"code": {"value": 200}})  # line 11: object where scalars
    lines.append('{"time": 1700000000000, "class_uid": 4002, "src_end')  # truncated last line
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    events, report = load_events(path)
    n_lines = len(lines)
    assert report.n_input == n_lines
    assert report.n_loaded == len(events) == n_lines - 4
    inv = problems_of(report, "invalid_json")
    assert inv["line"].tolist() == [3, n_lines]
    assert problems_of(report, "not_an_object")["line"].tolist() == [6, 8]
    t = problems_of(report, "unparseable_time")
    assert t["line"].tolist() == [10] and "yesterday" in t["detail"].iloc[0]
    wt = problems_of(report, "wrong_type")
    assert wt["line"].tolist() == [11] and wt["field"].tolist() == ["http_response.code"]
    # the bad event still loads, with the bad values missing
    row = events.index[events["metadata.uid"] == "u99"][0]
    assert pd.isna(events.loc[row, "time"]) and events.loc[row, "src_endpoint.ip"] == "10.0.0.99"
    row = events.index[events["metadata.uid"] == "u98"][0]
    assert pd.isna(events.loc[row, "http_response.code"])
    text = report.summary()
    assert "invalid_json" in text and "line 3" in text and str(report) == text
    json.dumps(report.to_dict())  # JSON-able


def test_type_conflict_between_lines_is_resolved(tmp_path):
    rows = [nested_event(i, http_response={"code": 200 + i}) for i in range(300)]
    rows[150]["http_response"] = {"code": "oops"}
    events, report = load_events(write_jsonl(tmp_path / "t.jsonl", rows))
    assert events["http_response.code"].dtype == "Int64"
    assert problems_of(report, "wrong_type")["line"].tolist() == [151]
    assert events["http_response.code"][0] == 200


def test_all_invalid_input_raises_with_summary(tmp_path):
    path = write_jsonl(tmp_path / "junk.jsonl", ["not json", "[1]", "{broken"])
    with pytest.raises(OCSFLoadError) as exc:
        load_events(path)
    msg = str(exc.value)
    assert "No valid OCSF event" in msg and "invalid_json" in msg and "line 1" in msg


def test_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(OCSFLoadError, match="No such file"):
        load_events(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(OCSFLoadError, match="empty"):
        load_events(tmp_path / "empty.jsonl")
    (tmp_path / "blank.json").write_text("\n \n")
    with pytest.raises(OCSFLoadError, match="whitespace"):
        load_events(tmp_path / "blank.json")
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(OCSFLoadError, match="format"):
        load_events(tmp_path / "data.csv")
    (tmp_path / "fake.parquet").write_text('{"a": 1}\n')
    with pytest.raises(OCSFLoadError, match="Parquet"):
        load_events(tmp_path / "fake.parquet")
    (tmp_path / "arr.json").write_text('[{"a": 1}, ')
    with pytest.raises(OCSFLoadError, match="not valid JSON"):
        load_events(tmp_path / "arr.json")
    assert issubclass(OCSFLoadError, ValueError)


# ---------------------------------------------------------------------------------------- in-memory input
def test_dataframe_input_with_nested_cells():
    df = pd.DataFrame(
        {
            "time": [T0, T0 + 1],
            "src_endpoint": [{"ip": "1.1.1.1", "port": 1}, {"ip": "2.2.2.2"}],
            "class_uid": ["4002", "4002"],
        },
        index=[10, 11],
    )
    events, report = load_events(df)
    assert events.index.tolist() == [0, 1]
    assert events["src_endpoint.ip"].tolist() == ["1.1.1.1", "2.2.2.2"]
    assert events["class_uid"].dtype == "Int64"
    assert report.n_input == 2 and report.format == "DataFrame"


def test_columns_argument(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [nested_event(i) for i in range(5)])
    events, report = load_events(path, columns=["time", "src_endpoint.ip", "not.there"])
    assert list(events.columns) == ["not.there", "src_endpoint.ip", "time"]
    assert events["not.there"].isna().all()
    df = pd.DataFrame({"time": [T0], "src_endpoint_ip": ["1.1.1.1"], "other": [1]})
    df.to_parquet(tmp_path / "c.parquet")
    events, _ = load_events(tmp_path / "c.parquet", columns=["src_endpoint.ip"])
    assert list(events.columns) == ["src_endpoint.ip"] and events.iloc[0, 0] == "1.1.1.1"


def test_records_read_only_where_the_requested_columns_come_from():
    """Records loaded with ``columns`` are walked only where those columns can come from (their objects, the
    JSON strings and arrays that expand to them, underscore spellings): the same table as loading every field and
    keeping those columns, and the same problems in those columns."""
    from messy_events import messy  # tests/ is on the import path (pytest's rootdir insertion)
    from obsad.ocsf import simulate
    from obsad.ocsf.nested import to_nested

    sim = simulate(n_events=5000, days=1, seed=5).events.iloc[::8].reset_index(drop=True)
    nested = json.loads(json.dumps(to_nested(sim), default=str))
    records = messy(nested, seed=11, p=0.08)
    records += [{"unmapped": json.dumps({"k": i, "z": "q"}), "src_endpoint_ip": f"1.1.1.{i}"} for i in range(5)]
    everything, full_report = load_events(records)
    columns = [c for c in everything.columns if c.startswith(("src_endpoint.", "actor.", "unmapped.", "answers."))]
    columns += ["time", "metadata.uid", "class_uid", "not.there"]
    assert len(columns) > 8
    pruned, report = load_events(records, columns=columns)
    present = sorted(set(columns) - {"not.there"})
    pd.testing.assert_frame_equal(pruned[present], everything[present])  # values and dtypes
    assert pruned["not.there"].isna().all()
    # the problems found: every one is one of the full load's, and none in a requested column is missed
    as_rows = lambda problems: set(problems.astype(str).itertuples(index=False, name=None))  # noqa: E731
    found, all_found = as_rows(report.problems), as_rows(full_report.problems)
    assert found <= all_found
    assert as_rows(full_report.problems[full_report.problems["field"].isin(columns)]) <= found
    assert len(found) < len(all_found)  # the other columns' problems are not looked for
    assert report.n_loaded == full_report.n_loaded == len(pruned)


def test_several_classes_union_of_columns_and_deterministic_order(tmp_path):
    rows = []
    for i in range(30):
        if i % 3 == 0:
            rows.append({"time": T0 + i, "class_uid": 3002, "user": {"name": f"u{i}"}, "auth_protocol": "NTLM"})
        elif i % 3 == 1:
            rows.append(
                {"time": T0 + i, "class_uid": 4001, "traffic": {"bytes_in": i}, "metadata": {"version": "1.0.0"}}
            )
        else:
            rows.append({"time": T0 + i, "class_uid": 4002, "http_request": {"url": {"path": "/x"}}})
    path = write_jsonl(tmp_path / "mix.jsonl", rows)
    a, _ = load_events(path)
    shuffled = write_jsonl(tmp_path / "mix2.jsonl", rows[::-1])
    b, _ = load_events(shuffled)
    assert list(a.columns) == list(b.columns) == sorted(a.columns)
    assert a["traffic.bytes_in"].notna().sum() == 10 and a["user.name"].notna().sum() == 10
    c, _ = load_events(rows)
    assert list(c.columns) == list(a.columns)
    assert [str(t) for t in c.dtypes] == [str(t) for t in a.dtypes]


def test_same_events_same_table_whatever_the_format(tmp_path):
    rows = [nested_event(i, resources=[{"type": "t%d" % (i % 2)}]) for i in range(8)]
    from_jsonl, _ = load_events(write_jsonl(tmp_path / "s.jsonl", rows))
    arr = tmp_path / "s.json"
    arr.write_text(json.dumps(rows))
    from_array, _ = load_events(arr)
    flat = pd.json_normalize(rows)
    flat["resources"] = flat["resources"].map(json.dumps)
    flat.to_parquet(tmp_path / "s.parquet")
    from_parquet, _ = load_events(tmp_path / "s.parquet")
    pd.testing.assert_frame_equal(from_jsonl, from_array)
    pd.testing.assert_frame_equal(from_jsonl, from_parquet)


def test_scalar_beside_object_columns_in_same_events_is_kept():
    df = pd.DataFrame({"time": [T0, T0], "device": ["laptop-1", "laptop-2"], "device_hostname": ["a", "b"]})
    events, report = load_events(df)
    assert events["device"].tolist() == ["laptop-1", "laptop-2"]
    assert events["device.hostname"].tolist() == ["a", "b"]
    assert report.problems.empty


def test_blank_lines_empty_objects_and_bad_json_text_cells(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(nested_event(0)),
                "",
                "{}",
                json.dumps(nested_event(1, time="not a time")),
                "   ",
                json.dumps(nested_event(2)),
            ]
        )
        + "\n\n"
    )
    events, report = load_events(path)
    assert len(events) == 3 and report.n_input == 4
    assert problems_of(report, "empty_object")["line"].tolist() == [3]
    assert problems_of(report, "unparseable_time")["line"].tolist() == [4]
    cells = [json.dumps({"k": i}) for i in range(300)]
    cells[10], cells[20] = "{not json", "plain text"
    events, report = load_events(pd.DataFrame({"time": [T0] * 300, "unmapped": cells}))
    assert "unmapped.k" in events.columns and pd.isna(events.loc[10, "unmapped.k"])
    assert problems_of(report, "invalid_json")["line"].tolist() == [10]
    assert problems_of(report, "wrong_type")["line"].tolist() == [20]
    with pytest.raises(OCSFLoadError, match="no events"):
        load_events([])


def test_json_columns_parsed_at_once_load_as_one_at_a_time(monkeypatch):
    """Large JSON-string columns are parsed by Arrow on threads, each started once its column is judged, the
    columns that look like JSON judged first: the same table and problems as one column after the other, including
    a column that an earlier one expands into, one whose JSON starts after 16 empty rows, and one whose first rows
    only look like JSON."""
    import obsad.ocsf.load as loader

    n = 12_000
    rng = np.random.default_rng(3)
    a = [json.dumps({"b": json.dumps({"c": int(v)})}) if i % 3 else None for i, v in enumerate(rng.integers(0, 9, n))]
    frame = pd.DataFrame({
        "x": [json.dumps({"user": f"u{i % 17}", "n": i}) for i in range(n)],
        "y": [json.dumps([i % 5, "p"]) for i in range(n)],
        "a": a,
        "a.b": [json.dumps({"c": -1}) if v is None else None for v in a],  # filled by "a" in the same round
        "z": [f"{{not json {i}" if i % 500 == 0 else json.dumps({"k": i}) for i in range(n)],
        "late": [None] * 20 + [json.dumps({"m": i % 4}) for i in range(n - 20)],
        "brace": ["{braced} words"] * 16 + [f"plain {i}" for i in range(n - 16)],
    })
    at_once = load_events(frame)
    assert {"x.user", "x.n", "a.b.c", "z.k", "late.m", "brace"} <= set(at_once.events.columns)
    monkeypatch.setattr(loader, "_JSON_AT_ONCE_MIN", 10 ** 12)
    one_by_one = load_events(frame)
    pd.testing.assert_frame_equal(at_once.events, one_by_one.events, check_exact=True)
    pd.testing.assert_frame_equal(at_once.report.problems, one_by_one.report.problems)
    assert at_once.events["a.b.c"].notna().all()
    assert (at_once.report.problems["field"] == "z").sum() == n // 500


def test_requested_columns_walk_paths_whose_shape_changes_between_records():
    """The walk of a batch decides each path once, on its first record: a path that is an object in one record
    and a value (or an empty object, or null) in another, a dotted key that spells a nested path, and a key
    first seen late load as they do without ``columns``."""
    records = [
        {"time": T0, "actor": {"user": {"name": "a", "uid": 1}}, "src": {"ip": "1.1.1.1"}},
        {"time": T0 + 1, "actor": {"user": "b"}, "src": {}},
        {"time": T0 + 2, "actor": None, "src": {"ip": "1.1.1.3", "port": 3}},
        {"time": T0 + 3, "actor": {"user": {"name": "d"}, "user.name": "dotted"}, "late": {"x": 4}},
        {"time": T0 + 4, "actor": {"user": {}}, "src": {"ip": None}, "late": 5},
    ] * 3
    whole = load_events(records).events
    for wanted in (["actor.user.name", "src.ip", "late.x"], ["actor.user", "actor", "src", "late"],
                   ["actor.user.uid", "late"]):
        some = load_events(records, columns=wanted).events
        for column in wanted:
            if column in whole.columns:
                pd.testing.assert_series_equal(some[column], whole[column], check_exact=True)
            else:
                assert some[column].isna().all()


@pytest.mark.parametrize("broken", [False, True], ids=["arrow", "python"])
def test_json_columns_expand_only_into_requested_columns(broken):
    """With ``columns``, a JSON-string column expands only into the keys that can make them (a requested key, a
    key under a requested name, a JSON string inside that leads to one), with the values of a whole expansion;
    ``broken``: a malformed text sends the column through the per-value parse, reported the same either way."""
    n = 300
    texts = [json.dumps({"tenant": f"t{i % 4}", "noise": i, "deep": {"keep": i % 3, "drop": "x"},
                         "inner": json.dumps({"want": i % 7, "skip": 1}), "obj": {"a": i, "b": -i}})
             for i in range(n)]
    if broken:
        texts[5] = "{not json"
    records = [{"class_uid": 3002, "unmapped": t} for t in texts]
    wanted = ["class_uid", "unmapped.tenant", "unmapped.deep.keep", "unmapped.inner.want", "unmapped.obj"]
    whole = load_events(records)
    some = load_events(records, columns=wanted)
    unwanted = {"unmapped.noise", "unmapped.deep.drop", "unmapped.inner.skip", "unmapped.obj.a"}
    assert unwanted <= set(whole.events.columns)
    expanded = set(some.report.expanded["unmapped"])
    assert {"unmapped.tenant", "unmapped.deep.keep", "unmapped.inner", "unmapped.obj.a", "unmapped.obj.b"} <= expanded
    assert not expanded & {"unmapped.noise", "unmapped.deep.drop"}
    assert some.report.expanded["unmapped.inner"] == ["unmapped.inner.want"]
    for column in ["class_uid", "unmapped.tenant", "unmapped.deep.keep", "unmapped.inner.want"]:
        pd.testing.assert_series_equal(some.events[column], whole.events[column], check_exact=True)
    assert some.events["unmapped.tenant"].notna().sum() == n - broken
    pd.testing.assert_frame_equal(some.report.problems, whole.report.problems)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_multi_line_json_texts_expand_like_one_line_texts(newline, tmp_path, monkeypatch):
    """JSON texts written over several lines (pretty-printed) expand to the same columns and values as the same
    texts on one line, from a frame and from a Parquet file, and still through Arrow's vectorised parse (its reader
    takes one text per line, so the line breaks between tokens must be found; a newline escaped inside a string
    stays in the value)."""
    import obsad.ocsf.load as loader

    n = 40
    rows = [{"user": f"u{i % 3}", "note": f"line one\\nline {i}", "tags": ["a", "b"][: i % 3]} for i in range(n)]
    pretty = [json.dumps(r, indent=2).replace("\n", newline) for r in rows]
    flat = [json.dumps(r) for r in rows]
    expected = load_events(pd.DataFrame({"class_uid": 3002, "unmapped": flat}))
    assert {"unmapped.user", "unmapped.note"} <= set(expected.events.columns)
    assert expected.events["unmapped.note"].iloc[7] == "line one\\nline 7"
    frame = pd.DataFrame({"class_uid": 3002, "unmapped": pretty})
    frame.to_parquet(tmp_path / "pretty.parquet")

    def per_value_parse(text):
        raise AssertionError("the multi-line texts left Arrow's parse for the per-value one")

    monkeypatch.setattr(loader, "_loads_or_none", per_value_parse)
    monkeypatch.setattr(loader, "_JSON_BLOCK_BYTES", 512)  # many blocks, as in a large export
    for got in (load_events(frame), load_events(tmp_path / "pretty.parquet")):
        pd.testing.assert_frame_equal(got.events, expected.events, check_exact=True)
        assert got.report.problems.empty


ISO_TIMES = ["2026-03-04T00:00:00Z", "2026-03-04T00:00:00.1Z", "2026-03-04T00:00:00.123Z", "2026-03-04T00:00:00.1234Z",
             "1500-01-01T00:00:00Z", "2300-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
             "2026-12-31T23:59:60Z", "2026-03-04T24:00:00Z", "2026-03-04T00:00:00+0200", "2026-03-04T00:00:00+02",
             "2026-03-04T00:00:00-05:30", "2026-03-04T00:00", "2026-03-04 00:00:00", "2026-3-4T00:00:00Z",
             "2026-02-30T00:00:00Z", "2026-03-04T00:00:00+25:00", "1969-12-31T23:59:59.999Z", "2026-03-04",
             "2026-03-04T00:00:00.000000000Z", "not a time"]


@pytest.mark.parametrize("text", ISO_TIMES)
def test_iso_times_read_by_arrow_as_pandas_reads_them(text, monkeypatch):
    """Arrow's cast reads a column of ISO 8601 times when it can read all of them; whatever it reads, and whatever
    it leaves to pandas, the times, units and problems are those of pandas' parse alone."""
    import obsad.ocsf.load as loader

    frame = pd.DataFrame({"class_uid": [3002] * 3, "time": [text, "2026-01-01T00:00:00Z", text]})
    fast = load_events(frame)
    monkeypatch.setattr(loader, "_iso_ms_arrow", lambda text: None)
    slow = load_events(frame)
    pd.testing.assert_frame_equal(fast.events, slow.events, check_exact=True)
    pd.testing.assert_frame_equal(fast.report.problems, slow.report.problems)
    assert fast.report.coerced == slow.report.coerced and fast.report.notes == slow.report.notes


def test_iso_times_take_arrows_cast_when_it_reads_them_all():
    import obsad.ocsf.load as loader

    texts = pd.Series(["2026-03-04T00:00:00.5Z", " 2026-03-04T01:00:00+01:00"], dtype="string[pyarrow]").str.strip()
    np.testing.assert_array_equal(loader._iso_ms_arrow(texts), [1772582400500, 1772582400000])
    assert loader._iso_ms_arrow(pd.Series(["2026-03-04T00:00:00Z", "2026-03-04"], dtype="string[pyarrow]")) is None
    assert loader._iso_ms_arrow(pd.Series(["2026-03-04T00:00:00Z"], dtype=object)) is None


def test_loaded_columns_are_independent_of_each_other_and_of_the_source_frame():
    """Absent requested columns may share one all-missing array and a frame's columns its source's memory: writing
    to one column of the result changes no other column and not the source, and the other way round."""
    source = pd.DataFrame({"time": [T0 + i for i in range(5)], "count": pd.array([1, 2, 3, 4, 5], dtype="Int64"),
                           "name": ["a", "b", "c", "d", "e"]})
    events = load_events(source, columns=["time", "count", "name", "absent.one", "absent.two"]).events
    events.loc[0, "absent.one"] = "x"
    events.loc[1, "count"] = 99
    events.loc[2, "name"] = "z"
    assert events["absent.two"].isna().all() and events.loc[0, "absent.one"] == "x"
    assert source["count"].tolist() == [1, 2, 3, 4, 5] and source["name"].tolist() == ["a", "b", "c", "d", "e"]
    source.loc[3, "count"] = -1
    assert events["count"].tolist() == [1, 99, 3, 4, 5]


def test_text_screen_stops_early_only_when_neither_flags_nor_numbers_can_pass():
    """The coercion screen gives up on a sample once over a tenth of it is neither a flag nor a number; the
    verdict (flags, numbers, neither) is the one the whole sample gives, at the 90 % boundary too."""
    from obsad.ocsf.load import _FLOAT_PY, _MISSING_SET, _screened

    def verdict(values, counts):  # the screen on the whole sample
        kept = [(v.strip().lower(), c) for v, c in zip(values, counts) if v.strip().lower() not in _MISSING_SET]
        total = sum(c for _, c in kept)
        if not total:
            return None
        flags = sum(c for v, c in kept if v in ("true", "false")) >= 0.9 * total
        numbers = not flags and sum(c for v, c in kept if _FLOAT_PY.fullmatch(v)) >= 0.9 * total
        return flags, numbers

    rng = np.random.default_rng(3)
    pool = ["true", "False ", "12", "-3.5e2", "007", "n/a", "", "NULL", "abc", "x1", "1.2.3", "nan", "TRUE"]
    seen = set()
    for _ in range(3000):
        k = int(rng.integers(1, 9))
        values = list(dict.fromkeys(rng.choice(pool, size=k).tolist()))
        counts = rng.integers(1, 40, size=len(values)).tolist()
        screened = _screened(values, counts, sum(counts))
        want = verdict(values, counts)
        if screened is None:
            assert want == (False, False), (values, counts)
        else:
            assert screened == [(v.strip().lower(), c) for v, c in zip(values, counts)
                                if v.strip().lower() not in _MISSING_SET]
        seen.add(screened is None)
    assert seen == {True, False}
    # exactly a tenth of the sample neither a flag nor a number: not given up, and numbers still pass
    assert _screened(["1", "x"], [9, 1], 10) is not None and verdict(["1", "x"], [9, 1]) == (False, True)
    assert _screened(["1", "x"], [8, 2], 10) is None and verdict(["1", "x"], [8, 2]) == (False, False)


def test_text_sample_counts_are_the_counts_of_the_sample():
    """A text column's sampled values counted by Arrow are those of the evenly spaced sample, whatever its size
    and missing values (a column of at most k present values: all of them; none missing: positions made once)."""
    import collections

    import pyarrow as pa

    from obsad.ocsf.load import _sample_positions, _text_sample_counts

    rng = np.random.default_rng(8)
    for n in (1, 7, 499, 500, 501, 900, 1000, 2500):
        for missing in (0.0, 0.3, 0.6, 1.0):
            values = [None if rng.random() < missing else f"v{int(rng.integers(0, 20))}" for _ in range(n)]
            arr = pa.chunked_array([pa.array(values[: n // 2], pa.large_string()),
                                    pa.array(values[n // 2:], pa.large_string())])
            valid = np.array([v is not None for v in values])
            sample = [values[i] for i in _sample_positions(valid, 500)]
            got_values, got_counts, size = _text_sample_counts(arr, 500)
            assert size == len(sample)
            assert dict(zip(got_values, got_counts)) == collections.Counter(sample)
            assert got_values == list(dict.fromkeys(sample))  # in order of first appearance in the sample


def test_text_columns_without_openers_skip_the_json_judgement_only_when_no_value_could_open_json():
    """A text column none of whose characters is '{' or '[' cannot hold JSON (no sampling needed); one value
    that opens JSON after whitespace, in any chunk, sends the column to the full judgement, as does a slice."""
    import pyarrow as pa

    from obsad.ocsf.load import _without_openers

    def text(*chunks):
        arr = pa.chunked_array([pa.array(c, pa.large_string()) for c in chunks])
        return pd.Series(pd.arrays.ArrowStringArray(arr))

    assert _without_openers(text(["a", None, "b}"], ["c]"]))
    assert not _without_openers(text(["a", None], ["  {\"k\": 1}"]))
    assert not _without_openers(text(["x[0]"]))  # an opener anywhere: judged in full (the sample decides)
    assert not _without_openers(text(["a", "{b", "c"]).iloc[:1].reset_index(drop=True))  # the slice's buffer
    assert not _without_openers(pd.Series(["a", 1], dtype=object))  # not an Arrow text column
    records = [{"time": T0, "u": "  [1, 2]" if i % 2 else "[3]", "v": f"v{i}"} for i in range(40)]
    events = load_events(records).events
    assert events["u"].tolist() == ["1|2" if i % 2 else "3" for i in range(40)]


def test_dense_and_sparse_record_columns_load_alike(monkeypatch):
    """A batch's record columns kept with a slot per record (small batches) or as sparse (row, value) lists load
    the same table and report: records refused in between, paths missing, nulls, a dotted key that spells a
    nested path, objects beside values."""
    import obsad.ocsf.load as load_module
    from messy_events import messy  # tests/ is on the import path (pytest's rootdir insertion)
    from obsad.ocsf import simulate
    from obsad.ocsf.nested import to_nested

    sim = simulate(n_events=5000, days=1, seed=9).events.iloc[::8].reset_index(drop=True)
    records = messy(json.loads(json.dumps(to_nested(sim), default=str)), seed=4, p=0.1)
    records[3:3] = [[1, 2], {}, "text", None]  # refused: their slots stay out of the table
    records += [{"time": T0, "x": {"a": {"b": 1}, "a.b": 2}}, {"time": T0, "x": {"a": 3}},
                {"time": T0, "x": {"a": {"b": 5}}}, {"time": T0, "x": {"a.b": 6}}]
    columns = sorted({c for c in load_events(records).events.columns if not c.startswith("metadata.product")})
    columns += ["x.a.b", "x.a", "not.there"]
    dense = load_events(records, columns=columns)
    monkeypatch.setattr(load_module, "_DENSE_ROWS", 0)
    sparse = load_events(records, columns=columns)
    pd.testing.assert_frame_equal(dense.events, sparse.events, check_exact=True)
    assert dense.report.to_dict() == sparse.report.to_dict()
    # one dotted name from two paths: one column, the later value where a record has both
    assert dense.events["x.a.b"].iloc[-4:].fillna(-1).tolist() == [2, -1, 5, 6]


def test_number_pattern_reads_each_text_one_way_and_long_texts_load():
    """The number screen's pattern accepts what the earlier, ambiguous one did (``\\d+\\.?\\d*``), and refuses a long
    run of digits ending in a letter in one pass (the ambiguous one backtracked quadratically: 18 s on 32,000
    digits); such a value loads as text."""
    import random
    import re

    from obsad.ocsf.load import _FLOAT_PY

    earlier = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
    rng = random.Random(5)
    for _ in range(30000):
        text = "".join(rng.choice("0123456789.eE+-x ") for _ in range(rng.randint(0, 9)))
        assert (earlier.fullmatch(text) is None) == (_FLOAT_PY.fullmatch(text) is None), text
    long_value = "7" * 20000 + "x"
    records = [{"time": T0 + i, "code": long_value if i == 3 else str(i)} for i in range(8)]
    events = load_events(records).events
    assert events["code"].iloc[3] == long_value and events["code"].iloc[4] == "4"


@pytest.mark.parametrize("columns", [None, ["time", "blob", "blob.a", "blob.k"]], ids=["all", "requested"])
def test_json_texts_nested_too_deeply_are_reported_not_fatal(columns):
    """A JSON text nested deeper than the loader takes (a few thousand brackets: Python's parser and every walk of
    the value recurse) is one reported invalid value; the other texts of the column expand as usual, a text with
    many brackets that is not deep included."""
    from obsad.ocsf.load import _JSON_MAX_DEPTH

    over = _JSON_MAX_DEPTH + 1
    deep_texts = ['{"a":' * 3000 + "1" + "}" * 3000, '{"a":' * over + "1" + "}" * over,
                  '{"k": ' + "[" * 5000 + "]" * 5000 + "}", '{"k": ' + "[" * 100000]
    wide = json.dumps({"k": [{"x": i} for i in range(100)]})  # 101 brackets, depth 3
    texts = deep_texts + [json.dumps({"a": i, "k": "v"}) for i in range(500)] + [wide]
    records = [{"time": T0 + i, "blob": t} for i, t in enumerate(texts)]
    result = load_events(records, columns=columns)
    problems = result.report.problems
    bad = problems[problems["field"] == "blob"]
    assert sorted(bad["line"].tolist()) == [0, 1, 2, 3]
    assert set(bad["reason"]) <= {"invalid_json", "wrong_type"}
    events = result.events
    assert events["blob.a"].iloc[4:504].tolist() == list(range(500))
    assert events["blob.a"].iloc[:4].isna().all()
    assert len(events) == len(texts)


@pytest.mark.parametrize("values", [["a", None, "ccc", "", "dd"] * 40, [None] * 7, ["", ""], ["é", "日本", None]])
def test_text_widened_to_large_string_keeps_every_value(values):
    from obsad.ocsf.load import _widened

    arr = pa.array(values, type=pa.string())
    sliced = pa.StructArray.from_arrays([arr], ["x"])[3:].flatten()[0]  # a child at an offset, as after flatten
    for a in (arr, sliced, arr[:0]):
        wide = _widened(a)
        wide.validate(full=True)
        assert wide.type == pa.large_string() and wide.equals(a.cast(pa.large_string()))
