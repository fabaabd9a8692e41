"""The served models: a verified package loaded once, its version, its similar-event index, and the atomic swap.

A :class:`ServedModel` is immutable once built. A request takes the current :class:`ServingState` (champion and
optional challenger) once, at its start, and uses that object to the end, so a reload that swaps the state
under :class:`ModelSlot`'s lock never changes the model under a request in flight: it finishes on the old one.

Model paths are fixed when the service starts; nothing here takes a path from a client.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..package import MANIFEST, PackageError, verify_package

log = logging.getLogger("obsad.serve")

#: Reference points used as queries when measuring the approximate index's recall at start-up.
RECALL_SAMPLE = 1000
_TWO_STAGE_FORMAT = "obsad-two-stage"


class ModelLoadError(ValueError):
    """A package the service refuses to serve; the message says which package and why."""


@dataclass(frozen=True)
class SimilarIndex:
    """What the similar-event search runs on: the package's FAISS index over the reference sample.

    ``kind`` is ``exact`` (a flat index, built at load from the stored reference embeddings) or ``ivf`` (the
    approximate index stored in the package). ``recall`` is recall@``k`` of this index against exact search,
    measured at start-up on ``n_queries`` reference points (1.0 for an exact index, by construction).
    """

    kind: str
    n_reference: int
    k: int
    recall: float
    n_queries: int
    n_lists: int | None
    n_probe: int | None
    seconds: float

    def describe(self) -> str:
        if self.kind == "exact":
            return f"similar-event index: exact over {self.n_reference:,} reference events"
        return (f"similar-event index: IVF over {self.n_reference:,} reference events ({self.n_lists} lists, "
                f"{self.n_probe} probed): recall@{self.k} = {self.recall:.3f} against exact search on "
                f"{self.n_queries:,} reference points ({self.seconds:.2f} s)")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "n_reference": self.n_reference, "k": self.k, "recall": self.recall,
                "n_queries": self.n_queries, "n_lists": self.n_lists, "n_probe": self.n_probe}


@dataclass(frozen=True)
class ServedModel:
    """A loaded pipeline with what the service says about it."""

    pipeline: object  # obsad.pipeline.FittedPipeline
    version: str  # the first 16 hex digits of the manifest's SHA-256: it changes whenever any file does
    manifest: dict
    similar: SimilarIndex
    loaded_at: float

    @property
    def name(self) -> str:
        return self.version

    @functools.cached_property
    def single(self):
        """The one-event scorer (:class:`obsad.single_event.SingleEventScorer`), built once."""
        from ..single_event import SingleEventScorer

        return SingleEventScorer(self.pipeline)

    def describe(self) -> dict:
        p = self.pipeline
        return {
            "model_version": self.version,
            "obsad_version": self.manifest.get("obsad_version"),
            "created": self.manifest.get("created"),
            "views": list(p.views),
            "threshold": float(p.threshold),
            "input_columns": list(p.input_columns),
            "n_train_events": p.config.get("n_events"),
            "similar_index": self.similar.to_dict(),
            "warnings": list(p.warnings),
            "manifest": self.manifest,
        }


@dataclass(frozen=True)
class ServingState:
    """What answers requests: the champion, and the challenger scored beside it (``--shadow``) if any."""

    champion: ServedModel
    challenger: ServedModel | None = None


def _package_format(directory: Path) -> str | None:
    try:
        return json.loads((directory / "config.json").read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None  # the loader says what is wrong


def _manifest_bytes(directory: Path) -> bytes:
    try:
        return (directory / MANIFEST).read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"refusing to serve {directory}: {MANIFEST}: cannot be read ({exc})") from exc


def measure_recall(pipeline, k: int | None = None, n_queries: int = RECALL_SAMPLE, seed: int = 0) -> SimilarIndex:
    """The package's k-NN index, and for an approximate (IVF) one its recall@k against exact search.

    Queries are a seeded sample of reference points; recall = share of the exact ``k`` nearest found by the
    approximate index, averaged over the queries.
    """
    from ..detect import KNNDetector

    started = time.perf_counter()
    state = pipeline.detector_state
    det = pipeline.detector
    k = int(k or state.get("k", 10))
    reference = pipeline.arrays["reference_embeddings"]
    n_ref = len(reference)
    approximate = getattr(det, "n_lists_", None) is not None
    if not approximate:
        return SimilarIndex("exact", n_ref, k, 1.0, 0, None, None, time.perf_counter() - started)
    k = min(k, n_ref - 1)
    rows = np.random.default_rng(seed).choice(n_ref, size=min(int(n_queries), n_ref), replace=False)
    queries = reference[np.sort(rows)]
    exact = KNNDetector.from_reference(reference, np.zeros(1), 0.0, k=k, metric=str(det.metric))
    _, truth = exact.kneighbors(queries, k=k)
    _, found = det.kneighbors(queries, k=k)
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2) & (found >= 0)
    recall = float(hits.sum() / truth.size)
    return SimilarIndex("ivf", n_ref, k, recall, len(queries), int(det.n_lists_),
                        int(getattr(det.index_, "nprobe", 0)) or None, time.perf_counter() - started)


def warm_up(pipeline, root: Path | str = "the pipeline") -> None:
    """Score a few reference events both ways: fills the encoder's lookup caches before the first request,
    and refuses a package that loads but cannot score."""
    from .scoring import score_frame

    sample = pipeline.reference.iloc[:4].reindex(columns=pipeline.input_columns).reset_index(drop=True)
    try:
        for views in ("all", "event"):
            score_frame(pipeline, sample, views, "all", 3)
    except Exception as exc:  # any failure here means the package cannot serve
        raise ModelLoadError(f"refusing to serve {root}: scoring reference events failed "
                             f"({type(exc).__name__}: {exc})") from exc


def load_served_model(directory: str | Path) -> ServedModel:
    """Verify, then load, the pipeline package at ``directory``; :class:`ModelLoadError` when it must not serve.

    The manifest is read before and after loading: a package replaced while it was being read is refused
    rather than served under the wrong version.
    """
    from ..pipeline import load_pipeline

    root = Path(directory)
    if not root.is_dir():
        raise ModelLoadError(f"refusing to serve {root}: not a model package directory")
    if _package_format(root) == _TWO_STAGE_FORMAT:
        raise ModelLoadError(f"refusing to serve {root}: two-stage packages ({_TWO_STAGE_FORMAT}) are not "
                             "supported by serve yet; serve a package written by `obsad fit` without --labels")
    problems = verify_package(root)
    if problems:
        raise ModelLoadError(f"refusing to serve {root}: " + "; ".join(problems))
    before = _manifest_bytes(root)
    try:
        pipeline = load_pipeline(root)
    except PackageError as exc:
        raise ModelLoadError(str(exc)) from exc
    if _manifest_bytes(root) != before:
        raise ModelLoadError(f"refusing to serve {root}: the package changed while it was being loaded; retry")
    if pipeline.reference is None:
        raise ModelLoadError(f"refusing to serve {root}: reference.parquet: missing — /v1/similar needs the "
                             "reference events")
    manifest = json.loads(before.decode("utf-8"))
    warm_up(pipeline, root)
    similar = measure_recall(pipeline)
    version = hashlib.sha256(before).hexdigest()[:16]
    served = ServedModel(pipeline=pipeline, version=version, manifest=manifest, similar=similar,
                         loaded_at=time.time())
    try:
        served.single  # noqa: B018 - built before the first request, and refused here if it cannot be
    except Exception as exc:
        raise ModelLoadError(f"refusing to serve {root}: the one-event scorer failed ({type(exc).__name__}: "
                             f"{exc})") from exc
    return served


class ModelSlot:
    """Holds the current :class:`ServingState`; :meth:`reload` swaps a fully loaded new one in atomically.

    Readers call :meth:`current` once per request (a plain attribute read, no lock); the lock only keeps two
    reloads from interleaving.
    """

    def __init__(self, state: ServingState, model_dir: Path, shadow_dir: Path | None = None) -> None:
        self._state = state
        self.model_dir = Path(model_dir)
        self.shadow_dir = Path(shadow_dir) if shadow_dir is not None else None
        self._lock = threading.Lock()

    def current(self) -> ServingState:
        return self._state

    def load_next(self) -> ServingState:
        """Both packages loaded again from their fixed paths, not yet serving; :class:`ModelLoadError` if one
        must not serve."""
        champion = load_served_model(self.model_dir)
        challenger = (load_served_model(self.shadow_dir) if self.shadow_dir is not None
                      else self._state.challenger)  # an in-memory challenger has nothing to re-read
        return ServingState(champion, challenger)

    def reload(self, before_swap=None) -> tuple[ServingState, ServingState]:
        """Load both packages again from their fixed paths; swap only when both are good.

        ``before_swap(new)``: called with the loaded state before it is swapped in (the scoring processes take
        the same packages); when it raises, nothing is swapped. Returns ``(old, new)``; raises
        :class:`ModelLoadError` (the old state keeps serving) otherwise.
        """
        with self._lock:
            new = self.load_next()
            if before_swap is not None:
                before_swap(new)
            old, self._state = self._state, new
            return old, new
