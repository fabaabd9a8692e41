"""The HTTP scoring service, started as a user starts it (`obsad serve` in a subprocess) and called over loopback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from obsad.ocsf import load_events, simulate
from obsad.ocsf.nested import to_nested
from obsad.pipeline import fit_pipeline, load_pipeline

API_KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_BATCH = 60
MAX_BODY = 400_000
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def obsad(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "obsad.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """A champion (event + window views, IVF similar-event index) and a different challenger (event view)."""
    import torch

    root = tmp_path_factory.mktemp("serve")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sim = simulate(n_events=6000, days=2, seed=11)
        normal = sim.events[~sim.events["metadata.uid"].isin(set(sim.labels["event_uid"]))]
        events, _ = load_events(normal)
        champion = fit_pipeline(events, epochs=1, seed=0, progress=False, exact_max=1000).save(root / "champion")
        challenger = fit_pipeline(events, epochs=1, seed=1, progress=False, window=None).save(root / "challenger")
    finally:
        torch.set_num_threads(before)
    served = root / "served"
    shutil.copytree(champion, served)
    later = simulate(n_events=6000, days=2, seed=12).events.sort_values("time", kind="stable").iloc[2000:2200]
    raw = json.loads(json.dumps(to_nested(later.reset_index(drop=True)), default=str))
    return {"root": root, "champion": champion, "challenger": challenger, "served": served, "events": raw}


def start_service(args: list[str], log_path: Path) -> tuple[subprocess.Popen, httpx.Client, int]:
    """``obsad serve`` with ``args`` on a free loopback port, once it answers ``/healthz``."""
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "obsad.cli", "serve", "--port", str(port), *args],
                                stdout=log, stderr=subprocess.STDOUT, env=ENV)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.time() + 180
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                return proc, client, port
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("the server did not start:\n" + log_path.read_text())
        time.sleep(0.2)


def api_key_file(root: Path) -> Path:
    key_file = root / "api.key"
    key_file.write_text(API_KEY + "\n")
    key_file.chmod(0o600)
    return key_file


@pytest.fixture(scope="module")
def server(packages):
    root = packages["root"]
    log_path = root / "server.log"
    proc, client, port = start_service(
        ["--model", str(packages["served"]), "--api-key-file", str(api_key_file(root)), "--shadow",
         str(packages["challenger"]), "--shadow-log", str(root / "shadow"), "--max-batch", str(MAX_BATCH),
         "--max-body-bytes", str(MAX_BODY)], log_path)
    yield {"client": client, "port": port, "log": log_path, "proc": proc, **packages}
    client.close()
    proc.terminate()
    proc.wait(timeout=30)


def score(server, events, **options) -> httpx.Response:
    return server["client"].post("/v1/score", json={"events": events, **options}, headers=AUTH)


def expected_scores(package: Path, events: list) -> pd.DataFrame:
    pipeline = load_pipeline(package)
    frame, _ = load_events(events, columns=pipeline.input_columns)
    return pipeline.score(frame).reset_index(drop=True)


def assert_scores_equal(body: dict, package: Path, events: list) -> None:
    got = pd.DataFrame(body["results"])
    want = expected_scores(package, events)
    np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), rtol=0, atol=1e-6)
    assert got["is_anomaly"].tolist() == want["is_anomaly"].tolist()
    assert got["view"].tolist() == want["view"].tolist()
    assert [", ".join(t) for t in got["top_features"]] == want["top_features"].tolist()
    assert got["event_uid"].tolist() == [e["metadata"]["uid"] for e in events]


def metric_values(server) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = server["client"].get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(values: dict, name: str, **labels) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def flatten(event: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in event.items():
        if isinstance(value, dict) and key != "unmapped":
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


# ------------------------------------------------------------------------------------------------ scoring
def test_batch_scores_equal_pipeline_and_obsad_score(server):
    events = server["events"][:40]
    answer = score(server, events)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["views"] == "all" and body["n_scored"] == 40 and len(body["results"]) == 40
    assert_scores_equal(body, server["served"], events)
    got = pd.DataFrame(body["results"])
    # the same events through the command line
    export, out = server["root"] / "batch.json", server["root"] / "batch_scores.parquet"
    export.write_text(json.dumps(events))
    done = obsad("score", "--model", str(server["served"]), "--events", str(export), "--out", str(out))
    assert done.returncode == 0, done.stderr
    cli = pd.read_parquet(out)
    np.testing.assert_allclose(got["score"].to_numpy(), cli["score"].to_numpy(), rtol=0, atol=1e-6)
    assert got["is_anomaly"].tolist() == cli["is_anomaly"].tolist()


def test_single_event_is_scored_by_the_event_view(server):
    event = server["events"][7]
    answer = score(server, [event])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["views"] == "event"
    (result,) = body["results"]
    pipeline = load_pipeline(server["served"])
    frame, _ = load_events([event], columns=pipeline.input_columns)
    knn = pipeline.detector.score_samples(pipeline.embed(pipeline.encoder.transform(frame)))
    combiner = pipeline.combiner
    expected = (knn[0] - combiner.median_[0]) / combiner.scale_[0]
    # the one-event path computes the network and the search in numpy: the k-NN distance to 2e-6, in z units
    assert result["score"] == pytest.approx(expected, abs=2e-6 / combiner.scale_[0])
    assert result["view"] == "event" and result["is_anomaly"] == (expected > pipeline.threshold)
    # asking for every view scores it as `obsad score` scores a one-event file
    whole = score(server, [event], views="all").json()["results"][0]
    assert whole["score"] == pytest.approx(expected_scores(server["served"], [event])["score"][0], abs=1e-6)


def test_flattened_events_score_like_nested_ones(server):
    events = server["events"][40:60]
    nested = score(server, events).json()["results"]
    flat = score(server, [flatten(e) for e in events]).json()["results"]
    np.testing.assert_allclose([r["score"] for r in flat], [r["score"] for r in nested], rtol=0, atol=1e-6)


def test_bad_events_get_an_error_in_their_slot_and_the_rest_is_scored(server):
    good = server["events"][60:63]
    answer = score(server, [good[0], 5, {}, good[1], {"no_such_field": 1}, good[2]])
    assert answer.status_code == 422
    body = answer.json()
    results = body["results"]
    assert len(results) == 6 and body["n_scored"] == 3 and body["n_errors"] == 3
    assert "JSON object" in results[1]["error"] and "empty" in results[2]["error"]
    assert "none of the" in results[4]["error"]
    want = expected_scores(server["served"], good)
    got = [results[i]["score"] for i in (0, 3, 5)]
    np.testing.assert_allclose(got, want["score"].to_numpy(), rtol=0, atol=1e-6)


def test_repaired_values_are_scored_as_missing_and_reported(server):
    event = json.loads(json.dumps(server["events"][64]))
    event["time"] = "yesterday"
    answer = score(server, [event, server["events"][65]])
    assert answer.status_code == 200
    repaired, untouched = answer.json()["results"]
    assert "score" in repaired and any("unparseable_time" in w for w in repaired.get("warnings", [])), repaired
    assert "warnings" not in untouched


# ------------------------------------------------------------------------------------------------ security
def test_v1_needs_the_api_key(server):
    client, events = server["client"], server["events"][:1]
    assert client.post("/v1/score", json={"events": events}).status_code == 401
    wrong = client.post("/v1/score", json={"events": events}, headers={"Authorization": "Bearer wrong-key"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorised"
    basic = client.post("/v1/score", json={"events": events}, headers={"Authorization": f"Basic {API_KEY}"})
    assert basic.status_code == 401
    assert client.get("/v1/model").status_code == 401
    assert client.post("/v1/admin/reload").status_code == 401
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200


def test_limits_answer_413(server):
    too_many = score(server, server["events"][:MAX_BATCH + 1])
    assert too_many.status_code == 413 and "too many events" in too_many.json()["error"]
    padding = {"events": server["events"][:1], "n_top": 3}
    big = json.dumps(padding)[:-1] + ', "x": "' + "a" * MAX_BODY + '"}'
    too_big = server["client"].post("/v1/score", content=big.encode(), headers=AUTH)
    assert too_big.status_code == 413 and too_big.json()["error"] == "body too large"


def test_malformed_requests_are_json_errors(server):
    client = server["client"]
    broken = client.post("/v1/score", content=b'{"events": [{"time": 1', headers=AUTH)
    assert broken.status_code == 400
    assert broken.json()["error"] == "malformed JSON" and "line 1" in broken.json()["detail"]
    cases = ((b"[]", 422), (b'{"events": []}', 422), (b'{"events": {}}', 422), (b"", 400), (b"[" * 100_000, 400),
             (b'{"events": [{"a": 1}], "oops": 1}', 422), (b'{"events": [{"a": 1}], "views": "x"}', 422),
             (b"\xff\xfe", 400))
    for body, status in cases:
        answer = client.post("/v1/score", content=body, headers=AUTH)
        assert answer.status_code == status, (body[:40], answer.text)
        assert set(answer.json()) == {"error", "detail"} and "Traceback" not in answer.text
    assert client.get("/no/such/path").json()["error"] == "not found"


# ------------------------------------------------------------------------------------------------ endpoints
def test_model_endpoint_shows_the_manifest_and_index_recall(server):
    body = server["client"].get("/v1/model", headers=AUTH).json()
    manifest_bytes = (server["served"] / "manifest.json").read_bytes()
    assert body["manifest"] == json.loads(manifest_bytes)
    assert body["model_version"] == hashlib.sha256(manifest_bytes).hexdigest()[:16]
    index = body["similar_index"]
    assert index["kind"] == "ivf" and index["n_queries"] > 0 and 0.5 <= index["recall"] <= 1.0
    assert "recall@" in server["log"].read_text()  # measured and logged at start-up
    assert body["shadow"]["model_version"] != body["model_version"]


def test_similar_events_with_fields_and_deltas(server):
    pipeline = load_pipeline(server["served"])
    row = pipeline.reference.iloc[5]
    event = {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v.item() if hasattr(v, "item") else v)
             for k, v in row.items() if not (v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA)}
    answer = server["client"].post("/v1/similar", json={"event": event, "k": 4}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    neighbours = answer.json()["neighbours"]
    assert len(neighbours) == 4
    distances = [n["distance"] for n in neighbours]
    assert distances == sorted(distances) and distances[0] < 1e-4  # a reference event finds itself
    assert neighbours[0]["event"]["metadata.uid"] == row["metadata.uid"] or distances[1] < 1e-4
    for n in neighbours:
        assert n["event"] and isinstance(n["deltas"], dict)
        for name, delta in n["deltas"].items():
            assert name in pipeline.input_columns and delta["event"] != delta["neighbour"]
            if "delta" in delta:
                assert delta["delta"] == pytest.approx(delta["event"] - delta["neighbour"])
    bad = server["client"].post("/v1/similar", json={"event": [1], "k": 4}, headers=AUTH)
    assert bad.status_code == 422


def test_metrics_count_requests_events_and_anomalies(server):
    from prometheus_client.parser import text_string_to_metric_families

    before = metric_values(server)
    events = server["events"][100:130]
    body = score(server, events).json()
    server["client"].post("/v1/score", json={"events": events})  # 401
    after = metric_values(server)
    flagged = sum(r["is_anomaly"] for r in body["results"])
    assert metric(after, "obsad_events_scored_total") - metric(before, "obsad_events_scored_total") == 30
    assert (metric(after, "obsad_anomalies_flagged_total") - metric(before, "obsad_anomalies_flagged_total")
            == flagged)
    ok = dict(endpoint="/v1/score", method="POST", status="200")
    assert metric(after, "obsad_requests_total", **ok) - metric(before, "obsad_requests_total", **ok) == 1
    refused = dict(endpoint="/v1/score", method="POST", status="401")
    assert metric(after, "obsad_requests_total", **refused) - metric(before, "obsad_requests_total", **refused) == 1
    count = metric(after, "obsad_request_seconds_count", endpoint="/v1/score")
    assert count - metric(before, "obsad_request_seconds_count", endpoint="/v1/score") == 2
    assert metric(after, "obsad_request_seconds_bucket", endpoint="/v1/score", le="+Inf") == count
    text = server["client"].get("/metrics").text
    info = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == "obsad_model_info"]
    assert len(info) == 1 and info[0].labels["version"] == body["model_version"] and info[0].value == 1


def test_shadow_scores_are_recorded(server):
    events = server["events"][130:150]
    body = score(server, events).json()
    uids = {r["event_uid"]: r for r in body["results"]}
    records, deadline = [], time.time() + 30
    while time.time() < deadline:
        lines = [json.loads(line) for path in (server["root"] / "shadow").glob("shadow-*.jsonl")
                 for line in path.read_text().splitlines()]
        records = [r for r in lines if r["event_uid"] in uids]
        if len(records) == len(uids):
            break
        time.sleep(0.2)
    assert len(records) == len(uids)
    challenger = load_pipeline(server["challenger"])
    want = challenger.score(load_events(events, columns=challenger.input_columns).events)["score"].to_numpy()
    by_uid = {r["event_uid"]: r for r in records}
    for i, event in enumerate(events):
        r = by_uid[event["metadata"]["uid"]]
        assert r["champion"]["score"] == pytest.approx(uids[r["event_uid"]]["score"], abs=1e-9)
        assert r["champion"]["version"] == body["model_version"] != r["challenger"]["version"]
        assert r["challenger"]["score"] == pytest.approx(want[i], abs=1e-6)
    assert metric(metric_values(server), "obsad_shadow_events_scored_total") >= len(uids)


def test_shadow_scores_single_events_too(server):
    """A lone event takes the one-event path on both models; the challenger's logged score is its event view."""
    event = server["events"][151]
    uid = event["metadata"]["uid"]
    body = score(server, [event]).json()
    assert body["views"] == "event"
    records, deadline = [], time.time() + 30
    while not records and time.time() < deadline:
        records = [json.loads(line) for path in (server["root"] / "shadow").glob("shadow-*.jsonl")
                   for line in path.read_text().splitlines() if uid in line]
        time.sleep(0.1)
    (record,) = records
    challenger = load_pipeline(server["challenger"])
    want = challenger.score(load_events([event], columns=challenger.input_columns).events, views="event")
    assert record["views"] == "event" and record["slot"] == 0
    assert record["champion"]["score"] == pytest.approx(body["results"][0]["score"], abs=1e-9)
    # the one-event path's numpy network and search: the k-NN distance to float rounding (2e-6), in z units
    tolerance = 2e-6 / challenger.combiner.scale_[0]
    assert record["challenger"]["score"] == pytest.approx(float(want["score"].iloc[0]), abs=tolerance)


