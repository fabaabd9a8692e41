"""Benchmark the two templating engines mask by mask: Arrow (RE2, compiled again on every call) and Python's ``re``.

    python bench/bench_templating.py                 # a batch of 1,000 simulated events
    python bench/bench_templating.py --events 200    # smaller batches: fewer distinct values per column

For each text column of a simulated batch (its distinct values, as the encoder templates them) and each mask,
the time of one ``replace_substring_regex`` call and of one Python ``re.sub`` pass over the values, the bytes of
the values, and the engine ``obsad.features.text`` picks (``_PY_BYTES``: Python up to that many bytes). Read it
as: where Python is faster, the byte count should fall under the mask's budget, and the other way round. Best of
``--repeat`` calls each.
"""

from __future__ import annotations

import argparse
import time

import pyarrow.compute as pc

from obsad.features import text as T
from obsad.features import values as V
from obsad.ocsf import load_events, simulate

COLUMNS = ("message", "http_request.url.path", "http_request.url.query_string", "http_request.user_agent",
           "process.cmd_line", "finding_info.title")


def best_of(fn, repeat: int) -> float:
    """Fastest of ``repeat`` calls, in µs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1000, help="events in the batch")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    sim = simulate(n_events=max(20_000, args.events), days=2, seed=args.seed)
    frame = load_events(sim.events.iloc[: args.events].reset_index(drop=True)).events
    print(f"{args.events} events; per column and mask: Arrow µs / Python µs (engine picked)")
    total = {"arrow": 0.0, "python": 0.0, "picked": 0.0}
    for column in COLUMNS:
        if column not in frame.columns:
            continue
        _, uniques = V.factorize(frame[column])
        size = sum(len(v.encode()) for v in uniques.to_pylist() if v is not None)
        values = uniques.to_pylist()
        picked = T._python_masks(uniques, T.MASK_NAMES)
        cells = []
        for name, placeholder, pattern in T.MASKS:
            arrow_us = best_of(lambda: pc.replace_substring_regex(uniques, pattern=pattern, replacement=placeholder),
                               args.repeat)
            sub = T._PY_MASKS[name].sub
            python_us = best_of(lambda: [None if v is None else sub(placeholder, v) for v in values], args.repeat)
            engine = "py" if name in picked else "re2"
            total["arrow"] += arrow_us
            total["python"] += python_us
            total["picked"] += python_us if name in picked else arrow_us
            cells.append(f"{name} {arrow_us:.0f}/{python_us:.0f} ({engine})")
        print(f"{column}: {len(uniques)} values, {size:,} bytes")
        print("    " + "; ".join(cells))
    print(f"every mask on every column: Arrow only {total['arrow'] / 1e3:.2f} ms, Python only "
          f"{total['python'] / 1e3:.2f} ms, as picked {total['picked'] / 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
