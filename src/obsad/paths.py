"""One place that resolves the project's folders, whatever the working directory.

Notebooks run with their own folder as working directory, tests run from the repository root, and the CLI
runs from anywhere; all of them must find the same ``data/``. Resolution order:

1. ``OBSAD_DATA_DIR`` (environment) names the data folder explicitly;
2. otherwise the project root is the nearest ancestor of the working directory, or of this file, that
   holds both ``_config.yml`` and ``pyproject.toml``, and the data folder is ``<root>/data``;
3. otherwise (an installed library used outside the book) ``./data``.
"""

from __future__ import annotations

import os
from pathlib import Path

_MARKERS = ("_config.yml", "pyproject.toml")


def _find_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if all((folder / marker).is_file() for marker in _MARKERS):
            return folder
    return None


def project_root() -> Path | None:
    """The book's root folder, or ``None`` when obsad runs outside the book."""
    return _find_root(Path.cwd().resolve()) or _find_root(Path(__file__).resolve().parent)


def data_dir(create: bool = True) -> Path:
    """The folder through which notebooks pass artifacts (see ``data/README.md``)."""
    override = os.environ.get("OBSAD_DATA_DIR")
    if override:
        folder = Path(override).expanduser().resolve()
    else:
        root = project_root()
        folder = (root / "data") if root is not None else Path.cwd() / "data"
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def data_path(name: str) -> Path:
    """Path of artifact ``name`` inside :func:`data_dir`."""
    return data_dir() / name
