"""Benchmark a training step (forward + backward + AdamW) of the book's objectives on synthetic events.

    python bench/bench_training.py                          # both objectives, default config
    python bench/bench_training.py --objective contrastive --batch-size 512 --steps 100 --threads 2 --repeats 5
    python bench/bench_training.py --device cuda --batch-size 4096 [--amp]

The data is shaped like the book's encoded features: 43 numeric columns (roughly unit scale, clipped to +-10)
and 80 categorical columns whose cardinalities come from ``data/feature_encoder.json`` when it exists, else a
fixed realistic list (the book's own). Categorical ids are Zipf-like (a few frequent values, a long tail). The
model is :data:`obsad.models.DEFAULT_MODEL_CONFIG`. Events/s counts input events (the contrastive objective
encodes two views of each). Each measurement is repeated ``--repeats`` times and the best is reported, since
other processes may share the CPU (with two OpenMP threads on two cores, one busy core can slow a run tenfold).
Like the trainer, the benchmark keeps freed memory in the process (``obsad.runtime.tune_allocator``);
``--no-malloc-tune`` shows what glibc's page-fault churn on the large per-step tensors costs (the masked objective's
``[sum(cardinalities), batch]`` logits above all); the library does not change process-wide allocator settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# The cardinalities of the book's encoder (43 numeric, 80 categorical columns), used when data/ is empty.
FALLBACK_CARDINALITIES = [
    9, 17, 272, 5, 5, 111, 4, 9, 25, 14, 7, 7, 9, 5, 3, 5, 5, 4, 4, 268, 7, 5, 4, 20, 208, 215, 13, 10, 25, 11, 7,
    12, 3, 5, 13, 53, 17, 4, 29, 3, 15, 6, 4, 514, 10, 5, 4, 33, 30, 32, 3, 19, 3, 2, 3, 105, 32, 8, 5, 3, 14, 13, 5,
    476, 486, 45, 28, 514, 5, 10, 16, 4, 19, 4, 3, 231, 237, 232, 5, 235,
]
FALLBACK_N_NUMERIC = 43


def feature_shape() -> tuple[int, list[int], str]:
    path = ROOT / "data" / "feature_encoder.json"
    if path.exists():
        try:
            from obsad.features import FeatureEncoder

            enc = FeatureEncoder.load(path)
            return len(enc.numeric_names_), list(enc.cardinalities_), str(path.relative_to(ROOT))
        except Exception as exc:  # noqa: BLE001 - a benchmark falls back rather than fails
            print(f"could not read {path}: {exc}; using the fallback cardinalities", file=sys.stderr)
    return FALLBACK_N_NUMERIC, list(FALLBACK_CARDINALITIES), "fallback list"


def synthetic(n: int, n_numeric: int, cardinalities: list[int], seed: int = 0):
    rng = np.random.default_rng(seed)
    numeric = np.clip(rng.standard_normal((n, n_numeric)).astype(np.float32), -10, 10)
    cols = []
    for c in cardinalities:
        ids = np.minimum(rng.zipf(1.6, n) + 1, c - 1)  # ids 2.. mostly, with a tail; 0/1 sometimes below
        ids[rng.random(n) < 0.05] = 0
        cols.append(ids)
    return numeric, np.stack(cols, axis=1).astype(np.int64)


def build(objective: str, n_numeric: int, cardinalities: list[int], numeric, categorical):
    import torch

    from obsad.models import DEFAULT_MODEL_CONFIG, TabularResNet
    from obsad.train.objectives import ContrastiveObjective, FieldAugmentation, MaskedFeatureObjective

    if objective == "contrastive":
        enc = TabularResNet(n_numeric, cardinalities, **DEFAULT_MODEL_CONFIG)
        aug = FieldAugmentation().fit(numeric, categorical)
        obj = ContrastiveObjective(enc, augmentation=aug)
    else:
        enc = TabularResNet(n_numeric, cardinalities, **DEFAULT_MODEL_CONFIG, mask_token=True)
        obj = MaskedFeatureObjective(enc)
    opt = torch.optim.AdamW(obj.parameters(), lr=1e-3, fused=True)
    return obj, opt


def bench(objective: str, batch_size: int, steps: int, repeats: int, warmup: int, n_numeric: int,
          cardinalities: list[int], device: str = "cpu", amp: bool = False) -> dict:
    import contextlib

    import torch

    torch.manual_seed(0)
    pool = max(batch_size * 16, 8192)
    numeric, categorical = synthetic(pool, n_numeric, cardinalities)
    obj, _ = build(objective, n_numeric, cardinalities, numeric, categorical)
    obj = obj.to(device)
    opt = torch.optim.AdamW(obj.parameters(), lr=1e-3, fused=True)
    num_t, cat_t = torch.from_numpy(numeric).to(device), torch.from_numpy(categorical).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    n_batches = pool // batch_size
    batches = [{"numeric": num_t[i * batch_size:(i + 1) * batch_size],
                "categorical": cat_t[i * batch_size:(i + 1) * batch_size]} for i in range(n_batches)]
    obj.train()
    k = 0

    def step():
        nonlocal k
        with autocast:
            out = obj(batches[k % n_batches])
        k += 1
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        return out

    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            out = step()
        sync()
        rates.append(steps * batch_size / (time.perf_counter() - t0))
    return {"objective": objective, "batch_size": batch_size, "steps": steps, "threads": torch.get_num_threads(),
            "device": device, "amp": amp,
            "best_events_per_s": max(rates), "median_events_per_s": float(np.median(rates)),
            "all_events_per_s": [round(r) for r in rates], "parameters": obj.encoder.count_parameters(),
            "parameters_with_heads": sum(p.numel() for p in obj.parameters()),
            "final_loss": float(out.loss.detach())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objective", choices=["contrastive", "masked", "both"], default="both")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=100, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (best and median reported)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    ap.add_argument("--json", action="store_true", help="print one JSON line per objective")
    ap.add_argument("--no-malloc-tune", action="store_true",
                    help="leave glibc's mmap and trim thresholds alone (the trainer raises them on the CPU, "
                         "see obsad.runtime.tune_allocator)")
    args = ap.parse_args(argv)
    if not args.no_malloc_tune:
        from obsad.runtime import tune_allocator

        print(f"allocator tuning: {'applied' if tune_allocator() else 'unavailable (not glibc)'}")

    if args.threads is not None:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    n_numeric, cards, source = feature_shape()
    print(f"features: {n_numeric} numeric, {len(cards)} categorical (cardinalities from {source}, "
          f"max {max(cards)}); torch {torch.__version__}, {torch.get_num_threads()} threads")
    objectives = ["contrastive", "masked"] if args.objective == "both" else [args.objective]
    for objective in objectives:
        res = bench(objective, args.batch_size, args.steps, args.repeats, args.warmup, n_numeric, cards,
                    device=args.device, amp=args.amp and args.device.startswith("cuda"))
        if args.json:
            print(json.dumps(res))
        else:
            where = args.device + (" bf16" if res["amp"] else "")
            print(f"{objective:12s} {where} batch {res['batch_size']}: best {res['best_events_per_s']:,.0f} events/s, "
                  f"median {res['median_events_per_s']:,.0f} (runs {res['all_events_per_s']}); encoder "
                  f"{res['parameters']:,} parameters ({res['parameters_with_heads']:,} with heads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
