"""Benchmark the log pipeline: parse speed (``obsad logs parse``) and fit time (``obsad logs fit``).

    python bench/bench_logs_parse.py                      # 6,000 HDFS blocks (~115k lines) and 2,000 instances
    python bench/bench_logs_parse.py --blocks 20000 --fit

Parse = read the raw file, split headers, mask and mine templates with Drain3, template every line (what
``obsad logs parse`` does), best of ``--repeat``. ``--fit`` also times :func:`obsad.logs.pipeline.fit_log_pipeline`
on the HDFS file (unlabelled: two passes, the second without the sessions set aside) with ``--threads`` torch threads.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=6_000)
    ap.add_argument("--instances", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fit", action="store_true", help="also time fitting the pipeline on the HDFS file")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from obsad.logs.pipeline import fit_log_pipeline, parse_log_lines
    from obsad.logs.simulate import simulate_hdfs, simulate_openstack

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"hdfs": simulate_hdfs(n_blocks=args.blocks, seed=0).write(Path(tmp) / "hdfs")["log"],
                 "openstack": simulate_openstack(n_instances=args.instances, seed=0).write(Path(tmp) / "os")["log"]}
        for fmt, path in files.items():
            best = float("inf")
            for _ in range(args.repeat):
                t = time.perf_counter()
                lines, _ = parse_log_lines(path, fmt)
                best = min(best, time.perf_counter() - t)
            print(f"parse {fmt:9s}: {len(lines):,} lines in {best:.2f} s = {len(lines) / best:,.0f} lines/s "
                  f"({lines['template_id'].nunique()} templates)")
        if args.fit:
            t = time.perf_counter()
            pipeline = fit_log_pipeline(files["hdfs"], "hdfs")
            c = pipeline.config
            print(f"fit hdfs: {c['n_lines']:,} lines, {c['n_sessions']:,} sessions in {time.perf_counter() - t:.1f} s "
                  f"({args.threads} threads; {c['epochs_run']} epochs; {c['sessions_trimmed_as_outlying']} set aside)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
