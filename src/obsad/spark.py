"""Spark batch scoring: the local engine's scores, for event batches larger than one machine.

:func:`score_dataframe` scores a Spark DataFrame of OCSF events (nested structs or flat dotted columns) with a
model package and returns one row per event, in input order, with the columns of
:meth:`obsad.pipeline.FittedPipeline.score`: ``event_uid``, ``time``, ``score``, ``percentile``, ``is_anomaly``,
``view`` and ``top_features``, equal to the local engine's up to float rounding (1e-5).
``obsad score --engine spark`` runs it on ``local[*]``, or on a cluster with ``--master`` (``spark://host:7077``,
``yarn``, ``k8s://https://host:443``; the executors need ``obsad`` installed, ``pip install 'obsad[spark]'``).

Why three stages and not one ``mapInArrow``
-------------------------------------------
The event view is per event. The window view is not: a window's statistics need *all* events of its (entity,
hour); its activity level needs the number of events of the view in that hour over the *whole batch*; its drift
is an EWMA over the entity's consecutive windows, so it needs the entity's *whole history* in the batch.
Scoring arbitrary partitions on their own would cut windows and histories and change the scores. So:

1. **Event stage** (``mapInArrow`` over the input partitions, one Arrow batch at a time): load
   (:func:`obsad.ocsf.load_events`), encode, embed, k-NN search: the event-view score, its explanation where it
   can decide an alarm, and what the window view needs per event: its window vector, time bucket and entity
   key in each view. Persisted (memory, then disk): the two other stages read it.
2. **Window stage**: one row per (event, view it has a value in). The view's events per time bucket are counted
   by a ``groupBy`` (one row per view and hour, broadcast back). Rows are repartitioned by (view, entity) and
   sorted by row id, so each entity's whole history lies in one partition, in input order, and is scored with
   the detector's own arithmetic (``_statistics``: the same float32 sums in the same order, the same baselines
   and calibration; :func:`_slice_windows`). One Python call scores every entity of a partition at once (a
   ``groupBy(...).applyInPandas`` would call Python once per entity: thousands of calls).
3. **Combine**: per event, the best view's window score (ties: the first view) is joined to the event stage,
   sorted by row id (input order) and combined by the package's ``MaxZCombiner``, as locally.

Scaling
-------
What grows with the volume: the events, split into partitions that the event stage scores in parallel
(Arrow batches of ``spark.sql.execution.arrow.maxRecordsPerBatch`` events; memory per task is one batch); the
window stage's shuffle, one row per (event, view with a value) carrying the window vector (``4 * d`` bytes,
``d`` = embedding + numeric fields: about 14 rows of 400 bytes per simulated event); the windows and entities,
spread over ``partitions`` tasks. What does not grow: the model, the reference index and the per-entity
baselines, all in the package, which is shipped once per executor (``SparkContext.addFile``) and loaded once
per Python worker (a module-level cache keyed by path and manifest checksum); Spark's closures carry its path,
never the model. The bucket counts are one row per view and hour. The price of exact drift is that an entity's
whole history is one task's memory: a very hot entity (one address sending a third of all events) is a skewed
task.

Where it can differ from the local engine
-----------------------------------------
- Float rounding. The embedding depends in its last bits on torch's thread count (one per task here), a k-NN
  distance on FAISS's batch shape: about 1e-7, 3e-6 in ``score`` after the calibration's scaling. An event whose
  k-th and (k+1)-th reference neighbours are equally far up to that rounding can get another neighbour, hence
  other ``top_features`` (not seen in the tests).
- Ties between views. Two entity columns that group events alike (``user.name``, ``user.uid``) give an event
  equal window scores, exactly (the drift of an entity depends on its own windows only, in both engines), and
  the first view explains the event in both.
- :func:`~obsad.ocsf.load_events` makes a few decisions per batch that it loads (a numbers-as-strings column is
  coerced when 99 % of it parses; a text column holding JSON objects is expanded): locally per file, here per
  Arrow batch. A column close to those thresholds can load differently. Spark reads JSON with its own schema
  inference (a field with mixed types becomes a string) and drops malformed lines (``DROPMALFORMED``); the load
  report (what was malformed and where) is not collected.
- Spark Connect is not supported (the plan uses ``DataFrame.rdd`` and ``SparkContext.addFile``).
"""

