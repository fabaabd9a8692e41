"""The end-to-end pipeline: OCSF events -> encoder -> contrastive TabularResNet -> k-NN detector -> model package.

:func:`fit_pipeline` fits everything on the events given (the user's baseline), :meth:`FittedPipeline.save`
writes one verified package (:mod:`obsad.package`), :func:`load_pipeline` reads it back and rebuilds the k-NN
index from the stored reference embeddings (no retraining), and :meth:`FittedPipeline.score` returns one row per
event, in input order: ``score``, ``percentile``, ``is_anomaly`` and ``top_features``.

Defaults generalise to any OCSF export: the only field names used are the OCSF fields that define what an event
*is* (class, activity, status, type), protected from augmentation when present. Training length is a number of
optimisation steps (``target_steps``) turned into whole epochs, so fit time grows slowly with data size
(about a minute on two CPU cores for 30k events).

Two views score every event (Part 6): the **event view**, k-NN distance of its embedding to the training
events, and the **window view** (:class:`~obsad.detect.EntityWindowDetector`), the most unusual hour of any
entity the event belongs to, against that entity's history. The window view is fitted on the earlier 80 % of
the events by time and calibrated on the later 20 %; a :class:`~obsad.detect.MaxZCombiner` calibrated on that
later part combines the two (``score``), and ``view`` says which one decided. Without a timestamp column there
is no window view and the score is the event view's.

``top_features`` explains each event from the view that decided. Event view: the raw source fields on which the
event differs most from the mean of its ``k`` nearest reference events, in encoded space (numeric outputs as
absolute difference divided by the reference spread of that output, categorical outputs as the share of
neighbours with a different value; outputs aggregated to their raw column by max). Window view: the entity
column and the two numeric fields whose window mean moved most.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import faiss
import torch

from .detect import EntityWindowDetector, KNNDetector, MaxZCombiner
from .detect.base import max_by_group, row_max
from .detect.windows import event_times, time_column, window_vectors
from .features import FeatureEncoder
from .features.text import shared_templates
from .encodings import shared_encodings
from .models import DEFAULT_MODEL_CONFIG, TabularResNet
from .package import PackageError, fingerprint_frame, load_package, save_package
from .runtime import Stopwatch, seed_everything
from .train import ContrastiveObjective, FieldAugmentation, TrainConfig, Trainer

__all__ = ["DEFINING_FIELDS", "FittedPipeline", "assemble_pipeline", "auto_epochs", "drift_holdout", "fit_pipeline",
           "load_pipeline"]

#: OCSF fields that say what an event is; protected from augmentation when the encoder keeps them.
DEFINING_FIELDS = ("class_name", "class_uid", "activity_id", "activity_name", "type_name", "status", "status_id")

PIPELINE_FORMAT = "obsad-pipeline"
PIPELINE_VERSION = 3
QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)
_CHUNK = 4096


def auto_epochs(n_events: int, batch_size: int = 512, target_steps: int = 300) -> int:
    """Whole epochs giving about ``target_steps`` optimisation steps (at least one epoch)."""
    steps_per_epoch = max(1, n_events // max(1, min(batch_size, n_events)))
    return max(1, int(round(target_steps / steps_per_epoch)))


@contextmanager
def _one_core_spared():
    """torch's and FAISS' thread pools one thread smaller for the duration, restored afterwards.

    The window view computes on a thread of its own beside the encoder and the k-NN search; OpenMP pools sized
    to every core then compete with it, and a pool thread that loses its core makes the whole pool wait (on 2
    cores, a search twice as slow). Sparing one core for the window thread keeps every pool on a core of its own.
    """
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(max(1, torch_threads - 1))
    faiss.omp_set_num_threads(max(1, faiss_threads - 1))
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        faiss.omp_set_num_threads(faiss_threads)


@contextmanager
def _torch_threads(n: int):
    """torch's thread pool at ``n`` threads for the duration, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: Below this many events the k-NN search runs in one call; above, in equal chunks of at least half this, so that
#: the core the window view held joins the search as soon as the window view is done (see :func:`_search_beside`).
SEARCH_CHUNK = 16_384


