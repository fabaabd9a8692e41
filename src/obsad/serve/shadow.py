"""Champion/challenger: the challenger scores what the champion scored, after the answer has gone out.

Each scored event becomes one JSON Lines record in ``<dir>/shadow-<UTC date>-<pid>.jsonl``::

    {"time": "...", "request_id": "...", "slot": 0, "event_uid": "...", "views": "all",
     "champion": {"version": "...", "score": 1.2, "is_anomaly": false, "view": "event"},
     "challenger": {"version": "...", "score": 0.9, "is_anomaly": false, "view": "event"}}

Written safely: one writer thread, files opened append-only without following symlinks (mode 0640), each
request's records in one ``write`` of whole lines, then ``fsync``; a later monitoring job can read the files
while they grow and never sees half a line from a live writer. The queue is bounded: when the challenger falls
behind, requests are not slowed down; their events are counted as dropped instead.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import threading
import uuid
from pathlib import Path

import numpy as np

from ..runtime import worker_pool

log = logging.getLogger("obsad.serve")

MAX_PENDING = 64  # requests waiting for the challenger before new ones are dropped


class ShadowLog:
    """Appends JSON Lines records to a per-day file in ``directory`` (created if needed)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        if not self.directory.is_dir():
            raise ValueError(f"--shadow-log {self.directory}: not a directory")

    def path_for(self, when: _dt.datetime) -> Path:
        return self.directory / f"shadow-{when:%Y%m%d}-{os.getpid()}.jsonl"

    def append(self, records: list[dict], when: _dt.datetime) -> int:
        if not records:
            return 0
        data = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records).encode("utf-8")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path_for(when), flags, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        return len(records)


def _side(model, scored) -> dict:
    return {"version": model.version, "scores": scored["score"].to_numpy(dtype=np.float64),
            "flags": scored["is_anomaly"].to_numpy(dtype=bool), "views": scored["view"].astype(str).to_numpy()}


def _number(v: float):
    return v if np.isfinite(v) else None


class ShadowScorer:
    """Scores requests with the challenger in one background thread and logs both models' scores."""

    def __init__(self, log_dir: str | os.PathLike | None, metrics) -> None:
        self.log = ShadowLog(log_dir) if log_dir is not None else None
        self.metrics = metrics
        self._pool = worker_pool("obsad-shadow")
        self._pending = 0
        self._lock = threading.Lock()

    def submit(self, state, batch, champion_scored, views: str) -> bool:
        """Queue the challenger's scoring of ``batch``; False (and counted as dropped) when the queue is full."""
        n = len(batch.events)
        with self._lock:
            if self._pending >= MAX_PENDING:
                self.metrics.shadow_dropped.inc(n)
                return False
            self._pending += 1
        self._pool.submit(self._run, state, batch, champion_scored, views)
        return True

    def submit_one(self, state, event: dict, champion: dict) -> bool:
        """Queue the challenger's scoring of one event the champion scored on the one-event path (``champion``:
        what :meth:`obsad.single_event.SingleEventScorer.score` gave)."""
        with self._lock:
            if self._pending >= MAX_PENDING:
                self.metrics.shadow_dropped.inc()
                return False
            self._pending += 1
        self._pool.submit(self._run_one, state, event, champion)
        return True

    def _run_one(self, state, event: dict, champion: dict) -> None:
        from .scoring import load_batch, score_frame

        try:
            challenger = state.challenger
            scored = challenger.single.score(event, explain="none")
            if scored is None:  # this event needs the loader's repairs for the challenger's columns
                columns = list(challenger.pipeline.input_columns)
                batch = load_batch([event], columns, [c for c in columns if c != "metadata.uid"])
                if not len(batch.events):
                    raise ValueError("the challenger reads none of this event's fields")
                row = score_frame(challenger.pipeline, batch.events, "event", "none", 1).iloc[0]
                scored = {"score": row["score"], "is_anomaly": row["is_anomaly"], "view": row["view"]}

            def side(model, one: dict) -> dict:
                return {"version": model.version, "scores": np.array([one["score"]], dtype=np.float64),
                        "flags": np.array([one["is_anomaly"]], dtype=bool), "views": np.array([str(one["view"])])}

            self._log(side(state.champion, champion), side(challenger, scored), [0], [champion.get("event_uid")],
                      "event")
        except Exception:  # a failing challenger must never affect the champion's answers
            log.exception("shadow scoring failed")
            self.metrics.shadow_dropped.inc()
        finally:
            with self._lock:
                self._pending -= 1

    def _log(self, champ: dict, chall: dict, slots: list, uids: list, views: str) -> None:
        self.metrics.shadow_events.inc(len(chall["scores"]))
        self.metrics.shadow_anomalies.inc(int(chall["flags"].sum()))
        self.metrics.shadow_disagreements.inc(int((champ["flags"] != chall["flags"]).sum()))
        if self.log is not None:
            now = _dt.datetime.now(_dt.timezone.utc)
            written = self.log.append(self._records(slots, uids, champ, chall, views, now), now)
            self.metrics.shadow_records.inc(written)

    def _run(self, state, batch, champion_scored, views: str) -> None:
        from .scoring import score_frame

        try:
            challenger = state.challenger
            scored = score_frame(challenger.pipeline, batch.events, views, "none", 1)  # scores only
            uids = (batch.events["metadata.uid"].tolist() if "metadata.uid" in batch.events.columns
                    else [None] * len(batch.events))
            self._log(_side(state.champion, champion_scored), _side(challenger, scored), batch.slots.tolist(), uids,
                      views)
        except Exception:  # a failing challenger must never affect the champion's answers
            log.exception("shadow scoring failed")
            self.metrics.shadow_dropped.inc(len(batch.events))
        finally:
            with self._lock:
                self._pending -= 1

    @staticmethod
    def _records(slots: list, uids: list, champ: dict, chall: dict, views: str, now: _dt.datetime) -> list[dict]:
        request_id = uuid.uuid4().hex
        stamp = now.isoformat(timespec="milliseconds")
        out = []
        for i, (slot, uid) in enumerate(zip(slots, uids)):
            out.append({
                "time": stamp, "request_id": request_id, "slot": slot,
                "event_uid": uid if isinstance(uid, str) else None, "views": views,
                "champion": {"version": champ["version"], "score": _number(float(champ["scores"][i])),
                             "is_anomaly": bool(champ["flags"][i]), "view": str(champ["views"][i])},
                "challenger": {"version": chall["version"], "score": _number(float(chall["scores"][i])),
                               "is_anomaly": bool(chall["flags"][i]), "view": str(chall["views"][i])},
            })
        return out

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
