"""The model package: everything a detector needs at serving time, as one verified directory (no pickle anywhere).

Layout of a package directory::

    manifest.json              format, versions, creation time, seed, training fingerprint, files (sha256 + bytes)
    encoder.json               the fitted FeatureEncoder (FeatureEncoder.to_dict); absent in a log-pipeline package
    model/config.json          the model's class and config (obsad.models.save_model)
    model/weights.safetensors  its weights
    detector.json              JSON-able detector state: thresholds, score statistics, hyper-parameters
    arrays.safetensors         named numpy arrays (k-NN reference embeddings, per-field surprise statistics, ...)
    reference.parquet          optional: a bounded sample of training events (similar-event search, drift)
    config.json                anything else (JSON)
    <name>.json                optional named JSON documents (e.g. parser.json: a log pipeline's template parser)

:func:`save_package` writes into a temporary sibling directory and swaps it into place with renames, so a reader
never sees a half-written package and a failed write leaves the previous package untouched.
:func:`load_package` verifies the manifest and every file's size and SHA-256 *before* parsing anything, and refuses
a package with a missing, modified or added file, or one written in a newer format (:class:`PackageError`).
:func:`verify_package` lists the problems without raising.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from . import __version__
from .features import FeatureEncoder
from .io import canonicalize_safetensors, write_json, write_parquet
from .models import load_model, save_model

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelPackage",
    "PackageError",
    "fingerprint_frame",
    "load_package",
    "save_package",
    "verify_package",
]

FORMAT = "obsad-package"
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
ENCODER = "encoder.json"
MODEL_DIR = "model"
DETECTOR = "detector.json"
ARRAYS = "arrays.safetensors"
REFERENCE = "reference.parquet"
CONFIG = "config.json"
REQUIRED = (f"{MODEL_DIR}/config.json", f"{MODEL_DIR}/weights.safetensors", DETECTOR, ARRAYS, CONFIG)
_RESERVED = {MANIFEST, ENCODER, DETECTOR, CONFIG}

_CHUNK = 1 << 20


class PackageError(ValueError):
    """A package that cannot be written or must not be loaded; the message names the package, file and reason."""


@dataclass
class ModelPackage:
    encoder: FeatureEncoder | None
    model: torch.nn.Module
    detector: dict
    arrays: dict[str, np.ndarray]
    reference: pd.DataFrame | None
    config: dict
    manifest: dict
    path: Path
    warnings: list[str] = field(default_factory=list)
    documents: dict[str, Any] = field(default_factory=dict)  # the named JSON documents, by name (no suffix)


# ------------------------------------------------------------------------------------------------ helpers
def fingerprint_frame(df: pd.DataFrame) -> str:
    """A stable SHA-256 of a DataFrame's content: column names and dtypes, then the row hashes (index ignored)."""
    h = hashlib.sha256()
    header = [[str(c), str(t)] for c, t in zip(df.columns, df.dtypes)]
    h.update(json.dumps(header, ensure_ascii=False).encode("utf-8"))
    h.update(len(df).to_bytes(8, "little"))
    if len(df.columns):
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy(dtype=np.uint64).tobytes())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def library_versions() -> dict[str, str]:
    """Versions of the libraries a package depends on (faiss only when importable)."""
    versions = {"python": platform.python_version()}
    for key, dists in (("torch", ("torch",)), ("numpy", ("numpy",)), ("pandas", ("pandas",)),
                       ("pyarrow", ("pyarrow",)), ("scikit-learn", ("scikit-learn",)),
                       ("safetensors", ("safetensors",))):
        v = _dist_version(*dists)
        if v is not None:
            versions[key] = v
    if importlib.util.find_spec("faiss") is not None:
        v = _dist_version("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss")
        if v is not None:
            versions["faiss"] = v
    return versions


