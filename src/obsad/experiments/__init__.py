"""Small, fast experiments that the book's theory chapters run while the book builds.

- :mod:`obsad.experiments.degradation` — plain versus residual deep MLPs on scikit-learn's digits: deeper plain
  networks train worse, identity shortcuts fix it, and per-layer gradients show why (Part 1).

>>> result = run_experiment(seed=0)       # doctest: +SKIP
>>> result.grid()                         # doctest: +SKIP
"""

from .degradation import (
    DeepMLP,
    ExperimentResult,
    PlainBlock,
    ResidualBlock,
    deterministic_cpu,
    gradient_correlation,
    gradient_norms,
    load_digits_split,
    run_experiment,
    stream_scale,
    train,
)

__all__ = [
    "PlainBlock",
    "ResidualBlock",
    "DeepMLP",
    "load_digits_split",
    "deterministic_cpu",
    "stream_scale",
    "gradient_norms",
    "gradient_correlation",
    "train",
    "ExperimentResult",
    "run_experiment",
]
