import re

import numpy as np
import pandas as pd
import pytest

from obsad.logs.formats import read_labels, read_log_lines
from obsad.logs.sessions import session_sequences
from obsad.logs.simulate import HDFS_KINDS, OPENSTACK_KINDS, simulate_hdfs, simulate_openstack


@pytest.fixture(scope="module")
def hdfs():
    return simulate_hdfs(n_blocks=2_000, seed=3)


@pytest.fixture(scope="module")
def openstack():
    return simulate_openstack(n_instances=600, seed=3)


@pytest.fixture(scope="module", params=["hdfs", "openstack"])
def sim(request, hdfs, openstack):
    return hdfs if request.param == "hdfs" else openstack


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("".join(".+?" if part == "<*>" else re.escape(part) for part in re.split(r"(<\*>)", template)))


def _sequences(sim) -> pd.DataFrame:
    """Each labelled session's true events in file order, with its kind."""
    seq = session_sequences(sim.truth["origin"], sim.truth["line_no"], sim.truth["event_id"])
    return seq.merge(sim.labels, on="session_id", validate="one_to_one")


def test_same_seed_same_logs_other_seed_other_logs():
    for simulate, n in ((simulate_hdfs, 300), (simulate_openstack, 120)):
        first, again, other = simulate(n, seed=11), simulate(n, seed=11), simulate(n, seed=12)
        assert first.lines.tolist() == again.lines.tolist()
        pd.testing.assert_frame_equal(first.truth, again.truth)
        pd.testing.assert_frame_equal(first.labels, again.labels)
        assert first.lines.tolist() != other.lines.tolist()


def test_every_line_parses_and_matches_its_true_template(sim):
    frame, report = read_log_lines(sim.lines, sim.format)
    assert report.n_malformed == 0 and frame["header_ok"].all()
    assert len(frame) == len(sim.truth) == len(sim.lines)
    regex = {t: _template_regex(t) for t in sim.templates["template"]}
    mismatched = [(m, t) for m, t in zip(frame["message"], sim.truth["template"]) if not regex[t].fullmatch(m)]
    assert mismatched == []
    # The reader finds exactly the sessions the lines name, and the timestamps never go back.
    pd.testing.assert_series_equal(frame["session_id"], sim.truth["session_id"], check_names=False)
    assert frame["timestamp"].is_monotonic_increasing
    # The fast split reader and the format's header regex agree on every field.
    for line, (_, row) in zip(sim.lines[::97], frame.iloc[::97].iterrows()):
        match = sim.format.header.match(line)
        assert row["component"] == match["component"] and row["pid"] == int(match["pid"])
        assert row["message"] == line[match.end():]


def test_template_catalogue(hdfs, openstack):
    assert len(hdfs.templates) == 29 and len(openstack.templates) == 46
    for sim in (hdfs, openstack):
        assert sim.templates["template"].is_unique
        assert set(sim.truth["event_id"]) <= set(sim.templates["event_id"])


@pytest.mark.parametrize("simulate, n, rate, kinds", [(simulate_hdfs, 4_000, 0.03, HDFS_KINDS),
                                                       (simulate_openstack, 1_500, 0.05, OPENSTACK_KINDS)])
def test_anomaly_share_and_kind_mix_follow_the_request(simulate, n, rate, kinds):
    sim = simulate(n, seed=5, anomaly_rate=rate)
    assert sim.labels["is_anomaly"].sum() == round(rate * n)
    assert sim.labels["session_id"].is_unique and len(sim.labels) == n
    shares = sim.labels.loc[sim.labels["is_anomaly"], "kind"].value_counts(normalize=True)
    expected = pd.Series({k: v[0] for k, v in kinds.items()})
    assert (shares.reindex(expected.index) - expected).abs().max() < 0.02
    only = simulate(300, seed=5, anomaly_rate=0.1, kinds={next(iter(kinds)): 1.0})
    assert set(only.labels["kind"]) == {"normal", next(iter(kinds))}
    with pytest.raises(ValueError, match="anomaly_rate"):
        simulate(10, anomaly_rate=1.5)
    with pytest.raises(ValueError, match="kinds"):
        simulate(10, kinds={"meteor_strike": 1.0})