# ------------------------------------------------------------------------------------------------ reload
def replace_package(target: Path, source: Path) -> None:
    """Put ``source`` at ``target`` with renames, as ``obsad fit`` replaces a package."""
    staged = target.with_name(target.name + ".new")
    shutil.copytree(source, staged)
    old = target.with_name(target.name + ".old")
    os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old)


def reload_under_load(server, batch_of, n_clients: int) -> tuple[httpx.Response, list[tuple[int, str | None]]]:
    """``n_clients`` clients scoring ``batch_of(i)`` over and over while the package is reloaded: the reload's
    answer and every (status, model version) the clients got."""
    client = server["client"]
    stop, answers = threading.Event(), []

    def fire(i: int) -> None:
        with httpx.Client(base_url=client.base_url, timeout=60) as own:
            while not stop.is_set():
                r = own.post("/v1/score", json={"events": batch_of(i)}, headers=AUTH)
                answers.append((r.status_code, r.json().get("model_version")))

    with ThreadPoolExecutor(n_clients) as pool:
        for i in range(n_clients):
            pool.submit(fire, i)
        time.sleep(0.5)
        reloaded = client.post("/v1/admin/reload", headers=AUTH)
        time.sleep(0.5)
        stop.set()
    return reloaded, answers


def test_reload_refuses_a_tampered_package_and_keeps_serving(server):
    client = server["client"]
    version = client.get("/healthz").json()["model_version"]
    config = server["served"] / "config.json"
    original = config.read_bytes()
    config.write_bytes(original.replace(b'"seed": 0', b'"seed": 7'))
    refused_before = metric(metric_values(server), "obsad_model_reloads_total", result="refused")
    try:
        refused = client.post("/v1/admin/reload", headers=AUTH)
        assert refused.status_code == 422
        assert "config.json" in refused.json()["detail"] and "modified" in refused.json()["detail"]
        assert client.get("/healthz").json()["model_version"] == version
        assert score(server, server["events"][:2]).status_code == 200
        assert metric(metric_values(server), "obsad_model_reloads_total", result="refused") - refused_before == 1
    finally:
        config.write_bytes(original)


