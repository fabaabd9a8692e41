"""Detection: one scikit-learn-style API for every detector (higher score = more anomalous).

- :mod:`obsad.detect.base` — :class:`BaseDetector` (fit / score_samples / predict / decision_function,
  ``threshold_`` as a percentile of out-of-sample training scores, ``percentile_of``);
- :mod:`obsad.detect.neighbors` — :class:`KNNDetector` (FAISS exact or IVF, cosine or l2, ``kneighbors``),
  :class:`LOFDetector`;
- :mod:`obsad.detect.baselines` — :class:`IsolationForestDetector`, :class:`FrequencyEncoder`,
  :func:`encoded_matrix`, :class:`BestSingleField` (optimistic, label-using);
- :mod:`obsad.detect.surprise` — :class:`FieldSurpriseDetector` (per-column surprise of the masked-feature
  model, on a per-column training scale; its top columns explain an event);
- :mod:`obsad.detect.windows` — :class:`EntityWindowDetector` (entities over time windows against their own
  history: embedding shift, field shift, rate; collective anomalies);
- :mod:`obsad.detect.ensemble` — :class:`RankEnsemble` (mean of per-member training-percentile ranks),
  :class:`MaxZCombiner` (largest calibrated score of several views).
"""

from .base import BaseDetector
from .baselines import BestSingleField, FrequencyEncoder, IsolationForestDetector, column_aurocs, encoded_matrix
from .ensemble import MaxZCombiner, RankEnsemble
from .neighbors import KNNDetector, LOFDetector
from .surprise import FieldSurpriseDetector
from .windows import EntityWindowDetector, window_vectors

__all__ = [
    "BaseDetector",
    "BestSingleField",
    "EntityWindowDetector",
    "FieldSurpriseDetector",
    "FrequencyEncoder",
    "IsolationForestDetector",
    "KNNDetector",
    "LOFDetector",
    "MaxZCombiner",
    "RankEnsemble",
    "column_aurocs",
    "encoded_matrix",
    "window_vectors",
]
