"""Two-stage training with a few analyst labels: masked pretraining without labels, then a head on the labels.

**Stage 1** (:func:`pretrain_encoder`) is the masked-feature objective of :mod:`obsad.train.objectives` (20 % of
the fields hidden, Gaussian likelihood for numerics, cross-entropy for categoricals) on the events, labelled or
not: :func:`fit_two_stage` trains it on the earlier 85 % and keeps the best epoch on the latest 15 %, as
``pretrain_<model>_<epoch>_<val_loss>.pt``.

**Stage 2** (:func:`train_classifier`) puts a small :class:`~obsad.models.ClassificationHead` on the pretrained
encoder, freezes the encoder and trains the head on the labelled events at ``head_lr_ratio`` (1/10) of the base
learning rate, with class weights against imbalance (a few incidents among many ordinary events);
``unfreeze_last_block`` also trains the encoder's last residual block and its output norm, at ``unfreeze_lr_ratio``
of the head's rate.
Its best epoch on held-out labels (when there are enough) is ``finetune_<model>_<epoch>_<val_loss>.pt``.
``use_two_stage=False`` is the comparison the seed calls ``USE_TWO_STAGE = False``: the same network, trained end
to end from a random start on the labels only, at the base rate.

One head gives both answers: the anomaly score ``1 - P(normal)`` and the class (each scenario the analyst named,
plus ``normal``). The score's threshold is calibrated as every obsad threshold is: a percentile (99.5th) of the
scores of the training events not labelled as anomalies, i.e. an alarm budget on ordinary traffic, not a
probability of 0.5 that class weights and an alert-heavy label sample have moved. An event above it gets its
most probable anomalous class, every other event ``normal`` (:func:`decide_classes`).

:func:`fit_two_stage` runs it all from raw events and labels; :class:`TwoStageModel` scores new events
(:func:`predict_anomalies`) and is saved as a verified model package (:mod:`obsad.package`): feature encoder,
classifier weights, class names (the seed's ``events_names``) and calibration, with the manifest's checksums;
:func:`load_two_stage_model` reads it back.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from obsad.features import FeatureEncoder
from obsad.models import (
    DEFAULT_MODEL_CONFIG,
    ClassificationHead,
    EventClassifier,
    EventSequenceEncoder,
    MaskedEventObjective,
    TabularResNet,
)
from obsad.runtime import seed_everything

from .objectives import MaskedFeatureObjective, ObjectiveOutput
from .trainer import TrainConfig, Trainer, TrainHistory

__all__ = [
    "ClassificationObjective",
    "TwoStageConfig",
    "TwoStageModel",
    "balanced_class_weights",
    "decide_classes",
    "fit_two_stage",
    "load_two_stage_model",
    "neutral_values",
    "predict_anomalies",
    "pretrain_encoder",
    "pretrain_sequence_encoder",
    "train_classifier",
    "train_head",
]

PACKAGE_FORMAT = "obsad-two-stage"
PACKAGE_VERSION = 1
PRETRAIN_NAME = "pretrain_{name}_{epoch}_{val_loss:.4f}"
MIN_STEPS_PER_EPOCH = 50
FINETUNE_NAME = "finetune_{name}_{epoch}_{val_loss:.4f}"


@dataclass
class TwoStageConfig:
    """Hyper-parameters of the procedure; JSON-able (``to_dict``).

    ``pretrain_steps``: stage 1's optimisation steps, turned into whole epochs. ``head_steps``: stage 2's steps
    *at the base rate*; at ``head_lr_ratio`` of it, stage 2 takes ``head_steps / head_lr_ratio`` steps
    (:attr:`stage2_steps`), so that a lower rate is not also a shorter training: the two-stage head and the
    single-stage network get the same budget of rate x steps. ``min_val_labels``: below that many labels, none
    are held out for validation (every label is needed to train; the last epoch is kept).
    """

    model_name: str = "tabular_resnet"
    base_lr: float = 2e-3
    batch_size: int = 512
    pretrain_steps: int = 300
    mask_prob: float = 0.2
    head_lr_ratio: float = 0.1
    head_steps: int = 500
    head_batch_size: int = 64
    head_hidden: int = 64
    head_dropout: float = 0.1
    unfreeze_last_block: bool = False
    unfreeze_lr_ratio: float = 0.1
    use_two_stage: bool = True
    class_weighting: str = "balanced"
    val_fraction: float = 0.2
    min_val_labels: int = 50
    threshold_percentile: float = 99.5
    seed: int = 0
    device: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.class_weighting not in ("balanced", "none"):
            raise ValueError(f"class_weighting must be 'balanced' or 'none', got {self.class_weighting!r}")
        for name in ("head_lr_ratio", "unfreeze_lr_ratio"):
            if not 0.0 < float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0.0 < float(self.threshold_percentile) <= 100.0:
            raise ValueError(f"threshold_percentile must be in (0, 100], got {self.threshold_percentile}")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if min(int(self.pretrain_steps), int(self.head_steps), int(self.batch_size), int(self.head_batch_size)) < 1:
            raise ValueError("steps and batch sizes must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def stage2_steps(self) -> int:
        """Stage 2's optimisation steps: ``head_steps`` at the base rate, ``head_steps / head_lr_ratio`` below it."""
        return int(round(int(self.head_steps) * float(self.base_lr) / self.head_lr))

    @property
    def head_lr(self) -> float:
        """Stage 2's learning rate: ``head_lr_ratio`` of the base rate (the base rate itself when single-stage)."""
        return float(self.base_lr) * (float(self.head_lr_ratio) if self.use_two_stage else 1.0)


