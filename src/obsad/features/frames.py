"""Encoded features on disk: one Parquet table per split, read back into :class:`EncodedFeatures`.

Notebook 3 writes ``EncodedFeatures.to_frame()`` with an ``event_uid`` column in front; every later notebook
reads it back with the fitted encoder, which knows the column names, their order and the vocabulary sizes.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .encoder import EncodedFeatures, FeatureEncoder

KEY = "event_uid"


def encoded_to_frame(features: EncodedFeatures, event_uid) -> pd.DataFrame:
    """``features`` as one table with the events' uids in front (the layout of ``data/features_*.parquet``)."""
    frame = features.to_frame()
    frame.insert(0, KEY, np.asarray(event_uid))
    return frame


def encoded_from_frame(frame: pd.DataFrame, encoder: FeatureEncoder) -> EncodedFeatures:
    """Rebuild :class:`EncodedFeatures` from a table written by :func:`encoded_to_frame`.

    Refuses a table that lacks one of the encoder's outputs: features written by another encoder would be
    silently misaligned with the model's embedding tables.
    """
    expected = list(encoder.numeric_names_) + list(encoder.categorical_names_)
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise ValueError(f"the features table lacks {len(missing)} of the encoder's outputs (e.g. {missing[:3]}); "
                         "was it written with a different encoder?")
    return EncodedFeatures(
        numeric=frame[list(encoder.numeric_names_)].to_numpy(dtype=np.float32, copy=True),
        categorical=frame[list(encoder.categorical_names_)].to_numpy(dtype=np.int64, copy=True),
        numeric_names=list(encoder.numeric_names_),
        categorical_names=list(encoder.categorical_names_),
        cardinalities=list(encoder.cardinalities_),
        sources=dict(encoder.sources_),
    )


def read_encoded(path: str | os.PathLike, encoder: FeatureEncoder) -> tuple[EncodedFeatures, np.ndarray]:
    """Read ``data/features_<split>.parquet``: the features and the matching event uids."""
    frame = pd.read_parquet(path)
    if KEY not in frame.columns:
        raise ValueError(f"{path}: no {KEY!r} column; not a features table written by obsad")
    return encoded_from_frame(frame, encoder), frame[KEY].to_numpy()
