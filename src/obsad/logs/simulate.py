"""Simulated HDFS and nova (OpenStack) logs in the exact Loghub line formats, with the truth behind every line.

The real Loghub files label sessions but say nothing about templates, and their anomalies come in one fixed mix.
These simulators write files the same readers take (:mod:`obsad.logs.formats`) and add, per line, the event and
its true template (``<*>`` for every variable part), and, per session, the anomaly *kind*. Kinds differ in what
gives them away: a template never seen in normal sessions (easy), or only the order or the count of familiar
events, or only a number inside a familiar line (hard); :data:`HDFS_KINDS` and :data:`OPENSTACK_KINDS` say which.

How lines come about (numpy over all sessions at once; Python loops only over pattern steps and event types):

1. every session (a block, an instance, or a background run such as a periodic audit) goes through *phases*; a
   phase plays a *pattern* -- a fixed list of steps, each an event, a mean gap after the step it follows, and the
   replica it is about -- for all its sessions at once, optionally repeated (rounds). Gaps are exponential draws,
   so the same pattern gives different timings, and steps that follow an earlier step rather than the previous one
   (a namenode hearing of a replica) may overtake it: normal sessions are not all alike;
2. anomalies are other patterns or extra phases: a pipeline that breaks, a replica that goes missing, steps in the
   wrong order, too many rounds, durations ten times too long;
3. all steps of all sessions are sorted by time, which interleaves thousands of lifecycles as on a real cluster;
4. each event type renders its lines with Arrow string kernels, then headers are added.

The same seed gives the same lines, and :meth:`LogSimulation.write` gives byte-identical files.
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..io import atomic_path, write_parquet
from .formats import HDFS, OPENSTACK, LogFormat

# Which node a step is about: a replica of the write pipeline (0, 1, 2, ...) or one of these.
NONE, CLIENT, READER, SOURCE, TARGET = -1, -2, -3, -4, -5
WIDTH = 12  #: replica slots per block; SOURCE is ``round % 3``, TARGET is ``3 + round``
MAX_ROUNDS = WIDTH - 3

_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Event:
    """One event type: its log level, component, message with ``{field}`` for each variable part, and where it runs.

    ``source`` is the process that writes it (HDFS: ``namenode``, ``monitor``, ``datanode``; nova: ``api``,
    ``scheduler``, ``compute``). ``context`` (nova) is the request in brackets: ``build``, ``delete`` (the
    session's requests), ``own`` (a fresh one) or ``none`` (``-``), then ``user`` (with user and project ids) or
    ``anon``.
    """

    id: str
    level: str
    component: str
    text: str
    source: str
    context: str = "none anon"

    @property
    def template(self) -> str:
        return _FIELD.sub("<*>", self.text)


@dataclass(frozen=True)
class Step:
    """One step of a pattern: ``event`` happens ``gap`` seconds (mean of an exponential) after step ``after``.

    ``after`` names an earlier step's ``key`` (default: the previous step); ``scaled`` multiplies the gap by the
    session's scale (a transfer time, a spawn time). ``slot``/``peer``: the node the line is about, and the other
    end.
    """

    event: str
    gap: float = 0.0
    slot: int = NONE
    peer: int = NONE
    key: str | None = None
    after: str | None = None
    scaled: bool = False


@dataclass
class LogSimulation:
    """Raw log lines in a Loghub format, and the truth: per line its session and template, per session its label."""

    name: str
    format: LogFormat
    lines: pd.Series
    truth: pd.DataFrame
    labels: pd.DataFrame
    templates: pd.DataFrame
    seed: int

    def write(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Write ``<name>.log``, ``anomaly_label.csv`` (Loghub layout) and ``<name>_truth.parquet``, atomically."""
        out = Path(directory)
        log_path, label_path = out / f"{self.name}.log", out / "anomaly_label.csv"
        with atomic_path(log_path) as tmp:
            tmp.write_bytes(("\n".join(self.lines.to_list()) + "\n").encode("utf-8"))
        labels = pd.DataFrame({
            self.format.session_column: self.labels["session_id"],
            "Label": np.where(self.labels["is_anomaly"], "Anomaly", "Normal"),
        })
        with atomic_path(label_path) as tmp:
            labels.to_csv(tmp, index=False, lineterminator="\n")
        truth_path = write_parquet(self.truth, out / f"{self.name}_truth.parquet")
        return {"log": log_path, "labels": label_path, "truth": truth_path}


# --------------------------------------------------------------------------------------------------
# Vectorised string helpers (Arrow arrays in, Arrow arrays out)
# --------------------------------------------------------------------------------------------------


def _join(*parts) -> pa.Array:
    """Concatenate arrays and literal strings element-wise."""
    return pc.binary_join_element_wise(*parts, "")


def _str(values) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64)).cast(pa.string())


def _pad(values, width: int) -> pa.Array:
    return pc.utf8_lpad(_str(values), width=width, padding="0")


