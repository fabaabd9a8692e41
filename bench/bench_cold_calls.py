"""What a call costs right after a pause: why the service's one-event path runs its network and search in numpy.

    python bench/bench_cold_calls.py                 # 5 ms pauses, 300 trials per measurement
    python bench/bench_cold_calls.py --pause-ms 2 --trials 500

A service at 200 requests/s is idle ~5 ms between requests. Each measurement pauses (sleeping), then times one
call ("after a pause") and the same call again at once ("back to back"); medians over the trials, one thread.
Measured: three small numpy operations, three small torch operations, one event's embedding through
``TabularResNet.embed`` (torch) and through ``FrozenTabularResNet.embed`` (numpy), and one event's k-NN search
through FAISS (``KNNDetector.score_and_neighbors``, an IVF index over 30,000 references; a numpy search over the
same lists was tried and was no faster). On a machine whose caches survive the pause the two columns are close;
on a small VM they are not, and the cost after a pause grows with the amount of code a call runs.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def after_pause(fn, pause: float, trials: int) -> tuple[float, float]:
    """Median µs of ``fn()`` right after a pause, and of the immediate second call."""
    first, second = [], []
    for _ in range(trials):
        time.sleep(pause)
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        first.append(t1 - t0)
        second.append(t2 - t1)
    return float(np.median(first)) * 1e6, float(np.median(second)) * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pause-ms", type=float, default=5.0)
    ap.add_argument("--trials", type=int, default=300)
    args = ap.parse_args(argv)

    import faiss
    import torch

    from obsad.detect import KNNDetector
    from obsad.models import TabularResNet
    from obsad.models.frozen import FrozenTabularResNet

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    small_np = rng.normal(size=8)
    small_torch = torch.as_tensor(small_np)
    # an encoder of the book's default size over 40 numeric and 80 categorical fields, and one event for it
    cards = [int(c) for c in rng.integers(3, 400, size=80)]
    model = TabularResNet(40, cards).eval()
    frozen = FrozenTabularResNet(model)
    numeric = rng.normal(size=(1, 40)).astype(np.float32)
    categorical = np.array([[rng.integers(0, c) for c in cards]], dtype=np.int64)
    # a k-NN detector over 30,000 64-d references (IVF, as fit_pipeline builds for this many)
    reference = rng.normal(size=(30_000, 64)).astype(np.float32)
    detector = KNNDetector(k=10, exact_max=20_000, n_probe=4).fit(reference)
    query = rng.normal(size=(1, 64)).astype(np.float32)

    calls = {
        "3 numpy operations (compare, any, min)": lambda: bool((small_np > 2).any()) or small_np.min() < 0,
        "3 torch operations (compare, any, min)": lambda: bool((small_torch > 2).any()) or small_torch.min() < 0,
        "one event's embedding, torch (TabularResNet.embed)": lambda: model.embed(numeric, categorical),
        "one event's embedding, numpy (FrozenTabularResNet)": lambda: frozen.embed(numeric, categorical),
        "one event's k-NN search, FAISS IVF": lambda: detector.score_and_neighbors(query),
    }
    print(f"median µs per call, after a {args.pause_ms:g} ms pause and back to back ({args.trials} trials, 1 thread)")
    for name, fn in calls.items():
        fn()
        cold, warm = after_pause(fn, args.pause_ms / 1e3, args.trials)
        print(f"  {name:52s} {cold:8.1f} after a pause {warm:8.1f} back to back")
    return 0


if __name__ == "__main__":
    sys.exit(main())
