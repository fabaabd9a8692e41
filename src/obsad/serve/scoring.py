"""Request bodies to scores: validation, per-event checks, the two scoring modes, and similar events.

Everything here is plain Python over the library (no HTTP): :mod:`obsad.serve.app` turns :class:`RequestError`
into a JSON error response and the returned dicts into JSON.

Per-event checks. An event must be a non-empty JSON object and hold at least one field the model reads; an
event that fails gets ``{"error": ...}`` in its own result slot and is left out of the scored batch (the rest is
scored). Values the loader had to repair (a number that does not parse, ...) are scored as missing, exactly as
``obsad score`` does, and listed under ``warnings`` in that event's slot.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from ..encodings import shared_encodings
from ..ocsf.arrow_json import EventsTableReader

VIEWS = ("auto", "all", "event")
EXPLAIN = ("flagged", "all", "none")
MAX_TOP = 20
MAX_SIMILAR = 100
_SCORE_KEYS = {"events", "views", "explain", "n_top"}
_SIMILAR_KEYS = {"event", "k"}


class RequestError(Exception):
    """A request the service refuses: HTTP ``status``, a short ``error`` and a ``detail`` saying what to fix."""

    def __init__(self, status: int, error: str, detail=None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


@dataclass(frozen=True)
class ScoreRequest:
    """A validated ``/v1/score`` body: its events as decoded dicts, or (:func:`read_score_table`) as an Arrow
    table, one event per row (``events`` is then None)."""

    events: list | None
    views: str = "auto"
    explain: str = "flagged"
    n_top: int = 3
    table: Any = None

    @property
    def n_events(self) -> int:
        return self.table.num_rows if self.table is not None else len(self.events)


def encode_json(body: dict) -> bytes:
    """An answer's body as compact UTF-8 JSON (orjson: a thousand results in 0.1 ms where ``json`` takes 1.5 ms;
    scores are made JSON-safe before, a non-finite float would become ``null``)."""
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def parse_json(raw: bytes):
    """The decoded body; 400 with the parser's message (position included) when it is not JSON."""
    if not raw:
        raise RequestError(400, "empty body", "send a JSON object, e.g. {\"events\": [{...}]}")
    try:
        return orjson.loads(raw)  # strict JSON, twice as fast as json on a batch of events
    except orjson.JSONDecodeError:
        pass  # json says what is wrong (line, column), and reads what orjson refuses: NaN, integers past 64 bits
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise RequestError(400, "malformed JSON", f"the body is not UTF-8 text ({exc.reason} at byte {exc.start})")
    except json.JSONDecodeError as exc:
        raise RequestError(400, "malformed JSON", f"{exc.msg} at line {exc.lineno}, column {exc.colno}")
    except RecursionError:
        raise RequestError(400, "malformed JSON", "nested too deeply")


