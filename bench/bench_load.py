"""Throughput of ``obsad.ocsf.load.load_events`` on synthetic OCSF exports.

Generates N events itself (independent of the simulator): a nested JSON Lines file (objects, arrays of objects,
numbers as strings, a JSON-string column, ``time`` + ``time_dt``), the same with 0.1% truncated lines, an
already-flat Parquet file with dotted column names, and a flat Parquet file that keeps arrays and ``unmapped`` as
JSON strings; then times ``load_events`` on each (best of --repeat) and prints events/s.

    python bench/bench_load.py            # N = 200_000
    python bench/bench_load.py --n 50000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from obsad.io import write_parquet
from obsad.ocsf.load import load_events


def synthetic_events(n: int, seed: int = 0) -> list[dict]:
    """n nested OCSF-like events of three classes (HTTP Activity, Authentication, Network Activity)."""
    rng = np.random.default_rng(seed)
    t0 = 1_700_000_000_000
    times = t0 + np.sort(rng.integers(0, 86_400_000, n))
    classes = rng.choice([4002, 3002, 4001], size=n, p=[0.6, 0.25, 0.15])
    iso = [f"{x}Z" for x in np.datetime_as_string(times.astype("datetime64[ms]"), unit="ms")]
    users = [f"user{i:03d}" for i in range(300)]
    paths = ["/api/orders", "/api/items", "/login", "/health", "/api/users"]
    events = []
    for i in range(n):
        cls = int(classes[i])
        t = int(times[i])
        ev: dict = {
            "time": t,
            "time_dt": iso[i],
            "class_uid": cls,
            "category_uid": cls // 1000,
            "activity_id": int(rng.integers(1, 4)),
            "type_uid": cls * 100 + 1,
            "severity_id": 1,
            "status_id": 1,
            "message": f"request {i} handled",
            "metadata": {
                "uid": f"{i:016x}",
                "version": "1.3.0",
                "product": {"name": "Bench", "vendor_name": "obsad"},
            },
            "src_endpoint": {"ip": f"10.0.{i % 256}.{(i * 7) % 256}", "port": int(rng.integers(1024, 65535))},
            "dst_endpoint": {"ip": "10.1.0.1", "port": 443, "svc_name": "api"},
            "actor": {"user": {"name": users[i % 300], "uid": str(i % 300)}},
            "observables": [{"name": "src_endpoint.ip", "type": "IP Address", "type_id": 2}],
            "unmapped": json.dumps({"region": "eu-west-1", "shard": i % 8}),
        }
        if cls == 4002:
            ev["http_request"] = {"http_method": "GET", "url": {"path": paths[i % 5], "port": 443}}
            ev["http_response"] = {"code": str(200 if i % 50 else 500), "latency": int(rng.integers(1, 2000))}
            ev["duration"] = ev["http_response"]["latency"]
        elif cls == 3002:
            ev["auth_protocol"] = "Kerberos"
            ev["is_mfa"] = "true" if i % 3 else "false"
            ev["resources"] = [{"type": "host", "name": "dc1"}] * int(rng.integers(0, 3))
        else:
            ev["traffic"] = {"bytes_in": int(rng.integers(0, 10**6)), "bytes_out": int(rng.integers(0, 10**6))}
            ev["connection_info"] = {"protocol_name": "tcp", "direction_id": 2}
        events.append(ev)
    return events


def write_files(n: int, folder: Path) -> dict[str, Path]:
    """The same events three ways: nested JSONL; flat Parquet as a pipeline exports it (dotted columns, the
    arrays and ``unmapped`` as JSON strings); and fully flat Parquet (arrays already summarised)."""
    events = synthetic_events(n)
    jsonl = folder / "events.jsonl"
    with open(jsonl, "w", encoding="utf-8") as fh:
        for ev in events:
            fh.write(json.dumps(ev))
            fh.write("\n")
    messy = folder / "events_messy.jsonl"
    with open(jsonl, "rb") as src, open(messy, "wb") as dst:
        for i, line in enumerate(src):
            dst.write(line[: len(line) // 2] + b"\n" if i % 1000 == 999 else line)  # 0.1% truncated lines
    flat = pd.json_normalize(events)
    with_json = flat.copy()
    for col in ("observables", "resources"):
        with_json[col] = with_json[col].map(lambda v: json.dumps(v) if isinstance(v, list) else None)
    with_json = with_json.drop(columns=["time_dt"])
    pure = flat.drop(columns=["time_dt", "unmapped", "observables", "resources"])
    pure["observables.count"] = pd.array([len(v) for v in flat["observables"]], dtype="Int64")
    counts = [len(v) if isinstance(v, list) else None for v in flat["resources"]]
    pure["resources.count"] = pd.array(counts, dtype="Int64")
    return {
        "nested JSONL": jsonl,
        "nested JSONL, 0.1% truncated": messy,
        "flat Parquet": write_parquet(pure, folder / "flat.parquet"),
        "flat Parquet + JSON strings": write_parquet(with_json, folder / "flat_json.parquet"),
    }


def bench(path: Path, repeat: int) -> tuple[float, int, int]:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        events, report = load_events(path)
        best = min(best, time.perf_counter() - t)
    return best, len(events), events.shape[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="events per file")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per file (best is reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        files = write_files(args.n, Path(tmp))
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in files.values())
        print(f"generated {args.n:,} events in {time.perf_counter() - t:.1f} s ({sizes})")
        for label, path in files.items():
            secs, rows, cols = bench(path, args.repeat)
            print(f"{label:30s}: {rows:,} events x {cols} columns in {secs:.2f} s -> {rows / secs:,.0f} events/s")

if __name__ == "__main__":
    main()