def _search_beside(detector: KNNDetector, z: np.ndarray, window_job, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """``detector.score_and_neighbors(z)`` while the window view computes on another core: in chunks, and each
    chunk with every core (``threads``) once the window view is done. On 2 cores the window view's statistics
    end before the search; without this, the search's last third ran on one core beside an idle one."""
    n = len(z)
    if window_job is None or n < 2 * SEARCH_CHUNK:
        return detector.score_and_neighbors(z)
    bounds = np.linspace(0, n, -(-n // SEARCH_CHUNK) + 1).astype(int)
    scores, rows = [], []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if window_job.done():
            faiss.omp_set_num_threads(threads)
        s, r = detector.score_and_neighbors(z[start:stop])
        scores.append(s)
        rows.append(r)
    return np.concatenate(scores), np.concatenate(rows)


#: Below this many events the window view computes on the calling thread, after the encoder, not beside it: its
#: Python-heavy work and the encoder's then take turns at the GIL, and each of the encoder's (and FAISS') many short
#: C calls waits up to the interpreter's switch interval to get it back, which costs more than the overlap saves
#: (1,000 events: ~55 ms in turn against ~70 ms side by side; the overlap pays from a few thousand events on).
BESIDE_MIN_EVENTS = 4096


class _InTurn:
    """An executor that runs each job at once, on the calling thread (the small-batch stand-in for the window
    view's background thread; see :data:`BESIDE_MIN_EVENTS`)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    @staticmethod
    def submit(fn, *args) -> Future:
        done: Future = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # re-raised by .result(), where the background job's would be
            done.set_exception(exc)
        return done


def _build_detector(state: dict, reference_embeddings: np.ndarray, train_scores_sorted: np.ndarray,
                    index_bytes: np.ndarray | None = None) -> KNNDetector:
    """A fitted :class:`KNNDetector` from stored state, without refitting: the stored FAISS index when there is
    one (IVF for large references), else an exact index over ``reference_embeddings``.

    ``kneighbors`` indices are rows of ``reference_embeddings``.
    """
    if index_bytes is not None:
        return KNNDetector.from_index(
            index_bytes, len(reference_embeddings), train_scores_sorted, float(state["threshold_"]),
            k=int(state["k"]), metric=str(state["metric"]), seed=int(state.get("seed", 0)),
            n_probe=int(state.get("n_probe", 8)), threshold_percentile=float(state["threshold_percentile"]))
    return KNNDetector.from_reference(
        reference_embeddings, train_scores_sorted, float(state["threshold_"]),
        k=int(state["k"]), metric=str(state["metric"]), seed=int(state.get("seed", 0)),
        threshold_percentile=float(state["threshold_percentile"]))


@dataclass
class FittedPipeline:
    """A fitted encoder, contrastive objective (``objective.encoder`` embeds) and k-NN detector, ready to score."""

    encoder: FeatureEncoder
    objective: torch.nn.Module
    detector: KNNDetector
    detector_state: dict
    arrays: dict[str, np.ndarray]
    reference: pd.DataFrame | None
    config: dict
    combiner: MaxZCombiner
    window: EntityWindowDetector | None = None
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # wall-clock seconds; never saved (packages are deterministic)

    # ------------------------------------------------------------------ properties
    @property
    def model(self) -> TabularResNet:
        return self.objective.encoder

    @property
    def threshold(self) -> float:
        return float(self.combiner.threshold_)

    @property
    def input_columns(self) -> list[str]:
        """The flat columns scoring reads: the encoder's inputs (minus those it dropped), the event uid and the
        times. Passed to :func:`obsad.ocsf.load_events` as ``columns``, a wide Parquet export is read (and its
        JSON-string columns parsed) only where the model looks."""
        used = [st["column"] for st in self.encoder.columns_ if not str(st["role"]).startswith("drop")]
        extra = ["metadata.uid", "time"] + ([self.window.time_column_] if self.window is not None else [])
        return list(dict.fromkeys(used + extra))

    @property
    def views(self) -> tuple[str, ...]:
        return ("event", "window") if self.window is not None else ("event",)

    # ------------------------------------------------------------------ scoring
    def embed(self, features) -> np.ndarray:
        return self.model.embed(features.numeric, features.categorical).numpy().astype(np.float32, copy=False)

    def window_vectors(self, z: np.ndarray, features) -> np.ndarray:
        """What the window view averages per window: the unit-length embedding, then the numeric fields."""
        return window_vectors(z, features.numeric)

    def score(self, events: pd.DataFrame, *, n_top: int = 3, explain: str = "flagged",
              views: str = "all") -> pd.DataFrame:
        """One row per row of ``events``, in the same order (and index).

        Columns: ``event_uid`` and ``time`` when present, ``score`` (higher = more anomalous), ``percentile``
        (among the calibration events' scores), ``is_anomaly`` (``score`` above the calibrated threshold),
        ``view`` (``event`` or ``window``: which view decided) and ``top_features``: the fields that explain
        the event, for the flagged events (``explain="flagged"``, the default: an explanation is for an alarm,
        and explaining every event of a large batch would double the scoring time), every event
        (``"all"``) or none (``"none"``); an empty string where not explained.

        ``views="event"`` scores with the event view alone (its calibrated score against the same threshold):
        what one event can be judged on when the batch does not hold its time windows (a service answering
        single events); ``"all"`` (the default) uses every view the package has.
        """
        if not isinstance(events, pd.DataFrame):
            raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
        if explain not in ("flagged", "all", "none"):
            raise ValueError(f"explain must be 'flagged', 'all' or 'none', got {explain!r}")
        if views not in ("all", "event"):
            raise ValueError(f"views must be 'all' or 'event', got {views!r}")
        n = len(events)
        det = self.detector
        members, window_scored = [], None
        use_window = self.window is not None and views == "all" and n > 0
        all_threads, torch_threads = faiss.omp_get_max_threads(), torch.get_num_threads()
        beside = use_window and n >= BESIDE_MIN_EVENTS
        spare = _one_core_spared() if beside else nullcontext()
        runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="obsad-window") if beside else _InTurn()
        with runner as background, spare, shared_templates(), shared_encodings():
            window_job = assign_job = None
            if use_window:
                framed = events
                if self.window.time_column_ not in events.columns:
                    framed = events.assign(**{self.window.time_column_: pd.Series(np.nan, index=events.index)})
                # on a large batch the window view runs on one core beside the rest: its windows (values and
                # times only) while the events are encoded and embedded, its statistics while FAISS searches
                assign_job = background.submit(self.window.assign, framed)
            features = self.encoder.transform(events)
            if beside:
                # the window thread has nothing to do until the vectors exist: once its windows are assigned
                # (waited for, so that the thread count never depends on timing), the embedding takes every core
                assign_job.result()
                with _torch_threads(torch_threads):
                    z = self.embed(features)
            else:
                z = self.embed(features)
            if assign_job is not None:  # the window vectors too are made on the window thread: the search starts now
                window_job = background.submit(self._window_scores, framed, z, features, assign_job)
            if n:
                knn_scores, nbrs = _search_beside(det, z, window_job, all_threads)
            else:
                knn_scores, nbrs = np.empty(0), np.empty((0, det.k), dtype=np.int64)
            members.append(knn_scores)
            if window_job is not None:
                per_view, windows, best = window_job.result()
                members.append(best)
                window_scored = (framed.index, per_view, windows)
            elif self.window is not None:  # no window view asked for (or no events): it takes no part
                members.append(np.full(n, -np.inf))
        decision = self.decide(members, features, nbrs, window_scored, n_top=n_top, explain=explain)
        out = pd.DataFrame(index=events.index)
        if "metadata.uid" in events.columns:  # the columns themselves (same index): no per-value conversion
            out["event_uid"] = events["metadata.uid"]
        if "time" in events.columns:
            out["time"] = events["time"]
        for name, values in decision.items():
            out[name] = values
        return out

    def _window_scores(self, framed: pd.DataFrame, z: np.ndarray, features, assigned: Future):
        """The window view's part of :meth:`score`, all of it on the window thread (beside the k-NN search):
        the window vectors, each view's scores per event (``assigned``: the windows, computed earlier), and each
        event's best view score."""
        per_view, windows = self.window.view_scores((framed, self.window_vectors(z, features)),
                                                    assigned=assigned.result())
        return per_view, windows, self.window.best_view_score(per_view)

    def decide(self, members: list[np.ndarray], features, neighbours: np.ndarray, window_scored=None, *,
               n_top: int = 3, explain: str = "flagged") -> dict[str, np.ndarray]:
        """The views' raw scores (``members``: the event view's k-NN scores, then the window view's, ``-inf``
        where it takes no part) -> ``score``, ``percentile``, ``is_anomaly``, ``view`` and ``top_features``, one
        value per event: each view's score standardised on its calibration scores, the largest decides, and the
        deciding view explains the events ``explain`` selects."""
        n = len(members[0])
        member_scores = np.column_stack(members) if n else np.empty((0, len(members)))
        member_z = self.combiner.member_z(member_scores)
        scores = row_max(member_z) if n else np.empty(0)
        decided = member_z.argmax(axis=1) if n else np.empty(0, dtype=np.int64)
        flagged = scores > self.combiner.threshold_
        wanted = {"flagged": flagged, "all": np.ones(n, dtype=bool), "none": np.zeros(n, dtype=bool)}[explain]
        top = np.full(n, "", dtype=object)
        by_event = np.flatnonzero(wanted & (decided == 0))  # explain each event from the view that decided
        if len(by_event):
            top[by_event] = self.top_features(features.take(by_event), neighbours[by_event], n_top=n_top)
        by_window = np.flatnonzero(wanted & (decided == 1))
        if window_scored is not None and len(by_window):
            why = self.window.explain_scored(*window_scored, rows=by_window, n_fields=2)
            top[by_window] = _join_lists(why["fields"].to_numpy())
        return {"score": scores,
                "percentile": self.combiner.percentile_of(scores) if n else np.empty(0),
                "is_anomaly": flagged,
                "view": np.asarray(self.views, dtype=object)[decided] if n else np.empty(0, dtype=object),
                "top_features": np.asarray(top, dtype=object) if n else np.empty(0, dtype=object)}

    def score_events(self, source, **load_options) -> tuple[pd.DataFrame, object]:
        """Raw OCSF events in any form :func:`obsad.ocsf.load_events` reads (a file, records, a frame) -> the
        scores table and the load report (what was malformed, coerced or dropped, and why). Only
        :attr:`input_columns` are loaded unless ``columns`` is given."""
        from .ocsf import load_events

        load_options.setdefault("columns", self.input_columns)
        events, report = load_events(source, **load_options)
        return self.score(events), report

    def similar_events(self, events: pd.DataFrame, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` nearest reference (training) events of each event: distances ``[m, n]`` (ascending, in the
        event view's metric) and row positions in :attr:`reference` (-1 where fewer were found)."""
        z = self.embed(self.encoder.transform(events))
        return self.detector.kneighbors(z, k=int(n))

    def drift_reference(self) -> tuple[pd.DataFrame, np.ndarray, bool]:
        """The default reference of a drift test: raw events, their stored embeddings, and whether they were held
        out of the fitting (``True``: the events :func:`fit_pipeline` set aside; ``False``: no such events in the
        package, so the whole reference sample, which the encoder and model were fitted on)."""
        if self.reference is None:
            raise ValueError("this package keeps no reference events")
        z = self.arrays["reference_embeddings"]
        rows = self.arrays.get("drift_reference_rows")
        if rows is not None and len(rows) >= 4:
            return self.reference.iloc[rows].reset_index(drop=True), z[rows], True
        return self.reference, z, False

    def top_features(self, features, neighbours: np.ndarray, *, n_top: int = 3) -> np.ndarray:
        """The ``n_top`` raw source columns on which each event differs most from its reference neighbours,
        as one comma-separated string per event."""
        ref_num = self.arrays["reference_numeric"]
        ref_cat = self.arrays["reference_categorical"]
        scale = self.arrays["numeric_scale"]
        names = list(features.numeric_names) + list(features.categorical_names)
        sources = [features.sources.get(name, name) for name in names]
        columns = sorted(set(sources))
        col_of = {c: i for i, c in enumerate(columns)}
        out_to_col = np.array([col_of[s] for s in sources], dtype=np.int64)
        n = len(neighbours)
        if not columns or n == 0:
            return np.full(n, "", dtype=object)
        k = min(n_top, len(columns))
        codes = np.full((n, k), -1, dtype=np.int64)
        for lo in range(0, n, _CHUNK):
            nb = np.maximum(neighbours[lo:lo + _CHUNK], 0)  # -1 never happens with the exact index
            parts = []
            if ref_num.shape[1]:
                mean = ref_num[nb].mean(axis=1)  # [b, d_num]
                parts.append(np.abs(features.numeric[lo:lo + _CHUNK] - mean) / scale)
            if ref_cat.shape[1]:
                diff = ref_cat[nb] != features.categorical[lo:lo + _CHUNK, None, :].astype(ref_cat.dtype)
                parts.append(diff.mean(axis=1))
            per_out = np.concatenate(parts, axis=1).astype(np.float64)  # [b, n_outputs]
            per_col = max_by_group(per_out, out_to_col, len(columns))
            top = np.argsort(-per_col, axis=1, kind="stable")[:, :k]
            positive = np.take_along_axis(per_col, top, axis=1) > 0
            codes[lo:lo + _CHUNK] = np.where(positive, top, -1)
        return _join_codes(codes, columns)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model package (atomically; see :func:`obsad.package.save_package`)."""
        detector = dict(self.detector_state)
        arrays = dict(self.arrays)
        detector["combiner"] = self.combiner.to_state()
        if self.window is not None:
            detector["window"], window_arrays = self.window.to_state(prefix="window")
            arrays.update(window_arrays)
        path = save_package(
            directory,
            encoder=self.encoder,
            model=self.objective,
            detector=detector,
            arrays=arrays,
            reference=self.reference,
            config=self.config,
            seed=self.config.get("seed"),
            training_fingerprint=self.config.get("training_fingerprint"),
        )
        self.path = Path(path)
        return self.path


def _join_codes(codes: np.ndarray, names: list[str]) -> np.ndarray:
    """Rows of column codes (-1 = none) -> comma-separated names, joined once per distinct row (vectorised)."""
    if len(codes) == 0:
        return np.empty(0, dtype=object)
    combos, inverse = np.unique(codes, axis=0, return_inverse=True)
    joined = np.empty(len(combos), dtype=object)
    joined[:] = [", ".join(names[c] for c in row if c >= 0) for row in combos]
    return joined[inverse.reshape(-1)]


def _join_lists(lists: np.ndarray) -> np.ndarray:
    """An object array of lists of names -> comma-separated strings, joined once per distinct list."""
    keys = pd.Series([tuple(x) for x in lists], dtype=object)
    codes, uniques = pd.factorize(keys)
    joined = np.empty(len(uniques), dtype=object)
    joined[:] = [", ".join(u) for u in uniques]
    return joined[codes]


def drift_holdout(n_events: int, drift_sample: int, seed: int) -> np.ndarray:
    """Sorted positions of the events :func:`fit_pipeline` holds out for drift tests: ``min(drift_sample, n / 10)``
    of them, seeded; none below 1,000 events (too few to spare)."""
    size = min(int(drift_sample), n_events // 10) if n_events >= 1_000 else 0
    if size <= 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 0xD21F7])
    return np.sort(rng.choice(n_events, size=size, replace=False)).astype(np.int64)


def fit_pipeline(
    events: pd.DataFrame,
    *,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    batch_size: int = 512,
    lr: float = 2e-3,
    target_steps: int = 300,
    device: str | None = None,
    drift_sample: int = 2_000,
    **detector_options,
) -> FittedPipeline:
    """Fit the encoder and train the contrastive TabularResNet on ``events`` (a ``load_events`` table), then
    :func:`assemble_pipeline` (k-NN event view, window view, calibrated threshold; ``detector_options`` go there).

    ``epochs=None``: :func:`auto_epochs` (about ``target_steps`` optimisation steps).

    ``drift_sample``: at most this many events (and at most a tenth of them), drawn at random, are held out of the
    encoder's and the model's fitting and kept in the package as the reference of ``obsad drift``. Events the
    encoder learnt its vocabularies from embed slightly differently from new events of the same stream, so a drift
    test against them alarms too often; against held-out events it keeps its stated false-alarm rate. They still
    take part in the k-NN reference and the calibration. ``0`` holds nothing out.
    """
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
    k = int(detector_options.get("k", 10))
    if len(events) <= k + 1:
        raise ValueError(f"need more than {k + 1} events to fit, got {len(events)}")
    if epochs is not None and int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    watch = Stopwatch("fit")
    seed_everything(seed)
    held_out = drift_holdout(len(events), drift_sample, seed)
    fit_rows = np.setdiff1d(np.arange(len(events)), held_out)
    encoder = FeatureEncoder().fit(events.iloc[fit_rows] if len(held_out) else events)
    features = encoder.transform(events)
    if not features.numeric_names and not features.categorical_names:
        raise ValueError("no usable feature: every column was dropped by the encoder (constant, unique or empty)")
    train_features = features.take(fit_rows) if len(held_out) else features
    n_epochs = int(epochs) if epochs is not None else auto_epochs(len(fit_rows), batch_size, target_steps)
    protected = [name for name in DEFINING_FIELDS if name in features.categorical_names]
    augmentation = FieldAugmentation(protected_categorical=protected).fit(
        train_features.numeric, train_features.categorical, features.numeric_names, features.categorical_names)
    model = TabularResNet(len(features.numeric_names), features.cardinalities, **DEFAULT_MODEL_CONFIG)
    objective = ContrastiveObjective(model, augmentation=augmentation)
    train_config = TrainConfig(epochs=n_epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
                               device=device)
    history = Trainer(objective, train_config, name="obsad fit").fit(train_features)
    train_seconds = float(watch.seconds)
    training = {
        "protected_categorical": protected,
        "train_config": train_config.to_dict(),
        "train_steps": int(history.steps.shape[0]) if hasattr(history, "steps") else None,
    }
    fitted = assemble_pipeline(events, encoder, objective.cpu().eval(), features=features, seed=seed,
                               training=training, drift_rows=held_out, **detector_options)
    fitted.timings.update(train_seconds=train_seconds, fit_seconds=float(watch.seconds))
    return fitted


def assemble_pipeline(
    events: pd.DataFrame,
    encoder: FeatureEncoder,
    objective: torch.nn.Module,
    *,
    features=None,
    seed: int = 0,
    k: int = 10,
    metric: str = "cosine",
    reference_max: int = 50_000,
    exact_max: int = 10_000,
    n_probe: int = 4,
    threshold_percentile: float = 99.5,
    window: str | None = "1h",
    calibration_fraction: float = 0.2,
    calibration: str = "latest",
    training: dict | None = None,
    drift_rows=None,
) -> FittedPipeline:
    """A :class:`FittedPipeline` from a fitted encoder and a trained contrastive objective, on baseline ``events``.

    The event view: k-NN over the embeddings of at most ``reference_max`` events (a seeded sample; every event
    is still scored to calibrate); a reference larger than ``exact_max`` is searched with an IVF index
    (``n_probe`` lists: 4 finds about 98 % of the exact neighbours at half the cost of 8; ``bench/bench_scoring.py
    --n-probe`` measures both), stored in the package. The window view (``window`` = its length, ``None`` for none) is
    fitted on the earlier events and calibrated, with the combined threshold, on the latest
    ``calibration_fraction`` of them by time. The raw reference events are kept row for row with the reference
    embeddings, so a neighbour found by the index is an event one can show.

    ``drift_rows``: positions in ``events`` of events the encoder and the objective were not fitted on; those of
    them in the reference are marked in the package (``drift_reference_rows``) as the reference of drift tests
    (:meth:`FittedPipeline.drift_reference`).
    """
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a DataFrame, got {type(events).__name__}")
    if not isinstance(objective, ContrastiveObjective):
        raise TypeError(f"objective must be a trained ContrastiveObjective, got {type(objective).__name__}")
    watch = Stopwatch("assemble")
    features = encoder.transform(events) if features is None else features
    n = len(events)
    z = objective.encoder.embed(features.numeric, features.categorical).numpy().astype(np.float32)
    fitted = KNNDetector(k=k, metric=metric, exact_max=max(int(exact_max), 1), reference_max=int(reference_max),
                         n_probe=n_probe, seed=seed, threshold_percentile=threshold_percentile).fit(z)
    rows = fitted.reference_rows_
    train_scores = fitted.training_scores_
    sorted_scores = np.sort(train_scores)
    ref_num = features.numeric[rows].astype(np.float32)
    spread = ref_num.std(axis=0) if ref_num.shape[1] else np.zeros(0, dtype=np.float32)
    max_id = max(features.cardinalities) if len(features.cardinalities) else 0
    cat_dtype = np.int32 if max_id < np.iinfo(np.int32).max else np.int64
    arrays = {
        "reference_embeddings": np.ascontiguousarray(z[rows]),
        "train_scores_sorted": sorted_scores,
        "reference_numeric": ref_num,
        "reference_categorical": features.categorical[rows].astype(cat_dtype),
        "numeric_scale": np.where(spread > 1e-6, spread, 1.0).astype(np.float32),
    }
    if fitted.n_lists_ is not None:  # an approximate (IVF) index: store it, so scoring uses exactly this index
        arrays["knn_index"] = fitted.index_bytes()
    held = np.zeros(n, dtype=bool)
    if drift_rows is not None and len(drift_rows):
        held[np.asarray(drift_rows, dtype=np.int64)] = True
        arrays["drift_reference_rows"] = np.flatnonzero(held[rows]).astype(np.int64)
    detector_state = {
        "kind": "knn",
        "k": int(k),
        "metric": metric,
        "seed": int(seed),
        "threshold_percentile": float(threshold_percentile),
        "threshold_": float(fitted.threshold_),
        "n_train": int(n),
        "n_reference": int(len(rows)),
        "index": "ivf" if fitted.n_lists_ is not None else "exact",
        "n_lists": fitted.n_lists_,
        "n_probe": int(n_probe),
        "share_above_threshold": float(np.mean(train_scores > fitted.threshold_)),
        "score_quantiles": {str(q): float(np.quantile(sorted_scores, q)) for q in QUANTILES},
    }
    detector = _build_detector(detector_state, arrays["reference_embeddings"], sorted_scores, arrays.get("knn_index"))
    window_detector, late, warnings = _fit_window_view(
        events, encoder, features, z, window=window, calibration_fraction=calibration_fraction,
        threshold_percentile=threshold_percentile, calibration=calibration, seed=seed)
    members = [train_scores[late]]
    if window_detector is not None:
        members.append(window_detector.training_scores_)  # its calibration scores: the `late` events, in order
    combiner = MaxZCombiner(threshold_percentile=threshold_percentile).fit(np.column_stack(members))
    config = {
        "format": PIPELINE_FORMAT,
        "format_version": PIPELINE_VERSION,
        "seed": int(seed),
        "n_events": int(n),
        "n_numeric": len(features.numeric_names),
        "n_categorical": len(features.categorical_names),
        "model_config": objective.encoder.to_config(),
        **(training or {}),
        "reference_max": int(reference_max),
        "views": ["event", "window"] if window_detector is not None else ["event"],
        "window": window if window_detector is not None else None,
        "calibration_events": int(late.sum()),
        "drift_reference_events": int(held[rows].sum()),
        "training_fingerprint": fingerprint_frame(events),
    }
    reference = events.iloc[rows].reset_index(drop=True)
    return FittedPipeline(encoder=encoder, objective=objective, detector=detector, detector_state=detector_state,
                          arrays=arrays, reference=reference, config=config, combiner=combiner,
                          window=window_detector, warnings=warnings, timings={"assemble_seconds": float(watch.seconds)})


def _fit_window_view(events: pd.DataFrame, encoder: FeatureEncoder, features, z: np.ndarray, *, window: str | None,
                     calibration_fraction: float, threshold_percentile: float, calibration: str = "latest",
                     seed: int = 0):
    """The window view fitted on the earlier events and calibrated on the later ones, the calibration rows
    (boolean mask; every row when there is no usable time), and warnings saying why a view is missing."""
    n = len(events)
    every = np.ones(n, dtype=bool)
    if window is None:
        return None, every, []
    try:
        column, unit = time_column(encoder)
    except ValueError as exc:
        return None, every, [f"no window view: {exc}"]
    ms = event_times(events, column, unit)
    timed = ~np.isnan(ms)
    if timed.sum() < 200:
        return None, every, [f"no window view: only {int(timed.sum())} events have a usable {column!r}"]
    if not 0.0 < float(calibration_fraction) < 1.0:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    if calibration == "latest":
        cut = np.quantile(ms[timed], 1.0 - float(calibration_fraction))
        late = timed & (ms > cut)
    elif calibration == "spread":
        # a seeded share of the window-length time buckets, spread over the whole period (every weekday and
        # hour has its share), so that the calibration period is not one part of a weekly cycle
        window_ms = pd.Timedelta(window).total_seconds() * 1000.0
        bucket = np.floor(np.where(timed, ms, 0.0) / window_ms).astype(np.int64)
        buckets = np.unique(bucket[timed])
        pick = np.random.default_rng([int(seed), 0xCA11B]).random(len(buckets)) < float(calibration_fraction)
        late = timed & np.isin(bucket, buckets[pick])
    else:
        raise ValueError(f"calibration must be 'latest' or 'spread', got {calibration!r}")
    early = ~late
    if late.sum() < 100 or early.sum() < 100:
        late = every
        early = every
    detector = EntityWindowDetector(encoder, n_embedding=z.shape[1], field_names=list(features.numeric_names),
                                    window=window, threshold_percentile=threshold_percentile)
    vectors = window_vectors(z, features.numeric)
    try:
        detector.fit((events[early], vectors[early]), calibration=(events[late], vectors[late]))
    except ValueError as exc:  # e.g. no entity column with values
        return None, every, [f"no window view: {exc}"]
    return detector, late, []


_REQUIRED_ARRAYS = ("reference_embeddings", "train_scores_sorted", "reference_numeric", "reference_categorical",
                    "numeric_scale")


def load_pipeline(directory: str | os.PathLike) -> FittedPipeline:
    """Read a package written by :meth:`FittedPipeline.save`; :class:`obsad.package.PackageError` if unusable."""
    package = load_package(directory)
    root = package.path
    if package.config.get("format") != PIPELINE_FORMAT:
        raise PackageError(f"refusing to load package {root}: config.json: not an obsad pipeline package")
    if int(package.config.get("format_version", 0)) > PIPELINE_VERSION:
        raise PackageError(f"refusing to load package {root}: config.json: pipeline format version "
                           f"{package.config.get('format_version')} is newer than this obsad supports")
    if int(package.config.get("format_version", 0)) < PIPELINE_VERSION:
        raise PackageError(f"refusing to load package {root}: config.json: pipeline format version "
                           f"{package.config.get('format_version')} was written by an older obsad; "
                           f"fit it again with `obsad fit`")
    if package.encoder is None:
        raise PackageError(f"refusing to load package {root}: encoder.json: missing — an event pipeline needs its "
                           "feature encoder")
    if not isinstance(package.model, ContrastiveObjective):
        raise PackageError(f"refusing to load package {root}: model/: expected a ContrastiveObjective, got "
                           f"{type(package.model).__name__}")
    missing = [name for name in _REQUIRED_ARRAYS if name not in package.arrays]
    if missing:
        raise PackageError(f"refusing to load package {root}: arrays.safetensors: missing {', '.join(missing)}")
    state = package.detector
    try:
        detector = _build_detector(state, package.arrays["reference_embeddings"], package.arrays["train_scores_sorted"],
                                   package.arrays.get("knn_index"))
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"refusing to load package {root}: detector.json: unusable detector state ({exc})") from exc
    try:
        combiner = MaxZCombiner.from_state(state["combiner"])
        window = None
        if "window" in state:
            window = EntityWindowDetector.from_state(package.encoder, state["window"], package.arrays, prefix="window")
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"refusing to load package {root}: detector.json: unusable combiner or window view "
                           f"state ({exc})") from exc
    n_members = 2 if window is not None else 1
    if combiner.median_.shape != (n_members,):
        raise PackageError(f"refusing to load package {root}: detector.json: the combiner expects "
                           f"{combiner.median_.shape[0]} views, the package has {n_members}")
    state = {key: value for key, value in state.items() if key not in ("combiner", "window")}
    arrays = {key: value for key, value in package.arrays.items() if not key.startswith("window/")}
    return FittedPipeline(encoder=package.encoder, objective=package.model.eval(), detector=detector,
                          detector_state=state, arrays=arrays, reference=package.reference,
                          config=package.config, combiner=combiner, window=window, path=root,
                          warnings=list(package.warnings))
