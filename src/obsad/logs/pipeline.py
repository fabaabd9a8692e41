"""The log pipeline end to end, behind ``obsad logs fit`` / ``obsad logs score`` / ``obsad logs parse``.

:func:`fit_log_pipeline` reads a raw log file (:func:`obsad.logs.formats.read_log_lines`), groups its lines into
sessions and splits them by start time (earliest 70 % train, next 15 % validation for early stopping, latest 15 %
calibration), mines the template vocabulary on the training sessions only (:class:`~obsad.logs.parse.DrainParser`),
trains the next-template Transformer (:mod:`obsad.logs.model`) and calibrates a :class:`~obsad.logs.detect.SessionRule`
on the calibration sessions, which the file is assumed to hold mostly normal. :meth:`LogPipeline.save` writes one
verified package (:mod:`obsad.package`: the parser as ``parser.json``, the model's safetensors, the rule in
``detector.json``); :func:`load_log_pipeline` reads it back and refuses a tampered one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..package import PackageError, load_package, save_package
from ..runtime import Stopwatch, seed_everything
from ..train import TrainConfig
from .detect import SessionRule
from .formats import FORMATS, read_log_lines
from .model import NextTokenTransformer, score_sessions, train_next_template
from .parse import DrainParser
from .sessions import session_sequences, split_sessions

__all__ = ["LogPipeline", "fit_log_pipeline", "load_log_pipeline", "log_sessions", "parse_log_lines"]

LOG_PIPELINE_FORMAT = "obsad-log-pipeline"
LOG_PIPELINE_VERSION = 1
SCORE_COLUMNS = ("mean_nll", "max_nll", "perplexity", "topk_miss_rate")


def log_sessions(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per session of a :func:`read_log_lines` table: ``session_id``, ``start``, ``n_events`` and ``rows``
    (the session's row positions in ``frame``, in time order; ties and lines without a parsable time keep file
    order)."""
    timed = frame["timestamp"].notna().to_numpy() | frame["session_id"].isna().to_numpy()
    key = frame["timestamp"] if timed.all() else frame["line_no"]
    return session_sequences(frame["session_id"], key, pd.Series(np.arange(len(frame)), name="rows"), name="rows")


def _template_sequences(sessions: pd.DataFrame, ids: np.ndarray) -> list[np.ndarray]:
    return [ids[rows] for rows in sessions["rows"]]


def _session_template_ids(frame: pd.DataFrame, parser: DrainParser) -> np.ndarray:
    """Template ids of the lines that belong to a session (``-1`` elsewhere: those lines are never scored)."""
    ids = np.full(len(frame), -1, dtype=np.int64)
    in_session = frame["session_id"].notna().to_numpy()
    if in_session.any():
        ids[in_session] = parser.transform(frame["message"][in_session])
    return ids


def _max_len(lengths: np.ndarray) -> int:
    """Encoded chunk length: room for the 99th-percentile session plus its begin and end tokens, 16..256."""
    q99 = float(np.quantile(lengths, 0.99)) if len(lengths) else 0.0
    return int(min(256, max(16, math.ceil(q99) + 2)))