def _fixed(values, decimals: int) -> pa.Array:
    """Numbers with a fixed number of decimals (``0.2477829``), as Python's ``f"{x:.7f}"`` for x >= 0."""
    scaled = np.round(np.asarray(values, dtype=float) * 10**decimals).astype(np.int64)
    return _join(_str(scaled // 10**decimals), ".", _pad(scaled % 10**decimals, decimals))


def _fixed_width(chars: np.ndarray) -> pa.Array:
    """Rows of a ``(n, width)`` uint8 matrix as ASCII strings, built straight from the buffer."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars)))


def _hex(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    return np.frombuffer(bytearray(binascii.hexlify(raw.tobytes())), dtype=np.uint8).reshape(n, 2 * nbytes)


def _hex_ids(rng: np.random.Generator, n: int, nbytes: int) -> pa.Array:
    """Random lowercase hex strings (project and user ids, file hashes)."""
    return _fixed_width(_hex(rng, n, nbytes))


_UUID_HEX = np.r_[0:8, 9:13, 14:18, 19:23, 24:36]


def _uuids(rng: np.random.Generator, n: int) -> pa.Array:
    """Random version-4 UUIDs as strings (instance, request and port ids)."""
    digits = _hex(rng, n, 16)
    digits[:, 12] = ord("4")
    digits[:, 16] = np.frombuffer(b"89ab", dtype=np.uint8)[rng.integers(0, 4, n)]
    chars = np.full((n, 36), ord("-"), dtype=np.uint8)
    chars[:, _UUID_HEX] = digits
    return _fixed_width(chars)


def _pick(rng: np.random.Generator, options, n: int) -> pa.Array:
    return pa.array(list(options), type=pa.string()).take(rng.integers(0, len(options), n))


def _strftime(seconds: np.ndarray, fmt: str) -> pa.Array:
    return pc.strftime(pa.array(seconds.astype("datetime64[s]")), format=fmt)


# --------------------------------------------------------------------------------------------------
# The engine: patterns played for many sessions at once
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pattern:
    event: np.ndarray
    gap: np.ndarray
    slot: np.ndarray
    peer: np.ndarray
    after: np.ndarray
    scaled: np.ndarray


def _compile(steps: list[Step], codes: Mapping[str, int]) -> _Pattern:
    keys = {s.key: i for i, s in enumerate(steps) if s.key}
    after = [keys[s.after] if s.after else i - 1 for i, s in enumerate(steps)]
    if any(a >= i for i, a in enumerate(after)):
        raise ValueError("a step can only follow an earlier step")
    return _Pattern(
        event=np.array([codes[s.event] for s in steps], dtype=np.int16),
        gap=np.array([s.gap for s in steps], dtype=float),
        slot=np.array([s.slot for s in steps], dtype=np.int16),
        peer=np.array([s.peer for s in steps], dtype=np.int16),
        after=np.array(after, dtype=np.int64),
        scaled=np.array([s.scaled for s in steps], dtype=bool),
    )


def _play(pattern: _Pattern, sessions: np.ndarray, starts: np.ndarray, rng: np.random.Generator, *,
          scale: np.ndarray | None = None, rounds: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Play ``pattern`` ``rounds`` times in a row for each session from ``starts``; return its steps and end times."""
    n, length = len(sessions), len(pattern.event)
    rounds = np.ones(n, dtype=np.int64) if rounds is None else np.asarray(rounds, dtype=np.int64)
    owner = np.repeat(np.arange(n), rounds)  # one row per (session, round)
    first_row = np.cumsum(rounds) - rounds
    round_no = np.arange(len(owner)) - np.repeat(first_row, rounds)

    gaps = rng.exponential(1.0, size=(len(owner), length)) * pattern.gap
    if scale is not None:
        gaps[:, pattern.scaled] *= scale[owner][:, None]
    rel = np.zeros_like(gaps)
    for j in range(length):
        rel[:, j] = (rel[:, pattern.after[j]] if j else 0.0) + gaps[:, j]
    span = rel.max(axis=1) if length else np.zeros(len(owner))
    ended = np.cumsum(span)  # rounds follow each other: offset = spans of the session's earlier rounds
    offset = ended - span - np.repeat((ended - span)[first_row[rounds > 0]], rounds[rounds > 0])
    elapsed = offset[:, None] + rel

    slot = np.broadcast_to(pattern.slot, rel.shape).copy()
    peer = np.broadcast_to(pattern.peer, rel.shape).copy()
    for codes in (slot, peer):
        codes[codes == SOURCE] = np.broadcast_to((round_no % 3)[:, None], rel.shape)[codes == SOURCE]
        codes[codes == TARGET] = np.broadcast_to((3 + round_no)[:, None], rel.shape)[codes == TARGET]
    steps = {
        "session": np.repeat(sessions[owner], length),
        "event": np.tile(pattern.event, len(owner)),
        "t": (starts[owner][:, None] + elapsed).ravel(),
        "elapsed": elapsed.ravel(),
        "slot": slot.ravel(),
        "peer": peer.ravel(),
        "round": np.repeat(round_no, length),
    }
    ends = starts + np.bincount(owner, weights=span, minlength=n)
    return steps, ends


class _Timeline:
    """Sessions' clocks and the steps played so far; each phase starts where the session's previous one ended."""

    def __init__(self, patterns: Mapping[str, list[Step]], events: tuple[Event, ...], clock: np.ndarray,
                 rng: np.random.Generator):
        codes = {e.id: i for i, e in enumerate(events)}
        self.patterns = {name: _compile(steps, codes) for name, steps in patterns.items()}
        self.clock = clock
        self.rng = rng
        self.parts: list[dict] = []

    def play(self, name: str, mask: np.ndarray, *, scale=None, rounds=None, starts=None, advance=True) -> None:
        sessions = np.flatnonzero(mask)
        if len(sessions) == 0:
            return
        begin = self.clock[sessions] if starts is None else np.asarray(starts, dtype=float)[sessions]
        steps, ends = _play(self.patterns[name], sessions, begin, self.rng,
                            scale=None if scale is None else np.asarray(scale, dtype=float)[sessions],
                            rounds=None if rounds is None else np.asarray(rounds)[sessions])
        self.parts.append(steps)
        if advance:
            self.clock[sessions] = ends

    def background(self, name: str, first_session: int, starts: np.ndarray) -> None:
        """Sessions no label speaks of (periodic jobs, listings), numbered from ``first_session``."""
        steps, _ = _play(self.patterns[name], first_session + np.arange(len(starts)), starts, self.rng)
        self.parts.append(steps)

    def steps(self) -> dict:
        """All steps, sorted by time (ties: in the order they were played)."""
        steps = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        order = np.argsort(steps["t"], kind="stable")
        return {k: v[order] for k, v in steps.items()}


class _Rows:
    """The steps of one event type, handed to field renderers."""

    def __init__(self, steps: dict, index: np.ndarray, rng: np.random.Generator):
        self.n = len(index)
        self.rng = rng
        for key, values in steps.items():
            setattr(self, key, values[index])


def _render(events: tuple[Event, ...], steps: dict, fields: Mapping[str, Callable[[_Rows], pa.Array]],
            rng: np.random.Generator) -> pa.Array:
    """The message of every step, one event type at a time (vectorised within the type)."""
    order = np.argsort(steps["event"], kind="stable")
    bounds = np.searchsorted(steps["event"][order], np.arange(len(events) + 1))
    pieces = []
    for code, event in enumerate(events):
        index = order[bounds[code]:bounds[code + 1]]
        if len(index) == 0:
            continue
        rows = _Rows(steps, index, rng)
        parts = [fields[p](rows) if i % 2 else p for i, p in enumerate(_FIELD.split(event.text))]
        parts = [p for p in parts if not isinstance(p, str) or p]
        pieces.append(_join(*parts) if any(isinstance(p, pa.Array) for p in parts)
                      else pa.array([event.text] * len(index), type=pa.string()))
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return pa.concat_arrays(pieces).take(pa.array(inverse))


def _assign_kinds(rng: np.random.Generator, n: int, rate: float, defaults: Mapping[str, tuple[float, str]],
                  kinds: Mapping[str, float] | None) -> np.ndarray:
    """Kind per session: ``round(rate * n)`` anomalies, shared between kinds as given (largest remainders)."""
    if n < 1:
        raise ValueError(f"need at least one session, got {n}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"anomaly_rate must be within [0, 1], got {rate}")
    shares = {k: v[0] for k, v in defaults.items()} if kinds is None else dict(kinds)
    unknown = sorted(set(shares) - set(defaults))
    if unknown or not shares or any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
        raise ValueError(f"kinds must give non-negative shares of {sorted(defaults)}, got {shares}")
    names = list(shares)
    p = np.array([shares[k] for k in names], dtype=float) / sum(shares.values())
    n_anomalous = int(round(rate * n))
    counts = np.floor(p * n_anomalous).astype(int)
    counts[np.argsort(-(p * n_anomalous - counts), kind="stable")[: n_anomalous - counts.sum()]] += 1
    kind = np.full(n, "normal", dtype=object)
    kind[rng.permutation(n)[:n_anomalous]] = np.repeat(names, counts)
    return kind


def _result(name: str, fmt: LogFormat, events: tuple[Event, ...], steps: dict, lines: pa.Array,
            session_text: pa.Array, visible: np.ndarray, n_sessions: int, kind: np.ndarray,
            seed: int) -> LogSimulation:
    """Package lines and truth; ``visible[e]`` says whether event type ``e`` names its session in the text."""
    event_ids = pa.array([e.id for e in events]).take(pa.array(steps["event"]))
    templates = pa.array([e.template for e in events]).take(pa.array(steps["event"]))
    own = steps["session"] < n_sessions  # background runs belong to no labelled session
    nothing = pa.scalar(None, pa.string())
    origin = pc.if_else(pa.array(own), session_text.take(pa.array(np.where(own, steps["session"], 0))), nothing)
    session = pc.if_else(pa.array(visible[steps["event"]]), origin, nothing)
    string = pd.StringDtype("pyarrow")
    truth = pd.DataFrame({
        "line_no": np.arange(1, len(lines) + 1, dtype=np.int64),
        "session_id": pd.Series(pd.arrays.ArrowStringArray(session)),
        "origin": pd.Series(pd.arrays.ArrowStringArray(origin)),
        "event_id": pd.Series(pd.arrays.ArrowStringArray(event_ids)),
        "template": pd.Series(pd.arrays.ArrowStringArray(templates)),
    })
    labels = pd.DataFrame({
        "session_id": pd.Series(pd.arrays.ArrowStringArray(session_text.slice(0, n_sessions))).astype(string),
        "is_anomaly": kind != "normal",
        "kind": pd.Series(kind, dtype=string),
    })
    catalogue = pd.DataFrame({
        "event_id": [e.id for e in events], "template": [e.template for e in events],
        "level": [e.level for e in events], "component": [e.component for e in events],
    }).astype(string)
    return LogSimulation(name=name, format=fmt, lines=pd.Series(pd.arrays.ArrowStringArray(lines)), truth=truth,
                         labels=labels, templates=catalogue, seed=seed)


# --------------------------------------------------------------------------------------------------
# HDFS: block lifecycles on a 203-node Hadoop cluster (HDFS_v1)
# --------------------------------------------------------------------------------------------------

HDFS_EVENTS: tuple[Event, ...] = (
    Event("E1", "WARN", "dfs.FSDataset", "Adding an already existing block {block}", "datanode"),
    Event("E2", "INFO", "dfs.DataBlockScanner", "Verification succeeded for {block}", "datanode"),
    Event("E3", "INFO", "dfs.DataNode$DataXceiver", "{node} Served block {block} to /{peer_ip}", "datanode"),
    Event("E4", "WARN", "dfs.DataNode$DataXceiver", "{node}:Got exception while serving {block} to /{peer_ip}:",
          "datanode"),
    Event("E5", "INFO", "dfs.DataNode$DataXceiver", "Receiving block {block} src: /{source} dest: /{node}",
          "datanode"),
    Event("E6", "INFO", "dfs.DataNode$DataXceiver",
          "Received block {block} src: /{source} dest: /{node} of size {size}", "datanode"),
    Event("E7", "INFO", "dfs.DataNode$DataXceiver", "writeBlock {block} received exception {exception}",
          "datanode"),
    Event("E8", "INFO", "dfs.DataNode$PacketResponder", "PacketResponder {responder} for block {block} Interrupted.",
          "datanode"),
    Event("E9", "INFO", "dfs.DataNode$PacketResponder", "Received block {block} of size {size} from /{peer_ip}",
          "datanode"),
    Event("E10", "INFO", "dfs.DataNode$PacketResponder", "PacketResponder {block} {responder} Exception {exception}",
          "datanode"),
    Event("E11", "INFO", "dfs.DataNode$PacketResponder", "PacketResponder {responder} for block {block} terminating",
          "datanode"),
    Event("E12", "WARN", "dfs.DataNode$DataXceiver", "{node}:Exception writing block {block} to mirror {peer}",
          "datanode"),
    Event("E13", "INFO", "dfs.DataNode$BlockReceiver", "Receiving empty packet for block {block}", "datanode"),
    Event("E14", "INFO", "dfs.DataNode$BlockReceiver", "Exception in receiveBlock for block {block} {exception}",
          "datanode"),
    Event("E15", "INFO", "dfs.DataNode$BlockReceiver",
          "Changing block file offset of block {block} from {offset} to {new_offset} meta file offset to "
          "{meta_offset}", "datanode"),
    Event("E16", "INFO", "dfs.DataNode$DataTransfer", "{node}:Transmitted block {block} to /{peer}", "datanode"),
    Event("E17", "WARN", "dfs.DataNode", "{node}:Failed to transfer {block} to {peer} got {exception}", "datanode"),
    Event("E18", "INFO", "dfs.DataNode", "{node} Starting thread to transfer block {block} to {peer}", "datanode"),
    Event("E19", "INFO", "dfs.FSDataset", "Reopen Block {block}", "datanode"),
    Event("E20", "WARN", "dfs.FSDataset",
          "Unexpected error trying to delete block {block}. BlockInfo not found in volumeMap.", "datanode"),
    Event("E21", "INFO", "dfs.FSDataset", "Deleting block {block} file {block_file}", "datanode"),
    Event("E22", "INFO", "dfs.FSNamesystem", "BLOCK* NameSystem.allocateBlock: {path}. {block}", "namenode"),
    Event("E23", "INFO", "dfs.FSNamesystem", "BLOCK* NameSystem.delete: {block} is added to invalidSet of {node}",
          "namenode"),
    Event("E24", "INFO", "dfs.FSNamesystem",
          "BLOCK* Removing block {block} from neededReplications as it does not belong to any file.", "namenode"),
    Event("E25", "INFO", "dfs.FSNamesystem", "BLOCK* ask {node} to replicate {block} to datanode(s) {peer}",
          "monitor"),
    Event("E26", "INFO", "dfs.FSNamesystem",
          "BLOCK* NameSystem.addStoredBlock: blockMap updated: {node} is added to {block} size {size}", "namenode"),
    Event("E27", "INFO", "dfs.FSNamesystem",
          "BLOCK* NameSystem.addStoredBlock: Redundant addStoredBlock request received for {block} on {node} "
          "size {size}", "namenode"),
    Event("E28", "INFO", "dfs.FSNamesystem",
          "BLOCK* NameSystem.addStoredBlock: addStoredBlock request received for {block} on {node} size {size} "
          "But it does not belong to any file.", "namenode"),
    Event("E29", "WARN", "dfs.PendingReplicationMonitor", "PendingReplicationMonitor timed out block {block}",
          "monitor"),
)

#: anomaly kind -> (default share of the anomalies, what gives it away)
HDFS_KINDS: dict[str, tuple[float, str]] = {
    "write_exception": (0.25, "new templates: the write pipeline breaks (exceptions, interrupted responders)"),
    "transfer_failure": (0.08, "new templates: a re-replication fails and times out"),
    "redundant_add": (0.07, "new templates: the namenode is told twice about a replica"),
    "delete_failure": (0.07, "new templates: a datanode cannot delete its replica"),
    "missing_replica": (0.15, "counts only: one of three replicas is never confirmed"),
    "unrecorded_block": (0.10, "missing steps only: no addStoredBlock at all"),
    "wrong_order": (0.13, "order only: the namenode records replicas before any data arrives"),
    "over_replicated": (0.15, "counts only: three to six re-replication rounds instead of at most one"),
}


def _acks(slots=(2, 1, 0)) -> list[Step]:
    """Pipeline acknowledgements, last datanode first; the namenode hears of each replica a little later."""
    steps, previous = [], None
    for slot in slots:
        upstream = slot - 1 if slot else CLIENT
        first = previous is None
        steps += [
            Step("E11", 1.0 if first else 0.02, slot=slot, after=previous, scaled=first),
            Step("E9", 0.002, slot=slot, peer=upstream, key=f"got{slot}"),
            Step("E26", 0.3, slot=slot, after=f"got{slot}"),
        ]
        previous = f"got{slot}"
    return steps


_RECEIVE = [Step("E5", 0.01, slot=0, peer=CLIENT), Step("E5", 0.01, slot=1, peer=0), Step("E5", 0.01, slot=2, peer=1)]

HDFS_PATTERNS: dict[str, list[Step]] = {
    "write": [Step("E22"), *_RECEIVE, *_acks()],
    "write_missing_replica": [Step("E22"), *_RECEIVE, *_acks((2, 0))],
    "write_unrecorded": [Step("E22"), *_RECEIVE, *[s for s in _acks() if s.event != "E26"]],
    "write_wrong_order": [Step("E22"), *(Step("E26", 0.05, slot=s) for s in (0, 1, 2)), *_RECEIVE,
                          *[s for s in _acks() if s.event != "E26"]],
    "write_broken": [
        Step("E22"), *_RECEIVE,
        Step("E14", 0.5, slot=2, scaled=True), Step("E7", 0.002, slot=2), Step("E12", 0.01, slot=1, peer=2),
        Step("E10", 0.01, slot=1), Step("E8", 0.01, slot=0), Step("E11", 0.01, slot=0),
        Step("E9", 0.002, slot=0, peer=CLIENT), Step("E26", 0.3, slot=0),
    ],
    "write_recovered": [
        Step("E22"), *_RECEIVE,
        Step("E13", 0.5, slot=2, scaled=True), Step("E10", 0.01, slot=1), Step("E19", 2.0, slot=0),
        Step("E15", 0.01, slot=0), *_acks((1, 0)),
    ],
    "replicate": [
        Step("E25", 30.0, slot=SOURCE, peer=TARGET), Step("E18", 1.0, slot=SOURCE, peer=TARGET),
        Step("E5", 0.01, slot=TARGET, peer=SOURCE), Step("E6", 1.0, slot=TARGET, peer=SOURCE, scaled=True),
        Step("E16", 0.01, slot=SOURCE, peer=TARGET), Step("E26", 0.3, slot=TARGET),
    ],
    "transfer_failure": [
        Step("E25", 30.0, slot=SOURCE, peer=TARGET), Step("E18", 1.0, slot=SOURCE, peer=TARGET),
        Step("E17", 5.0, slot=SOURCE, peer=TARGET), Step("E29", 300.0),
    ],
    "redundant": [Step("E26", 30.0, slot=1), Step("E27", 0.01, slot=1), Step("E1", 0.05, slot=1)],
    "serve": [Step("E3", 300.0, slot=SOURCE, peer=READER)],
    "serve_failed": [Step("E3", 300.0, slot=SOURCE, peer=READER), Step("E4", 0.5, slot=SOURCE, peer=READER)],
    "verify": [Step("E2", 900.0)],
    "delete": [Step("E23", 600.0, slot=0), Step("E23", 0.001, slot=1), Step("E23", 0.001, slot=2, key="asked"),
               *(Step("E21", 3.0, slot=s, after="asked") for s in (0, 1, 2))],  # datanodes delete in parallel
    "delete_failed": [Step("E23", 600.0, slot=0), Step("E23", 0.001, slot=1), Step("E23", 0.001, slot=2),
                      Step("E21", 3.0, slot=0), Step("E21", 3.0, slot=2), Step("E20", 3.0, slot=1),
                      Step("E28", 30.0, slot=1), Step("E24", 0.01)],
}

_HDFS_EXCEPTIONS = (
    "java.io.IOException: Connection reset by peer",
    "java.io.EOFException",
    "java.io.IOException: Could not read from stream",
    "java.io.InterruptedIOException: Interruped while waiting for IO on channel "
    "java.nio.channels.SocketChannel[closed]. 0 millis timeout left.",
    "java.net.SocketTimeoutException: 63000 millis timeout while waiting for channel to be ready for read.",
    "java.io.IOException: Broken pipe",
)
_HDFS_DATASETS = ("rand", "randtxt", "sortrand", "rand7", "sortrand2", "randtxt3")
_SYSTEM_FILES = ("job.jar", "job.split", "job.xml")


def _hdfs_blocks(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """When each block is allocated, by which job, as which task: MapReduce jobs arrive and write bursts."""
    job_sizes = 3 + rng.geometric(1 / 40, size=n)
    job = np.repeat(np.arange(n), job_sizes)[:n]
    first = np.r_[0, np.cumsum(job_sizes)][job]
    task = np.arange(n) - first
    gaps = rng.exponential(0.25, size=n)
    within = np.cumsum(gaps) - np.cumsum(gaps)[first] + gaps[first]
    starts = rng.exponential(10.0, size=n).cumsum()[job] + within
    order = np.argsort(starts, kind="stable")
    return starts[order], job[order], task[order]


def simulate_hdfs(n_blocks: int = 10_000, seed: int = 0, anomaly_rate: float = 0.03,
                  start: str = "2008-11-09 20:00:00", kinds: Mapping[str, float] | None = None) -> LogSimulation:
    """Block lifecycles of an HDFS cluster as ``HDFS.log`` lines (HDFS_v1 layout), with truth and labels.

    A block is allocated by the namenode, written through a pipeline of three datanodes (receiving, responders
    terminating, received, then ``addStoredBlock`` per replica), and later maybe re-replicated, read, verified and
    deleted. About four blocks start per second in MapReduce bursts, so hundreds are open at once. ``kinds``
    overrides the shares of :data:`HDFS_KINDS` among the ``round(anomaly_rate * n_blocks)`` anomalous blocks.
    """
    rng = np.random.default_rng(seed)
    kind = _assign_kinds(rng, n_blocks, anomaly_rate, HDFS_KINDS, kinds)
    starts, job, task = _hdfs_blocks(rng, n_blocks)
    system = task < len(_SYSTEM_FILES)
    size = np.where(system, rng.integers(5_000, 200_000, n_blocks),
                    np.where(rng.random(n_blocks) < 0.7, 67_108_864, rng.integers(1, 67_108_864, n_blocks)))
    transfer = np.maximum(size / 40e6 * rng.lognormal(0.0, 0.4, n_blocks), 0.05)  # seconds at ~40 MB/s

    timeline = _Timeline(HDFS_PATTERNS, HDFS_EVENTS, starts.copy(), rng)
    broken = rng.random(n_blocks) < 0.5
    write = np.select(
        [kind == "missing_replica", kind == "unrecorded_block", kind == "wrong_order",
         (kind == "write_exception") & broken, kind == "write_exception"],
        ["write_missing_replica", "write_unrecorded", "write_wrong_order", "write_broken", "write_recovered"],
        "write")
    for pattern in ("write", "write_missing_replica", "write_unrecorded", "write_wrong_order", "write_broken",
                    "write_recovered"):
        timeline.play(pattern, write == pattern, scale=transfer)
    healthy = kind != "write_exception"
    replicate_rounds = np.where(kind == "over_replicated", rng.integers(3, 7, n_blocks),
                                ((kind == "normal") & (rng.random(n_blocks) < 0.04)).astype(int))
    timeline.play("replicate", replicate_rounds > 0, scale=transfer, rounds=replicate_rounds)
    timeline.play("transfer_failure", kind == "transfer_failure")
    timeline.play("redundant", kind == "redundant_add")
    reads = np.where(healthy & (rng.random(n_blocks) < 0.4), rng.integers(1, 4, n_blocks), 0)
    timeline.play("serve", reads > 0, rounds=reads)
    timeline.play("serve_failed", healthy & (rng.random(n_blocks) < 0.03))
    timeline.play("verify", healthy & (rng.random(n_blocks) < 0.25))
    timeline.play("delete", (kind != "delete_failure") & (rng.random(n_blocks) < 0.8))
    timeline.play("delete_failed", kind == "delete_failure")
    steps = timeline.steps()

    # The cluster: 203 datanodes; each block's replicas are distinct nodes (strides that cannot wrap around).
    n_nodes = 203
    codes = rng.choice(2 * 254 * 254, size=n_nodes, replace=False)
    node_ip = _join("10.", _str(250 + codes // (254 * 254)), ".", _str(codes // 254 % 254 + 1), ".",
                    _str(codes % 254 + 1))
    node_addr = _join(node_ip, ":50010")
    strides = rng.integers(1, n_nodes // WIDTH, size=(n_blocks, WIDTH))
    strides[:, 0] = rng.integers(0, n_nodes, n_blocks)
    replicas = np.cumsum(strides, axis=1) % n_nodes
    client = np.where(rng.random(n_blocks) < 0.7, replicas[:, 0], rng.integers(0, n_nodes, n_blocks))

    ids = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=n_blocks, dtype=np.int64)
    while len(np.unique(ids)) < n_blocks:  # a collision in 2**64 is rare, but a label must name one block
        _, first = np.unique(ids, return_index=True)
        again = np.setdiff1d(np.arange(n_blocks), first)
        ids[again] = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=len(again), dtype=np.int64)
    block = _join("blk_", _str(ids))
    stamp = pd.Timestamp(start).strftime("%Y%m%d%H%M")
    job_dir = _join(stamp, "_", _pad(job + 1, 4))
    output = _join("/user/root/", _pick(rng, _HDFS_DATASETS, n_blocks), "/_temporary/_task_", job_dir, "_m_",
                   _pad(task - 3, 6), "_0/part-", _pad(task - 3, 5))
    system_file = pa.array(list(_SYSTEM_FILES)).take(pa.array(np.minimum(task, 2)))
    path = pc.if_else(pa.array(system), _join("/mnt/hadoop/mapred/system/job_", job_dir, "/", system_file), output)
    size_text = _str(size)

    def node_of(codes: np.ndarray, rows: _Rows) -> pa.Array:
        index = np.zeros(rows.n, dtype=np.int64)
        regular = codes >= 0
        index[regular] = replicas[rows.session[regular], codes[regular]]
        index[codes == CLIENT] = client[rows.session[codes == CLIENT]]
        reader = codes == READER
        index[reader] = (client[rows.session[reader]] + 1 + 37 * rows.round[reader]) % n_nodes
        return pa.array(index)

    fields = {
        "block": lambda r: block.take(pa.array(r.session)),
        "node": lambda r: node_addr.take(node_of(r.slot, r)),
        "peer": lambda r: node_addr.take(node_of(r.peer, r)),
        "peer_ip": lambda r: node_ip.take(node_of(r.peer, r)),
        "source": lambda r: _join(node_ip.take(node_of(r.peer, r)), ":", _str(r.rng.integers(30_000, 61_000, r.n))),
        "size": lambda r: size_text.take(pa.array(r.session)),
        "path": lambda r: path.take(pa.array(r.session)),
        "responder": lambda r: _str(np.clip(2 - r.slot, 0, 2)),
        "exception": lambda r: _pick(r.rng, _HDFS_EXCEPTIONS, r.n),
        "block_file": lambda r: _join("/mnt/hadoop/dfs/data/current/subdir", _str(r.rng.integers(0, 64, r.n)), "/",
                                      block.take(pa.array(r.session))),
        "offset": lambda r: _str(r.rng.integers(1, 1 << 26, r.n)),
        "new_offset": lambda r: _str(r.rng.integers(1, 1 << 26, r.n)),
        "meta_offset": lambda r: _str(r.rng.integers(1, 1 << 19, r.n)),
    }
    message = _render(HDFS_EVENTS, steps, fields, rng)

    n = len(steps["t"])
    source = np.array([e.source for e in HDFS_EVENTS])[steps["event"]]
    pid = np.select([source == "namenode", source == "monitor"],
                    [rng.integers(26, 36, n), np.full(n, 19)], rng.integers(100, 4_000, n))
    seconds = pd.Timestamp(start).to_datetime64().astype("datetime64[s]").astype(np.int64) + \
        np.floor(steps["t"]).astype(np.int64)
    event = pa.array(steps["event"])
    lines = _join(_strftime(seconds, "%y%m%d %H%M%S"), " ", _str(pid), " ",
                  pa.array([e.level for e in HDFS_EVENTS]).take(event), " ",
                  pa.array([e.component for e in HDFS_EVENTS]).take(event), ": ", message)
    visible = np.array(["{block}" in e.text for e in HDFS_EVENTS])
    return _result("HDFS", HDFS, HDFS_EVENTS, steps, lines, block, visible, n_blocks, kind, seed)


# --------------------------------------------------------------------------------------------------
# OpenStack: nova instance lifecycles on four compute nodes (Loghub OpenStack)
# --------------------------------------------------------------------------------------------------

_WSGI = "nova.osapi_compute.wsgi.server"
_MANAGER, _CLAIMS, _DRIVER = "nova.compute.manager", "nova.compute.claims", "nova.virt.libvirt.driver"
_TRACKER, _IMAGECACHE = "nova.compute.resource_tracker", "nova.virt.libvirt.imagecache"
_I = "[instance: {instance}] "

OPENSTACK_EVENTS: tuple[Event, ...] = (
    Event("E1", "INFO", _WSGI, '{client} "POST /v2/{tenant}/servers HTTP/1.1" status: 202 len: {length} '
          'time: {secs}', "api", "build user"),
    Event("E2", "INFO", _WSGI, '{client} "GET /v2/{tenant}/servers/{instance} HTTP/1.1" status: 200 len: {length} '
          'time: {secs}', "api", "own user"),
    Event("E3", "INFO", _WSGI, '{client} "DELETE /v2/{tenant}/servers/{instance} HTTP/1.1" status: 204 len: 203 '
          'time: {secs}', "api", "delete user"),
    Event("E4", "INFO", _WSGI, '{client} "GET /v2/{tenant}/servers/detail HTTP/1.1" status: 200 len: {length} '
          'time: {secs}', "api", "own user"),
    Event("E5", "INFO", _WSGI, '{client} "GET /v2/{tenant}/servers/{instance} HTTP/1.1" status: 404 len: 296 '
          'time: {secs}', "api", "own user"),
    Event("E6", "INFO", _WSGI, '{client} "POST /v2/{service_tenant}/os-server-external-events HTTP/1.1" '
          'status: 200 len: 380 time: {secs}', "api", "own user"),
    Event("E7", "INFO", "nova.api.openstack.compute.server_external_events",
          "Creating event network-vif-plugged:{port} for instance {instance}", "api", "own user"),
    Event("E8", "INFO", "nova.scheduler.filter_scheduler", _I + "Selected host: {host}", "scheduler", "build user"),
    Event("E9", "INFO", _CLAIMS, _I + "Attempting claim: memory {memory} MB, disk {disk} GB, vcpus {vcpus} CPU",
          "compute", "build user"),
    Event("E10", "INFO", _CLAIMS, _I + "Total memory: 64172 MB, used: {used_memory} MB", "compute", "build user"),
    Event("E11", "INFO", _CLAIMS, _I + "memory limit: 96258.00 MB, free: {free_memory} MB", "compute",
          "build user"),
    Event("E12", "INFO", _CLAIMS, _I + "Total disk: 400 GB, used: {used_disk} GB", "compute", "build user"),
    Event("E13", "INFO", _CLAIMS, _I + "disk limit: 400.00 GB, free: {free_disk} GB", "compute", "build user"),
    Event("E14", "INFO", _CLAIMS, _I + "Total vcpu: 16 VCPU, used: {used_vcpus} VCPU", "compute", "build user"),
    Event("E15", "INFO", _CLAIMS, _I + "vcpu limit not specified, defaulting to unlimited", "compute", "build user"),
    Event("E16", "INFO", _CLAIMS, _I + "Claim successful", "compute", "build user"),
    Event("E17", "INFO", _DRIVER, _I + "Creating image", "compute", "build user"),
    Event("E18", "INFO", _MANAGER, _I + "VM Started (Lifecycle Event)", "compute", "build anon"),
    Event("E19", "INFO", _MANAGER, _I + "VM Paused (Lifecycle Event)", "compute", "build anon"),
    Event("E20", "INFO", _MANAGER, _I + "During sync_power_state the instance has a pending task (spawning). Skip.",
          "compute", "build anon"),
    Event("E21", "INFO", _MANAGER, _I + "VM Resumed (Lifecycle Event)", "compute", "build anon"),
    Event("E22", "INFO", _DRIVER, _I + "Instance spawned successfully.", "compute", "build user"),
    Event("E23", "INFO", _MANAGER, _I + "Took {spawn_secs} seconds to spawn the instance on the hypervisor.",
          "compute", "build user"),
    Event("E24", "INFO", _MANAGER, _I + "Took {build_secs} seconds to build instance.", "compute", "build user"),
    Event("E25", "INFO", _MANAGER, _I + "Terminating instance", "compute", "delete user"),
    Event("E26", "INFO", _MANAGER, _I + "VM Stopped (Lifecycle Event)", "compute", "own anon"),
    Event("E27", "INFO", _DRIVER, _I + "Instance destroyed successfully.", "compute", "none anon"),
    Event("E28", "INFO", _DRIVER, _I + "Deleting instance files {instance_dir}", "compute", "delete user"),
    Event("E29", "INFO", _DRIVER, _I + "Deletion of {instance_dir} complete", "compute", "delete user"),
    Event("E30", "INFO", _MANAGER, _I + "Took {destroy_secs} seconds to destroy the instance on the hypervisor.",
          "compute", "delete user"),
    Event("E31", "INFO", _MANAGER, _I + "Took {network_secs} seconds to deallocate network for instance.",
          "compute", "delete user"),
    Event("E32", "INFO", _TRACKER, "Auditing locally available compute resources for node {host}", "compute",
          "build anon"),
    Event("E33", "INFO", _TRACKER, "Total usable vcpus: 16, total allocated vcpus: {used_vcpus_int}", "compute",
          "build anon"),
    Event("E34", "INFO", _TRACKER, "Final resource view: name={host} phys_ram=64172MB used_ram={used_ram}MB "
          "phys_disk=400GB used_disk={used_disk_int}GB total_vcpus=16 used_vcpus={used_vcpus_int} pci_stats=[]",
          "compute", "build anon"),
    Event("E35", "INFO", _TRACKER, "Compute_service record updated for {host}:{host}", "compute", "build anon"),
    Event("E36", "INFO", _IMAGECACHE, "image {image} at ({base}): checking", "compute", "build anon"),
    Event("E37", "INFO", _IMAGECACHE, "image {image} at ({base}): in use: on this node {n_local} local, 0 on other "
          "nodes sharing this instance storage", "compute", "build anon"),
    Event("E38", "INFO", _IMAGECACHE, "Active base files: {base}", "compute", "build anon"),
    Event("E39", "INFO", "nova.scheduler.host_manager", "Successfully synced instances from host '{host}'.",
          "scheduler", "build anon"),
    Event("E40", "ERROR", _MANAGER, _I + "Instance failed to spawn", "compute", "build user"),
    Event("E41", "ERROR", _MANAGER, _I + "Traceback (most recent call last):", "compute", "build user"),
    Event("E42", "ERROR", _MANAGER, _I + "libvirtError: {libvirt_error}", "compute", "build user"),
    Event("E43", "ERROR", _MANAGER, _I + "Build of instance {instance} aborted: {abort_reason}", "compute",
          "build user"),
    Event("E44", "WARNING", "nova.scheduler.utils", _I + "Setting instance to ERROR state.", "scheduler",
          "build user"),
    Event("E45", "INFO", _CLAIMS, _I + "Failed to claim: Insufficient compute resources: Free memory {free_memory} "
          "MB < requested {memory} MB.", "compute", "build user"),
    Event("E46", "ERROR", _MANAGER, _I + "Build of instance {instance} was re-scheduled: Insufficient compute "
          "resources: Free memory {free_memory} MB < requested {memory} MB.", "compute", "build user"),
)

#: anomaly kind -> (default share of the anomalies, what gives it away)
OPENSTACK_KINDS: dict[str, tuple[float, str]] = {
    "spawn_failure": (0.20, "new templates: ERROR lines and a traceback, then the instance is torn down"),
    "claim_failure": (0.15, "new templates: the first host lacks memory, the build is re-scheduled"),
    "stuck_build": (0.15, "missing steps only: spawning never completes, no 'Took N seconds'"),
    "repeated_lifecycle": (0.15, "counts only: three to five pause/resume cycles instead of at most one"),
    "slow_spawn": (0.20, "numbers only: spawn and build take 6-15 times longer, every line is ordinary"),
    "wrong_order": (0.15, "order only: the delete arrives while the instance is still spawning"),
}

_CLAIM = [Step("E9", 0.8), *(Step(e, 0.001) for e in ("E10", "E11", "E12", "E13", "E14", "E15", "E16"))]
_SPAWN = [Step("E17", 0.3), Step("E18", 8.0, scaled=True), Step("E19", 0.05), Step("E20", 0.2),
          Step("E6", 2.0, scaled=True), Step("E7", 0.001), Step("E21", 2.0, scaled=True)]
_DONE = [Step("E22", 0.01), Step("E23", 0.001), Step("E24", 0.05)]
_DELETE = [Step("E3", 0.0), Step("E25", 0.1), Step("E26", 0.5), Step("E27", 0.3), Step("E28", 0.05),
           Step("E29", 0.1), Step("E30", 0.01), Step("E31", 0.5), Step("E5", 1.0)]

OPENSTACK_PATTERNS: dict[str, list[Step]] = {
    "build": [Step("E1"), Step("E8", 0.2), *_CLAIM, *_SPAWN, *_DONE],
    "build_claim_failed": [Step("E1"), Step("E8", 0.2), *_CLAIM[:-2], Step("E45", 0.001), Step("E46", 0.05),
                           Step("E8", 0.5), *_CLAIM, *_SPAWN, *_DONE],
    "build_spawn_failed": [Step("E1"), Step("E8", 0.2), *_CLAIM, Step("E17", 0.3), Step("E40", 4.0, scaled=True),
                           Step("E41", 0.0), Step("E42", 0.0), Step("E25", 0.05), Step("E27", 0.5),
                           Step("E28", 0.05), Step("E29", 0.1), Step("E30", 0.01), Step("E31", 0.5),
                           Step("E43", 0.05), Step("E44", 0.2)],
    "build_stuck": [Step("E1"), Step("E8", 0.2), *_CLAIM, *_SPAWN[:4]],
    "build_deleted_early": [Step("E1"), Step("E8", 0.2), *_CLAIM, *_SPAWN[:3], *_DELETE[:2], Step("E20", 0.2),
                            *_DELETE[3:]],
    "poll": [Step("E2", 4.0)],
    "pause_resume": [Step("E19", 30.0), Step("E21", 5.0)],
    "delete": _DELETE,
    "audit": [Step("E32"), Step("E33", 0.05), Step("E34", 0.02), Step("E35", 0.02)],
    "image_cache": [Step("E36"), Step("E37", 0.001), Step("E38", 0.2)],
    "host_sync": [Step("E39")],
    "listing": [Step("E4")],
}

_HOSTS = tuple(f"cp-{i}.slowvm1.tcloud-pg0.utah.cloudlab.us" for i in range(1, 5))
_COMPUTE_PIDS = np.array([2931, 2849, 3012, 2978])
_SERVICE_PIDS = {"api": 25746, "scheduler": 2580}
_FLAVORS = np.array([[512, 1, 1], [2048, 20, 1], [4096, 40, 2]])  # memory MB, disk GB, vcpus
_LIBVIRT_ERRORS = ("internal error: process exited while connecting to monitor",
                   "Unable to read from monitor: Connection reset by peer",
                   "operation failed: domain is no longer running")
_ABORT_REASONS = ("Failed to allocate the network(s), not rescheduling.",
                  "Unable to update the attachment. (HTTP 500)",
                  "Instance failed to spawn on the hypervisor.")


def simulate_openstack(n_instances: int = 2_000, seed: int = 0, anomaly_rate: float = 0.05,
                       start: str = "2017-05-16 00:00:00",
                       kinds: Mapping[str, float] | None = None) -> LogSimulation:
    """Nova instance lifecycles as Loghub OpenStack lines (``nova-api``/``-compute``/``-scheduler`` files merged).

    An instance is created through the API (POST), placed by the scheduler, claimed (memory, disk, vcpus), its
    image created and spawned (lifecycle events, ``Took N seconds``), polled by its owner, and deleted after a few
    minutes (terminate, destroy, delete files, deallocate network, API DELETE). About one instance starts every
    five seconds, between periodic lines that name no instance: resource audits, image-cache passes, scheduler
    syncs and server listings. ``kinds`` overrides the shares of :data:`OPENSTACK_KINDS`.
    """
    rng = np.random.default_rng(seed)
    n = n_instances
    kind = _assign_kinds(rng, n, anomaly_rate, OPENSTACK_KINDS, kinds)
    starts = rng.exponential(5.0, n).cumsum()
    host = rng.integers(0, len(_HOSTS), n)
    flavor = _FLAVORS[rng.choice(len(_FLAVORS), size=n, p=[0.25, 0.5, 0.25])]
    spawn_scale = np.where(kind == "slow_spawn", rng.uniform(6.0, 15.0, n), rng.lognormal(0.0, 0.25, n))

    timeline = _Timeline(OPENSTACK_PATTERNS, OPENSTACK_EVENTS, starts.copy(), rng)
    build = np.select([kind == "claim_failure", kind == "spawn_failure", kind == "stuck_build",
                       kind == "wrong_order"],
                      ["build_claim_failed", "build_spawn_failed", "build_stuck", "build_deleted_early"], "build")
    for pattern in ("build", "build_claim_failed", "build_spawn_failed", "build_stuck", "build_deleted_early"):
        timeline.play(pattern, build == pattern, scale=spawn_scale)
    every = np.ones(n, dtype=bool)
    timeline.play("poll", every, rounds=1 + rng.poisson(2.0, n), starts=starts + 1.0, advance=False)
    flaps = np.where(kind == "repeated_lifecycle", rng.integers(3, 6, n),
                     ((kind == "normal") & (rng.random(n) < 0.04)).astype(int))
    timeline.play("pause_resume", flaps > 0, rounds=flaps)
    timeline.play("delete", kind != "wrong_order", starts=timeline.clock + rng.exponential(150.0, n))
    span = max(float(np.concatenate([p["t"] for p in timeline.parts]).max()), 60.0)

    # Background runs: per host every minute (audit), two minutes (scheduler sync), three (image cache); listings.
    background = []
    for pattern, period in (("audit", 60.0), ("host_sync", 120.0), ("image_cache", 180.0)):
        runs = np.arange(0.0, span, period)
        for h in range(len(_HOSTS)):
            background.append((pattern, runs + rng.uniform(0, period) + rng.normal(0, 0.5, len(runs)).clip(-1, 1),
                               h))
    listings = rng.exponential(2.5, int(span / 2.5) + 1).cumsum()
    background.append(("listing", listings[listings < span], -1))
    n_all = n
    run_host = [host]
    for pattern, times, h in background:
        timeline.background(pattern, n_all, np.clip(times, 0.0, None))
        run_host.append(np.full(len(times), h) if h >= 0 else rng.integers(0, len(_HOSTS), len(times)))
        n_all += len(times)
    steps = timeline.steps()
    host_all = np.concatenate(run_host)

    instance = _uuids(rng, n_all)
    build_req, delete_req = _uuids(rng, n_all), _uuids(rng, n_all)
    tenants, users = _hex_ids(rng, 3, 16), _hex_ids(rng, 3, 16)
    tenant_of = rng.integers(0, 3, n_all)
    service_tenant = _hex_ids(rng, 1, 16)[0]
    used_memory = np.where(kind == "claim_failure", 0, 512 * rng.integers(1, 100, n))
    free_memory = np.where(kind == "claim_failure", rng.integers(64, flavor[:, 0] // 2 + 65), 96258 - used_memory)
    used_memory = np.where(kind == "claim_failure", 96258 - free_memory, used_memory)
    used_disk = rng.integers(0, 300, n)
    used_vcpus = rng.integers(0, 15, n)
    images, bases = _uuids(rng, 2), _join("/var/lib/nova/instances/_base/", _hex_ids(rng, 2, 20))

    def of_session(values) -> Callable[[_Rows], pa.Array]:
        values = values if isinstance(values, pa.Array) else pa.array(values)
        return lambda r: values.take(pa.array(r.session))

    def two_decimals(values) -> Callable[[_Rows], pa.Array]:
        return lambda r: _fixed(values(r), 2)

    fields = {
        "instance": of_session(instance),
        "instance_dir": lambda r: _join("/var/lib/nova/instances/", instance.take(pa.array(r.session)), "_del"),
        "client": lambda r: _pick(r.rng, ("10.11.10.1", "10.11.10.1", "10.11.21.138"), r.n),
        "tenant": lambda r: tenants.take(pa.array(tenant_of[r.session])),
        "service_tenant": lambda r: pa.array([service_tenant.as_py()] * r.n),
        "length": lambda r: _str(r.rng.integers(380, 2_500, r.n)),
        "secs": lambda r: _fixed(r.rng.lognormal(np.log(0.2), 0.5, r.n), 7),
        "port": lambda r: _uuids(r.rng, r.n),
        "host": lambda r: pa.array(list(_HOSTS)).take(pa.array(host_all[r.session])),
        "memory": of_session(_str(flavor[:, 0])),
        "disk": of_session(_str(flavor[:, 1])),
        "vcpus": of_session(_str(flavor[:, 2])),
        "used_memory": of_session(_fixed(used_memory, 2)),
        "free_memory": of_session(_fixed(free_memory, 2)),
        "used_disk": of_session(_fixed(used_disk, 2)),
        "free_disk": of_session(_fixed(400 - used_disk, 2)),
        "used_vcpus": of_session(_fixed(used_vcpus, 2)),
        "used_vcpus_int": lambda r: _str(r.rng.integers(0, 16, r.n)),
        "used_ram": lambda r: _str(512 * r.rng.integers(1, 120, r.n)),
        "used_disk_int": lambda r: _str(r.rng.integers(0, 300, r.n)),
        "spawn_secs": two_decimals(lambda r: r.elapsed * r.rng.uniform(0.85, 0.95, r.n)),
        "build_secs": two_decimals(lambda r: r.elapsed),
        "destroy_secs": two_decimals(lambda r: r.elapsed * 0.7),
        "network_secs": two_decimals(lambda r: r.rng.gamma(4.0, 0.15, r.n)),
        "image": lambda r: images.take(pa.array(r.session % 2)),
        "base": lambda r: bases.take(pa.array(r.session % 2)),
        "n_local": lambda r: _str(r.rng.integers(1, 12, r.n)),
        "libvirt_error": lambda r: _pick(r.rng, _LIBVIRT_ERRORS, r.n),
        "abort_reason": lambda r: _pick(r.rng, _ABORT_REASONS, r.n),
    }
    message = _render(OPENSTACK_EVENTS, steps, fields, rng)

    rows = len(steps["t"])
    event, session = pa.array(steps["event"]), steps["session"]
    source = np.array([e.source for e in OPENSTACK_EVENTS])[steps["event"]]
    request = np.array([e.context.split()[0] for e in OPENSTACK_EVENTS])[steps["event"]]
    with_user = np.array([e.context.split()[1] == "user" for e in OPENSTACK_EVENTS])[steps["event"]]
    at = pa.array(session)
    req = pc.if_else(pa.array(request == "delete"), delete_req.take(at), build_req.take(at))
    req = pc.if_else(pa.array(request == "own"), _uuids(rng, rows), req)
    who = pc.if_else(pa.array(with_user),
                     _join(" ", users.take(pa.array(tenant_of[session])), " ",
                           tenants.take(pa.array(tenant_of[session])), " - - -"),
                     " - - - - -")
    context = pc.if_else(pa.array(request == "none"), "-", _join("req-", req, who))

    millis = pd.Timestamp(start).to_datetime64().astype("datetime64[ms]").astype(np.int64) + \
        np.floor(steps["t"] * 1000).astype(np.int64)
    rotated = pd.Timestamp(int(millis.max()), unit="ms").ceil("h")  # files are named when logrotate renames them
    logfiles = {service: f"nova-{service}.log.1.{(rotated + pd.Timedelta(seconds=delay)):%Y-%m-%d_%H:%M:%S}"
                for service, delay in (("api", 188), ("scheduler", 231), ("compute", 331))}
    logfile = pa.array([logfiles[e.source] for e in OPENSTACK_EVENTS]).take(event)
    pid = np.where(source == "compute", _COMPUTE_PIDS[host_all[session]],
                   np.where(source == "api", _SERVICE_PIDS["api"], _SERVICE_PIDS["scheduler"]))
    lines = _join(logfile, " ", _strftime(millis // 1000, "%Y-%m-%d %H:%M:%S"), ".", _pad(millis % 1000, 3), " ",
                  _str(pid), " ", pa.array([e.level for e in OPENSTACK_EVENTS]).take(event), " ",
                  pa.array([e.component for e in OPENSTACK_EVENTS]).take(event), " [", context, "] ", message)
    visible = np.array([e.text.startswith(_I) or "/servers/{instance}" in e.text for e in OPENSTACK_EVENTS])
    return _result("OpenStack", OPENSTACK, OPENSTACK_EVENTS, steps, lines, instance, visible, n, kind, seed)