def test_reload_under_load_loses_no_request(server):
    client, events = server["client"], server["events"]
    old = client.get("/healthz").json()["model_version"]
    reloads_before = metric(metric_values(server), "obsad_model_reloads_total", result="ok")
    replace_package(server["served"], server["challenger"])
    reloaded, answers = reload_under_load(server, lambda i: events[i % 50:i % 50 + (1 if i % 2 else 20)], 4)
    assert reloaded.status_code == 200, reloaded.text
    new = reloaded.json()["model_version"]
    assert reloaded.json()["previous_version"] == old and new != old
    assert len(answers) >= 8
    assert all(status == 200 for status, _ in answers), answers
    assert {v for _, v in answers} == {old, new}  # requests answered by both, none lost in between
    assert client.get("/healthz").json()["model_version"] == new
    assert metric(metric_values(server), "obsad_model_reloads_total", result="ok") - reloads_before == 1


# ------------------------------------------------------------------------------------------------ start-up
def test_refuses_a_non_loopback_host_without_the_flag(packages):
    done = obsad("serve", "--model", str(packages["champion"]), "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 2 and "--allow-remote" in done.stderr and "Traceback" not in done.stderr


def test_refuses_a_tampered_package_at_start(packages, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(packages["champion"], tampered)
    with open(tampered / "arrays.safetensors", "r+b") as fh:
        fh.seek(-8, os.SEEK_END)
        fh.write(b"\x00" * 8)
    done = obsad("serve", "--model", str(tampered), "--port", str(free_port()))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "refusing" in done.stderr and "arrays.safetensors: checksum mismatch" in done.stderr


def test_start_up_checks_in_process(packages, tmp_path):
    from obsad.serve import ModelLoadError, ServeConfigError, load_served_model
    from obsad.serve.server import check_host, read_api_key

    check_host("127.0.0.1", False)
    check_host("::1", False)
    check_host("localhost", False)
    check_host("0.0.0.0", True)
    for host in ("0.0.0.0", "192.0.2.1", "example.org"):
        with pytest.raises(ServeConfigError, match="--allow-remote"):
            check_host(host, False)
    key = tmp_path / "key"
    key.write_text("short")
    with pytest.raises(ServeConfigError, match="at least"):
        read_api_key(key)
    assert read_api_key(None, {"OBSAD_API_KEY": API_KEY}) == API_KEY
    assert read_api_key(None, {}) is None
    two_stage = tmp_path / "two_stage"
    shutil.copytree(packages["champion"], two_stage)
    cfg = json.loads((two_stage / "config.json").read_text())
    (two_stage / "config.json").write_text(json.dumps({**cfg, "format": "obsad-two-stage"}))
    with pytest.raises(ModelLoadError, match="not supported by serve yet"):
        load_served_model(two_stage)


def test_worker_threads_search_on_the_threads_set_by_the_thread_that_made_them():
    """OpenMP's thread count is per thread: the service's scoring and shadow workers take the count of the thread
    that built them (``obsad serve --threads``), where a plain new thread would start from the default."""
    import threading

    import faiss

    from obsad.runtime import worker_pool

    def in_new_thread() -> int:
        seen = []
        thread = threading.Thread(target=lambda: seen.append(faiss.omp_get_max_threads()))
        thread.start()
        thread.join()
        return seen[0]

    before = faiss.omp_get_max_threads()
    default = in_new_thread()
    try:
        faiss.omp_set_num_threads(default + 1)
        pool = worker_pool("obsad-test")
        try:
            assert pool.submit(faiss.omp_get_max_threads).result() == default + 1
        finally:
            pool.shutdown()
        assert in_new_thread() == default  # what the pool's thread would have had
    finally:
        faiss.omp_set_num_threads(before)


# ------------------------------------------------------------------------------------------------ --workers
@pytest.fixture(scope="module")
def pooled(packages):
    """The service with two scoring processes (``--workers 2``), on a package of its own."""
    root = packages["root"]
    served = root / "served_pooled"
    shutil.copytree(packages["champion"], served)
    log_path = root / "pooled.log"
    proc, client, port = start_service(
        ["--model", str(served), "--workers", "2", "--api-key-file", str(api_key_file(root)), "--shadow",
         str(packages["challenger"]), "--shadow-log", str(root / "shadow_pooled"), "--max-batch", str(MAX_BATCH),
         "--max-body-bytes", str(MAX_BODY)], log_path)
    yield {"client": client, "port": port, "log": log_path, "proc": proc, **packages, "served": served,
           "shadow": root / "shadow_pooled"}
    client.close()
    proc.terminate()
    proc.wait(timeout=30)
    assert not scoring_processes(proc)


def scoring_processes(proc: subprocess.Popen) -> set[int]:
    """The service's child processes (its scoring processes), from /proc."""
    pids: set[int] = set()
    for task in Path(f"/proc/{proc.pid}/task").glob("*"):
        try:
            pids |= {int(x) for x in (task / "children").read_text().split()}
        except OSError:
            pass
    return pids


def shadow_files_of(directory: Path, uids: set[str], timeout: float = 30) -> dict[str, int]:
    """event uid -> pid of the process whose shadow log holds its record (files are ``shadow-<day>-<pid>.jsonl``)."""
    found: dict[str, int] = {}
    deadline = time.time() + timeout
    while len(found) < len(uids) and time.time() < deadline:
        for path in directory.glob("shadow-*.jsonl"):
            for line in path.read_text().splitlines():
                uid = json.loads(line)["event_uid"]
                if uid in uids:
                    found[uid] = int(path.stem.rsplit("-", 1)[1])
        time.sleep(0.2)
    return found


def test_workers_score_batches_in_their_own_processes_as_the_service_does(pooled):
    from obsad.serve.app import POOL_MIN_BODY_BYTES

    workers = scoring_processes(pooled["proc"])
    assert len(workers) == 2 and pooled["proc"].pid not in workers
    large, small = pooled["events"][:60], pooled["events"][60:65]
    assert len(json.dumps({"events": large})) > POOL_MIN_BODY_BYTES > len(json.dumps({"events": small}))
    before = metric_values(pooled)
    for events in (large, small):
        answer = score(pooled, events)
        assert answer.status_code == 200, answer.text
        assert answer.json()["n_scored"] == len(events)
        assert_scores_equal(answer.json(), pooled["served"], events)
    after = metric_values(pooled)
    assert metric(after, "obsad_events_scored_total") - metric(before, "obsad_events_scored_total") == 65
    assert metric(after, "obsad_scoring_processes") == 2
    # the challenger scored the large batch where the champion did: in a scoring process, in its own log file
    where = shadow_files_of(pooled["shadow"], {e["metadata"]["uid"] for e in large + small})
    assert len(where) == 65
    assert {where[e["metadata"]["uid"]] for e in large} <= workers
    assert {where[e["metadata"]["uid"]] for e in small} == {pooled["proc"].pid}
    deadline = time.time() + 30  # counted by the scoring process after the answer; read back at each scrape
    while metric(metric_values(pooled), "obsad_shadow_events_scored_total") < 65 and time.time() < deadline:
        time.sleep(0.2)
    assert metric(metric_values(pooled), "obsad_shadow_events_scored_total") == 65


def test_workers_refuse_what_the_service_refuses(pooled):
    client, events = pooled["client"], pooled["events"]
    too_many = client.post("/v1/score", json={"events": events[:60] * 2}, headers=AUTH)
    assert too_many.status_code == 413 and too_many.json()["error"]
    broken = client.post("/v1/score", content=b'{"events": [' + b'{"a": 1},' * 5000, headers=AUTH)
    assert broken.status_code == 400 and "JSON" in broken.json()["error"] + broken.json()["detail"]
    mixed = [*events[:30], "not an event", *events[30:59]]
    answer = client.post("/v1/score", json={"events": mixed}, headers=AUTH)
    assert answer.status_code == 422
    results = answer.json()["results"]
    assert "error" in results[30] and all("score" in r for i, r in enumerate(results) if i != 30)
    assert client.post("/v1/score", content=json.dumps({"events": events[:60]}).encode()).status_code == 401


def test_workers_reload_together_and_refuse_together(pooled):
    client, events = pooled["client"], pooled["events"]
    old = client.get("/healthz").json()["model_version"]
    config = pooled["served"] / "config.json"
    original = config.read_bytes()
    config.write_bytes(original.replace(b'"seed": 0', b'"seed": 7'))
    try:
        assert client.post("/v1/admin/reload", headers=AUTH).status_code == 422
    finally:
        config.write_bytes(original)
    assert {score(pooled, events[:60]).json()["model_version"] for _ in range(4)} == {old}
    replace_package(pooled["served"], pooled["challenger"])
    reloaded, answers = reload_under_load(pooled, lambda i: events[:60] if i % 2 else events[i:i + 3], 3)
    assert reloaded.status_code == 200, reloaded.text
    new = reloaded.json()["model_version"]
    assert new != old and all(status == 200 for status, _ in answers), answers
    assert {v for _, v in answers} <= {old, new}
    # every scoring process now serves the new package, and scores as it does
    assert {score(pooled, events[:60]).json()["model_version"] for _ in range(6)} == {new}
    assert_scores_equal(score(pooled, events[:60]).json(), pooled["served"], events[:60])


def test_a_scoring_process_that_dies_is_replaced(pooled):
    import signal

    events = pooled["events"]
    before = scoring_processes(pooled["proc"])
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    statuses = [score(pooled, events[:60]).status_code for _ in range(4)]
    assert statuses.count(500) <= 1 and set(statuses) <= {200, 500}, statuses
    deadline = time.time() + 120
    while time.time() < deadline:
        now = scoring_processes(pooled["proc"])
        if len(now) == 2 and victim not in now and metric(metric_values(pooled), "obsad_scoring_processes") == 2:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the scoring process was not replaced:\n" + pooled["log"].read_text()[-3000:])
    assert all(score(pooled, events[:60]).status_code == 200 for _ in range(4))
    assert "exited" in pooled["log"].read_text()


def test_rows_with_values_matches_notna_any_over_the_columns():
    """The check that a batch's event holds at least one field the model reads: every dtype the loader gives."""
    from obsad.serve.scoring import _rows_with_values

    frame = pd.DataFrame({
        "a": pd.array([1, None, None, None, 5], dtype="Int64"),
        "b": pd.array(["x", None, None, "y", None], dtype="string[pyarrow]"),
        "c": [np.nan, np.nan, 2.5, np.nan, np.nan],
        "d": pd.Series([None, None, None, {"k": 1}, None], dtype=object),
        "e": pd.array([None, None, None, None, True], dtype="boolean"),
    })
    for columns in (["a", "b", "c", "d", "e"], ["a", "b"], ["d"], ["c", "a"], []):
        expected = frame[columns].notna().any(axis=1).to_numpy() if columns else np.zeros(len(frame), dtype=bool)
        np.testing.assert_array_equal(_rows_with_values(frame, columns), expected)
    assert not _rows_with_values(frame, ["a", "b", "c", "d", "e"])[1]