@dataclass
class LogPipeline:
    """A fitted parser, next-template model and calibrated rule for one log format."""

    format: str
    parser: DrainParser
    model: NextTokenTransformer
    rule: SessionRule
    config: dict
    path: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)  # wall-clock seconds; never saved
    set_aside: list[str] = field(default_factory=list)  # sessions trimmed as probable anomalies at fit; never saved

    def score_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One row per session of a :func:`read_log_lines` table, earliest first: ``session_id``, ``start``,
        ``n_events``, ``score`` (the rule's column; higher = more anomalous), ``percentile`` (among the normal
        calibration sessions), ``is_anomaly``, then every session score and the unseen-template rate."""
        sessions = log_sessions(frame)
        ids = _session_template_ids(frame, self.parser)
        scores = score_sessions(self.model, _template_sequences(sessions, ids), k=int(self.config["top_k"]))
        out = sessions[["session_id", "start", "n_events"]].copy()
        out["score"] = self.rule.score_samples(scores)
        out["percentile"] = self.rule.percentile_of(scores)
        out["is_anomaly"] = self.rule.predict(scores)
        for column in (*SCORE_COLUMNS, "unseen_rate"):
            out[column] = scores[column].to_numpy()
        return out

    def score_file(self, source) -> tuple[pd.DataFrame, object]:
        """Read ``source`` in this pipeline's format and score its sessions; returns (scores, read report)."""
        frame, report = read_log_lines(source, self.format)
        return self.score_frame(frame), report

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the verified package (atomically)."""
        path = save_package(directory, encoder=None, model=self.model, detector=self.rule.to_state(),
                            config=self.config, seed=self.config.get("seed"),
                            documents={"parser": self.parser.to_dict()})
        self.path = Path(path)
        return self.path


def parse_log_lines(source, fmt: str, *, parser: DrainParser | None = None) -> tuple[pd.DataFrame, object]:
    """Template every line of ``source``: one row per input line, in input order, with ``line_no``,
    ``session_id``, ``template_id`` and ``template`` (``-1`` / missing where a given ``parser`` knows no template;
    without one, a parser is mined on the file itself), and the read report."""
    frame, report = read_log_lines(source, fmt)
    if parser is None:  # mined on the file itself: one pass (mining already assigns every line its template)
        parser = DrainParser(format=fmt)
        ids = parser.fit_transform(frame["message"])
    else:
        ids = parser.transform(frame["message"])
    names = np.asarray(parser.templates_ + [None], dtype=object)
    out = pd.DataFrame({"line_no": frame["line_no"], "session_id": frame["session_id"], "template_id": ids,
                        "template": pd.Series(names[np.where(ids < 0, len(names) - 1, ids)], dtype="string")})
    return out, report


def fit_log_pipeline(
    source,
    fmt: str,
    *,
    seed: int = 0,
    score: str = "max_nll",
    top_k: int = 5,
    threshold_percentile: float = 99.5,
    unseen_rate_limit: float | None = 0.05,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    d_model: int = 64,
    n_layers: int = 2,
    target_steps: int = 800,
    batch_size: int = 64,
    lr: float = 1e-3,
    progress: bool = False,
    device: str | None = None,
    labels: pd.DataFrame | None = None,
    trim: float | None = 3.0,
) -> LogPipeline:
    """Fit a :class:`LogPipeline` on the sessions of ``source`` (a path or lines) in format ``fmt``.

    Training length is about ``target_steps`` optimisation steps turned into whole epochs, with early stopping
    on the validation sessions and the best epoch's weights restored. ``labels`` (``session_id``,
    ``is_anomaly``; e.g. :func:`~obsad.logs.formats.read_labels`): sessions known to be anomalous are left out
    of training, validation and calibration, as DeepLog trains on normal sessions. Without labels the file is
    taken as mostly normal, but the anomalies it holds would teach the model their events and raise the
    threshold (calibrated at the 99.5th percentile, it assumes at most 0.5 % of anomalous sessions): so a first
    model scores every session, those above ``median + trim * (q90 - median)`` of its scores are set aside as
    probable anomalies, and the vocabulary, the model and the threshold are fitted again without them
    (``trim=None``: no second pass).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if score not in SCORE_COLUMNS:
        raise ValueError(f"score must be one of {', '.join(SCORE_COLUMNS)}, got {score!r}")
    watch = Stopwatch("logs fit")
    seed_everything(seed)
    frame, report = read_log_lines(source, fmt) if not isinstance(source, pd.DataFrame) else (source, None)
    sessions = log_sessions(frame)
    if len(sessions) < 20:
        raise ValueError(f"need at least 20 sessions to fit, found {len(sessions)} "
                         f"({'no session id in any line' if len(sessions) == 0 else 'too few'})")
    split = split_sessions(sessions, fractions).to_numpy(dtype=object)
    excluded = 0
    if labels is not None:
        known = sessions["session_id"].map(labels.set_index("session_id")["is_anomaly"]).fillna(False)
        anomalous = known.to_numpy(dtype=bool)
        excluded = int(anomalous.sum())
        split[anomalous] = "excluded"
    def train(split):
        """Mine the vocabulary on the training sessions, train on them, stop early on the validation ones."""
        rows = np.concatenate(sessions["rows"][split == "train"].to_numpy())
        parser = DrainParser(format=fmt).fit(frame["message"].iloc[np.sort(rows)])
        sequences = _template_sequences(sessions, _session_template_ids(frame, parser))
        part = {name: [s for s, p in zip(sequences, split) if p == name] for name in ("train", "val", "test")}
        seed_everything(seed)
        model = NextTokenTransformer(parser.n_templates_, d_model=d_model, n_heads=4, n_layers=n_layers,
                                     d_ff=2 * d_model, max_len=max_len)
        model, history = train_next_template(model, part["train"], part["val"] or None, config)
        return parser, model.cpu().eval(), sequences, part, history

    max_len = _max_len(sessions["n_events"].to_numpy()[split == "train"])
    steps_per_epoch = max(1, math.ceil(int((split == "train").sum()) / batch_size))
    epochs = max(1, round(target_steps / steps_per_epoch))
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, patience=3, restore_best=True,
                         progress=progress, device=device)
    parser, model, sequences, part, history = train(split)
    trimmed = 0
    if labels is None and trim is not None:
        # no labels: set aside the sessions far above the bulk of the first model's scores, then train again
        kept = np.flatnonzero(split != "excluded")
        first = score_sessions(model, [sequences[i] for i in kept], k=top_k)[score].to_numpy()
        q50, q90 = np.quantile(first, [0.5, 0.9])
        outlying = kept[first > q50 + float(trim) * max(q90 - q50, 1e-9)]
        trimmed = int(len(outlying))
        if trimmed:
            split = split.copy()
            split[outlying] = "trimmed"
            parser, model, sequences, part, history = train(split)
    calibration = score_sessions(model, part["test"], k=top_k)
    rule = SessionRule(score, threshold_percentile, unseen_rate_limit).fit(calibration)
    pipeline_config = {
        "format": LOG_PIPELINE_FORMAT, "format_version": LOG_PIPELINE_VERSION, "log_format": fmt, "seed": int(seed),
        "top_k": int(top_k), "n_lines": int(len(frame)), "n_sessions": int(len(sessions)),
        "sessions": {name: int((split == name).sum()) for name in ("train", "val", "test")},
        "sessions_excluded_as_anomalous": excluded,
        "sessions_trimmed_as_outlying": trimmed,
        "n_templates": int(parser.n_templates_), "max_len": int(max_len),
        "train_config": config.to_dict(), "epochs_run": int(len(history.epochs)),
        "calibration_unseen_share": float((calibration["unseen_rate"] > 0).mean()),
    }
    pipeline = LogPipeline(fmt, parser, model, rule, pipeline_config,
                           set_aside=sessions["session_id"][split == "trimmed"].astype(str).tolist())
    pipeline.timings["fit_seconds"] = float(watch.seconds)
    return pipeline


