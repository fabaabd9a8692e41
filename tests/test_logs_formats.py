import gzip

import numpy as np
import pandas as pd
import pytest

from obsad.logs.formats import FORMATS, HDFS, OPENSTACK, LogFormat, LogFormatError, read_labels, read_log_lines
from obsad.logs.sessions import session_sequences, split_sessions

HDFS_LINE = ("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block "
             "blk_38865049064139660 terminating")
HDFS_NEGATIVE = ("081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_-1608999687919862906 "
                 "src: /10.250.19.102:54106 dest: /10.250.19.102:50010")
NOVA_COMPUTE = ("nova-compute.log.1.2017-05-16_13:55:31 2017-05-16 00:00:04.500 2931 INFO nova.compute.manager "
                "[req-3ea4052c-895d-4b64-9e2d-04d64c4d94ab - - - - -] [instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d]"
                " VM Started (Lifecycle Event)")
NOVA_API = ("nova-api.log.1.2017-05-16_13:53:08 2017-05-16 00:00:00.008 25746 INFO nova.osapi_compute.wsgi.server "
            "[req-38101a0b-2096-447d-96ea-a692162415ae 113d3a99c3da401fbd62cc2caa5b96d2 "
            "54fadb412c4e40cdbaed9335e4c35a9e - - -] 10.11.10.1 \"GET /v2/54fadb412c4e40cdbaed9335e4c35a9e/servers/"
            "detail HTTP/1.1\" status: 200 len: 1893 time: 0.2477829")
NOVA_GET = ("nova-api.log.1.2017-05-16_13:53:08 2017-05-16 00:00:01.250 25746 INFO nova.osapi_compute.wsgi.server "
            "[req-0c6b4a2e-8d5f-4c1a-9a3e-2b7f6e1d9c01 113d3a99c3da401fbd62cc2caa5b96d2 "
            "54fadb412c4e40cdbaed9335e4c35a9e - - -] 10.11.10.1 \"GET /v2/54fadb412c4e40cdbaed9335e4c35a9e/servers/"
            "a1b2c3d4-0000-4000-8000-000000000001 HTTP/1.1\" status: 200 len: 1874 time: 0.1923051")
NOVA_NO_REQUEST = ("nova-compute.log.1.2017-05-16_13:55:31 2017-05-16 00:00:09.000 2931 INFO nova.virt.libvirt.driver "
                   "[-] [instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d] Instance destroyed successfully. "
                   "GET /servers/a1b2c3d4-0000-4000-8000-000000000001")


