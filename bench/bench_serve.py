"""Benchmark `obsad serve`: single-event latency at a fixed request rate, and batch throughput, over loopback.

    python bench/bench_serve.py                         # fit on 20k simulated events, then measure
    python bench/bench_serve.py --model data/model_package --rate 200 --seconds 10

The server runs as a user runs it (``obsad serve`` in a subprocess, one torch/FAISS thread, ``--workers``
scoring processes for batches) and the load
generator in this process, both on this machine: plain keep-alive sockets (:class:`RawClient`; httpx's own cost
per request is as large as the service's, and it is given beside for comparison). Request bodies are encoded
before the clock starts.

- **Single events, open loop**: one-event requests sent on a fixed schedule (``--rate`` per second for
  ``--seconds``), whatever the answers' pace; latency is measured from each request's *scheduled* send time, so
  queueing behind a slow answer counts (no coordinated omission). Target: p50 <= 3 ms, p99 <= 10 ms at 200/s.
- **Single events, closed loop**: one request at a time: the service time alone.
- **Batches**: ``--batches`` requests of ``--batch`` events, one after the other (one connection: the latency of
  a batch), then ``--batches`` from each of ``--connections`` clients at once, every request with events not sent
  before (the throughput: with ``--workers N`` the service scores N batches at once, one per scoring process),
  with the CPU time each request cost the scoring processes and the service process (from /proc): the throughput
  is that CPU against the machine's cores. Target: >= 30,000 events/s. Two clients per scoring process by
  default: a busy service's capacity, where a process that finishes a batch finds the next one waiting in the
  service. With one client per process, each process idles between its batches while its answer travels back and
  the client's next body comes in (measured on this machine, alternating the two: ~10 % fewer events/s).
- **Where the time goes**: the same work in this process, stage by stage (the request body, load_events, or both
  at once as a scoring process reads a batch: Arrow's JSON reader, then load_events on its table; encoder,
  embedding, k-NN, window view), for one event and for one batch; and for one event, the one-event path the
  service takes (:class:`obsad.single_event.SingleEventScorer`: no table, the same scores).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_package(root: Path, n_fit: int, n_send: int, seed: int) -> tuple[Path, list[dict]]:
    """Fit a package on the first ``n_fit`` simulated events (by time); the next ``n_send`` are sent."""
    import torch

    from obsad.ocsf import load_events, simulate
    from obsad.ocsf.nested import to_nested
    from obsad.pipeline import fit_pipeline

    torch.set_num_threads(2)
    sim = simulate(n_events=max(n_fit + n_send, 5000), days=3, seed=seed)
    export = sim.events.sort_values("time", kind="stable").reset_index(drop=True)
    events, _ = load_events(export.iloc[:n_fit])
    started = time.perf_counter()
    pipeline = fit_pipeline(events, seed=seed, progress=False)
    print(f"fitted on {n_fit:,} events in {time.perf_counter() - started:.1f} s "
          f"({pipeline.detector_state['index']} index, views: {', '.join(pipeline.views)})")
    path = pipeline.save(root / "model")
    sent = json.loads(json.dumps(to_nested(export.iloc[n_fit:n_fit + n_send].reset_index(drop=True)), default=str))
    return path, sent


def sample_events(model: Path, n: int, seed: int) -> list[dict]:
    """Events to send to an existing package: a fresh simulation (the package's own data may be elsewhere),
    dated from the day the package was made, so that they come after its training events as a service's do (a
    window that coincides with a training window is scored leaving itself out of its baseline: the cost of
    re-scoring training data, not of serving)."""
    from obsad.ocsf import simulate
    from obsad.ocsf.nested import to_nested

    created = json.loads((Path(model) / "manifest.json").read_text())["created"]
    start = pd.Timestamp(created).tz_convert("UTC").normalize().strftime("%Y-%m-%dT%H:%M:%SZ")
    sim = simulate(n_events=max(n, 5000), days=1, seed=seed + 1, start=start)
    return json.loads(json.dumps(to_nested(sim.events.iloc[:n].reset_index(drop=True)), default=str))


def start_server(model: Path, port: int, threads: int, log_path: Path, workers: int = 1) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "obsad.cli", "serve", "--model", str(model), "--port",
                                 str(port), "--threads", str(threads), "--max-batch", "10000",
                                 "--max-body-bytes", str(64 << 20), "--log-level", "warning",
                                 "--workers", str(workers)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server did not start:\n" + log_path.read_text())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit("the server did not answer within 180 s:\n" + log_path.read_text())


def percentiles(ms: np.ndarray) -> str:
    if not len(ms):
        return "no answers"
    return f"p50 {np.percentile(ms, 50):.2f} ms, p90 {np.percentile(ms, 90):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms"


class RawClient:
    """A minimal HTTP/1.1 client over keep-alive loopback sockets: pre-encoded requests, responses read by their
    ``Content-Length``. httpx costs ~1-2 ms of this machine's CPU per request, as much as the service itself, on
    the same 2 cores: measured through it, the figures would be the load generator's as much as the service's
    (what a fast client sees, a ``wrk2``-style one, is what the service's own latency is; the httpx figures are
    printed beside, for comparison)."""

    def __init__(self, port: int) -> None:
        self.port = port

    @staticmethod
    def request(body: bytes) -> bytes:
        return (b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)) + body

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    @staticmethod
    def response_status(buffer: bytes) -> int | None:
        """The status of a complete response in ``buffer``, or None while it is incomplete."""
        head, sep, rest = buffer.partition(b"\r\n\r\n")
        if not sep:
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(head.split(b" ", 2)[1]) if len(rest) >= length else None

    def round_trip(self, sock: socket.socket, request: bytes) -> int:
        sock.sendall(request)
        buffer = b""
        while (status := self.response_status(buffer)) is None:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buffer += chunk
        return status


def open_loop(port: int, bodies: list[bytes], rate: float, seconds: float) -> tuple[np.ndarray, int, int]:
    """Latencies (ms, from each request's scheduled time) of one-event requests sent at ``rate`` per second.

    One thread, a pool of keep-alive connections (a request due while every connection waits for an answer
    opens another): requests go out on schedule whatever the answers' pace, so a slow answer delays the ones
    queued behind it in the server and that delay is counted (no coordinated omission). The generator sleeps
    in ``select`` until a millisecond before the next send and spins the rest, so sends are on time to a few
    microseconds.
    """
    import selectors

    client = RawClient(port)
    requests = [client.request(b) for b in bodies]
    n = int(rate * seconds)
    latencies = np.full(n, np.nan)
    failures = 0
    selector = selectors.DefaultSelector()
    idle = [client.connect() for _ in range(8)]
    pending: dict[socket.socket, tuple[int, float, bytes]] = {}  # socket -> (request number, scheduled, received)
    for sock in idle:
        if client.round_trip(sock, requests[0]) != 200:  # warm-up, one per connection
            raise SystemExit("the warm-up request failed")
        selector.register(sock, selectors.EVENT_READ)
    start = time.perf_counter() + 0.05
    sent = 0
    while sent < n or pending:
        now = time.perf_counter()
        if sent < n and now >= start + sent / rate:
            sock = idle.pop() if idle else client.connect()
            if sock not in selector.get_map():
                selector.register(sock, selectors.EVENT_READ)
            scheduled = start + sent / rate
            sock.sendall(requests[sent % len(requests)])
            pending[sock] = (sent, scheduled, b"")
            sent += 1
            continue
        due = start + sent / rate - now if sent < n else 1.0
        for key, _ in selector.select(max(0.0, due - 1e-3) if due > 1e-3 else 0):
            sock = key.fileobj
            i, scheduled, buffer = pending[sock]
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("the server closed a connection")
            buffer += chunk
            status = client.response_status(buffer)
            if status is None:
                pending[sock] = (i, scheduled, buffer)
                continue
            done = time.perf_counter()
            del pending[sock]
            idle.append(sock)
            if status == 200:
                latencies[i] = (done - scheduled) * 1e3
            else:
                failures += 1
    for sock in list(selector.get_map().values()):
        sock.fileobj.close()
    selector.close()
    return latencies[~np.isnan(latencies)], n, failures


def closed_loop(port: int, bodies: list[bytes], n: int) -> np.ndarray:
    """Latencies (ms) of ``n`` one-event requests sent one at a time on one connection (after 5 to warm up)."""
    client = RawClient(port)
    requests = [client.request(b) for b in bodies]
    out = []
    with client.connect() as sock:
        for i in range(n + 5):
            t = time.perf_counter()
            status = client.round_trip(sock, requests[i % len(requests)])
            if status != 200:
                raise SystemExit(f"request failed: {status}")
            if i >= 5:
                out.append((time.perf_counter() - t) * 1e3)
    return np.asarray(out)


def cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time (user + system, seconds) of process ``pid`` and of each of its children (the scoring processes),
    read from /proc (empty where there is none: another system)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}

    def read(p: int) -> None:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            out[p] = (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                for child in (task / "children").read_text().split():
                    read(int(child))
        except (OSError, ValueError, IndexError):
            pass

    read(pid)
    return out


def batches_at_once(port: int, bodies: list[bytes], per_client: int, clients: int) -> tuple[float, np.ndarray]:
    """``clients`` connections each sending ``per_client`` batch requests one after the other, all at once:
    (events/s over the whole run, each request's latency in ms). The events per body are read from the bodies.
    Client ``c`` sends ``bodies[c * per_client + i]``: with ``clients * per_client + 1`` bodies no batch is sent
    twice (the last one warms each connection up), so no memo of a scoring process sees a batch again."""
    import threading

    sizes = [len(json.loads(b)["events"]) for b in bodies]
    client = RawClient(port)
    requests = [client.request(b) for b in bodies]
    latencies: list[float] = []
    failures: list[int] = []
    start = threading.Barrier(clients + 1)

    def run(c: int) -> None:
        with client.connect() as sock:
            client.round_trip(sock, requests[-1])  # warm-up
            start.wait()
            for i in range(per_client):
                t = time.perf_counter()
                status = client.round_trip(sock, requests[(c * per_client + i) % len(requests)])
                latencies.append((time.perf_counter() - t) * 1e3)
                if status != 200:
                    failures.append(status)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if failures:
        raise SystemExit(f"batch requests failed: {failures[:5]}")
    n_events = sum(sizes[(c * per_client + i) % len(sizes)] for c in range(clients) for i in range(per_client))
    return n_events / seconds, np.asarray(latencies)


def closed_loop_httpx(url: str, bodies: list[bytes], n: int) -> np.ndarray:
    """The same through httpx, a common Python client: what its users would see on this machine."""
    import httpx

    out = []
    with httpx.Client(base_url=url, timeout=120, headers={"content-type": "application/json"}) as client:
        for i in range(n + 5):
            t = time.perf_counter()
            r = client.post("/v1/score", content=bodies[i % len(bodies)])
            if r.status_code != 200:
                raise SystemExit(f"request failed: {r.status_code} {r.text[:300]}")
            if i >= 5:  # warm-up
                out.append((time.perf_counter() - t) * 1e3)
    return np.asarray(out)


def stages(model: Path, events: list[dict], threads: int) -> None:
    """The scoring work of one request, stage by stage, in this process (best of 5 runs)."""
    import faiss
    import torch

    from obsad.ocsf import load_events
    from obsad.pipeline import load_pipeline
    from obsad.serve.scoring import parse_json, read_score_table
    from obsad.single_event import SingleEventScorer

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    p = load_pipeline(model)

    def best(fn, repeat=5) -> float:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times) * 1e3

    for batch in (events[:1], events[:1000]):
        body = json.dumps({"events": batch}).encode()
        frame, _ = load_events(batch, columns=p.input_columns)
        features = p.encoder.transform(frame)
        z = p.embed(features)
        parts = {"request body (parse_json)": best(lambda: parse_json(body)),
                 "load_events": best(lambda: load_events(batch, columns=p.input_columns)),
                 "encoder.transform": best(lambda: p.encoder.transform(frame)),
                 "embed": best(lambda: p.embed(features)),
                 "k-NN search": best(lambda: p.detector.score_and_neighbors(z))}
        if p.window is not None:
            vectors = p.window_vectors(z, features)
            parts["window view"] = best(lambda: p.window.view_scores((frame, vectors)))
        parts["pipeline.score (all views)"] = best(lambda: p.score(frame))
        if read_score_table(body, len(batch)) is not None:  # a batch in the service: its body read by Arrow
            parts["body read by Arrow + load_events (scoring process)"] = best(
                lambda: load_events(read_score_table(body, len(batch)).table, columns=p.input_columns))
        if len(batch) == 1:  # what the service runs for a lone event: the one-event path, raw event to scores
            scorer = SingleEventScorer(p)
            parts["one-event path (raw event -> scores)"] = best(lambda: scorer.score(batch[0]))
        print(f"  {len(batch):>5} event(s): " + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="an existing package (default: fit one)")
    ap.add_argument("--fit-events", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=200.0, help="single-event requests per second (open loop)")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of the open-loop run")
    ap.add_argument("--closed", type=int, default=100, help="single-event requests in the closed-loop run")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="the server's torch/FAISS threads")
    ap.add_argument("--workers", type=int, default=2, help="the server's scoring processes (obsad serve --workers)")
    ap.add_argument("--connections", type=int, default=None, help="clients sending batches at once "
                                                                   "(default: 2 x --workers)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    clients = args.connections or 2 * args.workers
    # new events in every batch request (one at a time, then from every client at once, and one to warm up): a
    # service meets new events, and a batch sent again would find the scoring processes' memos warm
    n_batches = args.batches * (1 + clients) + 1
    n_send = max(args.batch * n_batches, 2000)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.model is None:
            model, events = make_package(root, args.fit_events, n_send, args.seed)
        else:
            model, events = args.model, sample_events(args.model, n_send, args.seed)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(model, port, args.threads, root / "server.log", args.workers)
        try:
            singles = [json.dumps({"events": [e]}).encode() for e in events[:500]]
            batches = [json.dumps({"events": events[i:i + args.batch]}).encode()
                       for i in range(0, len(events) - args.batch + 1, args.batch)]
            print(f"server: obsad serve on {url}, {args.threads} thread(s), {args.workers} scoring process(es); "
                  f"{os.cpu_count()} CPUs on this machine")

            closed = closed_loop(port, singles, args.closed)
            print(f"single event, closed loop ({len(closed)} requests one at a time): {percentiles(closed)}; "
                  f"{1e3 / closed.mean():.0f} requests/s at most")
            through_httpx = closed_loop_httpx(url, singles, args.closed)
            print(f"single event, closed loop through httpx (its client costs included): {percentiles(through_httpx)}")

            lat, sent, failed = open_loop(port, singles, args.rate, args.seconds)
            print(f"single event, open loop at {args.rate:.0f} requests/s for {args.seconds:.0f} s: {len(lat):,} of "
                  f"{sent:,} answered 200 ({failed} failed): {percentiles(lat)}")
            ok_latency = len(lat) == sent and np.percentile(lat, 50) <= 3.0 and np.percentile(lat, 99) <= 10.0

            alone, together = batches[:args.batches] + batches[-1:], batches[args.batches:]
            one_rate, one_ms = batches_at_once(port, alone, args.batches, 1)
            print(f"batches of {args.batch:,} events, one at a time ({len(one_ms)} requests): {one_rate:,.0f} events/s "
                  f"(median request {np.median(one_ms):.0f} ms)")
            cpu_before = cpu_seconds(proc.pid)
            rate, ms = batches_at_once(port, together, args.batches, clients)
            cpu_after = cpu_seconds(proc.pid)
            print(f"batches of {args.batch:,} events from {clients} clients at once ({len(ms)} requests): "
                  f"{rate:,.0f} events/s (median request {np.median(ms):.0f} ms)")
            scoring = sum(cpu_after.get(pid, 0.0) - cpu_before.get(pid, 0.0) for pid in cpu_after if pid != proc.pid)
            service = cpu_after[proc.pid] - cpu_before[proc.pid]
            print(f"  CPU per batch request: scoring processes {1e3 * scoring / len(ms):.1f} ms, service process "
                  f"{1e3 * service / len(ms):.1f} ms (on {os.cpu_count()} CPUs, {args.batch:,} events a request: "
                  f"{1e3 * os.cpu_count() * args.batch / 30_000:.0f} ms in all for 30,000 events/s)")
            print(f"targets: single event p50 <= 3 ms and p99 <= 10 ms at 200/s: {'met' if ok_latency else 'NOT met'}; "
                  f"batch >= 30,000 events/s: {'met' if rate >= 30_000 else 'NOT met'}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print("where the time goes (in-process, best of 5):")
        stages(model, events, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