def load_log_pipeline(directory: str | os.PathLike) -> LogPipeline:
    """Read a package written by :meth:`LogPipeline.save`; :class:`~obsad.package.PackageError` if unusable."""
    package = load_package(directory)
    root = package.path
    config = package.config
    if config.get("format") != LOG_PIPELINE_FORMAT:
        raise PackageError(f"refusing to load package {root}: config.json: not an obsad log-pipeline package")
    if int(config.get("format_version", 0)) != LOG_PIPELINE_VERSION:
        raise PackageError(f"refusing to load package {root}: config.json: log-pipeline format version "
                           f"{config.get('format_version')} (this obsad reads {LOG_PIPELINE_VERSION})")
    if not isinstance(package.model, NextTokenTransformer):
        raise PackageError(f"refusing to load package {root}: model/: expected a NextTokenTransformer, got "
                           f"{type(package.model).__name__}")
    try:
        parser = DrainParser.from_dict(package.documents.get("parser"), source="parser.json")
        rule = SessionRule.from_state(package.detector)
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"refusing to load package {root}: unusable parser or rule ({exc})") from exc
    if parser.n_templates_ != package.model.n_templates:
        raise PackageError(f"refusing to load package {root}: the parser has {parser.n_templates_} templates, the "
                           f"model {package.model.n_templates}")
    return LogPipeline(config["log_format"], parser, package.model.eval(), rule, config, path=root)