def test_hdfs_header_every_field():
    frame, report = read_log_lines([HDFS_LINE], "hdfs")
    row = frame.iloc[0]
    assert row["line_no"] == 1
    assert row["timestamp"] == pd.Timestamp("2008-11-09 20:36:15", tz="UTC")
    assert row["pid"] == 148
    assert (row["level"], row["component"]) == ("INFO", "dfs.DataNode$PacketResponder")
    assert row["message"] == "PacketResponder 1 for block blk_38865049064139660 terminating"
    assert row["session_id"] == "blk_38865049064139660"
    assert row["header_ok"]
    assert str(frame["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert frame["pid"].dtype == "Int64"
    assert frame["session_id"].dtype == pd.StringDtype("pyarrow")
    assert list(frame.columns) == ["line_no", "timestamp", "pid", "level", "component", "message", "session_id",
                                   "header_ok"]
    assert report.n_lines == 1 and report.n_malformed == 0


def test_negative_block_ids_and_the_first_block_named_wins():
    two_blocks = "081109 204005 35 INFO dfs.FSNamesystem: BLOCK* ask blk_-42 then blk_77 and blk_-9"
    frame, _ = read_log_lines([HDFS_NEGATIVE, two_blocks], HDFS)
    assert frame["session_id"].tolist() == ["blk_-1608999687919862906", "blk_-42"]
    assert frame["component"].iloc[1] == "dfs.FSNamesystem"
    assert frame["message"].iloc[1] == "BLOCK* ask blk_-42 then blk_77 and blk_-9"


def test_openstack_header_every_field_and_session_sources():
    frame, report = read_log_lines([NOVA_COMPUTE, NOVA_API, NOVA_GET, NOVA_NO_REQUEST], "openstack")
    compute = frame.iloc[0]
    assert compute["logfile"] == "nova-compute.log.1.2017-05-16_13:55:31"
    assert compute["timestamp"] == pd.Timestamp("2017-05-16 00:00:04.500", tz="UTC")
    assert compute["pid"] == 2931
    assert (compute["level"], compute["component"]) == ("INFO", "nova.compute.manager")
    assert compute["request_id"] == "req-3ea4052c-895d-4b64-9e2d-04d64c4d94ab"
    assert compute["message"] == "[instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d] VM Started (Lifecycle Event)"
    api = frame.iloc[1]
    assert api["timestamp"] == pd.Timestamp("2017-05-16 00:00:00.008", tz="UTC")
    assert api["pid"] == 25746 and api["component"] == "nova.osapi_compute.wsgi.server"
    assert api["request_id"] == "req-38101a0b-2096-447d-96ea-a692162415ae"
    assert api["message"].startswith('10.11.10.1 "GET /v2/') and api["message"].endswith("time: 0.2477829")
    # [instance: UUID] first, else /servers/UUID, else none; "[-]" carries no request id
    assert frame["session_id"].tolist()[:3] == ["b9000564-fe1a-409b-b8cc-1e88b294cd1d", pd.NA,
                                                "a1b2c3d4-0000-4000-8000-000000000001"]
    assert frame["session_id"].iloc[3] == "b9000564-fe1a-409b-b8cc-1e88b294cd1d"
    assert pd.isna(frame["request_id"].iloc[3])
    assert frame["header_ok"].all() and report.n_without_session == 1
    assert list(frame.columns[-2:]) == ["logfile", "request_id"]


def test_the_split_reader_agrees_with_the_header_regex():
    lines = [HDFS_LINE, HDFS_NEGATIVE, "081109 203615 148 INFO a.b: x: y: z", "081109 203615 148 INFO a.b: "]
    frame, _ = read_log_lines(lines, HDFS)
    for line, (_, row) in zip(lines, frame.iterrows()):
        match = HDFS.header.match(line)
        assert row["component"] == match["component"] and row["level"] == match["level"]
        assert row["message"] == line[match.end():]
    assert frame["message"].tolist()[2:] == ["x: y: z", ""]


def test_malformed_lines_are_kept_in_place_and_reported():
    lines = [HDFS_LINE, "java.io.IOException: Connection reset by peer blk_-5", "", "081309 203615 148 INFO x: bad",
             HDFS_NEGATIVE]
    frame, report = read_log_lines(lines, "hdfs")
    assert frame["line_no"].tolist() == [1, 2, 3, 4, 5]
    assert frame["header_ok"].tolist() == [True, False, False, False, True]
    bad = frame[~frame["header_ok"]]
    assert bad["message"].tolist() == lines[1:4]  # the whole line, so the block is still found
    assert bad["session_id"].tolist()[0] == "blk_-5"
    assert bad["timestamp"].isna().all() and bad["pid"].isna().all() and bad["level"].isna().all()
    assert report.n_malformed == 3
    assert [no for no, _ in report.malformed_examples] == [2, 3, 4]
    assert report.malformed_examples[0][1] == lines[1]
    assert "3 without a valid header" in report.summary() and "line 4" in report.summary()


def test_reads_plain_and_gzip_files_with_either_line_ending(tmp_path):
    lines = [HDFS_LINE, HDFS_NEGATIVE, "not a header"]
    plain, zipped = tmp_path / "HDFS.log", tmp_path / "HDFS.log.gz"
    plain.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    with gzip.open(zipped, "wb") as fh:
        fh.write(("\n".join(lines)).encode())  # no newline at the end
    from_list, _ = read_log_lines(lines, "hdfs")
    for path in (plain, zipped, str(plain)):
        frame, report = read_log_lines(path, "hdfs")
        pd.testing.assert_frame_equal(frame, from_list)
        assert report.source == str(path) and report.n_lines == 3


def test_clear_errors_for_user_mistakes(tmp_path):
    with pytest.raises(LogFormatError, match="no such log file"):
        read_log_lines(tmp_path / "missing.log", "hdfs")
    (tmp_path / "empty.log").write_text("")
    with pytest.raises(LogFormatError, match="is empty"):
        read_log_lines(tmp_path / "empty.log", "hdfs")
    with pytest.raises(LogFormatError, match="no log lines"):
        read_log_lines([], "hdfs")
    with pytest.raises(LogFormatError, match="looks like openstack"):
        read_log_lines([NOVA_COMPUTE, NOVA_API], "hdfs")
    with pytest.raises(LogFormatError, match="unknown log format"):
        read_log_lines([HDFS_LINE], "bgl")
    with pytest.raises(LogFormatError, match="iterable of str"):
        read_log_lines([HDFS_LINE, 42], "hdfs")
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(LogFormatError, match="cannot read"):
        read_log_lines(tmp_path / "bad.gz", "hdfs")
    assert issubclass(LogFormatError, ValueError)


def test_layouts_are_checked_when_a_format_is_declared():
    assert set(FORMATS) == {"hdfs", "openstack"} and FORMATS["openstack"] is OPENSTACK
    with pytest.raises(ValueError, match="ends with <message>"):
        LogFormat(name="x", layout="<date> <pid> <level> <component>", fields=(), session_patterns=(),
                  timestamp_groups=("date",), timestamp_format="%y", session_column="Id")
    with pytest.raises(ValueError, match="missing"):
        LogFormat(name="x", layout="<date> <level>: <message>", fields=(("date", r"\d+"), ("level", r"\w+")),
                  session_patterns=(), timestamp_groups=("date",), timestamp_format="%y", session_column="Id")


def test_labels_in_the_loghub_layout(tmp_path):
    path = tmp_path / "anomaly_label.csv"
    path.write_text("BlockId,Label\nblk_-1608999687919862906,Normal\nblk_7503483334202473044,Anomaly\n"
                    "blk_1,anomaly\nblk_2, NORMAL\n")
    labels = read_labels(path)
    assert labels["session_id"].tolist() == ["blk_-1608999687919862906", "blk_7503483334202473044", "blk_1", "blk_2"]
    assert labels["is_anomaly"].tolist() == [False, True, True, False]
    assert labels["is_anomaly"].dtype == bool and labels["session_id"].dtype == pd.StringDtype("pyarrow")
    (tmp_path / "other.csv").write_text("InstanceId,label\nb9000564-fe1a-409b-b8cc-1e88b294cd1d,Anomaly\n")
    assert read_labels(tmp_path / "other.csv")["is_anomaly"].tolist() == [True]


@pytest.mark.parametrize("text, message", [
    ("BlockId\nblk_1\n", "two columns"),
    ("BlockId,Kind\nblk_1,Normal\n", "two columns"),
    ("BlockId,Label,Extra\nblk_1,Normal,x\n", "two columns"),
    ("BlockId,Label\nblk_1,Normal\nblk_2,maybe\n", "line 3"),
    ("BlockId,Label\nblk_1,\n", "rows are not"),
    ("BlockId,Label\nblk_1,Normal,extra\n", "two-column"),
    ("BlockId,Label\nblk_1,Normal\nblk_1,Anomaly\n", "labelled twice"),
    ("BlockId,Label\n", "no labels"),
    ("", "is empty"),
])
def test_label_files_in_another_layout_are_refused(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(LogFormatError, match=message):
        read_labels(path)


def test_missing_label_file():
    with pytest.raises(LogFormatError, match="no such label file"):
        read_labels("/nonexistent/anomaly_label.csv")


def test_session_sequences_are_ordered_with_ties_in_input_order():
    session = pd.Series(["b", "a", "b", None, "a", "c", "b"], dtype="string")
    time = pd.Series(pd.to_datetime([5, 1, 2, 0, 1, 9, 5], unit="s", utc=True))
    event = pd.Series(["E1", "E2", "E3", "E4", "E5", "E6", "E7"], name="event_id")
    out = session_sequences(session, time, event)
    assert out["session_id"].tolist() == ["a", "b", "c"]  # by start
    assert [list(v) for v in out["event_id"]] == [["E2", "E5"], ["E3", "E1", "E7"], ["E6"]]
    assert out["n_events"].tolist() == [2, 3, 1]
    assert out["start"].tolist() == [pd.Timestamp(1, unit="s", tz="UTC"), pd.Timestamp(2, unit="s", tz="UTC"),
                                     pd.Timestamp(9, unit="s", tz="UTC")]
    by_line = session_sequences(session, pd.Series(np.arange(1, 8), dtype="Int64"), event, name="events")
    assert [list(v) for v in by_line["events"]] == [["E1", "E3", "E7"], ["E2", "E5"], ["E6"]]
    with pytest.raises(ValueError, match="no order key"):
        session_sequences(session, pd.Series([1.0, None, 3, 4, 5, 6, 7]), event)


def test_session_split_is_time_ordered_and_never_splits_a_session():
    rng = np.random.default_rng(0)
    n_lines = 20_000
    session = pd.Series(rng.integers(0, 1_000, n_lines).astype(str), dtype="string")
    time = pd.Series(pd.to_datetime(rng.integers(0, 10**9, n_lines), unit="ms", utc=True))
    sessions = session_sequences(session, time, pd.Series(np.zeros(n_lines, int)))
    split = split_sessions(sessions)
    assert split.value_counts()[["train", "val", "test"]].tolist() == pytest.approx([700, 150, 150], abs=3)
    assert sessions["start"][split == "train"].max() < sessions["start"][split == "val"].min()
    assert sessions["start"][split == "val"].max() < sessions["start"][split == "test"].min()
    per_line = pd.Series(split.to_numpy(), index=sessions["session_id"]).reindex(session).to_numpy()
    assert pd.Series(per_line).groupby(session.to_numpy()).nunique().max() == 1
    assert sessions["n_events"].sum() == n_lines
