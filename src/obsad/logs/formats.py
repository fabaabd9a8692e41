"""The Loghub line formats (HDFS_v1, OpenStack nova), a vectorised reader, and the session labels.

A log line is a *header* (when, which process, how severe, which component) followed by a free-text *message*; a
*session* is the unit that gets a label: an HDFS block, a nova instance. This module knows, for each format, the
header layout, where the session id hides in the message, and how the timestamp is spelled, so the rest of the
pipeline sees one table whatever the source.

Reading is columnar: the lines go into one Arrow string array and no Python code runs per line. A regex without
captures checks every header in one pass of RE2's DFA, plain splits then cut the fields, and only the session ids
are *extracted* by regex. ``Series.str.extract`` on the same array does it all in one call but is two to four
times slower, because RE2 must leave its fast DFA to report capture groups; this way about a million HDFS lines, or half
a million of the longer nova lines, are read per second. Lines whose header does not parse are kept, never dropped:
dropping them would silently shorten sessions, and their line numbers tell the user where to look.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: how many malformed lines a :class:`ReadReport` quotes
EXAMPLES = 5


class LogFormatError(ValueError):
    """A log or label file that cannot be read as asked: missing, empty, or not in the expected layout."""


_TOKEN = re.compile(r"<(\w+)>")


@dataclass(frozen=True)
class LogFormat:
    """Everything format-specific about a Loghub log.

    ``layout`` is a Loghub-style format string (``"<date> <time> <pid> <level> <component>: <message>"``): named
    fields between literal separators, ending with the free-text ``<message>``. ``fields`` gives each other
    field's regex (Python ``re`` and RE2 syntax alike, no capturing groups); a field never contains the separator
    that follows it, which lets the reader cut lines with plain string splits (a regex with captures costs several
    times more per line) after one capture-free regex pass has checked them. ``header`` is the compiled regex of
    the header, with one named group per field, for code that handles single lines.

    ``session_patterns`` are searched in the message in order; the first that matches gives the session id (its
    ``session`` group). The timestamp is the ``timestamp_groups`` joined by one space, parsed with
    ``timestamp_format``. ``columns`` are header fields kept as columns besides the standard ones; ``derived``
    adds ``(column, field, regex)`` columns cut out of a field by the regex's first named group.
    ``session_column`` names the id column of Loghub's ``anomaly_label.csv``.
    """

    name: str
    layout: str
    fields: tuple[tuple[str, str], ...]
    session_patterns: tuple[re.Pattern[str], ...]
    timestamp_groups: tuple[str, ...]
    timestamp_format: str
    session_column: str
    columns: tuple[str, ...] = ()
    derived: tuple[tuple[str, str, re.Pattern[str]], ...] = ()
    header: re.Pattern[str] = field(init=False, repr=False, compare=False)
    check: str = field(init=False, repr=False, compare=False)  # the header regex without captures, for RE2
    splits: tuple[tuple[str, tuple[str, ...]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pieces = _TOKEN.split(self.layout)  # literal, field, literal, field, ..., literal
        names, separators = pieces[1::2], pieces[2::2]
        regex = dict(self.fields)
        if pieces[0] or names[-1:] != ["message"] or separators[-1] or any(not sep for sep in separators[:-1]):
            raise ValueError(f"{self.name}: a layout starts with a field, separates fields by literal text and "
                             f"ends with <message>; got {self.layout!r}")
        header_names = names[:-1]
        missing = {"pid", "level", "component", *self.timestamp_groups, *self.columns,
                   *(group for _, group, _ in self.derived)} - set(header_names)
        if missing or set(regex) != set(header_names):
            raise ValueError(f"{self.name}: layout fields {header_names}, regexes for {sorted(regex)}, "
                             f"missing {sorted(missing)}")
        if any("session" not in p.groupindex for p in self.session_patterns):
            raise ValueError(f"{self.name}: every session pattern needs a (?P<session>...) group")

        def build(capture: bool) -> str:
            return "^" + "".join((f"(?P<{name}>{regex[name]})" if capture else f"(?:{regex[name]})") + re.escape(sep)
                                 for name, sep in zip(header_names, separators))

        # Consecutive equal separators are cut by one split: [(" ", (date, time, pid, level)), (": ", (component,))].
        splits: list[tuple[str, list[str]]] = []
        for name, sep in zip(header_names, separators):
            if splits and splits[-1][0] == sep:
                splits[-1][1].append(name)
            else:
                splits.append((sep, [name]))
        object.__setattr__(self, "header", re.compile(build(capture=True)))
        object.__setattr__(self, "check", build(capture=False))
        object.__setattr__(self, "splits", tuple((sep, tuple(group)) for sep, group in splits))


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

#: ``081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_3886... terminating``.
#: The session is the block; a line that names several blocks belongs to the first one it names.
HDFS = LogFormat(
    name="hdfs",
    layout="<date> <time> <pid> <level> <component>: <message>",
    fields=(("date", r"\d{6}"), ("time", r"\d{6}"), ("pid", r"\d{1,18}"), ("level", r"[A-Z]+"),
            ("component", r"[^\s:]+")),
    session_patterns=(re.compile(r"(?P<session>blk_-?\d+)"),),
    timestamp_groups=("date", "time"),
    timestamp_format="%y%m%d %H%M%S",
    session_column="BlockId",
)

#: ``nova-compute.log.1.2017-05-16_13:55:31 2017-05-16 00:00:04.500 2931 INFO nova.compute.manager
#: [req-… - - - - -] [instance: b900…] VM Started (Lifecycle Event)``. The session is the instance named by
#: ``[instance: UUID]``, else by a ``/servers/UUID`` request path (API lines); lines naming neither have none.
OPENSTACK = LogFormat(
    name="openstack",
    layout="<logfile> <date> <time> <pid> <level> <component> [<context>] <message>",
    fields=(("logfile", r"\S+"), ("date", r"\d{4}-\d{2}-\d{2}"), ("time", r"\d{2}:\d{2}:\d{2}\.\d{1,6}"),
            ("pid", r"\d{1,18}"), ("level", r"[A-Z]+"), ("component", r"\S+"), ("context", r"[^\]]*")),
    session_patterns=(
        re.compile(rf"\[instance: (?P<session>{_UUID})\]"),
        re.compile(rf"/servers/(?P<session>{_UUID})"),
    ),
    timestamp_groups=("date", "time"),
    timestamp_format="%Y-%m-%d %H:%M:%S.%f",
    session_column="InstanceId",
    columns=("logfile",),
    derived=(("request_id", "context", re.compile(r"^(?P<request_id>req-[0-9a-f-]{36})")),),
)

FORMATS: dict[str, LogFormat] = {"hdfs": HDFS, "openstack": OPENSTACK}


@dataclass(frozen=True)
class ReadReport:
    """What the reader noticed: how many lines it read, and which ones it could not split into header + message."""

    source: str
    format: str
    n_lines: int
    n_malformed: int
    n_without_session: int
    malformed_examples: tuple[tuple[int, str], ...] = ()

    def summary(self) -> str:
        text = (f"{self.source}: {self.n_lines:,} {self.format} lines, {self.n_malformed:,} without a valid header "
                f"(kept, header_ok=False), {self.n_without_session:,} naming no session")
        if self.malformed_examples:
            quoted = "; ".join(f"line {no}: {line[:120]!r}" for no, line in self.malformed_examples)
            more = " ..." if self.n_malformed > len(self.malformed_examples) else ""
            text += f". First malformed: {quoted}{more}"
        return text


def _format(fmt: LogFormat | str) -> LogFormat:
    if isinstance(fmt, LogFormat):
        return fmt
    try:
        return FORMATS[str(fmt).lower()]
    except KeyError:
        raise LogFormatError(f"unknown log format {fmt!r}; known: {sorted(FORMATS)}") from None


def _read_text(path: Path) -> pa.LargeStringArray:
    """The file's lines, split as Python's own line iteration splits them (``\\n``, ``\\r\\n`` or ``\\r``).

    Bytes are decoded by Arrow, which only checks that they are UTF-8; a file that is not falls back to Python's
    decoder, where bad bytes become U+FFFD rather than an error halfway through an 11-million-line file.
    """
    if not path.is_file():
        raise LogFormatError(f"no such log file: {path}")
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:  # a truncated or non-gzip .gz
        raise LogFormatError(f"cannot read {path}: {exc}") from exc
    if not raw:
        raise LogFormatError(f"{path} is empty")
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    try:
        text = pa.array([raw], type=pa.large_binary()).cast(pa.large_string())
    except pa.ArrowInvalid:
        text = pa.array([raw.decode("utf-8", errors="replace")], type=pa.large_string())
    del raw
    lines = pc.split_pattern(text, "\n").flatten()
    if lines[len(lines) - 1].as_py() == "":  # the newline that ends the last line does not start another
        lines = lines.slice(0, len(lines) - 1)
    return lines


def _lines_array(source: str | os.PathLike | Iterable[str]) -> tuple[pa.Array, str]:
    """The lines as one Arrow array (64-bit offsets: a whole Loghub file can exceed 2 GiB) and a name for messages."""
    if isinstance(source, (str, os.PathLike)):
        return _read_text(Path(source)), str(source)
    try:
        if isinstance(source, (pd.Series, pd.Index)):
            source = pa.array(source, from_pandas=True)
        if isinstance(source, pa.ChunkedArray):
            source = source.combine_chunks()
        if isinstance(source, pa.Array):
            arr = source.cast(pa.large_string())
        else:
            arr = pa.array(source if isinstance(source, (list, tuple)) else list(source), type=pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError) as exc:
        raise LogFormatError(f"the source must be a path or an iterable of str: {exc}") from exc
    if len(arr) == 0:
        raise LogFormatError("no log lines given")
    if arr.null_count:
        raise LogFormatError("the lines contain None; give one str per line")
    return pc.utf8_rtrim(arr, characters="\r\n"), "<lines>"


def _strings(arr: pa.Array) -> pd.Series:
    """An Arrow string array as a pandas ``string`` Series (missing values are ``<NA>``), without copying."""
    return pd.Series(pd.arrays.ArrowStringArray(arr))


def _first_match(text: pa.Array, patterns: tuple[re.Pattern[str], ...], group: str) -> pa.Array:
    """The ``group`` of the first pattern (in the given order of preference) that matches each string.

    Each pattern is tried anchored at the start first, and searched for only in the strings still unmatched: a
    match at position 0 is the first match anyway, and RE2 decides "not here" in a few characters where a search
    scans the whole message (most nova messages begin with their ``[instance: ...]``).
    """
    todo = np.flatnonzero(pc.is_valid(text).to_numpy(zero_copy_only=False))
    found_rows, found_values = [], []
    for pattern in patterns:
        tries = (pattern.pattern,) if pattern.pattern.startswith("^") else ("^" + pattern.pattern, pattern.pattern)
        for regex in tries:
            if len(todo) == 0:
                break
            candidates = text if len(todo) == len(text) else text.take(pa.array(todo))
            values = pc.struct_field(pc.extract_regex(candidates, regex), [pattern.groupindex[group] - 1])
            hit = pc.is_valid(values).to_numpy(zero_copy_only=False)
            found_rows.append(todo[hit])
            found_values.append(values.filter(pa.array(hit)))
            todo = todo[~hit]
    where = np.full(len(text), -1, dtype=np.int64)
    if found_rows:
        rows = np.concatenate(found_rows)
        where[rows] = np.arange(len(rows))
    values = pa.concat_arrays(found_values) if found_values else pa.array([], text.type)
    return values.take(pa.array(where, mask=where < 0))


def _guess(lines: pa.Array, fmt: LogFormat) -> str:
    sample = lines.slice(0, 200).to_pylist()
    fits = [other.name for other in FORMATS.values()
            if other is not fmt and any(other.header.match(line) for line in sample)]
    return f"; it looks like {' or '.join(fits)}" if fits else ""


def _cut(lines: pa.Array, fmt: LogFormat) -> tuple[np.ndarray, dict[str, pa.Array]]:
    """Which lines have a valid header, and their fields and message (null for the others).

    One capture-free regex pass (RE2's fast DFA) finds the valid lines; on those, each separator sits right after
    its field, so splitting at its first occurrences yields exactly one value per field and the message last.
    """
    matched = pc.match_substring_regex(lines, fmt.check).to_numpy(zero_copy_only=False)
    n = int(matched.sum())
    everything = n == len(lines)  # the usual case: no filtering, no scattering back
    rest = lines if everything else lines.filter(pa.array(matched))
    values = {}
    for separator, names in fmt.splits:
        width = len(names) + 1
        parts = pc.split_pattern(rest, separator, max_splits=len(names)).flatten()
        for i, name in enumerate(names):
            values[name] = parts.take(pa.array(np.arange(i, width * n, width)))
        rest = parts.take(pa.array(np.arange(len(names), width * n, width)))
    values["message"] = rest
    if everything:
        return matched, values
    back = pa.array(np.cumsum(matched) - 1, mask=~matched)  # a valid line's rank among valid lines; null elsewhere
    return matched, {name: column.take(back) for name, column in values.items()}


def read_log_lines(source: str | os.PathLike | Iterable[str],
                   fmt: LogFormat | str) -> tuple[pd.DataFrame, ReadReport]:
    """Split each line of ``source`` (a path, plain or ``.gz``, or an iterable of lines) into header fields.

    Returns ``(frame, report)``: one row per input line in input order with ``line_no`` (1-based),
    ``timestamp`` (UTC; the logs carry no zone), ``pid``, ``level``, ``component``, ``message``, ``session_id``,
    ``header_ok`` and the format's extra columns (OpenStack: ``logfile``, ``request_id``). A line whose header does
    not parse (or whose date is impossible) keeps its place with ``header_ok`` False, empty header fields and the
    whole line as message, so its session id is still found. A source where *no* line parses is refused: that is a
    wrong format, not a few bad lines.
    """
    fmt = _format(fmt)
    lines, name = _lines_array(source)
    n = len(lines)

    matched, group = _cut(lines, fmt)
    stamp_text = pc.binary_join_element_wise(*(group[g] for g in fmt.timestamp_groups),
                                             pa.scalar(" ", pa.large_string()))
    timestamp = pd.to_datetime(_strings(stamp_text), format=fmt.timestamp_format, utc=True, errors="coerce")
    timestamp = timestamp.astype("datetime64[ms, UTC]")
    header_ok = pa.array(matched & timestamp.notna().to_numpy())
    if not pc.any(header_ok).as_py():
        raise LogFormatError(f"none of the {n:,} lines of {name} has a {fmt.name} header "
                             f"(first line: {lines[0].as_py()[:120]!r}){_guess(lines, fmt)}")

    def header_field(g: str) -> pa.Array:
        return pc.if_else(header_ok, group[g], pa.scalar(None, pa.large_string()))

    message = pc.if_else(header_ok, group["message"], lines)
    frame = pd.DataFrame({
        "line_no": np.arange(1, n + 1, dtype=np.int64),
        "timestamp": timestamp,
        "pid": pc.cast(header_field("pid"), pa.int64()).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get),
        "level": _strings(header_field("level")),
        "component": _strings(header_field("component")),
        "message": _strings(message),
        "session_id": _strings(_first_match(message, fmt.session_patterns, "session")),
        "header_ok": header_ok.to_numpy(zero_copy_only=False),
    })
    for column in fmt.columns:
        frame[column] = _strings(header_field(column))
    for column, source_group, pattern in fmt.derived:
        frame[column] = _strings(_first_match(header_field(source_group), (pattern,), column))

    bad = np.flatnonzero(~frame["header_ok"].to_numpy())
    report = ReadReport(
        source=name, format=fmt.name, n_lines=n, n_malformed=len(bad),
        n_without_session=int(frame["session_id"].isna().sum()),
        malformed_examples=tuple((int(i) + 1, lines[int(i)].as_py()) for i in bad[:EXAMPLES]),
    )
    return frame, report


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Read Loghub's ``anomaly_label.csv`` (``BlockId,Label``; the first column, whatever its name, is the session).

    Returns ``session_id`` (string) and ``is_anomaly`` (bool). Labels are ``Anomaly``/``Normal`` in any case;
    anything else, a missing value or a session listed twice is refused rather than guessed.
    """
    path = Path(path)
    if not path.is_file():
        raise LogFormatError(f"no such label file: {path}")
    try:  # header=None: a row with a third field is an error here, not a silent shift into the index
        raw = pd.read_csv(path, header=None, dtype="string", keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise LogFormatError(f"{path} is empty; expected a header like 'BlockId,Label'") from None
    except pd.errors.ParserError as exc:
        raise LogFormatError(f"{path} is not a two-column CSV: {exc}") from exc
    header = [str(name).strip() for name in raw.iloc[0]]
    if len(header) != 2 or header[1].lower() != "label":
        raise LogFormatError(f"{path}: expected two columns '<SessionId>,Label', got {header}")
    body = raw.iloc[1:].fillna("")
    if len(body) == 0:
        raise LogFormatError(f"{path} has a header but no labels")
    sessions = body.iloc[:, 0].str.strip()
    labels = body.iloc[:, 1].str.strip().str.lower()
    bad = np.flatnonzero(~labels.isin(["anomaly", "normal"]).to_numpy() | (sessions == "").to_numpy())
    if len(bad):
        rows = ", ".join(f"line {i + 2}: {body.iloc[i, 0]!r},{body.iloc[i, 1]!r}" for i in bad[:EXAMPLES])
        raise LogFormatError(f"{path}: {len(bad)} rows are not '<id>,Anomaly|Normal' ({rows})")
    duplicated = sessions[sessions.duplicated()]
    if len(duplicated):
        raise LogFormatError(f"{path}: {len(duplicated)} sessions are labelled twice, e.g. {duplicated.iloc[0]!r}")
    return pd.DataFrame({"session_id": sessions.astype("string[pyarrow]").reset_index(drop=True),
                         "is_anomaly": (labels == "anomaly").to_numpy(dtype=bool)})