from __future__ import annotations

import atexit
import copy
import functools
import hashlib
import os
import shutil
import sys
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["MissingSparkError", "collect_scores", "read_events", "require_pyspark", "score_dataframe",
           "score_file", "spark_session"]

ROW_ID = "_obsad_row"  # position of the event in the input (monotonically_increasing_id: increasing in input order)
EXPLAIN = ("flagged", "all", "none")
INSTALL_HINT = "pip install 'obsad[spark]' (or pip install pyspark)"

# each stage's output, as Arrow schemas (the batches are built with exactly these types; Spark's from them)
_UTC = pa.timestamp("us", tz="UTC")
_EVENT_STAGE = pa.schema([(ROW_ID, pa.int64()), ("event_uid", pa.string()), ("time", _UTC),
                          ("event_score", pa.float64()), ("event_top", pa.string()), ("bucket", pa.int64()),
                          ("vector", pa.binary()),  # float32 window vector, packed: one copy in and out of Spark
                          ("members", pa.list_(pa.struct([("view", pa.int32()), ("key", pa.string())])))])
_WINDOW_STAGE = pa.schema([(ROW_ID, pa.int64()), ("view", pa.int32()), ("window_score", pa.float64()),
                           ("window_top", pa.string())])
_RESULT = pa.schema([("event_uid", pa.string()), ("time", _UTC), ("score", pa.float64()),
                     ("percentile", pa.float64()), ("is_anomaly", pa.bool_()), ("view", pa.string()),
                     ("top_features", pa.string())])