def _epochs_for(steps: int, n: int, batch_size: int) -> int:
    return max(1, math.ceil(int(steps) / max(1, n // max(1, min(batch_size, n)))))


def balanced_class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """``n / (k * count_c)`` for the ``k`` classes present, 0 for absent ones (scikit-learn's "balanced")."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


class ClassificationObjective(nn.Module):
    """Weighted cross-entropy of an :class:`~obsad.models.EventClassifier` on labelled batches (``batch["label"]``).

    ``parameter_groups()`` tells the :class:`~obsad.train.Trainer` which parameters train and at what fraction of
    its learning rate: the head (and a from-scratch encoder) at 1, unfrozen encoder blocks at ``block_lr_scale``.
    """

    def __init__(self, classifier: EventClassifier, class_weights: Sequence[float] | None = None,
                 block_lr_scale: float = 0.1) -> None:
        super().__init__()
        self.classifier = classifier
        self.block_lr_scale = float(block_lr_scale)
        weights = None if class_weights is None else torch.as_tensor(np.asarray(class_weights), dtype=torch.float32)
        if weights is not None and weights.shape != (classifier.n_classes,):
            raise ValueError(f"class_weights must have {classifier.n_classes} entries, got {tuple(weights.shape)}")
        self.register_buffer("class_weights", weights, persistent=False)

    def parameter_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        c = self.classifier
        if c.trainable_blocks is None:  # single-stage: everything learns at the full rate
            return [(list(c.parameters()), 1.0)]
        unfrozen = [p for m in c.unfrozen_modules() for p in m.parameters()]
        groups = [(list(c.head.parameters()), 1.0)]
        if unfrozen:
            groups.append((unfrozen, self.block_lr_scale))
        return groups

    def forward(self, batch: dict[str, Tensor]) -> ObjectiveOutput:
        if "label" not in batch:
            raise ValueError("a labelled batch has 'label' and either 'embedding' or 'numeric' and 'categorical'")
        label = batch["label"]
        if "embedding" in batch:  # a frozen encoder's output, computed once for the whole training set
            logits = self.classifier.head(batch["embedding"].float())
        else:
            logits = self.classifier(batch["numeric"].float(), batch["categorical"].long())
        loss = F.cross_entropy(logits.float(), label.long(), weight=self.class_weights)
        accuracy = (logits.argmax(dim=1) == label).float().mean()
        return ObjectiveOutput(loss, {"accuracy": float(accuracy)})


def _new_encoder(n_numeric: int, cardinalities: Sequence[int], mask_token: bool) -> TabularResNet:
    return TabularResNet(n_numeric, list(cardinalities), **DEFAULT_MODEL_CONFIG, mask_token=mask_token)


def pretrain_encoder(features, val=None, config: TwoStageConfig | None = None,
                     checkpoint_dir: str | os.PathLike | None = None) -> tuple[TabularResNet, TrainHistory]:
    """Stage 1: masked-feature pretraining on ``features`` (``EncodedFeatures`` or a dict of arrays).

    With ``val``, the best epoch's weights are kept (and written as ``pretrain_<model>_<epoch>_<val_loss>.pt``
    into ``checkpoint_dir``). Returns the encoder (eval mode) and the training history.
    """
    config = config or TwoStageConfig()
    seed_everything(config.seed)
    encoder = _new_encoder(features.numeric.shape[1], features.cardinalities, mask_token=True)
    objective = MaskedFeatureObjective(encoder, mask_prob=config.mask_prob)
    n = int(features.numeric.shape[0])
    train_config = TrainConfig(epochs=_epochs_for(config.pretrain_steps, n, config.batch_size),
                               batch_size=config.batch_size, lr=config.base_lr, seed=config.seed,
                               device=config.device, progress=config.progress, restore_best=val is not None)
    history = Trainer(objective, train_config, checkpoint_dir=checkpoint_dir, name=config.model_name,
                      best_name=PRETRAIN_NAME).fit(features, val)
    return objective.encoder.cpu().eval(), history


def pretrain_sequence_encoder(tokens: np.ndarray, valid: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None = None,
                              config: TwoStageConfig | None = None, checkpoint_dir: str | os.PathLike | None = None,
                              **encoder_options) -> tuple[EventSequenceEncoder, TrainHistory]:
    """Stage 1 for windows: a :class:`~obsad.models.EventSequenceEncoder` pretrained by hiding whole events of
    each window (``tokens [n, L, d_event]``, ``valid [n, L]``, from
    :func:`obsad.features.sequences.window_tokens`) and reconstructing them. ``encoder_options`` go to the
    encoder (seed defaults: ``d_model=32``, ``n_heads=4``). Best epoch on ``val``:
    ``pretrain_<model>_sequence_<epoch>_<val_loss>.pt``."""
    config = config or TwoStageConfig()
    seed_everything(config.seed)
    tokens = np.asarray(tokens, dtype=np.float32)
    encoder = EventSequenceEncoder(tokens.shape[2], max_len=tokens.shape[1], **encoder_options)
    objective = MaskedEventObjective(encoder, mask_prob=config.mask_prob)
    train_config = TrainConfig(epochs=_epochs_for(config.pretrain_steps, len(tokens), config.batch_size),
                               batch_size=config.batch_size, lr=config.base_lr, seed=config.seed,
                               device=config.device, progress=config.progress, restore_best=val is not None)
    val_data = None if val is None else {"tokens": np.asarray(val[0], dtype=np.float32), "valid": np.asarray(val[1])}
    history = Trainer(objective, train_config, checkpoint_dir=checkpoint_dir, name=f"{config.model_name}_sequence",
                      best_name=PRETRAIN_NAME).fit({"tokens": tokens, "valid": np.asarray(valid)}, val_data)
    return objective.encoder.cpu().eval(), history


def _labelled(features, rows: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    return {"numeric": features.numeric[rows], "categorical": features.categorical[rows], "label": y}


def train_classifier(encoder: TabularResNet | None, features, rows: np.ndarray, y: np.ndarray, n_classes: int,
                     config: TwoStageConfig | None = None, val: tuple[np.ndarray, np.ndarray] | None = None,
                     checkpoint_dir: str | os.PathLike | None = None) -> tuple[EventClassifier, TrainHistory]:
    """Stage 2: an :class:`EventClassifier` trained on ``features[rows]`` with class ids ``y``.

    Two-stage (``config.use_two_stage``): ``encoder`` is the pretrained one, frozen (but for its last block
    with ``unfreeze_last_block``), the head learns at ``head_lr_ratio`` of the base rate. Single-stage: a new
    encoder of the same architecture, trained with the head from a random start at the base rate (``encoder``
    is ignored; pass ``None``). ``val = (rows, y)``: held-out labels; the best epoch is kept and written as
    ``finetune_<model>_<epoch>_<val_loss>.pt``.
    """
    config = config or TwoStageConfig()
    rows, y = np.asarray(rows, dtype=np.int64), np.asarray(y, dtype=np.int64)
    if len(rows) != len(y) or len(rows) == 0:
        raise ValueError(f"need as many class ids as rows, and at least one; got {len(rows)} rows, {len(y)} ids")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"class ids must be in [0, {n_classes}), got {y.min()}..{y.max()}")
    seed_everything(config.seed)
    if config.use_two_stage:
        if encoder is None:
            raise ValueError("two-stage training needs the pretrained encoder (use_two_stage=False trains one)")
        encoder = _copy(encoder)
    else:
        encoder = _new_encoder(features.numeric.shape[1], features.cardinalities, mask_token=False)
    head = ClassificationHead(encoder.d_model, n_classes, d_hidden=config.head_hidden, dropout=config.head_dropout)
    classifier = EventClassifier(encoder, head)
    if config.use_two_stage:
        classifier.freeze(trainable_blocks=1 if config.unfreeze_last_block else 0)
    weights = balanced_class_weights(y, n_classes) if config.class_weighting == "balanced" else None
    objective = ClassificationObjective(classifier, weights, block_lr_scale=config.unfreeze_lr_ratio)
    if config.use_two_stage and not config.unfreeze_last_block:
        # nothing before the head trains: encode the labelled events once, and train the head on the encodings
        def data(r, labels):
            z = classifier.encoder.embed(features.numeric[r], features.categorical[r])
            return {"embedding": z, "label": labels}
    else:
        def data(r, labels):
            return _labelled(features, r, labels)
    history = _fit_stage2(objective, data, rows, y, None if val is None else data(*val), config, checkpoint_dir)
    return classifier.cpu().eval(), history


def _fit_stage2(objective: nn.Module, data, rows: np.ndarray, y: np.ndarray, val_data: dict | None,
                config: TwoStageConfig, checkpoint_dir) -> TrainHistory:
    """Train ``objective`` on the batch dict ``data(rows, y)`` at the stage-2 rate, validating on ``val_data``."""
    # a few labels make an epoch of one step, and each epoch ends with a validation and a record: repeat the
    # labelled set so that an epoch has about MIN_STEPS_PER_EPOCH steps (a shuffled pass over the copies)
    copies = max(1, math.ceil(MIN_STEPS_PER_EPOCH * config.head_batch_size / len(rows)))
    rows, y = np.tile(rows, copies), np.tile(y, copies)
    train_config = TrainConfig(epochs=_epochs_for(config.stage2_steps, len(rows), config.head_batch_size),
                               batch_size=config.head_batch_size, lr=config.head_lr, seed=config.seed,
                               device=config.device, progress=config.progress, restore_best=val_data is not None)
    return Trainer(objective, train_config, checkpoint_dir=checkpoint_dir, name=config.model_name,
                   best_name=FINETUNE_NAME).fit(data(rows, y), val_data)


class _HeadOnly(nn.Module):
    """A head over representations computed by a frozen encoder elsewhere (windows, precomputed events)."""

    trainable_blocks = 0

    def __init__(self, head: ClassificationHead) -> None:
        super().__init__()
        self.head = head

    @property
    def n_classes(self) -> int:
        return self.head.n_classes

    def unfrozen_modules(self) -> list[nn.Module]:
        return []


def train_head(representations: Any, y: np.ndarray, n_classes: int, config: TwoStageConfig | None = None,
               val: tuple[Any, np.ndarray] | None = None,
               checkpoint_dir: str | os.PathLike | None = None) -> tuple[ClassificationHead, TrainHistory]:
    """Stage 2 over a frozen encoder's outputs: a :class:`ClassificationHead` trained on ``representations``
    ``[n, d]`` with class ids ``y``, at the stage-2 rate, with the same class weights, schedule and checkpoints
    as :func:`train_classifier` (e.g. on windows pooled by the :class:`~obsad.models.EventSequenceEncoder`)."""
    config = config or TwoStageConfig()
    reps = torch.as_tensor(np.asarray(representations), dtype=torch.float32)
    y = np.asarray(y, dtype=np.int64)
    if reps.ndim != 2 or len(reps) != len(y) or len(y) == 0:
        raise ValueError(f"need representations [n, d] and n class ids, n >= 1; got {tuple(reps.shape)} and {len(y)}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"class ids must be in [0, {n_classes}), got {y.min()}..{y.max()}")
    seed_everything(config.seed)
    head = ClassificationHead(reps.shape[1], n_classes, d_hidden=config.head_hidden, dropout=config.head_dropout)
    weights = balanced_class_weights(y, n_classes) if config.class_weighting == "balanced" else None
    objective = ClassificationObjective(_HeadOnly(head), weights)
    val_data = None if val is None else {"embedding": torch.as_tensor(np.asarray(val[0]), dtype=torch.float32),
                                         "label": torch.as_tensor(np.asarray(val[1], dtype=np.int64))}
    history = _fit_stage2(objective, lambda r, labels: {"embedding": reps[torch.as_tensor(r)], "label": labels},
                          np.arange(len(y)), y, val_data, config, checkpoint_dir)
    return head.cpu().eval(), history


def _copy(module: TabularResNet) -> TabularResNet:
    """An independent copy (stage 2 must never change the pretrained encoder it was given)."""
    clone = TabularResNet.from_config(module.to_config())
    clone.load_state_dict(module.state_dict())
    return clone.eval()


# ------------------------------------------------------------------------------------------------ the model
@dataclass
class TwoStageModel:
    """A fitted feature encoder, classifier, class names and calibrated threshold: scores raw events."""

    feature_encoder: FeatureEncoder
    classifier: EventClassifier
    classes: list[str]
    normal_class: str
    threshold_: float
    threshold_percentile: float
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    neutral: dict | None = None  # typical inputs for explanations (:func:`neutral_values` of the training features)
    path: Path | None = None

    @property
    def normal_id(self) -> int:
        return self.classes.index(self.normal_class)

    @property
    def input_columns(self) -> list[str]:
        return [st["column"] for st in self.feature_encoder.columns_ if not str(st["role"]).startswith("drop")]

    @property
    def package_name(self) -> str:
        """``two_stage_<model>_<metric>_<value>``: the name the procedure gives its final package."""
        metric = self.summary.get("selection_metric", "train_loss")
        value = float(self.summary.get("selection_value", float("nan")))
        return f"two_stage_{self.config.get('model_name', 'model')}_{metric}_{value:.4f}"

    def predict_proba(self, events: pd.DataFrame) -> np.ndarray:
        """Class probabilities ``[n, n_classes]`` of raw events (columns in :attr:`classes` order)."""
        features = self.feature_encoder.transform(events)
        return self.classifier.predict_proba(features.numeric, features.categorical).numpy()

    def scores_from_proba(self, proba: np.ndarray) -> np.ndarray:
        """The anomaly score: ``1 - P(normal)`` (higher = more anomalous)."""
        return 1.0 - proba[:, self.normal_id]

    def score_samples(self, events: pd.DataFrame) -> np.ndarray:
        return self.scores_from_proba(self.predict_proba(events))

    def explain(self, events: pd.DataFrame, n_top: int = 3, chunk: int = 256) -> np.ndarray:
        """The ``n_top`` raw fields that raise each event's anomaly score most, comma-separated per event.

        Occlusion: each raw source column in turn is set to its typical training value (median of each
        numeric output, most frequent id of each categorical output; :attr:`neutral`), and a field's weight is
        how much the anomaly score falls. Fields whose typical value would not lower the score are not named.
        """
        from obsad.pipeline import _join_codes  # the package's one name-joining helper (imported late: no cycle)

        if self.neutral is None:
            raise ValueError("this model has no typical input values to explain with (neutral=None)")
        features = self.feature_encoder.transform(events)
        names = list(features.numeric_names) + list(features.categorical_names)
        sources = [features.sources.get(name, name) for name in names]
        columns = sorted(set(sources))
        d_num = features.numeric.shape[1]
        members = [np.flatnonzero(np.asarray(sources) == c) for c in columns]
        neutral_num = np.asarray(self.neutral["numeric"], dtype=np.float32)
        neutral_cat = np.asarray(self.neutral["categorical"], dtype=np.int64)
        out = np.full(len(events), "", dtype=object)
        g = len(columns)
        for lo in range(0, len(events), chunk):
            num = features.numeric[lo:lo + chunk]
            cat = features.categorical[lo:lo + chunk]
            m = len(num)
            base = self.scores_from_proba(self.classifier.predict_proba(num, cat).numpy())
            num_all = np.tile(num, (g, 1))
            cat_all = np.tile(cat, (g, 1))
            for j, outputs in enumerate(members):  # copy j: column j at its typical value
                block = slice(j * m, (j + 1) * m)
                n_out, c_out = outputs[outputs < d_num], outputs[outputs >= d_num] - d_num
                num_all[block, n_out] = neutral_num[n_out]
                cat_all[block, c_out] = neutral_cat[c_out]
            occluded = self.scores_from_proba(self.classifier.predict_proba(num_all, cat_all).numpy())
            drop = base[None, :] - occluded.reshape(g, m)  # [columns, events]
            top = np.argsort(-drop, axis=0, kind="stable")[:n_top].T  # [events, n_top]
            lowered = np.take_along_axis(drop.T, top, axis=1) > 1e-6
            out[lo:lo + m] = _join_codes(np.where(lowered, top, -1), columns)
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model package (verified, atomic; see :func:`obsad.package.save_package`)."""
        from obsad.package import save_package

        detector = {"kind": "two_stage", "threshold_": float(self.threshold_),
                    "threshold_percentile": float(self.threshold_percentile)}
        config = {"format": PACKAGE_FORMAT, "format_version": PACKAGE_VERSION, **self.config,
                  "summary": self.summary}
        path = save_package(directory, encoder=self.feature_encoder, model=self.classifier, detector=detector,
                            config=config, seed=self.config.get("seed"),
                            documents={"classes": {"classes": list(self.classes), "normal_class": self.normal_class},
                                       **({} if self.neutral is None else {"neutral": self.neutral})})
        self.path = Path(path)
        return self.path


def decide_classes(proba: np.ndarray, scores: np.ndarray, threshold: float, normal_id: int = 0) -> np.ndarray:
    """Class ids: ``normal_id`` unless the anomaly score is above the calibrated threshold, else the most
    probable *anomalous* class.

    Whether an event is an anomaly is decided by the threshold, calibrated on ordinary traffic (where about 99 %
    of events are normal); the head's class probabilities only say which kind. A plain argmax would use the
    class mix of the labels instead: an analyst's sample is half alerts, so it calls thousands of ordinary
    events anomalies.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise ValueError(f"proba must be [n, n_classes >= 2], got shape {proba.shape}")
    others = proba.copy()
    others[:, normal_id] = -np.inf
    return np.where(np.asarray(scores) > threshold, others.argmax(axis=1), normal_id).astype(np.int64)


def predict_anomalies(model: TwoStageModel, events: pd.DataFrame) -> pd.DataFrame:
    """Per event, in input order (same index): ``predicted_class`` (:func:`decide_classes`),
    ``class_probability`` (the head's probability of that class), ``anomaly_score`` (``1 - P(normal)``) and
    ``is_anomaly`` (score above the calibrated threshold)."""
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
    proba = model.predict_proba(events)
    score = model.scores_from_proba(proba) if len(proba) else np.empty(0)
    best = (decide_classes(proba, score, model.threshold_, model.normal_id) if len(proba)
            else np.empty(0, dtype=np.int64))
    return pd.DataFrame({
        "predicted_class": np.asarray(model.classes, dtype=object)[best],
        "class_probability": proba[np.arange(len(best)), best] if len(proba) else np.empty(0),
        "anomaly_score": score,
        "is_anomaly": score > model.threshold_,
    }, index=events.index)


def load_two_stage_model(path: str | os.PathLike) -> tuple[TwoStageModel, dict, list[str]]:
    """Read a package written by :meth:`TwoStageModel.save`: ``(model, config, class_names)``.

    Refuses (:class:`obsad.package.PackageError`) a package that fails its checksums, is not a two-stage
    package, or whose class names do not match the classifier.
    """
    from obsad.package import PackageError, load_package

    package = load_package(path)
    root = package.path
    config = dict(package.config)
    if config.get("format") != PACKAGE_FORMAT:
        raise PackageError(f"refusing to load package {root}: config.json: not a two-stage package")
    if int(config.get("format_version", 0)) != PACKAGE_VERSION:
        raise PackageError(f"refusing to load package {root}: config.json: two-stage format version "
                           f"{config.get('format_version')} is not the one this obsad reads ({PACKAGE_VERSION})")
    if not isinstance(package.model, EventClassifier) or package.encoder is None:
        raise PackageError(f"refusing to load package {root}: expected an EventClassifier and a feature encoder")
    doc = package.documents.get("classes") or {}
    classes = [str(c) for c in doc.get("classes", [])]
    normal = doc.get("normal_class")
    if len(classes) != package.model.n_classes or normal not in classes:
        raise PackageError(f"refusing to load package {root}: classes.json: {len(classes)} class names for a "
                           f"{package.model.n_classes}-class head, normal class {normal!r}")
    try:
        threshold = float(package.detector["threshold_"])
        percentile = float(package.detector["threshold_percentile"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"refusing to load package {root}: detector.json: no usable threshold ({exc})") from exc
    summary = config.pop("summary", {})
    neutral = package.documents.get("neutral")
    if neutral is not None and (len(neutral.get("numeric", [])) != package.model.encoder.n_numeric
                                or len(neutral.get("categorical", [])) != len(package.model.encoder.cardinalities)):
        raise PackageError(f"refusing to load package {root}: neutral.json: does not match the encoder's fields")
    model = TwoStageModel(package.encoder, package.model.eval(), classes, str(normal), threshold, percentile,
                          config=config, summary=summary, neutral=neutral, path=root)
    return model, config, classes


def neutral_values(features) -> dict[str, list]:
    """Typical inputs: the median of each numeric output and the most frequent id of each categorical one."""
    numeric = np.median(features.numeric, axis=0).astype(float).tolist() if len(features.numeric) else []
    categorical = [int(np.bincount(col).argmax()) for col in np.asarray(features.categorical).T]
    return {"numeric": numeric, "categorical": categorical}


# ------------------------------------------------------------------------------------------------ end to end
def _time_order(events: pd.DataFrame, encoder: FeatureEncoder) -> np.ndarray:
    """Row order by event time (the encoder's timestamp column), row order where there is none."""
    from obsad.detect.windows import event_times, time_column

    try:
        column, unit = time_column(encoder)
        ms = event_times(events, column, unit)
    except ValueError:
        return np.arange(len(events))
    ms = np.where(np.isnan(ms), np.inf, ms)
    return np.argsort(ms, kind="stable")


def encode_labels(labels: pd.Series, normal_class: str = "normal") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labelled rows, their class ids and the class names (``normal_class`` first, then the others sorted).

    Raises ``ValueError`` when there is no normal event or only one class among the labels.
    """
    labels = pd.Series(labels).reset_index(drop=True)
    rows = np.flatnonzero(labels.notna().to_numpy())
    names = labels.iloc[rows].astype(str).to_numpy()
    present = sorted(set(names))
    if normal_class not in present:
        raise ValueError(f"no event is labelled {normal_class!r}: the head must see ordinary events too "
                         f"(labels seen: {', '.join(present[:10]) or 'none'}); label some, or name the normal class")
    if len(present) < 2:
        raise ValueError(f"every label is {present[0]!r}: a classifier needs at least two classes")
    classes = [normal_class] + [c for c in present if c != normal_class]
    ids = pd.Index(classes).get_indexer(names)
    return rows, ids.astype(np.int64), classes


def fit_two_stage(events: pd.DataFrame, labels: pd.Series, config: TwoStageConfig | None = None, *,
                  normal_class: str = "normal", checkpoint_dir: str | os.PathLike | None = None,
                  encoder: FeatureEncoder | None = None) -> TwoStageModel:
    """The whole procedure on raw events (a ``load_events`` table) and ``labels`` (one entry per event, in the
    same order; missing = unlabelled; class names, ``normal_class`` for ordinary events).

    Every event is used for pretraining (the earlier 85 % train, the latest 15 % select the epoch); only labelled
    ones for the head. The latest ``val_fraction`` of the labels (by event time) are held out for checkpoint
    selection when there are ``min_val_labels`` or more, every class keeps a training label and the held-out
    part holds at least two classes. Checkpoints go to ``checkpoint_dir/pretrain`` and ``/finetune``. The
    model's ``config`` is the :class:`TwoStageConfig` as a dict (a loaded package's also names its format).
    """
    config = config or TwoStageConfig()
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
    if len(labels) != len(events):
        raise ValueError(f"labels must have one entry per event ({len(events)}), got {len(labels)}")
    rows, y, classes = encode_labels(labels, normal_class)
    feature_encoder = encoder if encoder is not None else FeatureEncoder().fit(events)
    features = feature_encoder.transform(events)
    order = _time_order(events, feature_encoder)
    ckpt = None if checkpoint_dir is None else Path(checkpoint_dir)
    pretrained, pretrain_summary = None, {}
    if config.use_two_stage:
        cut = int(round(0.85 * len(order)))
        train_rows, val_rows = np.sort(order[:cut]), np.sort(order[cut:])
        val = features.take(val_rows) if len(val_rows) >= 2 and cut >= 2 else None
        if val is None:
            train_rows = np.arange(len(events))
        pretrained, history = pretrain_encoder(features.take(train_rows), val, config,
                                               None if ckpt is None else ckpt / "pretrain")
        pretrain_summary = {"pretrain_epochs": int(len(history.epochs)),
                            "pretrain_best_val_loss": history.best_val_loss}
    # hold out the latest labels for checkpoint selection, when there are enough of them
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    by_time = np.argsort(rank[rows], kind="stable")
    n_val = int(round(config.val_fraction * len(rows))) if len(rows) >= config.min_val_labels else 0
    fit_idx, val_idx = by_time[:len(rows) - n_val], by_time[len(rows) - n_val:]
    val = None
    # a class whose every label is among the latest would get no training example: then nothing is held out
    if n_val and len(set(y[fit_idx])) == len(classes) and len(set(y[val_idx])) >= 2:
        val = (rows[val_idx], y[val_idx])
    else:
        fit_idx = by_time
    classifier, history = train_classifier(pretrained, features, rows[fit_idx], y[fit_idx], len(classes), config,
                                           val=val, checkpoint_dir=None if ckpt is None else ckpt / "finetune")
    proba = classifier.predict_proba(features.numeric, features.categorical).numpy()
    score = 1.0 - proba[:, classes.index(normal_class)]
    labelled_anomaly = np.zeros(len(events), dtype=bool)
    labelled_anomaly[rows[y != classes.index(normal_class)]] = True
    threshold = float(np.percentile(score[~labelled_anomaly], config.threshold_percentile))
    if val is not None:
        metric, value = "val_loss", float(history.best_val_loss)
    else:
        metric, value = "train_loss", float(history.epochs["train_loss"].iloc[-1])
    summary = {
        "n_events": int(len(events)),
        "n_labels": int(len(rows)),
        "labels_per_class": {c: int((y == i).sum()) for i, c in enumerate(classes)},
        "n_validation_labels": 0 if val is None else int(len(val[0])),
        "head_epochs": int(len(history.epochs)),
        "selection_metric": metric,
        "selection_value": value,
        "share_flagged": float(np.mean(score > threshold)),
        **pretrain_summary,
    }
    return TwoStageModel(feature_encoder, classifier, classes, normal_class, threshold,
                         float(config.threshold_percentile), config=config.to_dict(), summary=summary,
                         neutral=neutral_values(features))
