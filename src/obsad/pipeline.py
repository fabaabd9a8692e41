"""The end-to-end pipeline: OCSF events -> encoder -> contrastive TabularResNet -> k-NN detector -> model package.

:func:`fit_pipeline` fits everything on the events given (the user's baseline), :meth:`FittedPipeline.save`
writes one verified package (:mod:`obsad.package`), :func:`load_pipeline` reads it back and rebuilds the k-NN
index from the stored reference embeddings (no retraining), and :meth:`FittedPipeline.score` returns one row per
event, in input order: ``score``, ``percentile``, ``is_anomaly`` and ``top_features``.

Defaults generalise to any OCSF export: the only field names used are the OCSF fields that define what an event
*is* (class, activity, status, type), protected from augmentation when present. Training length is a number of
optimisation steps (``target_steps``) turned into whole epochs, so fit time grows slowly with data size
(about a minute on two CPU cores for 30k events).

``top_features`` names the raw source fields on which an event differs most from the mean of its ``k`` nearest
reference events, in encoded space: numeric outputs as absolute difference divided by the reference spread of
that output, categorical outputs as the share of neighbours with a different value; outputs are aggregated to
their raw column (max) through ``EncodedFeatures.sources``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .detect import KNNDetector
from .features import FeatureEncoder
from .models import DEFAULT_MODEL_CONFIG, TabularResNet
from .package import PackageError, fingerprint_frame, load_package, save_package
from .runtime import Stopwatch, seed_everything
from .train import ContrastiveObjective, FieldAugmentation, TrainConfig, Trainer

__all__ = ["DEFINING_FIELDS", "FittedPipeline", "fit_pipeline", "load_pipeline", "auto_epochs"]

#: OCSF fields that say what an event is; protected from augmentation when the encoder keeps them.
DEFINING_FIELDS = ("class_name", "class_uid", "activity_id", "activity_name", "type_name", "status", "status_id")

PIPELINE_FORMAT = "obsad-pipeline"
PIPELINE_VERSION = 1
REFERENCE_EVENTS_MAX = 5_000
QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)
_CHUNK = 4096


def auto_epochs(n_events: int, batch_size: int = 512, target_steps: int = 300) -> int:
    """Whole epochs giving about ``target_steps`` optimisation steps (at least one epoch)."""
    steps_per_epoch = max(1, n_events // max(1, min(batch_size, n_events)))
    return max(1, int(round(target_steps / steps_per_epoch)))


def _build_detector(state: dict, reference_embeddings: np.ndarray, train_scores_sorted: np.ndarray) -> KNNDetector:
    """A fitted :class:`KNNDetector` (exact index) from stored state, without refitting.

    ``kneighbors`` indices are rows of ``reference_embeddings``.
    """
    return KNNDetector.from_reference(
        reference_embeddings, train_scores_sorted, float(state["threshold_"]),
        k=int(state["k"]), metric=str(state["metric"]), seed=int(state.get("seed", 0)),
        threshold_percentile=float(state["threshold_percentile"]))


@dataclass
class FittedPipeline:
    """A fitted encoder, contrastive objective (``objective.encoder`` embeds) and k-NN detector, ready to score."""

    encoder: FeatureEncoder
    objective: torch.nn.Module
    detector: KNNDetector
    detector_state: dict
    arrays: dict[str, np.ndarray]
    reference: pd.DataFrame | None
    config: dict
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ properties
    @property
    def model(self) -> TabularResNet:
        return self.objective.encoder

    @property
    def threshold(self) -> float:
        return float(self.detector.threshold_)

    # ------------------------------------------------------------------ scoring
    def embed(self, features) -> np.ndarray:
        return self.model.embed(features.numeric, features.categorical).numpy().astype(np.float32, copy=False)

    def score(self, events: pd.DataFrame, *, n_top: int = 3) -> pd.DataFrame:
        """One row per row of ``events``, in the same order (and index): score, percentile, is_anomaly, top_features.

        ``event_uid`` (from OCSF ``metadata.uid``) and ``time`` are copied first when present.
        """
        if not isinstance(events, pd.DataFrame):
            raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
        features = self.encoder.transform(events)
        z = self.embed(features)
        det = self.detector
        if len(events):
            scores = det.score_samples(z)
            _, nbrs = det.kneighbors(z)
        else:
            scores = np.empty(0, dtype=np.float64)
            nbrs = np.empty((0, det.k), dtype=np.int64)
        out = pd.DataFrame(index=events.index)
        if "metadata.uid" in events.columns:
            out["event_uid"] = events["metadata.uid"].to_numpy()
        if "time" in events.columns:
            out["time"] = events["time"].to_numpy()
        out["score"] = scores
        out["percentile"] = det.percentile_of(scores) if len(scores) else np.empty(0)
        out["is_anomaly"] = scores > det.threshold_
        out["top_features"] = self.top_features(features, nbrs, n_top=n_top)
        return out

    def top_features(self, features, neighbours: np.ndarray, *, n_top: int = 3) -> list[str]:
        """The ``n_top`` raw source columns on which each event differs most from its reference neighbours."""
        ref_num = self.arrays["reference_numeric"]
        ref_cat = self.arrays["reference_categorical"]
        scale = self.arrays["numeric_scale"]
        names = list(features.numeric_names) + list(features.categorical_names)
        sources = [features.sources.get(name, name) for name in names]
        columns = sorted(set(sources))
        col_of = {c: i for i, c in enumerate(columns)}
        out_to_col = np.array([col_of[s] for s in sources], dtype=np.int64)
        n = len(neighbours)
        result: list[str] = []
        if not columns:
            return [""] * n
        for lo in range(0, n, _CHUNK):
            nb = np.maximum(neighbours[lo:lo + _CHUNK], 0)  # -1 never happens with the exact index
            parts = []
            if ref_num.shape[1]:
                mean = ref_num[nb].mean(axis=1)  # [b, d_num]
                parts.append(np.abs(features.numeric[lo:lo + _CHUNK] - mean) / scale)
            if ref_cat.shape[1]:
                diff = ref_cat[nb] != features.categorical[lo:lo + _CHUNK, None, :].astype(ref_cat.dtype)
                parts.append(diff.mean(axis=1))
            per_out = np.concatenate(parts, axis=1).astype(np.float64)  # [b, n_outputs]
            per_col = _max_by_group(per_out, out_to_col, len(columns))
            k = min(n_top, len(columns))
            top = np.argsort(-per_col, axis=1, kind="stable")[:, :k]
            for row, cols in zip(per_col, top):
                result.append(", ".join(columns[c] for c in cols if row[c] > 0))
        return result

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model package (atomically; see :func:`obsad.package.save_package`)."""
        path = save_package(
            directory,
            encoder=self.encoder,
            model=self.objective,
            detector=self.detector_state,
            arrays=self.arrays,
            reference=self.reference,
            config=self.config,
            seed=self.config.get("seed"),
            training_fingerprint=self.config.get("training_fingerprint"),
        )
        self.path = Path(path)
        return self.path