# log4j2: errors only. PySpark starts Spark as a shell, which resets the level to WARN (and says so) unless the
# gateway's own logger has a level of its own.
_LOG4J = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = error
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n
"""


class MissingSparkError(ImportError):
    """pyspark (or the Java it runs on) is not installed; the message says how to install it."""


def require_pyspark() -> None:
    """Raise :class:`MissingSparkError` unless pyspark can be imported and a Java runtime is found."""
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise MissingSparkError(f"the Spark engine needs pyspark, which is not installed: {INSTALL_HINT}") from exc
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and (Path(java_home) / "bin" / "java").exists()):
        raise MissingSparkError("the Spark engine needs a Java runtime (17 or later): java is not on the PATH and "
                                "JAVA_HOME is not set")


# ------------------------------------------------------------------------------------------------ session
def spark_session(master: str = "local[*]", *, partitions: int | None = None, app_name: str = "obsad"):
    """A SparkSession for scoring (the active one if there is one: then ``master`` is ignored).

    Logging is quiet (log4j at ERROR, no progress bar) so that a command's own output stays readable (the JVM
    itself still prints one line about an incubator module). On ``local[...]`` masters the Python workers run
    this interpreter, the web UI is off and a shuffle has ``partitions`` tasks (default: one per core, not
    Spark's 200, which cost more than they bring on one machine); on a cluster the executors need a Python with
    ``obsad[spark]`` installed (``PYSPARK_PYTHON``), and the UI and Spark's defaults stay.
    """
    require_pyspark()
    import warnings

    from pyspark.sql import SparkSession

    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = (SparkSession.builder.master(master).appName(app_name)
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{_quiet_log4j()}"))
    if master.startswith("local"):
        builder = (builder.config("spark.ui.enabled", "false")
                   .config("spark.sql.shuffle.partitions", str(partitions or _local_cores(master))))
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # read by SparkContext, not a Spark conf
    elif partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(partitions))
    spark = _quiet_start(builder) if master.startswith("local") else builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _quiet_start(builder):
    """Start a local session with the JVM's standard error going to a log file (``obsad-spark/jvm-stderr.log`` in
    the temporary folder): the JVM writes a start-up line there whatever log4j says, which would otherwise land
    in a command's or a notebook's output at an arbitrary moment. Errors still reach Python as exceptions."""
    log = Path(tempfile.gettempdir()) / "obsad-spark" / "jvm-stderr.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(log, "ab") as target:
            os.dup2(target.fileno(), 2)  # the JVM, started now, inherits this file as its standard error
            return builder.getOrCreate()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _local_cores(master: str) -> int:
    """The cores of a ``local``, ``local[N]``, ``local[*]`` or ``local[N,F]`` master."""
    inside = master[len("local["):-1].split(",")[0] if master.startswith("local[") else "1"
    return (os.cpu_count() or 1) if inside == "*" else max(1, int(inside))


def _quiet_log4j() -> Path:
    """A log4j2 configuration file that prints errors only (Spark's default prints INFO and WARN lines)."""
    from .io import atomic_path

    path = Path(tempfile.gettempdir()) / "obsad-spark" / "log4j2.properties"
    if not path.exists() or path.read_text() != _LOG4J:
        with atomic_path(path) as tmp:  # another process may be starting Spark too
            tmp.write_text(_LOG4J)
    return path


def read_events(spark, path: str | os.PathLike):
    """A Parquet, JSON Lines or JSON array file of OCSF events as a Spark DataFrame (nested objects as structs).

    Malformed JSON lines are dropped, as the local loader excludes them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head[:4] == b"PAR1":
        return spark.read.parquet(str(path))
    if head[:2] == b"\x1f\x8b":  # gzip: Spark decompresses by extension, the first character says the layout
        import gzip

        with gzip.open(path, "rb") as fh:
            head = fh.read(4096)
    multi_line = head.lstrip()[:1] == b"["
    return spark.read.json(str(path), multiLine=multi_line, mode="DROPMALFORMED")


# ------------------------------------------------------------------------------------------------ the API
def score_dataframe(events, model_dir: str | os.PathLike, *, explain: str = "flagged", n_top: int = 3,
                    partitions: int | None = None, ship: bool = True):
    """Score a Spark DataFrame of OCSF events with the model package ``model_dir``: one row per event, in input
    order, with the local engine's columns (``event_uid``, ``time``, ``score``, ``percentile``, ``is_anomaly``,
    ``view``, ``top_features``).

    ``explain``: ``top_features`` for the flagged events (default), ``"all"`` or ``"none"``, as locally.
    ``partitions``: tasks per stage (default: the input's partitions, at least the default parallelism);
    the input is spread over them by row id. ``ship``: copy the package to every executor with
    ``SparkContext.addFile`` (default); ``False`` when ``model_dir`` is on storage every executor mounts.

    Lazy, like any DataFrame: the work runs when the result is written or collected. The event stage is
    persisted (two stages read it) while the returned DataFrame is referenced, and unpersisted after.
    """
    result, event_stage = _plan(events, model_dir, explain=explain, n_top=n_top, partitions=partitions, ship=ship)
    finalizer = weakref.finalize(result, _unpersist, event_stage)
    finalizer.atexit = False  # at exit the JVM may already be gone
    return result


def collect_scores(scored) -> pd.DataFrame:
    """A scored DataFrame on the driver, as the local engine returns it (``time`` as ``datetime64[ms, UTC]``)."""
    frame = scored.toArrow().to_pandas()
    if "time" in frame.columns:
        frame["time"] = pd.to_datetime(frame["time"], utc=True).astype("datetime64[ms, UTC]")
    return frame


def score_file(events: str | os.PathLike, model_dir: str | os.PathLike, out: str | os.PathLike, *,
               master: str = "local[*]", partitions: int | None = None, explain: str = "flagged") -> pd.DataFrame:
    """``obsad score --engine spark``: score a file with Spark and write the scores, in input order, to ``out``
    (one Parquet file, atomically, as the local engine writes it). Returns the scores table.

    The scores are collected on the driver to write one file (about 100 bytes per event); to score more than
    the driver holds, call :func:`score_dataframe` and write the DataFrame with Spark.
    """
    from pyspark.sql import SparkSession

    from .io import write_parquet
    from .pipeline import load_pipeline

    if not Path(events).is_file():  # user mistakes are reported before the JVM starts
        raise FileNotFoundError(f"--events {events}: no such file")
    pipeline = load_pipeline(model_dir)
    had_session = SparkSession.getActiveSession() is not None
    spark = spark_session(master, partitions=partitions, app_name="obsad score")
    try:
        result, event_stage = _plan(read_events(spark, events), model_dir, explain=explain, n_top=3,
                                    partitions=partitions, ship=True, pipeline=pipeline)
        try:
            scores = collect_scores(result)
        finally:
            _unpersist(event_stage)
        write_parquet(scores, out)
        return scores
    finally:
        if not had_session:
            spark.stop()


# ------------------------------------------------------------------------------------------------ the plan
def _plan(events, model_dir, *, explain: str, n_top: int, partitions: int | None, ship: bool, pipeline=None):
    """The scored DataFrame and the persisted event stage it reads (see the module docstring); ``pipeline``:
    the package, when the caller has loaded it already."""
    require_pyspark()
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from .ocsf.load import _parquet_columns
    from .pipeline import load_pipeline

    if explain not in EXPLAIN:
        raise ValueError(f"explain must be 'flagged', 'all' or 'none', got {explain!r}")
    if partitions is not None and int(partitions) < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    model_dir = Path(model_dir)
    if pipeline is None:
        pipeline = load_pipeline(model_dir)  # a damaged package is refused here, before any executor starts
    package = _ship_package(events.sparkSession, model_dir, ship)
    # the columns the model reads, as the local engine selects them from a Parquet file (structs whole)
    wanted = _parquet_columns(list(events.columns), pipeline.input_columns)
    # positional names: Spark's Python UDFs cannot take dotted column names; the stage puts the names back
    indexed = events.select(*[F.col(f"`{name}`").alias(f"c{i}") for i, name in enumerate(wanted)]).withColumn(
        ROW_ID, F.monotonically_increasing_id())
    n_input = indexed.rdd.getNumPartitions()
    n = int(partitions) if partitions else max(n_input, events.sparkSession.sparkContext.defaultParallelism)
    if n != n_input:
        indexed = indexed.repartition(n, F.col(ROW_ID))

    event_stage = indexed.mapInArrow(
        functools.partial(_event_stage, package=package, columns=tuple(wanted), explain=explain, n_top=int(n_top)),
        _spark_schema(_EVENT_STAGE),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    per_event = event_stage.select(ROW_ID, "event_uid", "time", "event_score", "event_top")
    if pipeline.window is not None:
        members = (event_stage.select(ROW_ID, "bucket", "vector", F.explode("members").alias("member"))
                   .select(ROW_ID, "bucket", "vector", "member.view", "member.key"))
        bucket_events = members.groupBy("view", "bucket").agg(F.count(F.lit(1)).alias("bucket_events"))
        window_rows = (members.join(F.broadcast(bucket_events), ["view", "bucket"])
                       .repartition(n, "view", "key")
                       .sortWithinPartitions("view", "key", ROW_ID)
                       .mapInArrow(functools.partial(_window_stage, package=package, explain=explain),
                                   _spark_schema(_WINDOW_STAGE)))
        # the best view per event; on a tie the first view, as np.argmax picks it locally
        best = window_rows.groupBy(ROW_ID).agg(F.max(F.struct(
            F.col("window_score"), (-F.col("view")).alias("first_view"), F.col("window_top"))).alias("best"))
        per_event = per_event.join(best, ROW_ID, "left").select(
            *per_event.columns, F.col("best.window_score").alias("window_score"),
            F.col("best.window_top").alias("window_top"))
    else:
        per_event = per_event.select("*", F.lit(None).cast("double").alias("window_score"),
                                     F.lit(None).cast("string").alias("window_top"))
    # sorted before the (Python) combine stage: the sort's sampling pass then never runs Python code twice
    result = per_event.orderBy(ROW_ID).mapInArrow(
        functools.partial(_combine_stage, package=package, explain=explain), _spark_schema(_RESULT))
    return result, event_stage


def _unpersist(frame) -> None:
    try:
        frame.unpersist()
    except Exception:  # the session is already stopped: nothing is cached any more
        pass


# ------------------------------------------------------------------------------------------------ the package
@dataclass(frozen=True)
class _Package:
    """What Spark's closures carry instead of the model: where the package is, and which one it is."""

    path: str  # on the driver (and on every executor when not shipped)
    checksum: str  # SHA-256 of manifest.json, which lists every file's SHA-256: the package's identity
    shipped_as: str | None = None  # the SparkFiles name when shipped with addFile

    def local_path(self) -> str:
        if self.shipped_as is None:
            return self.path
        from pyspark import SparkFiles

        return SparkFiles.get(self.shipped_as)


_SHIPPED: dict[tuple[str, str], str] = {}  # (application id, checksum) -> SparkFiles name, on the driver


def _manifest_checksum(directory: Path) -> str:
    from .package import MANIFEST

    return hashlib.sha256((Path(directory) / MANIFEST).read_bytes()).hexdigest()


def _ship_package(spark, model_dir: Path, ship: bool) -> _Package:
    """Register the package with Spark once per application: a copy named by its checksum, so that two packages
    both called ``model`` never clash in ``SparkFiles``."""
    checksum = _manifest_checksum(model_dir)
    if not ship:
        return _Package(str(model_dir.resolve()), checksum)
    sc = spark.sparkContext
    key = (sc.applicationId, checksum)
    if key not in _SHIPPED:
        name = f"obsad-model-{checksum[:16]}"
        staging = tempfile.mkdtemp(prefix="obsad-spark-")
        atexit.register(shutil.rmtree, staging, ignore_errors=True)
        staged = Path(staging) / name
        shutil.copytree(model_dir, staged)
        sc.addFile(str(staged), recursive=True)
        _SHIPPED[key] = name
    return _Package(str(model_dir.resolve()), checksum, shipped_as=_SHIPPED[key])


_SCORERS: dict[tuple[str, str], "_Scorer"] = {}  # per Python worker: loaded once, reused by every task


def _scorer(package: _Package) -> "_Scorer":
    path = package.local_path()
    key = (path, package.checksum)
    scorer = _SCORERS.get(key)
    if scorer is None:
        from .package import PackageError
        from .pipeline import load_pipeline

        if _manifest_checksum(Path(path)) != package.checksum:
            raise PackageError(f"the model package at {path} changed after scoring started")
        scorer = _SCORERS[key] = _Scorer(load_pipeline(path))
    _one_task_threads()
    return scorer


def _one_task_threads() -> None:
    """As many torch and FAISS threads as the task has cores (``spark.task.cpus``): Spark runs one task per core."""
    import faiss
    import torch
    from pyspark import TaskContext

    context = TaskContext.get()
    n = int(context.cpus()) if context is not None else 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


# ------------------------------------------------------------------------------------------------ the stages
def _event_stage(batches, *, package: _Package, columns: tuple[str, ...], explain: str, n_top: int):
    scorer = _scorer(package)
    for batch in batches:
        if batch.num_rows:
            yield scorer.score_events(batch, columns, explain, n_top)


def _window_stage(batches, *, package: _Package, explain: str):
    scorer = _scorer(package)
    for table in _whole_groups(batches, ("view", "key")):
        yield scorer.score_windows(table, explain)


def _combine_stage(batches, *, package: _Package, explain: str):
    scorer = _scorer(package)
    for batch in batches:
        yield scorer.combine(batch, explain)


def _whole_groups(batches, columns: tuple[str, ...]):
    """Tables of the batches of a partition sorted by ``columns``, each holding whole groups only: the last group
    of a batch is carried over to the next one (memory: one batch plus one group)."""
    carry = None
    for batch in batches:
        table = pa.Table.from_batches([batch])
        if carry is not None:
            table = pa.concat_tables([carry, table])
        n = table.num_rows
        if n == 0:
            continue
        same = np.ones(n, dtype=bool)
        for name in columns:
            column = table.column(name)
            same &= _equals(column, column[n - 1])
        tail = n - int(np.argmin(same[::-1])) if not same.all() else 0  # first row of the last group
        if tail > 0:
            yield table.slice(0, tail)
        carry = table.slice(tail)
    if carry is not None and carry.num_rows:
        yield carry


def _equals(column: pa.ChunkedArray, value: pa.Scalar) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.fill_null(pc.equal(column, value), False).to_numpy(zero_copy_only=False)


class _Scorer:
    """A loaded package on one Python worker and the three stages' arithmetic (the local engine's, piece by piece)."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.combiner = pipeline.combiner
        self.window = pipeline.window
        # one detector per view, for explanations of one view's windows at a time
        self.single_views = [] if self.window is None else [_single_view(self.window, j)
                                                             for j in range(len(self.window.views_))]

    def member_z(self, member: int, scores: np.ndarray) -> np.ndarray:
        """One view's calibrated score, as ``MaxZCombiner.member_z`` computes it for all views at once."""
        matrix = np.zeros((len(scores), self.combiner.median_.shape[0]))
        matrix[:, member] = scores
        return self.combiner.member_z(matrix)[:, member]

    def explained(self, explain: str, may_flag: np.ndarray) -> np.ndarray:
        """Rows to explain: every row, none, or those whose view alone is above the threshold (a superset of
        the flagged rows that this view decides)."""
        if explain == "all":
            return np.arange(len(may_flag))
        if explain == "none":
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(may_flag)

    # -------------------------------------------------------------- 1. events
    def score_events(self, batch: pa.RecordBatch, columns: tuple[str, ...], explain: str,
                     n_top: int) -> pa.RecordBatch:
        """Load, encode, embed and search one batch; ``columns``: the source names of its columns c0, c1, ..."""
        from .ocsf import load_events

        p = self.pipeline
        table = pa.Table.from_batches([batch])
        row_id = table.column(ROW_ID)
        source = table.drop_columns([ROW_ID]).rename_columns(list(columns))
        events = load_events(_loadable_frame(source), columns=p.input_columns).events
        n = len(events)
        features = p.encoder.transform(events)
        z = p.embed(features)
        event_score, neighbours = p.detector.score_and_neighbors(z)
        event_top = np.full(n, None, dtype=object)
        rows = self.explained(explain, self.member_z(0, event_score) > self.combiner.threshold_)
        if len(rows):
            event_top[rows] = p.top_features(features.take(rows), neighbours[rows], n_top=n_top)
        bucket = np.full(n, np.nan)
        vectors = np.zeros((n, 0), dtype=np.float32)
        keys = np.full((n, 0), None, dtype=object)  # [event, view]: the entity key, None where the event has none
        if self.window is not None:
            det = self.window
            _, vectors = det._check_input((events, p.window_vectors(z, features)))  # the dimensions it uses
            ms = det._times(events)
            timed = ~np.isnan(ms)
            bucket = np.floor(ms / det.window_ms_)
            keys = np.column_stack([_entity_keys(events, view, timed) for view in det.views_])
        return _batch(_EVENT_STAGE, {
            ROW_ID: row_id,
            "event_uid": pa.array(events["metadata.uid"]),
            "time": pa.array(events["time"]),
            "event_score": pa.array(event_score, type=pa.float64()),
            "event_top": pa.array(event_top, type=pa.string()),
            "bucket": pa.array(bucket, type=pa.float64(), from_pandas=True).cast(pa.int64()),
            "vector": _packed_rows(vectors),
            "members": _members(keys),
        })

    # -------------------------------------------------------------- 2. windows
    def score_windows(self, table: pa.Table, explain: str) -> pa.RecordBatch:
        """The window-view score of each (event, view) row of ``table`` (whole entities, sorted by view, entity
        and row id), and its explanation where this view alone puts the event above the threshold."""
        det = self.window
        view = table.column("view").to_numpy()
        key = table.column("key").to_numpy(zero_copy_only=False)
        bucket = table.column("bucket").to_numpy()
        bucket_events = table.column("bucket_events").to_numpy().astype(np.float64)
        vectors = _unpacked_rows(table.column("vector"))
        score = np.empty(len(view))
        top = np.full(len(view), None, dtype=object)
        for j in np.unique(view):
            rows = np.flatnonzero(view == j)
            codes, distinct = pd.factorize(key[rows])
            windows = _slice_windows(det, det.views_[j], codes.astype(np.int64), np.asarray(distinct, dtype=object),
                                     bucket[rows], vectors[rows], bucket_events[rows])
            view_score = det._event_z(det.views_[j], windows).max(axis=1)
            score[rows] = view_score
            why = self.explained(explain, self.member_z(1, view_score) > self.combiner.threshold_)
            if len(why):
                fields = self.single_views[j].explain_scored(pd.RangeIndex(len(rows)), view_score[:, None], [windows],
                                                             rows=why, n_fields=2)["fields"]
                top[rows[why]] = [", ".join(names) for names in fields]
        return _batch(_WINDOW_STAGE, {
            ROW_ID: table.column(ROW_ID),
            "view": table.column("view"),
            "window_score": pa.array(score, type=pa.float64()),
            "window_top": pa.array(top, type=pa.string()),
        })

    # -------------------------------------------------------------- 3. combine
    def combine(self, batch: pa.RecordBatch, explain: str) -> pa.RecordBatch:
        """``FittedPipeline.score``'s last steps on each event's view scores."""
        n = batch.num_rows
        event_score = batch.column("event_score").to_numpy(zero_copy_only=False)
        members = [event_score]
        if self.window is not None:
            window_score = batch.column("window_score").to_numpy(zero_copy_only=False).astype(np.float64)
            members.append(np.where(np.isfinite(window_score), window_score, 0.0))  # best_view_score: 0 in no view
        member_z = self.combiner.member_z(np.column_stack(members)) if n else np.empty((0, len(members)))
        scores = member_z.max(axis=1) if n else np.empty(0)
        decided = member_z.argmax(axis=1) if n else np.empty(0, dtype=np.int64)
        flagged = scores > self.combiner.threshold_
        wanted = {"flagged": flagged, "all": np.ones(n, dtype=bool), "none": np.zeros(n, dtype=bool)}[explain]
        top = np.full(n, "", dtype=object)
        by_event = wanted & (decided == 0)
        top[by_event] = batch.column("event_top").to_numpy(zero_copy_only=False)[by_event]
        by_window = wanted & (decided == 1)
        if by_window.any():
            top[by_window] = batch.column("window_top").to_numpy(zero_copy_only=False)[by_window]
        views = np.asarray(self.pipeline.views, dtype=object)
        return _batch(_RESULT, {
            "event_uid": batch.column("event_uid"),
            "time": batch.column("time"),
            "score": pa.array(scores, type=pa.float64()),
            "percentile": pa.array(self.combiner.percentile_of(scores) if n else np.empty(0), type=pa.float64()),
            "is_anomaly": pa.array(flagged, type=pa.bool_()),
            "view": pa.array(views[decided] if n else np.empty(0, dtype=object), type=pa.string()),
            "top_features": pa.array(top, type=pa.string()),
        })


def _single_view(det, j: int):
    """The window detector restricted to its view ``j`` (shallow copy): explains one view's windows."""
    one = copy.copy(det)
    one.views_ = [det.views_[j]]
    return one


def _entity_keys(events: pd.DataFrame, view, timed: np.ndarray) -> np.ndarray:
    """Each event's entity key in ``view`` (None without a value or a time), as the window view groups events."""
    from .detect.windows import _as_keys

    keys = np.full(len(events), None, dtype=object)
    if view.column in events.columns:
        rows, codes, distinct = _as_keys(events[view.column], view.template_masks)
        keys[rows] = distinct[codes]
    keys[~timed] = None
    return keys


def _slice_windows(det, view, codes: np.ndarray, distinct: np.ndarray, bucket: np.ndarray, vectors: np.ndarray,
                   bucket_events: np.ndarray):
    """The windows of a slice of the batch that holds *whole entities* of one view, scored by the detector's own
    ``_statistics`` (baselines, leave-one-out, t, drift, credit: the same sums in the same order).

    This is ``EntityWindowDetector._assign`` for a slice: rows in input order, ``codes`` / ``distinct`` each row's
    entity as ``_as_keys`` returns them, ``bucket`` its time bucket, ``vectors`` its window vector (the dimensions
    the detector uses), and ``bucket_events`` the view's events in the row's time bucket over the *whole batch*,
    the one number that ``_assign`` counts and a slice cannot.
    """
    from .detect.windows import STATISTICS, _baseline_rows, _Windows, distinct_pairs

    rows = np.arange(len(codes))
    win = bucket.astype(np.int64)
    offset = win - win.min()
    # windows = distinct (entity, window) pairs, numbered in (entity, time) order: the sorted distinct pairs
    pair_ids, window_of_row = distinct_pairs(codes, offset)
    n_windows = len(pair_ids)
    count = np.bincount(window_of_row, minlength=n_windows).astype(np.float64)
    first_row = np.full(n_windows, -1, dtype=np.int64)
    first_row[window_of_row[::-1]] = rows[::-1]
    window_bucket_events = bucket_events[first_row]
    level = det._level(count, window_bucket_events, float(view.memory["typical_bucket"][0]))
    entity = _baseline_rows(view, distinct)[codes[first_row]]
    assigned = _Windows(rows, window_of_row, entity, distinct[codes[first_row]], win[first_row] * det.window_ms_,
                        count, np.empty((0, len(STATISTICS))), bucket_events=window_bucket_events, pair_ids=pair_ids,
                        level=level)
    return det._statistics(view, assigned, vectors)


# ------------------------------------------------------------------------------------------------ Arrow helpers
def _loadable_frame(table: pa.Table) -> pd.DataFrame:
    """A partition's columns as :func:`load_events` reads them from a Parquet file: integers as ``Int64``,
    booleans as ``boolean``; structs and lists stay Arrow (``load_events`` flattens and summarises them)."""
    columns = {}
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        if pa.types.is_struct(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
            columns[name] = pd.Series(pd.arrays.ArrowExtensionArray(column))
        else:
            columns[name] = column.to_pandas(types_mapper=_parquet_like)
    return pd.DataFrame(columns)


def _parquet_like(kind: pa.DataType):
    if pa.types.is_integer(kind):
        return pd.Int64Dtype()
    if pa.types.is_boolean(kind):
        return pd.BooleanDtype()
    return None


def _members(keys: np.ndarray) -> pa.ListArray:
    """Per event, the (view, entity key) pairs of the views it has a key in (``keys``: ``[event, view]``, None
    where none), as an Arrow list of structs: vectorised, no per-row Python."""
    present = pd.notna(keys)
    events, views = np.nonzero(present)  # row-major: each event's views in view order
    pairs = pa.StructArray.from_arrays([pa.array(views.astype(np.int32)), pa.array(keys[events, views],
                                                                                    type=pa.string())],
                                       names=["view", "key"])
    offsets = np.r_[0, np.cumsum(present.sum(axis=1))].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pairs)


def _packed_rows(matrix: np.ndarray) -> pa.BinaryArray:
    """Rows of a float32 matrix as Arrow binary values, one row each: Spark copies a binary value in one piece,
    where it would convert an array of floats element by element."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, width = matrix.shape[0], matrix.shape[1] * 4
    offsets = np.arange(n + 1, dtype=np.int32) * width
    return pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(matrix)])


def _unpacked_rows(column) -> np.ndarray:
    """:func:`_packed_rows` values back into a float32 matrix (one copy)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if pa.types.is_large_binary(array.type)
                            else np.int32)[array.offset:array.offset + n + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    return data.copy().view(np.float32).reshape(n, -1)


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema, prefer_timestamp_ntz=False)


def _batch(schema: pa.Schema, columns: dict) -> pa.RecordBatch:
    """A record batch of ``schema`` (each column cast to its type)."""
    arrays = []
    for f in schema:
        array = columns[f.name]
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        arrays.append(array.cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
