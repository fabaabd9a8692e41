"""Models for encoded events: the book's one encoder (:class:`TabularResNet`), its heads, and safe persistence.

- :class:`TabularResNet` — per-field categorical embeddings (width from the field's cardinality, vectorised
  lookups) + numeric block -> input projection -> pre-norm residual MLP blocks -> LayerNorm;
- :class:`ProjectionHead` (contrastive) and :class:`MaskedFeatureHead` (masked-feature reconstruction);
- :class:`ClassificationHead` and :class:`EventClassifier` (encoder + head; the two-stage procedure's model);
- :class:`EventSequenceEncoder` (a small Transformer over a window of one entity's events) and its pretext
  task :class:`MaskedEventObjective` (reconstruct hidden events);
- :func:`save_model` / :func:`load_model` — ``config.json`` + ``weights.safetensors``, no pickle;
- :mod:`obsad.models.frozen` — a trained encoder's inference in numpy, for a service's single events.
"""

from .classifier import ClassificationHead, EventClassifier
from .sequence import EventSequenceEncoder, MaskedEventObjective
from .tabular import (
    DEFAULT_MODEL_CONFIG,
    FieldEmbedding,
    MaskedFeatureHead,
    MaskedPrediction,
    ProjectionHead,
    ResidualBlock,
    TabularResNet,
    embedding_width,
    load_model,
    register_model,
    save_model,
)

__all__ = [
    "ClassificationHead",
    "DEFAULT_MODEL_CONFIG",
    "EventClassifier",
    "EventSequenceEncoder",
    "MaskedEventObjective",
    "FieldEmbedding",
    "MaskedFeatureHead",
    "MaskedPrediction",
    "ProjectionHead",
    "ResidualBlock",
    "TabularResNet",
    "embedding_width",
    "load_model",
    "register_model",
    "save_model",
]
