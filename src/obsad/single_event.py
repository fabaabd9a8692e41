"""Scoring raw events one at a time: the event view of a fitted pipeline, without the table machinery.

``SingleEventScorer(pipeline).score(event)`` gives what ``pipeline.score(load_events([event]).events,
views="event")`` gives, in well under a millisecond instead of several: the event is flattened by
:func:`obsad.ocsf.load.plain_record`, encoded by a :class:`obsad.features.record.RecordEncoder` (the same arrays,
to the bit), embedded by the network frozen into numpy (:class:`obsad.models.frozen.FrozenTabularResNet`),
searched by the detector's own FAISS index and decided by the pipeline's own
:meth:`~obsad.pipeline.FittedPipeline.decide`. Scores and percentiles equal the general path's up to the float
rounding of the numpy network (within 2e-6 on the neighbour distance, tests/test_single_event.py); flags, views
and explanations are the same (but for an event within that rounding of the threshold, or of a tie between two
neighbours). Why numpy for the network: a service idle for a few milliseconds between requests finds its caches
cold, and then reading torch's dispatch code back costs more than the arithmetic (``python bench/bench_cold_calls.py``).

An event that needs more of the loader than flattening (JSON text to expand, arrays of scalars, names given
twice...) gets ``None``: score it the general way, which also reports what it repaired.

Only the event view: the window view judges an entity's time window, which one event does not make.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .features.record import RecordEncoder
from .models.frozen import FrozenTabularResNet
from .ocsf.load import plain_record


class SingleEventScorer:
    """Scores raw OCSF events (nested or flattened dicts) one at a time with ``pipeline``'s event view."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.columns = frozenset(pipeline.input_columns)
        self.encoder = RecordEncoder(pipeline.encoder)
        if pipeline.reference is not None:  # the values training saw, remembered before the first event
            self.encoder.prewarm(pipeline.reference)
        self._no_window = [np.full(1, -np.inf)] if pipeline.window is not None else []
        self.network = FrozenTabularResNet(pipeline.model)

    def score(self, event: Any, *, n_top: int = 3, explain: str = "flagged") -> dict[str, Any] | None:
        """``{"event_uid", "score", "percentile", "is_anomaly", "view", "top_features"}`` for one event, or
        ``None`` when it must take the general path (it needs the loader's repairs, or holds no field the
        model reads: the general path says so)."""
        record = plain_record(event, self.columns)
        if record is None or not any(name != "metadata.uid" for name in record):
            return None
        p = self.pipeline
        features = self.encoder.encode(record)
        z = self.network.embed(features.numeric, features.categorical)
        knn, neighbours = p.detector.score_and_neighbors(z)
        decided = p.decide([knn, *self._no_window], features, neighbours, None, n_top=n_top, explain=explain)
        return {"event_uid": record.get("metadata.uid"), **{name: values[0] for name, values in decided.items()}}
