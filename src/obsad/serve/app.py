"""The HTTP surface: :func:`create_app` builds the FastAPI app around a model slot, its guards and endpoints.

Guards run before any endpoint, in one plain ASGI middleware (cheaper per request than Starlette's
``BaseHTTPMiddleware``): every ``/v1/*`` call needs ``Authorization: Bearer <key>`` when a key is set (compared
with :func:`hmac.compare_digest`), and a declared body larger than the limit is refused (413) before it is read.
Every answer, errors included, is JSON ``{"error": ..., "detail": ...}``; a traceback is logged, never sent.

Small batches are scored on the event loop itself (a thread hop costs more than a single event's scoring
saves); larger ones in one worker thread, so the loop keeps accepting requests and answering ``/healthz``, or,
with ``workers`` > 1, in scoring processes of their own (:mod:`obsad.serve.pool`), one batch per process at once.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..runtime import freeze_loaded_objects, worker_pool
from .metrics import ServeMetrics
from .models import ModelLoadError, ModelSlot, ServedModel, ServingState, load_served_model, measure_recall
from .scoring import (RequestError, encode_json, parse_json, parse_score_request, parse_similar_request,
                      read_score_table, score_request, similar_json)
from .pool import NoWorkers, ScoringProcesses, WorkerGone, versions_of
from .shadow import ShadowScorer

log = logging.getLogger("obsad.serve")

DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_BODY_BYTES = 8 << 20
INLINE_MAX_EVENTS = 64  # batches up to this size are scored on the event loop
#: With scoring processes, a body larger than this goes to one of them undecoded (decoding a batch is part of the
#: work they share out); a smaller one is decoded here, to score a single event or a small batch at once.
POOL_MIN_BODY_BYTES = 32 << 10


def json_response(status: int, body: dict, headers: dict | None = None) -> Response:
    """``body`` as compact UTF-8 JSON (:func:`~obsad.serve.scoring.encode_json`)."""
    return Response(content=encode_json(body), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, error: str, detail=None, headers: dict | None = None) -> Response:
    return json_response(status, {"error": error, "detail": detail}, headers)


async def _send_json(send, status: int, body: dict, extra_headers: list | None = None) -> None:
    data = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": data})


class GuardMiddleware:
    """API key on ``/v1/*``, declared body size, and request metrics (count by status, latency)."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, metrics: ServeMetrics) -> None:
        self.app = app
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.max_body_bytes = int(max_body_bytes)
        self.metrics = metrics

    def _authorised(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)
        return False

    def _declared_size(self, scope) -> int | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        status = [500]

        async def send_and_note(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.api_key is not None and path.startswith("/v1/") and not self._authorised(scope):
                status[0] = 401
                await _send_json(send, 401, {"error": "unauthorised",
                                             "detail": "send the API key as 'Authorization: Bearer <key>'"},
                                 [(b"www-authenticate", b"Bearer")])
                return
            declared = self._declared_size(scope)
            if declared is not None and declared > self.max_body_bytes:
                status[0] = 413
                await _send_json(send, 413, {"error": "body too large",
                                             "detail": f"{declared:,} bytes; at most {self.max_body_bytes:,}"},
                                 [(b"connection", b"close")])
                return
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.observe_request(self.metrics.endpoint_of(path), scope.get("method", ""), status[0],
                                         time.perf_counter() - started)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it grows past ``limit`` (a chunked body declares no size)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "body too large", f"more than {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _as_state(model, shadow) -> tuple[ServingState, Path | None, Path | None]:
    """A serving state from package paths (loaded and verified here) or already-built objects."""

    def served(obj) -> tuple[ServedModel, Path | None]:
        if isinstance(obj, ServedModel):
            return obj, Path(obj.pipeline.path) if obj.pipeline.path is not None else None
        if isinstance(obj, (str, os.PathLike)):
            return load_served_model(obj), Path(obj)
        if hasattr(obj, "score") and hasattr(obj, "similar_events"):  # an in-memory FittedPipeline
            built = ServedModel(pipeline=obj, version="in-memory", manifest={}, similar=measure_recall(obj),
                                loaded_at=time.time())
            built.single  # noqa: B018 - the one-event scorer, built before the first request
            return built, None
        raise TypeError(f"expected a model package path, a FittedPipeline or a ServedModel, got {type(obj).__name__}")

    champion, model_dir = served(model)
    challenger, shadow_dir = served(shadow) if shadow is not None else (None, None)
    return ServingState(champion, challenger), model_dir, shadow_dir


def create_app(model, *, shadow=None, shadow_log: str | os.PathLike | None = None, api_key: str | None = None,
               max_batch: int = DEFAULT_MAX_BATCH, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               inline_max: int = INLINE_MAX_EVENTS, workers: int = 1, worker_threads: int = 1,
               log_level: str = "warning") -> FastAPI:
    """The scoring service for ``model`` (a package directory, a ``FittedPipeline`` or a ``ServedModel``).

    ``shadow``: a challenger scored beside the champion on every ``/v1/score`` request, its scores appended to
    JSON Lines files in ``shadow_log``. ``api_key``: required on ``/v1/*`` (and needed for the reload
    endpoint) when given. ``max_batch`` events and ``max_body_bytes`` per request (413 beyond).

    ``workers`` > 1 (packages given as paths): batches of more than ``inline_max`` events are scored in that
    many processes of their own (:mod:`obsad.serve.pool`), each on ``worker_threads`` torch/FAISS threads, so
    that requests in flight at once use as many cores; this process keeps single events and small batches.
    """
    if max_batch < 1 or max_body_bytes < 1:
        raise ValueError("max_batch and max_body_bytes must be positive")
    state, model_dir, shadow_dir = _as_state(model, shadow)
    slot = ModelSlot(state, model_dir, shadow_dir) if model_dir is not None else None
    metrics = ServeMetrics()
    metrics.set_models(state.champion, state.challenger)
    shadow_scorer = ShadowScorer(shadow_log, metrics) if state.challenger is not None else None
    worker = worker_pool("obsad-score")  # FAISS on the threads set for this process (serve --threads)
    pool = pool_threads = None
    if workers > 1:
        if model_dir is None:
            raise ValueError("workers > 1 needs the packages as paths: each scoring process loads them")
        pool = ScoringProcesses(workers, model_dir, shadow_dir, shadow_log, threads=worker_threads,
                                max_batch=max_batch, log_level=log_level)
        if pool.versions != versions_of(state):
            pool.close()
            raise ModelLoadError("the scoring processes loaded other packages than the service (replaced during "
                                 "start-up?); start again")
        pool_threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="obsad-pool")
        metrics.scoring_processes.set(pool.size)
    current = (lambda: slot.current()) if slot is not None else (lambda: state)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        worker.shutdown(wait=True)
        if pool is not None:
            pool.close()
            pool_threads.shutdown(wait=True)
        if shadow_scorer is not None:
            shadow_scorer.close(wait=True)

    app = FastAPI(title="obsad scoring service", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.metrics = metrics
    app.state.current = current

    @app.exception_handler(RequestError)
    async def _request_error(_request: Request, exc: RequestError) -> Response:
        headers = {"connection": "close"} if exc.status == 413 else None
        return error_response(exc.status, exc.error, exc.detail, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        words = {404: "not found", 405: "method not allowed"}.get(exc.status_code, "request refused")
        return error_response(exc.status_code, words, f"{request.method} {request.url.path}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error", type(exc).__name__)

    async def score_in_pool(body: bytes) -> Response:
        try:
            status, answer, counts = await asyncio.get_running_loop().run_in_executor(pool_threads, pool.score, body)
        except WorkerGone as exc:
            raise RequestError(500, "internal error", f"the scoring process exited ({exc}); it is being replaced")
        except NoWorkers as exc:
            raise RequestError(503, "no scoring process", str(exc))
        finally:
            metrics.scoring_processes.set(pool.size)
        metrics.add_counts(counts)
        headers = {"connection": "close"} if status == 413 else None
        return Response(content=answer, status_code=status, media_type="application/json", headers=headers)

    @app.post("/v1/score")
    async def score(request: Request) -> Response:
        body = await read_body(request, max_body_bytes)
        if pool is not None and len(body) > POOL_MIN_BODY_BYTES:  # a batch, surely: decoded where it is scored
            return await score_in_pool(body)
        # a batch read by Arrow into a table where it reads it as the general path would (single events and small
        # batches: decoded, and a lone event scored without a table)
        req = (read_score_table(body, max_batch) if len(body) > POOL_MIN_BODY_BYTES else None) or \
            parse_score_request(parse_json(body), max_batch)
        if req.n_events <= inline_max:
            status, body = score_request(current(), req, metrics, shadow_scorer)
        elif pool is not None:
            return await score_in_pool(body)
        else:
            serving = current()  # this request's models, whatever a reload does meanwhile
            status, body = await asyncio.get_running_loop().run_in_executor(worker, score_request, serving, req,
                                                                            metrics, shadow_scorer)
        return json_response(status, body)

    @app.post("/v1/similar")
    async def similar(request: Request) -> Response:
        event, k = parse_similar_request(parse_json(await read_body(request, max_body_bytes)))
        serving = current()
        answer = await asyncio.get_running_loop().run_in_executor(worker, similar_json, serving.champion.pipeline,
                                                                  event, k)
        return json_response(200, {"model_version": serving.champion.version,
                                   "index": serving.champion.similar.to_dict(), **answer})

    @app.get("/v1/model")
    async def model_info() -> Response:
        serving = current()
        body = serving.champion.describe()
        body["shadow"] = serving.challenger.describe() if serving.challenger is not None else None
        body["limits"] = {"max_batch": max_batch, "max_body_bytes": max_body_bytes}
        return json_response(200, body)

    @app.post("/v1/admin/reload")
    async def reload() -> Response:
        if api_key is None:
            metrics.reloads.labels("refused").inc()
            raise RequestError(403, "reload needs an API key", "start the service with --api-key-file (or "
                                                               "OBSAD_API_KEY) to enable this endpoint")
        if slot is None:
            raise RequestError(409, "nothing to reload", "this service was built from an in-memory pipeline")
        try:
            before_swap = pool.reload_to if pool is not None else None
            old, new = await asyncio.get_running_loop().run_in_executor(None, slot.reload, before_swap)
        except ModelLoadError as exc:
            metrics.reloads.labels("refused").inc()
            log.warning("reload refused, still serving %s: %s", current().champion.version, exc)
            raise RequestError(422, "package refused", f"{exc} (still serving {current().champion.version})")
        metrics.reloads.labels("ok").inc()
        metrics.set_models(new.champion, new.challenger)
        await asyncio.get_running_loop().run_in_executor(None, freeze_loaded_objects)  # the new packages
        log.info("reloaded: %s -> %s; %s", old.champion.version, new.champion.version, new.champion.similar.describe())
        return json_response(200, {"previous_version": old.champion.version, "model_version": new.champion.version,
                                   "shadow_version": new.challenger.version if new.challenger else None,
                                   "similar_index": new.champion.similar.to_dict()})

    @app.get("/healthz")
    async def healthz() -> Response:
        serving = current()
        return json_response(200, {"status": "ok", "model_version": serving.champion.version,
                                   "shadow_version": serving.challenger.version if serving.challenger else None})

    @app.get("/metrics")
    async def metrics_text() -> Response:
        if pool is not None:  # what the scoring processes counted since their last answers
            metrics.add_counts(await asyncio.get_running_loop().run_in_executor(pool_threads, pool.collect_counts))
            metrics.scoring_processes.set(pool.size)
        return Response(content=metrics.render(), media_type=metrics.content_type)

    app.add_middleware(GuardMiddleware, api_key=api_key, max_body_bytes=max_body_bytes, metrics=metrics)
    return app