def _list_files(root: Path) -> list[str]:
    """Every non-directory entry under ``root`` as a sorted list of POSIX relative paths."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            out.append((Path(dirpath) / name).relative_to(root).as_posix())
        for name in dirnames:  # a symlinked directory is not walked; report it as an entry
            if (Path(dirpath) / name).is_symlink():
                out.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(out)


def _write_json_file(obj: Any, path: Path, what: str) -> None:
    try:
        write_json(obj, path)
    except (TypeError, ValueError) as exc:
        raise PackageError(f"{path.name}: the {what} is not JSON-serialisable ({exc})") from exc


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, arr in arrays.items():
        if not isinstance(name, str) or not name:
            raise PackageError(f"{ARRAYS}: array names must be non-empty strings, got {name!r}")
        a = np.asarray(arr)
        if a.dtype == object or a.dtype.kind in "USV":
            raise PackageError(f"{ARRAYS}: array {name!r} has dtype {a.dtype}, only numeric and bool arrays are stored")
        out[name] = np.ascontiguousarray(a)
    return out


# ------------------------------------------------------------------------------------------------ writing
def save_package(
    directory: str | os.PathLike,
    *,
    encoder: FeatureEncoder | None,
    model: torch.nn.Module,
    detector: dict | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    reference: pd.DataFrame | None = None,
    config: dict | None = None,
    seed: int | None = None,
    training_fingerprint: str | None = None,
    documents: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model package to ``directory`` atomically and return its path.

    Everything is written into a temporary sibling directory first; only when every file is written and the
    manifest is complete is it renamed into place (an existing package is renamed aside first, then removed).
    A directory that exists and is not an obsad package is never replaced.
    """
    from safetensors.numpy import save_file

    target = Path(directory)
    if target.exists():
        if not target.is_dir():
            raise PackageError(f"{target}: exists and is not a directory; refusing to replace it")
        if any(target.iterdir()) and not (target / MANIFEST).is_file():
            raise PackageError(f"{target}: exists and is not an obsad package (no {MANIFEST}); refusing to replace it")
    if encoder is not None and not isinstance(encoder, FeatureEncoder):
        raise PackageError(f"{target}: encoder must be a fitted FeatureEncoder or None, got {type(encoder).__name__}")
    documents = dict(documents or {})
    for name in documents:
        if not (isinstance(name, str) and name.isidentifier() and name.islower()) or f"{name}.json" in _RESERVED:
            raise PackageError(f"{target}: invalid document name {name!r} (lower-case identifier, not a reserved file)")
    if not isinstance(model, torch.nn.Module):
        raise PackageError(f"{target}: model must be a torch.nn.Module, got {type(model).__name__}")
    if reference is not None and not isinstance(reference, pd.DataFrame):
        raise PackageError(f"{target}: reference must be a DataFrame or None, got {type(reference).__name__}")
    checked_arrays = _check_arrays(arrays or {})

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if encoder is not None:
            try:
                encoder.save(tmp / ENCODER)
            except (TypeError, ValueError) as exc:
                raise PackageError(f"{target}: {ENCODER}: cannot save the encoder ({exc})") from exc
        for name, document in documents.items():
            _write_json_file(document, tmp / f"{name}.json", f"document {name!r}")
        try:
            save_model(model, tmp / MODEL_DIR)
        except (TypeError, ValueError) as exc:
            raise PackageError(f"{target}: {MODEL_DIR}/: cannot save the model ({exc})") from exc
        _write_json_file({} if detector is None else detector, tmp / DETECTOR, "detector state")
        save_file(checked_arrays, str(tmp / ARRAYS), metadata={"format": FORMAT})
        if reference is not None:
            write_parquet(reference.reset_index(drop=True), tmp / REFERENCE)
        _write_json_file({} if config is None else config, tmp / CONFIG, "config")

        canonicalize_safetensors(tmp / ARRAYS)  # the model's weights file is canonical already (save_model)
        files = {rel: {"sha256": _sha256(tmp / rel), "bytes": (tmp / rel).stat().st_size}
                 for rel in _list_files(tmp)}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "obsad_version": __version__,
            "libraries": library_versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seed": None if seed is None else int(seed),
            "training_fingerprint": training_fingerprint,
            "files": files,
        }
        _write_json_file(manifest, tmp / MANIFEST, "manifest")
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rmdir(old)  # only reserve a unique name; rename needs it absent (or empty) on POSIX
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)  # put the previous package back
        raise
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ verification
def _read_manifest(root: Path) -> tuple[dict | None, list[str]]:
    """The manifest, or None with the problems that make the package unreadable."""
    if not root.exists():
        return None, ["the package directory does not exist"]
    if not root.is_dir():
        return None, ["not a directory"]
    mpath = root / MANIFEST
    if not mpath.is_file():
        return None, [f"{MANIFEST}: missing — not an obsad package"]
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{MANIFEST}: not valid JSON ({exc})"]
    if not isinstance(manifest, dict):
        return None, [f"{MANIFEST}: not a JSON object"]
    if manifest.get("format") != FORMAT:
        return None, [f"{MANIFEST}: format {manifest.get('format')!r} is not {FORMAT!r} — not an obsad package"]
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return None, [f"{MANIFEST}: invalid format_version {version!r} (this obsad reads format_version "
                      f"{FORMAT_VERSION})"]
    if version > FORMAT_VERSION:
        return None, [f"{MANIFEST}: format_version {version} is newer than this obsad ({__version__}) reads "
                      f"(format_version {FORMAT_VERSION}); upgrade obsad to load it"]
    files = manifest.get("files")
    if not isinstance(files, dict):
        return None, [f"{MANIFEST}: 'files' is missing or not an object"]
    return manifest, []