def test_some_kinds_show_new_templates_and_the_others_only_familiar_ones(sim):
    seq = _sequences(sim)
    normal_events = set(np.concatenate(seq.loc[seq["kind"] == "normal", "event_id"].to_list()))
    kinds = HDFS_KINDS if sim.name == "HDFS" else OPENSTACK_KINDS
    for kind, group in seq[seq["is_anomaly"]].groupby("kind"):
        unseen = group["event_id"].map(lambda events: bool(set(events) - normal_events))
        if kinds[kind][1].startswith("new templates"):
            assert unseen.all(), kind
        else:
            assert not unseen.any(), kind


def test_hdfs_lifecycles_differ_in_counts_and_order():
    sim = simulate_hdfs(n_blocks=3_000, seed=8, anomaly_rate=0.1)
    seq = _sequences(sim)
    count = seq["event_id"].map(lambda events: {e: int((events == e).sum()) for e in ("E26", "E25", "E5")})
    stored = count.map(lambda c: c["E26"])
    normal = seq["kind"] == "normal"
    assert (stored[normal] >= 3).all() and (stored[normal] <= 4).all()  # three replicas, at most one more
    assert (stored[seq["kind"] == "missing_replica"] == 2).all()
    assert (stored[seq["kind"] == "unrecorded_block"] == 0).all()
    assert (count[seq["kind"] == "over_replicated"].map(lambda c: c["E25"]) >= 3).all()
    assert (count[normal].map(lambda c: c["E25"]) <= 1).all()
    first_two = seq["event_id"].map(lambda events: tuple(events[:2]))
    assert (first_two[seq["kind"] == "wrong_order"] == ("E22", "E26")).all()
    assert (first_two[normal] == ("E22", "E5")).all()
    assert seq.loc[normal, "event_id"].map(tuple).nunique() > 50  # normal blocks are not all alike


def test_slow_spawns_are_visible_only_in_their_numbers(openstack):
    frame, _ = read_log_lines(openstack.lines, openstack.format)
    built = openstack.truth["event_id"] == "E24"  # Took N seconds to build instance.
    seconds = frame.loc[built, "message"].str.extract(r"Took ([\d.]+) seconds")[0].astype(float)
    kind = openstack.labels.set_index("session_id")["kind"].reindex(openstack.truth.loc[built, "session_id"])
    slow, normal = seconds[kind.to_numpy() == "slow_spawn"], seconds[kind.to_numpy() == "normal"]
    assert len(slow) > 0 and slow.min() > normal.quantile(0.99)
    assert 5 < normal.median() < 60


def test_sessions_interleave(sim):
    frame, _ = read_log_lines(sim.lines, sim.format)
    span = frame.dropna(subset=["session_id"]).groupby("session_id")["line_no"].agg(["min", "max"])
    middle = len(frame) // 2
    open_at_middle = int(((span["min"] <= middle) & (span["max"] >= middle)).sum())
    assert open_at_middle >= (100 if sim.name == "HDFS" else 20)
    # Consecutive lines often belong to different sessions (nova's claim lines come in one burst).
    ids = frame["session_id"].dropna().to_numpy()
    assert (ids[1:] != ids[:-1]).mean() > (0.5 if sim.name == "HDFS" else 0.3)
    if sim.name == "HDFS":
        assert frame["pid"].nunique() > 50 and frame["component"].nunique() >= 8
    else:
        assert frame["logfile"].nunique() == 3 and frame["session_id"].isna().mean() > 0.1


def test_written_files_are_in_the_loghub_layout_and_byte_identical(sim, tmp_path):
    paths = sim.write(tmp_path / "a")
    again = sim.write(tmp_path / "b")
    for key in ("log", "labels", "truth"):
        assert paths[key].read_bytes() == again[key].read_bytes()
    assert paths["log"].name == f"{sim.name}.log" and paths["truth"].name == f"{sim.name}_truth.parquet"
    header = paths["labels"].read_text().splitlines()[0]
    assert header == ("BlockId,Label" if sim.name == "HDFS" else "InstanceId,Label")
    assert set(paths["labels"].read_text().splitlines()[1:][0].split(",")[1:]) <= {"Anomaly", "Normal"}
    labels = read_labels(paths["labels"])
    pd.testing.assert_frame_equal(labels, sim.labels[["session_id", "is_anomaly"]])
    frame, report = read_log_lines(paths["log"], sim.format)
    assert report.n_malformed == 0 and frame["message"].str.len().sum() > 0
    assert len(frame) == len(sim.lines)
    pd.testing.assert_frame_equal(pd.read_parquet(paths["truth"]), sim.truth)