def _max_by_group(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Per row, the max of ``values[:, j]`` over outputs ``j`` of each group (vectorised over rows)."""
    out = np.zeros((values.shape[0], n_groups), dtype=np.float64)
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    reduced = np.maximum.reduceat(values[:, order], starts, axis=1)
    out[:, g[starts]] = reduced
    return out


def _reference_sample(events: pd.DataFrame, n_max: int, seed: int) -> pd.DataFrame:
    n = len(events)
    if n > n_max:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=n_max, replace=False))
        sample = events.iloc[rows]
    else:
        sample = events
    return sample.reset_index(drop=True)


def fit_pipeline(
    events: pd.DataFrame,
    *,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    reference_max: int = 50_000,
    k: int = 10,
    metric: str = "cosine",
    batch_size: int = 512,
    lr: float = 2e-3,
    target_steps: int = 300,
    threshold_percentile: float = 99.5,
    reference_events_max: int = REFERENCE_EVENTS_MAX,
    device: str | None = None,
) -> FittedPipeline:
    """Fit encoder, contrastive TabularResNet and k-NN detector on all of ``events`` (a ``load_events`` table).

    ``epochs=None``: :func:`auto_epochs` (about ``target_steps`` optimisation steps). ``reference_max`` bounds the
    k-NN reference (a seeded sample; every event is still scored to calibrate the threshold).
    """
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
    if len(events) <= k + 1:
        raise ValueError(f"need more than {k + 1} events to fit, got {len(events)}")
    if epochs is not None and int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    watch = Stopwatch("fit")
    seed_everything(seed)
    encoder = FeatureEncoder().fit(events)
    features = encoder.transform(events)
    if not features.numeric_names and not features.categorical_names:
        raise ValueError("no usable feature: every column was dropped by the encoder (constant, unique or empty)")
    n = len(events)
    n_epochs = int(epochs) if epochs is not None else auto_epochs(n, batch_size, target_steps)

    protected = [name for name in DEFINING_FIELDS if name in features.categorical_names]
    augmentation = FieldAugmentation(protected_categorical=protected).fit(
        features.numeric, features.categorical, features.numeric_names, features.categorical_names)
    model = TabularResNet(len(features.numeric_names), features.cardinalities, **DEFAULT_MODEL_CONFIG)
    objective = ContrastiveObjective(model, augmentation=augmentation)
    train_config = TrainConfig(epochs=n_epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
                               device=device)
    history = Trainer(objective, train_config, name="obsad fit").fit(features)
    objective = objective.cpu().eval()
    train_seconds = watch.seconds

    z = objective.encoder.embed(features.numeric, features.categorical).numpy().astype(np.float32)
    fitted = KNNDetector(k=k, metric=metric, exact_max=max(int(reference_max), 1), reference_max=int(reference_max),
                         seed=seed, threshold_percentile=threshold_percentile).fit(z)
    rows = fitted.reference_rows_
    train_scores = fitted.training_scores_
    sorted_scores = np.sort(train_scores)
    share_above = float(np.mean(train_scores > fitted.threshold_))
    ref_num = features.numeric[rows].astype(np.float32)
    spread = ref_num.std(axis=0) if ref_num.shape[1] else np.zeros(0, dtype=np.float32)
    scale = np.where(spread > 1e-6, spread, 1.0).astype(np.float32)
    max_id = max(features.cardinalities) if len(features.cardinalities) else 0
    cat_dtype = np.int32 if max_id < np.iinfo(np.int32).max else np.int64
    arrays = {
        "reference_embeddings": np.ascontiguousarray(z[rows]),
        "train_scores_sorted": sorted_scores,
        "reference_numeric": ref_num,
        "reference_categorical": features.categorical[rows].astype(cat_dtype),
        "numeric_scale": scale,
    }
    detector_state = {
        "kind": "knn",
        "k": int(k),
        "metric": metric,
        "seed": int(seed),
        "threshold_percentile": float(threshold_percentile),
        "threshold_": float(fitted.threshold_),
        "n_train": int(n),
        "n_reference": int(len(rows)),
        "share_above_threshold": share_above,
        "score_quantiles": {str(q): float(np.quantile(sorted_scores, q)) for q in QUANTILES},
    }
    config = {
        "format": PIPELINE_FORMAT,
        "format_version": PIPELINE_VERSION,
        "seed": int(seed),
        "n_events": int(n),
        "n_numeric": len(features.numeric_names),
        "n_categorical": len(features.categorical_names),
        "protected_categorical": protected,
        "model_config": dict(DEFAULT_MODEL_CONFIG),
        "train_config": train_config.to_dict(),
        "train_steps": int(history.steps.shape[0]) if hasattr(history, "steps") else None,
        "train_seconds": float(train_seconds),
        "fit_seconds": float(watch.seconds),
        "reference_max": int(reference_max),
        "training_fingerprint": fingerprint_frame(events),
    }
    detector = _build_detector(detector_state, arrays["reference_embeddings"], sorted_scores)
    reference = _reference_sample(events, reference_events_max, seed)
    return FittedPipeline(encoder=encoder, objective=objective, detector=detector, detector_state=detector_state,
                          arrays=arrays, reference=reference, config=config)


_REQUIRED_ARRAYS = ("reference_embeddings", "train_scores_sorted", "reference_numeric", "reference_categorical",
                    "numeric_scale")


def load_pipeline(directory: str | os.PathLike) -> FittedPipeline:
    """Read a package written by :meth:`FittedPipeline.save`; :class:`obsad.package.PackageError` if unusable."""
    package = load_package(directory)
    root = package.path
    if package.config.get("format") != PIPELINE_FORMAT:
        raise PackageError(f"refusing to load package {root}: config.json: not an obsad pipeline package")
    if int(package.config.get("format_version", 0)) > PIPELINE_VERSION:
        raise PackageError(f"refusing to load package {root}: config.json: pipeline format version "
                           f"{package.config.get('format_version')} is newer than this obsad supports")
    if not isinstance(package.model, ContrastiveObjective):
        raise PackageError(f"refusing to load package {root}: model/: expected a ContrastiveObjective, got "
                           f"{type(package.model).__name__}")
    missing = [name for name in _REQUIRED_ARRAYS if name not in package.arrays]
    if missing:
        raise PackageError(f"refusing to load package {root}: arrays.safetensors: missing {', '.join(missing)}")
    state = package.detector
    try:
        detector = _build_detector(state, package.arrays["reference_embeddings"], package.arrays["train_scores_sorted"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"refusing to load package {root}: detector.json: unusable detector state ({exc})") from exc
    return FittedPipeline(encoder=package.encoder, objective=package.model.eval(), detector=detector,
                          detector_state=state, arrays=dict(package.arrays), reference=package.reference,
                          config=package.config, path=root, warnings=list(package.warnings))
