"""Measures of an embedding space that need no labels: shared by the training notebook, Part 4 and the
embedding-quality work, so every page computes them the same way.

- :func:`effective_rank` — how many directions carry variance (collapse check);
- :func:`alignment` and :func:`uniformity` — Wang & Isola (2020): two views of one event should land close,
  and events should spread over the sphere. Both take L2-normalised rows; lower is better for both.

Neighbourhood measures (Part 5), scale-free so that raw features, PCA and learned embeddings compare:

- :func:`knn_search` — exact neighbours (FAISS), a point never its own neighbour;
- :func:`jitter`, :func:`swap_one_field` — input perturbations: nuisance noise, and a one-field change;
- :func:`perturbation_stability`, :func:`relative_displacement` — what such perturbations do to an event's
  neighbours and position;
- :func:`mutual_neighbour_rate`, :func:`hubness` — neighbourhood consistency;
- with held-apart labels only: :func:`neighbour_label_agreement` (against :func:`label_chance`) and
  :func:`percentile_among` (where anomalies sit relative to normal events).
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


# ------------------------------------------------------------------------------------------------ neighbourhoods
# The measures below compare *spaces* (raw encoded features, PCA, learned embeddings) on the same events. They are
# scale-free (ratios, shares, percentiles), so a 64-d embedding and a 119-d feature matrix can be read side by side.
# Neighbours are exact (FAISS flat indexes): an approximate index would add its own errors to what is measured.

METRICS = ("cosine", "l2")


def _prepare(z, metric: str) -> np.ndarray:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x = np.ascontiguousarray(np.asarray(z, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array [n, d], got shape {x.shape}")
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0))
    return x


def knn_search(reference, queries=None, k: int = 10, metric: str = "cosine",
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest rows of ``reference`` for each query: distances (float64, ascending) and row indices.

    ``queries=None`` searches the reference itself and leaves each row out of its own list (a point is not its own
    neighbour). ``exclude`` (int ``[n_queries]``) names one reference row to leave out per query, e.g. the clean
    version of a perturbed event. When the excluded row is not among the ``k + 1`` found (exact duplicates tie
    with it), the farthest of the ``k + 1`` is dropped instead, so every query keeps exactly ``k`` neighbours.
    """
    import faiss

    ref = _prepare(reference, metric)
    self_search = queries is None
    q = ref if self_search else _prepare(queries, metric)
    if self_search:
        exclude = np.arange(len(ref))
    if k < 1 or k + (exclude is not None) > len(ref):
        raise ValueError(f"need 1 <= k < number of reference rows ({len(ref)}), got k={k}")
    index = faiss.IndexFlatIP(ref.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(ref.shape[1])
    index.add(ref)
    if exclude is None:
        raw, idx = index.search(q, k)
    else:
        exclude = np.asarray(exclude, dtype=np.int64)
        if exclude.shape != (len(q),):
            raise ValueError(f"exclude must have one row index per query ({len(q)}), got shape {exclude.shape}")
        raw, idx = index.search(q, k + 1)
        drop = idx == exclude[:, None]
        first = np.argmax(drop, axis=1)
        hit = drop.any(axis=1)
        keep = np.ones_like(drop)
        keep[hit, first[hit]] = False  # drop the excluded row once
        keep[~hit, -1] = False  # or the farthest, when the excluded row tied out of the list
        raw = raw[keep].reshape(len(q), k)
        idx = idx[keep].reshape(len(q), k)
    raw = raw.astype(np.float64)
    dist = 1.0 - raw if metric == "cosine" else np.sqrt(np.maximum(raw, 0.0))
    return dist, idx.astype(np.int64)


def neighbour_overlap(idx_a, idx_b) -> np.ndarray:
    """Per row, the share of the neighbours in ``idx_a [n, k]`` that are also in ``idx_b [n, k]`` (order ignored)."""
    a, b = np.asarray(idx_a), np.asarray(idx_b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two index arrays of the same shape [n, k], got {a.shape} and {b.shape}")
    return (a[:, :, None] == b[:, None, :]).any(axis=2).mean(axis=1)


def perturbation_stability(z, z_perturbed, k: int = 10, metric: str = "cosine") -> np.ndarray:
    """Per event, the share of its ``k`` nearest neighbours that stay its neighbours when its *inputs* are perturbed.

    ``z`` embeds the clean events, ``z_perturbed`` the same events (same rows) after an input perturbation. Both
    searches run against the clean events with the event itself left out. A k-NN detector scores an event by its
    neighbours, so this is the stability that matters to it: 1 = nuisance variation does not change what the
    event is compared with; near 0 = the neighbourhood is an accident of noise.
    """
    _, clean = knn_search(z, k=k, metric=metric)
    _, moved = knn_search(z, z_perturbed, k=k, metric=metric, exclude=np.arange(len(z)))
    return neighbour_overlap(clean, moved)


def relative_displacement(z, z_moved, metric: str = "cosine", seed: int = 0) -> np.ndarray:
    """Per event, how far a perturbation moved it, in units of the mean distance between two random events.

    ``d(z_i, z'_i) / mean_i d(z_i, z_pi(i))`` with ``pi`` a seeded random pairing of distinct rows. Scale-free, so
    spaces of different width and units compare: 0 = did not move, 1 = moved as far as a random other event.
    ``d`` is Euclidean; under ``"cosine"`` it is taken between the L2-normalised rows (the chord, which grows
    linearly with the angle, where ``1 - cos`` would grow with its square and make small moves look smaller).
    """
    a, b = _prepare(z, metric).astype(np.float64), _prepare(z_moved, metric).astype(np.float64)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"expected two arrays of the same shape with at least two rows, got {a.shape}, {b.shape}")
    rng = np.random.default_rng(seed)
    other = (np.arange(len(a)) + rng.integers(1, len(a), size=len(a))) % len(a)  # never the row itself
    moved = np.sqrt(((a - b) ** 2).sum(axis=1))
    return moved / np.sqrt(((a - a[other]) ** 2).sum(axis=1)).mean()


def jitter(numeric, scale: float = 0.05, *, rng: np.random.Generator, columns=None) -> np.ndarray:
    """``numeric`` plus Gaussian noise of ``scale`` times each column's standard deviation: measurement-like jitter.

    ``columns`` (bool mask or indices) limits the noise; by default only columns with more than two distinct
    values move, so missing-value flags and other 0/1 indicators, which state facts, stay untouched.
    """
    x = np.asarray(numeric, dtype=np.float32)
    if columns is None:
        mask = np.array([np.unique(x[:, j]).size > 2 for j in range(x.shape[1])], dtype=bool)
    else:
        mask = np.zeros(x.shape[1], dtype=bool)
        mask[np.asarray(columns)] = True
    noise = rng.standard_normal(x.shape).astype(np.float32) * (scale * x.std(axis=0))[None, :].astype(np.float32)
    return x + noise * mask[None, :]


def swap_one_field(numeric, categorical, numeric_fields, categorical_fields, *, rng: np.random.Generator,
                   groups=None, attempts: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give each event the value of ONE of its raw fields from another event (of the same group): a one-field change.

    ``numeric_fields`` / ``categorical_fields`` name the raw field of every encoded output (``EncodedFeatures.
    sources``), so all outputs of a field (value, ``.missing`` flag, template, ...) move together. ``groups`` (e.g.
    the OCSF class) restricts donors to the same group, so the new value is one an event of this kind really has.
    A draw that changes nothing (the donor has the same value, or both lack the field) is redrawn, up to
    ``attempts`` times. Returns the new numeric and categorical blocks and ``changed`` (bool per event): leave
    unchanged rows out of any average.
    """
    num = np.asarray(numeric, dtype=np.float32)
    cat = np.asarray(categorical)
    n = len(num)
    _, code = np.unique(np.concatenate([np.asarray(numeric_fields, dtype=object).astype(str),
                                        np.asarray(categorical_fields, dtype=object).astype(str)]),
                        return_inverse=True)
    code_num, code_cat = code[:num.shape[1]], code[num.shape[1]:]
    n_fields = int(code.max()) + 1 if code.size else 0
    g = np.zeros(n, dtype=np.int64) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    order = np.argsort(g, kind="stable")
    counts = np.bincount(g)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    new_num, new_cat = num.copy(), cat.copy()
    changed = np.zeros(n, dtype=bool)
    for _ in range(max(1, int(attempts))):
        todo = np.flatnonzero(~changed)
        if not todo.size or not n_fields:
            break
        chosen = rng.integers(0, n_fields, size=todo.size)
        pick = (rng.random(todo.size) * counts[g[todo]]).astype(np.int64).clip(max=counts[g[todo]] - 1)
        donor = order[starts[g[todo]] + pick]
        m_num = code_num[None, :] == chosen[:, None]
        m_cat = code_cat[None, :] == chosen[:, None]
        cand_num = np.where(m_num, num[donor], num[todo])
        cand_cat = np.where(m_cat, cat[donor], cat[todo])
        moved = (cand_num != num[todo]).any(axis=1) | (cand_cat != cat[todo]).any(axis=1)
        new_num[todo[moved]] = cand_num[moved]
        new_cat[todo[moved]] = cand_cat[moved]
        changed[todo[moved]] = True
    return new_num, new_cat, changed


def mutual_neighbour_rate(idx) -> float:
    """Share of neighbour relations ``j in N(i)`` that are mutual (``i in N(j)``), for ``idx [n, k]`` of a self-search.

    Neighbourhood consistency: in a space where distances mean something locally, being someone's neighbour is
    mostly reciprocal. Low values come with hubs (a few points in everybody's list) and with "anti-hubs" that no
    one lists, which a k-NN detector then flags for geometry rather than behaviour.
    """
    idx = np.asarray(idx, dtype=np.int64)
    n, k = idx.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    forward = rows * n + idx.ravel()
    backward = idx.ravel() * n + rows
    return float(np.isin(backward, forward).mean())


def hubness(idx, n: int | None = None) -> float:
    """Skewness of the k-occurrence (how often each point appears in others' k-NN lists); 0 = symmetric.

    Radovanović et al. (2010): in high dimensions a few points become hubs and the k-occurrence is right-skewed.
    """
    idx = np.asarray(idx, dtype=np.int64)
    counts = np.bincount(idx.ravel(), minlength=n or (int(idx.max()) + 1 if idx.size else 0)).astype(np.float64)
    sd = counts.std()
    return 0.0 if sd == 0 else float((((counts - counts.mean()) / sd) ** 3).mean())


def neighbour_label_agreement(idx, labels, query_labels=None) -> np.ndarray:
    """Per row, the share of its neighbours (``idx [n, k]``, rows of ``labels``) that carry the row's own label.

    ``query_labels`` gives the rows' own labels when the queries are not the rows of ``labels`` themselves
    (e.g. only the anomalies were searched against everything).

    With held-apart labels (the simulator's scenarios) this asks whether events of one kind sit together; compare
    each label with its chance level, :func:`label_chance`. Never use labels the space was built from (e.g.
    k-means clusters of that same space): the agreement would then be true by construction.
    """
    labels = np.asarray(labels)
    own = labels if query_labels is None else np.asarray(query_labels)
    idx = np.asarray(idx)
    if len(own) != len(idx):
        raise ValueError(f"one label per query row expected: {len(own)} labels for {len(idx)} rows")
    return (labels[idx] == own[:, None]).mean(axis=1)


def label_chance(labels) -> np.ndarray:
    """Per row, the agreement :func:`neighbour_label_agreement` would have with neighbours drawn at random."""
    labels = np.asarray(labels)
    _, code, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return (counts[code] - 1) / max(len(labels) - 1, 1)


def percentile_among(reference, values) -> np.ndarray:
    """Percentile (0..100) of each value among ``reference``: the share of reference values ``<=`` it.

    Where an anomaly sits relative to normal data: its distance to the training events, as a percentile of the
    same distance for normal events (50 = typical, 100 = farther than every normal event).
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    if ref.size == 0:
        raise ValueError("empty reference")
    return 100.0 * np.searchsorted(ref, np.asarray(values, dtype=np.float64), side="right") / ref.size
