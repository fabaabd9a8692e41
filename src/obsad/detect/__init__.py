"""Detection: one scikit-learn-style API for every detector (higher score = more anomalous).

- :mod:`obsad.detect.base` — :class:`BaseDetector` (fit / score_samples / predict / decision_function,
  ``threshold_`` as a percentile of out-of-sample training scores, ``percentile_of``);
- :mod:`obsad.detect.neighbors` — :class:`KNNDetector` (FAISS exact or IVF, cosine or l2, ``kneighbors``),
  :class:`LOFDetector`;
- :mod:`obsad.detect.baselines` — :class:`IsolationForestDetector`, :class:`FrequencyEncoder`,
  :func:`encoded_matrix`, :class:`BestSingleField` (optimistic, label-using);
- :mod:`obsad.detect.ensemble` — :class:`RankEnsemble` (mean of per-member training-percentile ranks).
"""

from .base import BaseDetector
from .baselines import BestSingleField, FrequencyEncoder, IsolationForestDetector, column_aurocs, encoded_matrix
from .ensemble import RankEnsemble
from .neighbors import KNNDetector, LOFDetector

__all__ = [
    "BaseDetector",
    "BestSingleField",
    "FrequencyEncoder",
    "IsolationForestDetector",
    "KNNDetector",
    "LOFDetector",
    "RankEnsemble",
    "column_aurocs",
    "encoded_matrix",
]
