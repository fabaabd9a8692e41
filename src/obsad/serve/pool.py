"""Batches scored in processes of their own: ``obsad serve --workers N``.

One Python process scores one batch at a time on one core: most of a batch's work (decoding, flattening, typing
each column, the window view's bookkeeping) holds the interpreter lock, so threads do not add cores. With
``--workers N`` the service process keeps HTTP, the guards, the metrics, single events and small batches, and
hands each larger batch's body, as it came, to one of N scoring processes, each with its own copy of the packages;
the answer comes back as the bytes to send. Requests in flight at once are scored side by side, one per process.

The channel is the scoring process's stdin and stdout, in frames: 8 bytes (the header's and the payload's
lengths, little-endian), a JSON header, the payload. No pickle: bodies and answers are bytes, everything else
JSON. A reload is in two phases so that every process serves the same packages: each loads them (``prepare``)
and says which versions it got; only when all got the versions the service process loaded are they swapped in
(``commit``), else dropped (``abort``) and the reload refused. A scoring process that dies is replaced; the
request it held is answered 500.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import orjson

from .metrics import ServeMetrics

log = logging.getLogger("obsad.serve")

_PREFIX = struct.Struct("<II")


class WorkerGone(RuntimeError):
    """The scoring process exited (or closed its channel) before answering."""


class NoWorkers(RuntimeError):
    """No scoring process is running (all exited and could not be replaced)."""


def write_frame(stream, header: dict, payload: bytes = b"") -> None:
    head = orjson.dumps(header)
    stream.write(_PREFIX.pack(len(head), len(payload)) + head)
    if payload:
        stream.write(payload)
    stream.flush()


def _read_exactly(stream, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise EOFError(f"channel closed ({0 if not data else len(data)} of {n} bytes)")
    return data


def read_frame(stream) -> tuple[dict, bytes]:
    """The next frame: (header, payload); EOFError when the other side has closed the channel."""
    n_head, n_payload = _PREFIX.unpack(_read_exactly(stream, _PREFIX.size))
    header = orjson.loads(_read_exactly(stream, n_head))
    return header, (_read_exactly(stream, n_payload) if n_payload else b"")


class _Count:
    def __init__(self, tally: Tally, name: str) -> None:
        self._tally, self._name = tally, name

    def inc(self, amount: int = 1) -> None:
        with self._tally.lock:
            self._tally.values[self._name] += int(amount)


class Tally:
    """The counters a scoring process keeps (the same names and ``inc`` as the service's metrics), handed to
    the service process with each answer as the counts since the previous one."""

    NAMES = ServeMetrics.COUNTED

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values = dict.fromkeys(self.NAMES, 0)
        for name in self.NAMES:
            setattr(self, name, _Count(self, name))

    def take(self) -> dict[str, int]:
        with self.lock:
            out = {k: v for k, v in self.values.items() if v}
            self.values = dict.fromkeys(self.NAMES, 0)
        return out


def versions_of(state) -> dict:
    return {"champion": state.champion.version,
            "challenger": state.challenger.version if state.challenger is not None else None}


class _Worker:
    """One scoring process and its channel; used by one thread at a time (the pool sees to it)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self.pid = self.proc.pid
        self.versions: dict | None = None

    def ready(self) -> dict:
        """Wait for the process's first frame (its packages loaded): their versions; WorkerGone if it failed."""
        header, _ = self.receive()
        if not header.get("ok"):
            self.stop()
            raise WorkerGone(header.get("error") or "the scoring process could not load the packages")
        self.versions = header["versions"]
        return self.versions

    def send(self, header: dict, payload: bytes = b"") -> None:
        try:
            write_frame(self.proc.stdin, header, payload)
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise WorkerGone(f"scoring process {self.pid} is gone ({exc})") from exc

    def receive(self) -> tuple[dict, bytes]:
        try:
            return read_frame(self.proc.stdout)
        except (EOFError, OSError, ValueError) as exc:
            raise WorkerGone(f"scoring process {self.pid} exited (code {self.proc.poll()})") from exc

    def call(self, header: dict, payload: bytes = b"") -> tuple[dict, bytes]:
        self.send(header, payload)
        return self.receive()

    def stop(self, timeout: float = 10.0) -> None:
        try:
            self.proc.stdin.close()  # the process ends its loop, finishes its shadow log writes and exits
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ScoringProcesses:
    """``n`` scoring processes serving the packages at ``model_dir`` (and the challenger at ``shadow_dir``,
    its scores logged in ``shadow_log``), each on ``threads`` torch/FAISS threads, refusing more than
    ``max_batch`` events per request as the service does.

    :meth:`score` takes an idle process (waiting for one when all are busy), :meth:`reload_to` swaps the
    packages in all of them or none. Started here; the constructor returns when every process has loaded the
    packages, and refuses (:class:`~obsad.serve.models.ModelLoadError`) when one could not or they disagree.
    """

    def __init__(self, n: int, model_dir, shadow_dir=None, shadow_log=None, *, threads: int = 1,
                 max_batch: int = 1000, log_level: str = "warning") -> None:
        from .models import ModelLoadError

        if int(n) < 1:
            raise ValueError(f"workers must be at least 1, got {n}")
        self.argv = [sys.executable, "-m", "obsad.serve.pool", "--model", str(model_dir), "--threads", str(threads),
                     "--max-batch", str(max_batch), "--log-level", log_level]
        if shadow_dir is not None:
            self.argv += ["--shadow", str(shadow_dir), "--shadow-log", str(shadow_log)]
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy = 0
        self._starting = 0
        self._paused = False
        self._closed = False
        workers = [_Worker(self.argv) for _ in range(int(n))]  # all start loading at once
        try:
            found = [w.ready() for w in workers]
        except WorkerGone as exc:
            for w in workers:
                w.stop(timeout=2)
            raise ModelLoadError(f"a scoring process could not start: {exc}") from exc
        if any(v != found[0] for v in found):
            for w in workers:
                w.stop(timeout=2)
            raise ModelLoadError("the scoring processes loaded different packages (replaced during start-up?); "
                                 "start again")
        self.versions = found[0]
        self._idle = workers

    # ------------------------------------------------------------------ use
    @property
    def size(self) -> int:
        """Scoring processes running (idle or busy)."""
        with self._cond:
            return len(self._idle) + self._busy

    def _checkout(self) -> _Worker:
        with self._cond:
            while True:
                for dead in [w for w in self._idle if w.proc.poll() is not None]:  # exited while idle
                    self._idle.remove(dead)
                    self._respawn_locked(dead)
                if self._idle and not self._paused:
                    break
                if self._closed or (not self._paused and not self._idle and not self._busy and not self._starting):
                    raise NoWorkers("no scoring process is running")
                self._cond.wait()
            self._busy += 1
            return self._idle.pop()

    def _respawn_locked(self, worker: _Worker) -> None:
        """Start a replacement for ``worker`` in the background (the caller holds the lock)."""
        log.error("scoring process %s exited (code %s); starting another", worker.pid, worker.proc.poll())
        self._starting += 1
        threading.Thread(target=self._replace, name="obsad-respawn", daemon=True).start()

    def _checkin(self, worker: _Worker | None) -> None:
        with self._cond:
            self._busy -= 1
            if worker is not None:
                self._idle.append(worker)
            self._cond.notify_all()

    def score(self, body: bytes) -> tuple[int, bytes, dict]:
        """A ``/v1/score`` body scored by an idle process: (status, answer body, counts since its last answer)."""
        worker = self._checkout()
        try:
            header, answer = worker.call({"op": "score"}, body)
        except WorkerGone:
            self._lost(worker)
            raise
        self._checkin(worker)
        status = header.get("status")
        if not isinstance(status, int):
            raise RuntimeError(f"scoring process {worker.pid} answered without a status: {header}")
        return status, answer, header.get("counts", {})

    def _lost(self, worker: _Worker) -> None:
        """A process died holding a request: count it out and start a replacement in the background."""
        worker.stop(timeout=1)
        with self._cond:
            self._busy -= 1
            self._respawn_locked(worker)
            self._cond.notify_all()

    def _replace(self) -> None:
        worker = None
        try:
            worker = _Worker(self.argv)
            found = worker.ready()
            if found != self.versions:
                log.error("the replacement scoring process loaded %s, the service serves %s: not used (reload or "
                          "restart the service)", found, self.versions)
                worker.stop(timeout=2)
                worker = None
        except WorkerGone as exc:
            log.error("a replacement scoring process could not start: %s", exc)
            worker = None
        with self._cond:
            self._starting -= 1
            if worker is not None and not self._closed:
                self._idle.append(worker)
            elif worker is not None:
                worker.stop(timeout=2)
            self._cond.notify_all()

    def collect_counts(self) -> dict[str, int]:
        """The counts the idle processes hold (the challenger's, counted after their last answer went out);
        busy ones send theirs with their answer."""
        with self._cond:
            if self._paused or self._closed:
                return {}
            taken, self._idle = self._idle, []
            self._busy += len(taken)
        total: dict[str, int] = {}
        for w in taken:
            try:
                header, _ = w.call({"op": "counts"})
            except WorkerGone:
                self._lost(w)
                continue
            self._checkin(w)
            for name, n in header.get("counts", {}).items():
                total[name] = total.get(name, 0) + int(n)
        return total

    # ------------------------------------------------------------------ reload
    def reload_to(self, state) -> None:
        """Every process loads the packages again and takes them only if all got the versions of ``state``
        (what the service process has just loaded); otherwise none does and ModelLoadError says why. Waits for
        the requests in flight; new ones wait for the reload."""
        from .models import ModelLoadError

        wanted = versions_of(state)
        with self._cond:
            self._paused = True
            while self._busy:
                self._cond.wait()
            workers = list(self._idle)
        try:
            answers, gone = [], []
            for w in workers:  # all load at once
                try:
                    w.send({"op": "prepare"})
                except WorkerGone:
                    gone.append(w)
            for w in workers:
                if w in gone:
                    continue
                try:
                    answers.append((w, w.receive()[0]))
                except WorkerGone:
                    gone.append(w)
            problems = [f"process {w.pid}: {h.get('error')}" for w, h in answers if not h.get("ok")]
            problems += [f"process {w.pid} loaded {h['versions']}" for w, h in answers
                         if h.get("ok") and h["versions"] != wanted]
            problems += [f"process {w.pid} exited" for w in gone]
            verdict = "abort" if problems else "commit"
            for w, _ in answers:
                try:
                    w.call({"op": verdict})
                except WorkerGone:
                    gone.append(w)
            if problems:
                raise ModelLoadError("the scoring processes did not all load the new packages (" + "; ".join(problems)
                                     + "); nothing was swapped")
            self.versions = wanted
        finally:
            with self._cond:
                for w in gone:
                    if w in self._idle:
                        self._idle.remove(w)
                        w.stop(timeout=1)
                        self._respawn_locked(w)
                self._paused = False
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            while self._busy:
                self._cond.wait()
            workers, self._idle = self._idle, []
            self._cond.notify_all()
        for w in workers:
            w.stop()


# ---------------------------------------------------------------------------------------- the scoring process
def _score_body(state, body: bytes, max_batch: int, tally: Tally, shadow_scorer) -> tuple[int, bytes]:
    from .scoring import RequestError, encode_json, parse_json, parse_score_request, read_score_table, score_request

    try:
        req = read_score_table(body, max_batch) or parse_score_request(parse_json(body), max_batch)
        status, answer = score_request(state, req, tally, shadow_scorer)
    except RequestError as exc:
        status, answer = exc.status, {"error": exc.error, "detail": exc.detail}
    except Exception as exc:  # the service answers 500; the traceback goes to the log, never to the client
        log.exception("internal error while scoring a batch")
        status, answer = 500, {"error": "internal error", "detail": type(exc).__name__}
    return status, encode_json(answer)


def _load_state(args):
    from .models import ServingState, load_served_model

    champion = load_served_model(args.model)
    challenger = load_served_model(args.shadow) if args.shadow is not None else None
    return ServingState(champion, challenger)


def worker_main(argv=None) -> int:
    """A scoring process: load the packages, then answer frames on stdin until it closes."""
    ap = argparse.ArgumentParser(prog="python -m obsad.serve.pool", description="an obsad serve scoring process")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--shadow", type=Path, default=None)
    ap.add_argument("--shadow-log", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=1000)
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args(argv)
    # Ctrl+C reaches the whole process group: the service stops its scoring processes itself (it closes their
    # stdin), after the requests they hold are answered
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the channel is stdout, kept for frames alone: anything else written there goes to stderr (the server's log)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s %(name)s [scoring process {os.getpid()}]: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which build it loads: said once, by the service
    from ..runtime import collector_paused, freeze_loaded_objects
    from .models import ModelLoadError
    from .server import set_threads
    from .shadow import ShadowScorer

    set_threads(args.threads)
    try:
        state = _load_state(args)
    except (ModelLoadError, OSError) as exc:
        write_frame(out, {"ok": False, "error": str(exc)})
        return 1
    tally = Tally()
    shadow_scorer = ShadowScorer(args.shadow_log, tally) if state.challenger is not None else None
    pending = None
    freeze_loaded_objects()
    write_frame(out, {"ok": True, "versions": versions_of(state), "pid": os.getpid()})
    try:
        while True:
            try:
                header, payload = read_frame(inp)
            except EOFError:
                break
            op = header.get("op")
            if op == "score":
                with collector_paused():  # this process scores one request at a time, on this thread
                    status, answer = _score_body(state, payload, args.max_batch, tally, shadow_scorer)
                write_frame(out, {"status": status, "counts": tally.take()}, answer)
            elif op == "counts":
                write_frame(out, {"ok": True, "counts": tally.take()})
            elif op == "prepare":
                try:
                    pending = _load_state(args)
                    write_frame(out, {"ok": True, "versions": versions_of(pending)})
                except (ModelLoadError, OSError) as exc:
                    pending = None
                    write_frame(out, {"ok": False, "error": str(exc)})
            elif op == "commit" and pending is not None:
                state, pending = pending, None
                freeze_loaded_objects()
                write_frame(out, {"ok": True, "versions": versions_of(state)})
            elif op == "abort":
                pending = None
                write_frame(out, {"ok": True})
            else:
                write_frame(out, {"ok": False, "error": f"unknown operation {op!r}"})
    finally:
        if shadow_scorer is not None:
            shadow_scorer.close(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
