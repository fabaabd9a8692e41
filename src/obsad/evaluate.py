"""Measures of an embedding space that need no labels: shared by the training notebook, Part 4 and the
embedding-quality work, so every page computes them the same way.

- :func:`effective_rank` — how many directions carry variance (collapse check);
- :func:`alignment` and :func:`uniformity` — Wang & Isola (2020): two views of one event should land close,
  and events should spread over the sphere. Both take L2-normalised rows; lower is better for both.
"""

from __future__ import annotations

import numpy as np
import torch


def effective_rank(z) -> float:
    """``exp`` of the entropy of the normalised singular values of the centred embeddings ``z [n, d]``."""
    z = np.asarray(z, dtype=np.float64)
    s = np.linalg.svd(z - z.mean(axis=0), compute_uv=False)
    if s.sum() == 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _normalised(z) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.as_tensor(np.ascontiguousarray(z), dtype=torch.float32), dim=1)


def alignment(a, b) -> float:
    """Mean squared distance between paired rows of two views ``a``, ``b`` (normalised first)."""
    a, b = _normalised(a), _normalised(b)
    return float((a - b).pow(2).sum(dim=1).mean())


def uniformity(z, t: float = 2.0) -> float:
    """``log E exp(-t ||z_i - z_j||^2)`` over all pairs of (normalised) rows; more negative = more spread."""
    z = _normalised(z)
    return float(torch.pdist(z).pow(2).mul(-t).exp().mean().log())
