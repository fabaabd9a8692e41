"""A model registry: versioned, verified packages, one champion, promotions and rollbacks on record.

Layout of a registry directory::

    registry.json                 the record: versions, the champion, the history of promotions and rollbacks
    versions/0001-3fa2c1d09b7e/   one verified model package per version, never modified once registered
    versions/0002-.../
    champion -> versions/0002-...  a symbolic link to the champion's package: the path a service serves

A version is named ``<NNNN>-<first 12 hex digits of the package version>``; the package version is what
``obsad serve`` reports (the first 16 hex digits of the SHA-256 of the package's ``manifest.json``, which lists
the SHA-256 of every file), so a version in the registry and a version in the service's answers and shadow log
are the same string. Every package is checked with :func:`obsad.package.verify_package` when it is registered and
again before it becomes champion (promotion or rollback): a package modified since is refused.

Serving the champion: ``obsad serve --model REGISTRY/champion``; after ``obsad registry promote`` or ``rollback``,
``POST /v1/admin/reload`` makes the service load the new champion. ``champion`` is a symbolic link, replaced by
an atomic rename (``os.replace`` of a new link over the old one): a reader resolves either the old package or
the new one, never a mixture; the packages themselves never change; and the service's loader reads the manifest
before and after loading and refuses a package that changed under it (it keeps serving the old one; reload again).
Symbolic links need a POSIX system (or Windows with the privilege to create them).

``registry.json`` is written atomically (:func:`obsad.io.write_json`: a temporary file renamed into place), so a
crash leaves the previous record whole. It is the record of truth: it is written first, then the link follows it;
if a crash falls between the two, the next :class:`ModelRegistry` opened on the directory points the link back at
the recorded champion. Changes take an exclusive lock on ``.lock`` (``fcntl``, where available), so two commands
run at once do not lose each other's changes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import write_json
from ..package import MANIFEST, verify_package

__all__ = ["REGISTRY_FORMAT", "ModelRegistry", "RegistryError", "package_version"]

REGISTRY_FORMAT = "obsad-registry"
REGISTRY_VERSION = 1
RECORD = "registry.json"
VERSIONS = "versions"
CHAMPION = "champion"


class RegistryError(ValueError):
    """A registry operation that must not happen (a tampered package, no previous champion, an unknown version);
    the message says which and why. A ``ValueError``: ``obsad`` prints it as one line with exit code 2."""


def package_version(directory: str | os.PathLike) -> str:
    """The version ``obsad serve`` gives a package: the first 16 hex digits of its manifest's SHA-256."""
    return hashlib.sha256((Path(directory) / MANIFEST).read_bytes()).hexdigest()[:16]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _iso_utc(value) -> str | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat()


def _json_value(obj: Any, what: str) -> Any:
    """``obj`` as plain JSON (numpy numbers become Python numbers); a NaN or an object JSON cannot hold refused."""
    try:
        return json.loads(json.dumps(obj, allow_nan=False, default=_plain))
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what} must be JSON-serialisable without NaN ({exc})") from exc


