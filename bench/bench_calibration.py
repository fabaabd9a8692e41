"""The threshold's calibration period: the latest part of the baseline (`calibration="latest"`, the default) against
a random fifth of its hours spread over the whole period (`"spread"`), on the book's data.

    python bench/bench_calibration.py                    # needs data/ from notebooks 01-04 (`make book`)

The package of notebook 05 is assembled both ways on the training split (same encoder, same trained network, same
k-NN reference) and scores the later splits. Printed per calibration: the share of unlabelled events flagged (the
design rate is 0.5 %), the share of labelled ones caught, and AUROC / AUPRC against the simulator's labels. Notebook
07 makes the same comparison on a month whose baseline week starts on a Monday (there, "latest" is a weekend).
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import pandas as pd
    from sklearn.metrics import average_precision_score, roc_auc_score

    from obsad.features import FeatureEncoder
    from obsad.models import load_model
    from obsad.ocsf import load_events
    from obsad.paths import data_path
    from obsad.pipeline import assemble_pipeline

    encoder = FeatureEncoder.load(data_path("feature_encoder.json"))
    objective = load_model(data_path("ssl_contrastive")).eval()
    raw, _ = load_events(data_path("ocsf_events.parquet"))
    labelled = set(pd.read_parquet(data_path("ocsf_labels.parquet"))["event_uid"])
    split = pd.read_parquet(data_path("events_flat.parquet"), columns=["split"])["split"].to_numpy()
    train = raw[split == "train"].reset_index(drop=True)
    later = raw[split != "train"].reset_index(drop=True)
    y = later["metadata.uid"].isin(labelled).to_numpy()
    print(f"fitted on {len(train):,} training events, scoring {len(later):,} later ones ({y.mean():.2%} labelled)")
    for calibration in ("latest", "spread"):
        pipeline = assemble_pipeline(train, encoder, objective, seed=args.seed, k=10, reference_max=20_000,
                                     exact_max=20_000, window="1h", calibration=calibration)
        scored = pipeline.score(later, explain="none")
        score, flagged = scored["score"].to_numpy(), scored["is_anomaly"].to_numpy()
        print(f"  {calibration:7s} false alarms {flagged[~y].mean():.2%}  recall {flagged[y].mean():.3f}  "
              f"AUROC {roc_auc_score(y, score):.4f}  AUPRC {average_precision_score(y, score):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