def _option(body: dict, key: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(key, default)
    if value not in allowed:
        raise RequestError(422, f"invalid {key!r}", f"expected one of {list(allowed)}, got {value!r}")
    return value


def _whole_number(body: dict, key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(422, f"invalid {key!r}", f"expected a whole number from {low} to {high}, got {value!r}")
    return value


def _object_body(body, keys: set[str], example: str) -> dict:
    if not isinstance(body, dict):
        raise RequestError(422, "invalid body", f"expected a JSON object like {example}, got a JSON "
                                                f"{_json_kind(body)}")
    unknown = sorted(set(body) - keys)
    if unknown:
        raise RequestError(422, "invalid body", f"unknown field(s) {unknown}; expected {sorted(keys)}")
    return body


def parse_score_request(body, max_batch: int) -> ScoreRequest:
    """Validate a ``/v1/score`` body: 422 for a wrong shape, 413 for more than ``max_batch`` events."""
    body = _object_body(body, _SCORE_KEYS, '{"events": [{...}, ...]}')
    events = body.get("events")
    if not isinstance(events, list):
        got = "nothing" if events is None else f"a JSON {_json_kind(events)}"
        raise RequestError(422, "invalid 'events'", f"expected an array of OCSF events, got {got}")
    if not events:
        raise RequestError(422, "invalid 'events'", "the array is empty: send 1 to {:,} events".format(max_batch))
    if len(events) > max_batch:
        raise RequestError(413, "too many events", f"{len(events):,} events in one request; at most "
                                                   f"{max_batch:,} (split the batch)")
    return ScoreRequest(events=events, views=_option(body, "views", VIEWS, "auto"),
                        explain=_option(body, "explain", EXPLAIN, "flagged"),
                        n_top=_whole_number(body, "n_top", 3, 1, MAX_TOP))


#: Reads the events of ``/v1/score`` bodies into tables, learning which fields hold ISO times
#: (:class:`~obsad.ocsf.arrow_json.EventsTableReader`).
_EVENTS_READER = EventsTableReader("events")


def read_score_table(raw: bytes, max_batch: int) -> ScoreRequest | None:
    """A ``/v1/score`` body of several events read by Arrow straight into a table of events
    (:meth:`obsad.ocsf.arrow_json.EventsTableReader.read`: a third of a 1,000-event request's time went into decoding
    the body, walking the dicts and typing their values); None for a body Arrow would not read as the general path
    does, a single event (scored without a table) or a body the general path refuses: :func:`parse_score_request`
    then decodes it and says what is wrong."""
    got = _EVENTS_READER.read(raw)
    if got is None:
        return None
    table, options = got
    if not set(options) <= _SCORE_KEYS or not 2 <= table.num_rows <= max_batch:
        return None
    try:
        return ScoreRequest(events=None, table=table, views=_option(options, "views", VIEWS, "auto"),
                            explain=_option(options, "explain", EXPLAIN, "flagged"),
                            n_top=_whole_number(options, "n_top", 3, 1, MAX_TOP))
    except RequestError:
        return None


def parse_similar_request(body) -> tuple[dict, int]:
    body = _object_body(body, _SIMILAR_KEYS, '{"event": {...}, "k": 5}')
    event = body.get("event")
    problem = event_problem(event)
    if problem is not None:
        raise RequestError(422, "invalid 'event'", problem)
    return event, _whole_number(body, "k", 5, 1, MAX_SIMILAR)


def _json_kind(value) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def event_problem(event) -> str | None:
    """Why ``event`` cannot be an OCSF event (None when it can): it must be a non-empty JSON object."""
    if not isinstance(event, dict):
        return f"an event must be a JSON object, got a JSON {_json_kind(event)}"
    if not event:
        return "an empty JSON object: no field to score"
    return None


# ------------------------------------------------------------------------------------------------ loading
@dataclass
class LoadedBatch:
    """The request's events as the flat table, with what became of each request slot."""

    events: pd.DataFrame  # the scorable events only, RangeIndex
    slots: np.ndarray  # request slot of each row of ``events``
    errors: dict[int, str]  # request slot -> why it was not scored
    warnings: dict[int, list[str]]  # request slot -> values the loader repaired
    n_requested: int


def _rows_with_values(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Which rows hold a value in at least one of ``columns``: column after column on its own array, stopping
    once every row has one (usually after the first column; a sub-frame's ``notna().any(axis=1)`` cost ~3 ms
    on a thousand events)."""
    has = np.zeros(len(frame), dtype=bool)
    for column in columns:
        has |= ~np.asarray(pd.isna(frame[column].array), dtype=bool)
        if has.all():
            break
    return has


def load_batch(events, columns: list[str], model_columns: list[str]) -> LoadedBatch:
    """Per-event checks, then :func:`obsad.ocsf.load_events` on the events that pass (``columns`` kept).

    ``events``: a list of decoded events, or an Arrow table of them (:func:`read_score_table`, which takes only
    tables whose every event passes those checks). ``model_columns``: an event none of whose values is in these
    columns is reported, not scored.
    """
    from ..ocsf import load_events
    from ..ocsf.load import OCSFLoadError

    errors: dict[int, str] = {}
    if isinstance(events, pa.Table):
        n_requested, keep, source = events.num_rows, range(events.num_rows), events
    else:
        n_requested, keep = len(events), []
        for slot, event in enumerate(events):
            problem = event_problem(event)
            if problem is None:
                keep.append(slot)
            else:
                errors[slot] = problem
        source = [events[i] for i in keep] if len(keep) < len(events) else events
    slots = np.asarray(keep, dtype=np.int64)
    if not len(slots):
        return LoadedBatch(pd.DataFrame(), slots, errors, {}, n_requested)
    try:
        frame, report = load_events(source, columns=columns)
    except OCSFLoadError as exc:
        raise RequestError(422, "unusable events", str(exc).splitlines()[0])
    if len(frame) != len(slots):  # every checked event is a non-empty object, so the loader keeps it
        raise RequestError(422, "unusable events", f"the loader kept {len(frame)} of {len(slots)} events")
    warnings: dict[int, list[str]] = {}
    problems = report.problems
    if len(problems):
        rows = problems["line"].to_numpy(dtype=np.int64, na_value=-1)
        text = (problems["field"].fillna("").astype(str) + ": " + problems["reason"].astype(str) + ": "
                + problems["detail"].astype(str)).to_numpy(dtype=object)
        for row in np.unique(rows[rows >= 0]):
            warnings[int(slots[row])] = text[rows == row].tolist()
    empty = ~_rows_with_values(frame, [c for c in model_columns if c in frame.columns])
    if empty.any():
        shown = ", ".join(model_columns[:6]) + (", ..." if len(model_columns) > 6 else "")
        for row in np.flatnonzero(empty):
            errors[int(slots[row])] = f"none of the {len(model_columns)} fields this model reads is present ({shown})"
        frame = frame.loc[~empty].reset_index(drop=True)
        slots = slots[~empty]
    return LoadedBatch(frame, slots, errors, warnings, n_requested)


# ------------------------------------------------------------------------------------------------ scoring
def resolve_views(views: str, n_events: int) -> str:
    """``auto``: a lone event is scored by the event view (it has no window around it), a batch by all views."""
    if views == "auto":
        return "event" if n_events <= 1 else "all"
    return views


def score_frame(pipeline, events: pd.DataFrame, views: str, explain: str, n_top: int) -> pd.DataFrame:
    """``pipeline.score`` with every view (``"all"``: what ``obsad score`` gives for this batch) or the event view
    alone (``"event"``: its calibrated score against the same combined threshold)."""
    return pipeline.score(events, n_top=n_top, explain=explain, views=views)


def _finite_or_none(values: np.ndarray) -> list:
    out = values.astype(np.float64).tolist()
    if not np.isfinite(values).all():
        out = [v if math.isfinite(v) else None for v in out]
    return out


def result_item(uid, score: float | None, percentile: float | None, is_anomaly, view: str, top: str) -> dict:
    """One scored event's result (``score``/``percentile`` already JSON-safe: None where not finite)."""
    item = {"score": score, "percentile": percentile, "is_anomaly": bool(is_anomaly), "view": view,
            "top_features": top.split(", ") if top else []}
    if isinstance(uid, str):
        item["event_uid"] = uid
    return item


def score_single(served, request: ScoreRequest) -> dict | None:
    """A request holding one event, scored by the event view through the served model's
    :class:`~obsad.single_event.SingleEventScorer` (the same numbers as :func:`score_frame`, without the table
    machinery); None when the request or its event needs the general path (the loader's repairs or checks)."""
    if request.n_events != 1 or resolve_views(request.views, 1) != "event":
        return None
    return served.single.score(request.events[0], n_top=request.n_top, explain=request.explain)


def single_result_json(scored: dict) -> dict:
    """The result slot of an event scored by :func:`score_single`."""
    score, percentile = _finite_or_none(np.array([scored["score"], scored["percentile"]]))
    return result_item(scored["event_uid"], score, percentile, scored["is_anomaly"], scored["view"],
                       scored["top_features"])


def results_json(batch: LoadedBatch, scored: pd.DataFrame | None) -> list[dict]:
    """One result per request slot, in request order: the scores, or ``{"error": ...}``."""
    results: list[dict] = [None] * batch.n_requested  # type: ignore[list-item]
    if scored is not None and len(scored):
        uids = scored["event_uid"].tolist() if "event_uid" in scored.columns else [None] * len(scored)
        tops = scored["top_features"].tolist()
        for slot, uid, score, pct, flag, view, top in zip(
                batch.slots.tolist(), uids, _finite_or_none(scored["score"].to_numpy()),
                _finite_or_none(scored["percentile"].to_numpy()), scored["is_anomaly"].tolist(),
                scored["view"].tolist(), tops):
            results[slot] = result_item(uid, score, pct, flag, view, top)
    for slot, message in batch.errors.items():
        results[slot] = {"error": message}
    for slot, notes in batch.warnings.items():
        if results[slot] is not None and "error" not in results[slot]:
            results[slot]["warnings"] = notes
    return results


# ------------------------------------------------------------------------------------------------ similar
def json_value(value):
    """A JSON-safe copy of one table value; ``None`` for missing."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _row_dict(frame: pd.DataFrame, row: int) -> dict:
    values = {name: json_value(v) for name, v in frame.iloc[row].items()}
    return {k: v for k, v in values.items() if v is not None}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def field_deltas(event: dict, neighbour: dict, fields: list[str]) -> dict:
    """The fields (of ``fields``) on which ``event`` differs from ``neighbour``: both values, and for two
    numbers ``delta = event - neighbour``."""
    out = {}
    for name in fields:
        a, b = event.get(name), neighbour.get(name)
        if a == b:
            continue
        entry = {"event": a, "neighbour": b}
        if _is_number(a) and _is_number(b):
            entry["delta"] = a - b
        out[name] = entry
    return out


def similar_json(pipeline, event: dict, k: int) -> dict:
    """The ``k`` nearest reference (training) events of ``event``: distance, raw fields, per-field deltas."""
    from ..ocsf import load_events
    from ..ocsf.load import OCSFLoadError

    try:
        shown, _ = load_events([event])  # every field, to show
        scored, _ = load_events([event], columns=pipeline.input_columns)  # as /v1/score reads it
    except OCSFLoadError as exc:
        raise RequestError(422, "unusable event", str(exc).splitlines()[0])
    model_fields = [c for c in pipeline.input_columns if c != "metadata.uid"]
    query = _row_dict(shown, 0)
    if not any(name in query for name in model_fields):
        raise RequestError(422, "unusable event", f"none of the {len(model_fields)} fields this model reads is "
                                                  "present")
    distances, rows = pipeline.similar_events(scored, n=k)
    neighbours = []
    for rank, (distance, row) in enumerate(zip(distances[0].tolist(), rows[0].tolist()), start=1):
        if row < 0:
            continue
        raw = _row_dict(pipeline.reference, int(row))
        neighbours.append({"rank": rank, "distance": json_value(distance), "event": raw,
                           "deltas": field_deltas(query, raw, model_fields)})
    return {"k": k, "event": query, "neighbours": neighbours}


# ------------------------------------------------------------------------------------------------ requests
def score_request(serving, req: ScoreRequest, counts, shadow_scorer=None) -> tuple[int, dict]:
    """A parsed ``/v1/score`` request scored by ``serving`` (a :class:`~obsad.serve.models.ServingState`): the
    status and the answer's body. ``counts``: where events scored, flagged and refused are counted (the service's
    metrics, or a scoring process's :class:`~obsad.serve.pool.Tally`); ``shadow_scorer``: the challenger's, if any."""
    single = score_single(serving.champion, req)  # one event on the event view: no table machinery
    if single is not None:
        counts.events_scored.inc()
        counts.anomalies.inc(int(single["is_anomaly"]))
        if shadow_scorer is not None:
            shadow_scorer.submit_one(serving, req.events[0], single)
        return 200, {"model_version": serving.champion.version, "views": "event", "n_scored": 1,
                     "n_errors": 0, "results": [single_result_json(single)]}
    champion = serving.champion.pipeline
    columns = list(champion.input_columns)
    if serving.challenger is not None:
        columns = list(dict.fromkeys(columns + list(serving.challenger.pipeline.input_columns)))
    model_columns = [c for c in champion.input_columns if c != "metadata.uid"]
    with shared_encodings():  # the loader's screens, the window view and the encoder hash each column once
        batch = load_batch(req.table if req.table is not None else req.events, columns, model_columns)
        views = resolve_views(req.views, len(batch.events))
        scored = None
        if len(batch.events):
            scored = score_frame(champion, batch.events, views, req.explain, req.n_top)
        counts.events_scored.inc(len(scored))
        counts.anomalies.inc(int(scored["is_anomaly"].sum()))
        if shadow_scorer is not None:
            shadow_scorer.submit(serving, batch, scored, views)
    counts.events_rejected.inc(len(batch.errors))
    body = {"model_version": serving.champion.version, "views": views, "n_scored": len(batch.events),
            "n_errors": len(batch.errors), "results": results_json(batch, scored)}
    if batch.errors:
        body["error"] = f"{len(batch.errors)} of {batch.n_requested} events failed the per-event checks"
        body["detail"] = "see the 'error' field of those results; the other events were scored"
        return 422, body
    return 200, body