def _plain(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


class ModelRegistry:
    """The registry in directory ``root`` (created by the first :meth:`register`)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if self.exists:
            self._heal_link()

    # ------------------------------------------------------------------ reading
    @property
    def exists(self) -> bool:
        return (self.root / RECORD).is_file()

    def _read(self) -> dict:
        if not self.exists:
            return {"format": REGISTRY_FORMAT, "format_version": REGISTRY_VERSION, "champion": None, "versions": [],
                    "history": []}
        try:
            record = json.loads((self.root / RECORD).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(f"registry {self.root}: {RECORD} cannot be read ({exc})") from exc
        if not isinstance(record, dict) or record.get("format") != REGISTRY_FORMAT:
            raise RegistryError(f"registry {self.root}: {RECORD} is not an obsad registry record")
        if int(record.get("format_version", 0)) > REGISTRY_VERSION:
            raise RegistryError(f"registry {self.root}: {RECORD} was written by a newer obsad")
        return record

    @property
    def champion(self) -> str | None:
        """The champion's version name, or None before the first promotion."""
        return self._read()["champion"]

    def version_path(self, version: str) -> Path:
        """The package directory of ``version`` (a version name or its number)."""
        return self.root / VERSIONS / self._resolve(self._read(), version)["version"]

    def champion_path(self) -> Path:
        """The stable path to serve: ``root/champion``, a link to the champion's package."""
        if self.champion is None:
            raise RegistryError(f"registry {self.root}: no champion yet; promote a version first")
        return self.root / CHAMPION

    def versions(self) -> pd.DataFrame:
        """One row per registered version, oldest first: ``version``, ``number``, ``package_version``, ``created``
        (UTC), ``parent``, ``note``, ``training_start``, ``training_end``, ``champion`` (bool), then one
        ``metrics.<name>`` column per metric recorded."""
        record = self._read()
        rows = []
        for v in record["versions"]:
            window = v.get("training_window") or {}
            row = {"version": v["version"], "number": v["number"], "package_version": v["package_version"],
                   "created": v["created"], "parent": v.get("parent"), "note": v.get("note", ""),
                   "training_start": window.get("start"), "training_end": window.get("end"),
                   "champion": v["version"] == record["champion"]}
            row.update({f"metrics.{k}": value for k, value in (v.get("metrics") or {}).items()})
            rows.append(row)
        columns = ["version", "number", "package_version", "created", "parent", "note", "training_start",
                   "training_end", "champion"]
        frame = pd.DataFrame(rows, columns=list(dict.fromkeys(columns + [c for r in rows for c in r])))
        for column in ("created", "training_start", "training_end"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame

    def history(self) -> pd.DataFrame:
        """Promotions and rollbacks, oldest first: ``time`` (UTC), ``action``, ``version`` (the new champion),
        ``previous`` (the champion it replaced), ``reason``."""
        frame = pd.DataFrame(self._read()["history"], columns=["time", "action", "version", "previous", "reason"])
        frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
        return frame

    def to_dict(self) -> dict:
        """The record as JSON (what ``registry.json`` holds)."""
        return self._read()

    # ------------------------------------------------------------------ changing
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # no advisory locks on this system
            yield
            return
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _write(self, record: dict) -> None:
        write_json(record, self.root / RECORD)

    def register(self, source, *, note: str = "", training_window=None,
                 metrics: Mapping[str, Any] | None = None) -> str:
        """Add a package as a new version and return its name; the champion does not change.

        ``source``: a fitted pipeline (saved into the registry) or a package directory (verified, copied in,
        verified again). ``training_window``: ``(start, end)`` or ``{"start": ..., "end": ...}`` (default: the
        package's ``config.json`` ``training_window``, which :func:`obsad.monitor.retraining.retrain` records);
        ``metrics``: JSON numbers to keep with it (e.g. its scores on a labelled slice). The version's parent is
        the champion at registration: the model it is meant to replace.
        """
        note = str(note)
        metrics = _json_value(dict(metrics or {}), "metrics")
        if self.root.exists() and not self.exists and any(p.name != ".lock" for p in self.root.iterdir()):
            raise RegistryError(f"registry {self.root}: the directory exists, is not empty and holds no {RECORD}; "
                                "refusing to make a registry of it")
        source_path = None
        if not hasattr(source, "save"):
            source_path = Path(source)
            problems = verify_package(source_path)
            if problems:
                raise RegistryError(f"refusing to register {source_path}: " + "; ".join(problems))
        with self._locked():
            record = self._read()
            (self.root / VERSIONS).mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".incoming.", dir=self.root / VERSIONS))
            try:
                package = staging / "package"
                if source_path is None:
                    source.save(package)
                else:
                    shutil.copytree(source_path, package, symlinks=True)
                problems = verify_package(package)
                if problems:
                    raise RegistryError(f"refusing to register {source_path or 'the pipeline'}: the copy fails "
                                        "verification (was it changed while being copied?): " + "; ".join(problems))
                version_hash = package_version(package)
                for v in record["versions"]:
                    if v["package_version"] == version_hash:
                        raise RegistryError(f"this package is already registered as {v['version']}")
                number = 1 + max((int(v["number"]) for v in record["versions"]), default=0)
                name = f"{number:04d}-{version_hash[:12]}"
                config = json.loads((package / "config.json").read_text(encoding="utf-8"))
                window = training_window if training_window is not None else config.get("training_window")
                os.replace(package, self.root / VERSIONS / name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            if source_path is None:
                source.path = self.root / VERSIONS / name  # where the pipeline is saved now
            entry = {"version": name, "number": number, "package_version": version_hash, "created": _now(),
                     "parent": record["champion"], "training_window": self._window(window), "note": note,
                     "metrics": metrics, "source": str(source_path) if source_path is not None else "pipeline",
                     "format": config.get("format")}
            record["versions"].append(entry)
            self._write(record)
        return name

    @staticmethod
    def _window(window) -> dict | None:
        if window is None:
            return None
        if isinstance(window, Mapping):
            if "start" not in window or "end" not in window:
                raise RegistryError("training_window needs 'start' and 'end'")
            extra = {k: v for k, v in window.items() if k not in ("start", "end")}
            out = {"start": _iso_utc(window["start"]), "end": _iso_utc(window["end"]), **extra}
        else:
            try:
                start, end = window
            except (TypeError, ValueError):
                raise RegistryError("training_window must be (start, end) or {'start': ..., 'end': ...}") from None
            out = {"start": _iso_utc(start), "end": _iso_utc(end)}
        if pd.Timestamp(out["start"]) > pd.Timestamp(out["end"]):
            raise RegistryError(f"training_window starts after it ends ({out['start']} > {out['end']})")
        return _json_value(out, "training_window")

    def promote(self, version: str, *, reason: str) -> str:
        """Make ``version`` (a name or its number) the champion, after verifying its package; returns its name."""
        if not str(reason).strip():
            raise RegistryError("a promotion needs a reason (what showed the version is better)")
        with self._locked():
            record = self._require()
            entry = self._resolve(record, version)
            if entry["version"] == record["champion"]:
                raise RegistryError(f"{entry['version']} is already the champion")
            self._check_package(entry, "promote")
            record["history"].append({"time": _now(), "action": "promote", "version": entry["version"],
                                      "previous": record["champion"], "reason": str(reason)})
            record["champion"] = entry["version"]
            self._write(record)
            self._point_link(entry["version"])
        return entry["version"]

    def rollback(self, *, reason: str = "rollback") -> str:
        """Make the previous champion the champion again (recorded as a rollback); returns its name.

        "Previous" undoes promotions in order: promote A, promote B, rollback -> A; a second rollback goes to the
        champion before A. Refused when there is none, or when its package fails verification.
        """
        with self._locked():
            record = self._require()
            stack = self._champions(record)
            if len(stack) < 2:
                now = f"the champion is {stack[-1]}" if stack else "there is no champion"
                raise RegistryError(f"registry {self.root}: no previous champion to roll back to ({now})")
            entry = self._resolve(record, stack[-2])
            self._check_package(entry, "roll back to")
            record["history"].append({"time": _now(), "action": "rollback", "version": entry["version"],
                                      "previous": record["champion"], "reason": str(reason)})
            record["champion"] = entry["version"]
            self._write(record)
            self._point_link(entry["version"])
        return entry["version"]

    # ------------------------------------------------------------------ helpers
    def _require(self) -> dict:
        if not self.exists:
            raise RegistryError(f"no registry at {self.root} ({RECORD} missing); register a version first")
        return self._read()

    def _resolve(self, record: dict, version) -> dict:
        key = str(version).strip()
        for v in record["versions"]:
            if key == v["version"] or (key.isdigit() and int(key) == int(v["number"])):
                return v
        known = ", ".join(v["version"] for v in record["versions"]) or "none"
        raise RegistryError(f"registry {self.root}: no version {key!r} (registered: {known})")

    @staticmethod
    def _champions(record: dict) -> list[str]:
        """The champions in force, oldest first, replayed from the history: a promotion pushes, a rollback pops."""
        stack: list[str] = []
        for event in record["history"]:
            if event["action"] == "promote":
                stack.append(event["version"])
            elif event["action"] == "rollback" and stack:
                stack.pop()
        return stack

    def _check_package(self, entry: dict, action: str) -> None:
        path = self.root / VERSIONS / entry["version"]
        problems = verify_package(path)
        if not problems and package_version(path) != entry["package_version"]:
            problems = [(f"{MANIFEST}: replaced since registration (package version {package_version(path)}, "
                        f"registered as {entry['package_version']})")]
        if problems:
            raise RegistryError(f"refusing to {action} {entry['version']}: " + "; ".join(problems))

    def _point_link(self, version: str) -> None:
        """Point ``root/champion`` at ``versions/<version>`` by renaming a new link over the old one (atomic)."""
        link = self.root / CHAMPION
        if link.exists() and not link.is_symlink():
            raise RegistryError(f"registry {self.root}: {CHAMPION} exists and is not a link; refusing to replace it")
        target = os.path.join(VERSIONS, version)
        tmp = self.root / f".{CHAMPION}.{os.getpid()}.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        try:
            os.symlink(target, tmp, target_is_directory=True)
        except (OSError, NotImplementedError) as exc:
            raise RegistryError(f"registry {self.root}: cannot create the {CHAMPION} link ({exc}); this system "
                                "does not allow symbolic links") from exc
        os.replace(tmp, link)

    def _heal_link(self) -> None:
        """After a crash between writing the record and moving the link: the link follows the record."""
        try:
            record = self._read()
        except RegistryError:
            return
        champion, link = record.get("champion"), self.root / CHAMPION
        if champion is None:
            return
        if link.is_symlink() and os.readlink(link) == os.path.join(VERSIONS, champion):
            return
        if link.exists() and not link.is_symlink():
            return  # not ours to replace; promote and rollback say so
        with self._locked():
            self._point_link(self._read()["champion"])