def _safe_relpath(rel: Any) -> bool:
    if not isinstance(rel, str) or not rel or rel == MANIFEST or "\\" in rel:
        return False
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts and p.as_posix() == rel


def verify_package(directory: str | os.PathLike) -> list[str]:
    """Every problem that makes ``directory`` an unsafe package, as ``"file: reason"`` strings (empty = OK)."""
    root = Path(directory)
    manifest, problems = _read_manifest(root)
    if manifest is None:
        return problems
    files: dict = manifest["files"]
    for rel in REQUIRED:
        if rel not in files:
            problems.append(f"{rel}: required file not listed in {MANIFEST}")
    for rel, entry in files.items():
        if not _safe_relpath(rel):
            problems.append(f"{rel!r}: invalid path in {MANIFEST}")
            continue
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or not isinstance(entry.get("bytes"), int)):
            problems.append(f"{rel}: malformed entry in {MANIFEST}")
            continue
        path = root / rel
        if path.is_symlink() or not path.is_file():
            problems.append(f"{rel}: missing — the file was deleted after the package was written")
            continue
        size = path.stat().st_size
        if size != entry["bytes"]:
            problems.append(f"{rel}: size mismatch ({size} bytes, expected {entry['bytes']}) — the file was "
                            "modified after the package was written")
            continue
        if _sha256(path) != entry["sha256"]:
            problems.append(f"{rel}: checksum mismatch — the file was modified after the package was written")
    for rel in _list_files(root):
        if rel != MANIFEST and rel not in files:
            problems.append(f"{rel}: unexpected file not listed in {MANIFEST} — something was added after the "
                            "package was written")
    return problems


def _refuse(root: Path, problems: list[str]) -> PackageError:
    return PackageError(f"refusing to load package {root}: " + "; ".join(problems))


def _version_warnings(manifest: dict) -> list[str]:
    warnings = []
    if manifest.get("obsad_version") != __version__:
        warnings.append(f"written by obsad {manifest.get('obsad_version')}, loaded by obsad {__version__}")
    saved = manifest.get("libraries")
    if isinstance(saved, dict):
        current = library_versions()
        for name in sorted(set(saved) | set(current)):
            if saved.get(name) != current.get(name):
                warnings.append(f"{name}: written with {saved.get(name) or 'none'}, loaded with "
                                f"{current.get(name) or 'none'}")
    return warnings


# ------------------------------------------------------------------------------------------------ loading
def load_package(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> ModelPackage:
    """Verify, then read, the package written by :func:`save_package`; :class:`PackageError` on any problem."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    root = Path(directory)
    problems = verify_package(root)
    if problems:
        raise _refuse(root, problems)
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))

    def read_json_file(rel: str) -> Any:
        try:
            return json.loads((root / rel).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _refuse(root, [f"{rel}: not valid JSON ({exc})"]) from exc

    encoder = None
    if ENCODER in manifest["files"]:
        try:
            encoder = FeatureEncoder.from_dict(read_json_file(ENCODER))
        except ValueError as exc:
            if isinstance(exc, PackageError):
                raise
            raise _refuse(root, [f"{ENCODER}: not a FeatureEncoder state ({exc})"]) from exc
    documents = {rel[:-len(".json")]: read_json_file(rel) for rel in sorted(manifest["files"])
                 if rel.endswith(".json") and "/" not in rel and rel not in _RESERVED}
    try:
        model = load_model(root / MODEL_DIR, map_location=map_location)
    except ValueError as exc:
        raise _refuse(root, [f"{MODEL_DIR}/: not a loadable model ({exc})"]) from exc
    detector = read_json_file(DETECTOR)
    if not isinstance(detector, dict):
        raise _refuse(root, [f"{DETECTOR}: not a JSON object"])
    try:
        arrays = load_file(str(root / ARRAYS))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _refuse(root, [f"{ARRAYS}: not a readable safetensors file ({exc})"]) from exc
    reference = None
    if REFERENCE in manifest["files"]:
        try:
            reference = pd.read_parquet(root / REFERENCE, engine="pyarrow")
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise _refuse(root, [f"{REFERENCE}: not a readable Parquet file ({exc})"]) from exc
    config = read_json_file(CONFIG)
    if not isinstance(config, dict):
        raise _refuse(root, [f"{CONFIG}: not a JSON object"])
    return ModelPackage(encoder=encoder, model=model, detector=detector, arrays=dict(arrays), reference=reference,
                        config=config, manifest=manifest, path=root, warnings=_version_warnings(manifest),
                        documents=documents)
