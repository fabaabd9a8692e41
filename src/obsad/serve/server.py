"""Running the service: start-up checks (where it may listen, the API key), thread settings, uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("obsad.serve")

API_KEY_ENV = "OBSAD_API_KEY"
MIN_KEY_LENGTH = 16


class ServeConfigError(ValueError):
    """A start-up setting the service refuses; the message says what to change."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1): only this machine can connect."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_host(host: str, allow_remote: bool) -> None:
    if not is_loopback(host) and not allow_remote:
        raise ServeConfigError(
            f"--host {host} accepts connections from other machines; the service binds to loopback "
            "(127.0.0.1) unless you pass --allow-remote (and then set an API key with --api-key-file)")


def read_api_key(api_key_file: str | os.PathLike | None, environ=os.environ) -> str | None:
    """The API key from ``api_key_file`` (whole file, surrounding whitespace ignored), else ``$OBSAD_API_KEY``."""
    if api_key_file is not None:
        path = Path(api_key_file)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ServeConfigError(f"--api-key-file {path}: cannot be read ({exc})") from exc
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("--api-key-file %s can be read by other users (mode %o); chmod 600 it", path,
                        stat.S_IMODE(mode))
        where = f"--api-key-file {path}"
    elif environ.get(API_KEY_ENV):
        key, where = environ[API_KEY_ENV].strip(), f"${API_KEY_ENV}"
    else:
        return None
    if not key:
        raise ServeConfigError(f"{where}: the API key is empty")
    if not (key.isascii() and key.isprintable()) or any(ch.isspace() for ch in key):
        raise ServeConfigError(f"{where}: the API key must be printable ASCII without spaces")
    if len(key) < MIN_KEY_LENGTH:
        raise ServeConfigError(f"{where}: the API key is {len(key)} characters; use at least {MIN_KEY_LENGTH} "
                               "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return key


def set_threads(threads: int) -> None:
    """Threads for torch, FAISS and numpy's BLAS: one by default, the fastest for single events on a small
    machine (and, with several scoring processes, a BLAS pool sized to every core would spin against them)."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(int(threads))
    faiss.omp_set_num_threads(int(threads))
    threadpool_limits(int(threads), user_api="blas")


def serve(model: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8080, allow_remote: bool = False,
          api_key_file: str | os.PathLike | None = None, shadow: str | os.PathLike | None = None,
          shadow_log: str | os.PathLike | None = None, max_batch: int | None = None,
          max_body_bytes: int | None = None, threads: int = 1, workers: int = 1, log_level: str = "info") -> None:
    """Check the settings, load the package(s), and serve until interrupted (uvicorn in this process; with
    ``workers`` > 1, batches scored in that many scoring processes beside it)."""
    import uvicorn

    from ..runtime import freeze_loaded_objects
    from .app import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_host(host, allow_remote)
    if shadow is not None and shadow_log is None:
        raise ServeConfigError("--shadow needs --shadow-log DIR: where both models' scores are recorded")
    if shadow is None and shadow_log is not None:
        raise ServeConfigError("--shadow-log without --shadow: there is no challenger to record")
    api_key = read_api_key(api_key_file)
    if not is_loopback(host) and api_key is None:
        log.warning("listening on %s without an API key: anyone who can reach it can score and read the model", host)
    if int(workers) < 1:
        raise ServeConfigError(f"--workers {workers}: at least 1")
    set_threads(threads)
    app = create_app(model, shadow=shadow, shadow_log=shadow_log, api_key=api_key,
                     max_batch=max_batch or DEFAULT_MAX_BATCH, max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES,
                     workers=int(workers), worker_threads=threads, log_level=log_level)
    freeze_loaded_objects()  # the packages, loaded: out of the garbage collector's full passes
    serving = app.state.current()
    log.info("serving model %s from %s (views: %s)", serving.champion.version, model,
             ", ".join(serving.champion.pipeline.views))
    log.info("%s", serving.champion.similar.describe())
    if serving.challenger is not None:
        log.info("shadow model %s from %s, scores recorded in %s", serving.challenger.version, shadow, shadow_log)
    if workers > 1:
        log.info("batches scored in %d scoring processes, %d torch/FAISS thread(s) each", workers, threads)
    for warning in serving.champion.pipeline.warnings:
        log.warning("model package: %s", warning)
    config = uvicorn.Config(app, host=host, port=int(port), log_level=log_level.lower(), access_log=False,
                            server_header=False, timeout_keep_alive=30)
    uvicorn.Server(config).run()
