"""The HTTP scoring service: ``obsad serve --model DIR`` (FastAPI on uvicorn, CPU; ``--workers N``: batches in N
scoring processes).

Endpoints (JSON in, JSON out; errors are ``{"error": ..., "detail": ...}``, never a traceback):

- ``POST /v1/score`` ``{"events": [...], "views": "auto", "explain": "flagged", "n_top": 3}``: 1 to
  ``max_batch`` OCSF events, nested or flattened (dotted keys) -> ``{"model_version", "views", "results":
  [{"score", "percentile", "is_anomaly", "view", "top_features", "event_uid"}, ...]}`` in input order. An event
  that fails the per-event checks gets ``{"error": ...}`` in its slot, the others are scored, and the answer is
  422; values the loader repaired are listed under the slot's ``warnings``.
- ``POST /v1/similar`` ``{"event": {...}, "k": 5}``: the ``k`` nearest reference (normal training) events in
  the event view's embedding space, with their raw fields and the fields on which they differ from the event.
- ``GET /v1/model``: the package manifest, version, views, threshold and similar-event index (with its recall).
- ``POST /v1/admin/reload``: re-read the package from the ``--model`` path fixed at start (and ``--shadow``),
  verify it, and swap it in atomically; a bad package is refused (422) and the old one keeps serving.
- ``GET /healthz``, ``GET /metrics`` (Prometheus text: requests by status, latency, events scored, anomalies,
  model version, reloads, shadow counts).

**Views online.** The window view scores an entity's time window against its history, so it needs the whole
window in the scored batch. ``views="all"`` scores the request's events exactly as ``obsad score`` scores the
same events in one file (the batch's windows are the window view's windows). ``views="event"`` scores with the
event view alone: the calibrated k-NN score (the combiner's ``z`` of the event view, against the same
threshold), which is what a single event can be judged on without a buffer of its neighbours in time.
``views="auto"`` (the default) takes ``event`` for a request holding one event and ``all`` for a batch, so a
stream of single events is never judged on a "window" of one event, and a batch answers as ``obsad score``. A lone
event on the event view is scored without building a table (:class:`obsad.single_event.SingleEventScorer`: the
same numbers, a fraction of the time) unless it needs the loader's repairs.

**Security.** Loopback only unless ``--allow-remote``; with ``--api-key-file`` (or ``$OBSAD_API_KEY``) every
``/v1/*`` call needs ``Authorization: Bearer <key>`` (constant-time compare) and reload is only possible with a
key; body size and batch size limits (413); no endpoint reads a path from the client.

**Champion/challenger.** ``--shadow DIR2 --shadow-log LOGDIR``: every scored batch is scored by the challenger
too, after the champion's answer has gone out, and both scores are appended to JSON Lines in ``LOGDIR``
(:mod:`obsad.serve.shadow`).

**Cores.** One process scores one batch at a time (most of the work holds Python's interpreter lock). With
``--workers N``, batches go, undecoded, to N scoring processes (:mod:`obsad.serve.pool`), N at once; single events
and small batches stay in the service process; a reload swaps the packages in all processes or none.

Modules: :mod:`~obsad.serve.models` (loading, versions, the similar-event index and its recall, the atomic
swap), :mod:`~obsad.serve.scoring` (bodies, per-event checks, the two views), :mod:`~obsad.serve.app` (FastAPI,
guards), :mod:`~obsad.serve.pool` (scoring processes), :mod:`~obsad.serve.shadow`, :mod:`~obsad.serve.metrics`,
:mod:`~obsad.serve.server` (start-up checks, uvicorn).
"""

from .app import create_app
from .models import ModelLoadError, ServedModel, load_served_model
from .server import ServeConfigError, serve

__all__ = ["ModelLoadError", "ServeConfigError", "ServedModel", "create_app", "load_served_model", "serve"]
