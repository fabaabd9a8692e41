"""Training: self-supervised objectives for the encoder (and the training loop).

- :mod:`obsad.train.objectives` — :class:`ContrastiveObjective` (SimCLR / NT-Xent over
  :class:`FieldAugmentation` views), :class:`MaskedFeatureObjective` (masked-feature reconstruction and
  per-field surprise), :class:`ObjectiveOutput`, :func:`nt_xent`, :func:`duplicate_groups`;
- :mod:`obsad.train.two_stage` — masked pretraining, then a classification head on a few labels
  (:func:`fit_two_stage`, :class:`TwoStageModel`, :func:`predict_anomalies`, :func:`load_two_stage_model`);
- :mod:`obsad.train.trainer` — :class:`Trainer` and :class:`TrainConfig` (AdamW, warmup + cosine, checkpoints,
  exact resume, early stopping, autocast), :class:`TrainHistory`.
"""

from .objectives import (
    ContrastiveObjective,
    FieldAugmentation,
    MaskedFeatureObjective,
    ObjectiveOutput,
    duplicate_groups,
    nt_xent,
)

from .trainer import TrainConfig, Trainer, TrainHistory, load_checkpoint
from .two_stage import (
    ClassificationObjective,
    TwoStageConfig,
    TwoStageModel,
    fit_two_stage,
    load_two_stage_model,
    predict_anomalies,
)

__all__ = [
    "ClassificationObjective",
    "TwoStageConfig",
    "TwoStageModel",
    "fit_two_stage",
    "load_two_stage_model",
    "predict_anomalies",
    "TrainConfig",
    "Trainer",
    "TrainHistory",
    "load_checkpoint",
    "ContrastiveObjective",
    "FieldAugmentation",
    "MaskedFeatureObjective",
    "ObjectiveOutput",
    "duplicate_groups",
    "nt_xent",
]
