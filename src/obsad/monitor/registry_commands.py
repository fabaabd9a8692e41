"""``obsad registry``: versioned model packages, the champion, promotions and one-command rollback.

    obsad registry list     --registry DIR [--json]
    obsad registry register --registry DIR --model PACKAGE [--note TEXT] [--training-start T --training-end T]
                            [--metrics FILE.json]
    obsad registry promote  --registry DIR VERSION --reason TEXT
    obsad registry rollback --registry DIR [--reason TEXT]

``VERSION`` is a version name (``0002-3fa2c1d09b7e``) or its number (``2``). The champion is served from
``DIR/champion`` (``obsad serve --model DIR/champion``; after a promotion or a rollback, ``POST /v1/admin/reload``).
Exit code 0 on success, 2 on a mistake the user can fix (no registry, an unknown version, a package that fails
verification, no previous champion to roll back to), printed as one line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_registry_parser", "cmd_registry"]


def add_registry_parser(verbs) -> argparse.ArgumentParser:
    """Add the ``registry`` verb and its sub-verbs to ``verbs`` (the sub-parsers object of ``obsad``)."""
    p = verbs.add_parser("registry", help="versioned model packages: list, register, promote, rollback")
    sub = p.add_subparsers(dest="registry_verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help_text)
        q.add_argument("--registry", type=Path, required=True, help="the registry folder")
        q.set_defaults(run=cmd_registry)
        return q

    ls = verb("list", "the registered versions, the champion and the history of promotions and rollbacks")
    ls.add_argument("--json", action="store_true", help="print the whole record as JSON")
    reg = verb("register", "add a model package as a new version (verified, copied in; the champion is unchanged)")
    reg.add_argument("--model", type=Path, required=True, help="model package folder written by obsad fit")
    reg.add_argument("--note", default="", help="what this version is (e.g. 'retrained on the last 14 days')")
    reg.add_argument("--training-start", default=None, help="first instant of the training window (ISO 8601)")
    reg.add_argument("--training-end", default=None, help="last instant of the training window (ISO 8601)")
    reg.add_argument("--metrics", type=Path, default=None, help="a .json file of metrics to keep with the version")
    pro = verb("promote", "make a version the champion (its package is verified first)")
    pro.add_argument("version", help="version name or number")
    pro.add_argument("--reason", required=True, help="why (e.g. the comparison on the labelled slice)")
    rb = verb("rollback", "make the previous champion the champion again")
    rb.add_argument("--reason", default="rollback", help="why (recorded in the history)")
    return p


def cmd_registry(args: argparse.Namespace) -> int:
    """Run one ``obsad registry`` sub-verb; a user's mistake raises a ``ValueError`` (:class:`RegistryError`)."""
    from obsad.monitor.registry import ModelRegistry, RegistryError

    registry = ModelRegistry(args.registry)
    action = args.registry_verb
    if action != "register" and not registry.exists:
        raise RegistryError(f"--registry {args.registry}: no registry there (registry.json missing)")
    if action == "list":
        return _list(registry, args.json)
    if action == "register":
        if not args.model.is_dir():
            raise RegistryError(f"--model {args.model}: not a model package directory")
        if (args.training_start is None) != (args.training_end is None):
            raise RegistryError("--training-start and --training-end go together")
        window = None if args.training_start is None else (args.training_start, args.training_end)
        metrics = None
        if args.metrics is not None:
            if not args.metrics.is_file():
                raise RegistryError(f"--metrics {args.metrics}: no such file")
            try:
                metrics = json.loads(args.metrics.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RegistryError(f"--metrics {args.metrics}: not valid JSON ({exc})") from exc
            if not isinstance(metrics, dict):
                raise RegistryError(f"--metrics {args.metrics}: expected a JSON object")
        try:
            name = registry.register(args.model, note=args.note, training_window=window, metrics=metrics)
        except (TypeError, ValueError) as exc:  # a window that does not parse as times
            if isinstance(exc, RegistryError):
                raise
            raise RegistryError(f"--training-start/--training-end: {exc}") from exc
        package = registry.versions().set_index("version").loc[name, "package_version"]
        print(f"registered {name} (package version {package}); promote it with: obsad registry promote "
              f"--registry {args.registry} {name} --reason ...")
        return 0
    if action == "promote":
        name = registry.promote(args.version, reason=args.reason)
        print(f"champion: {name}; serve {registry.champion_path()} and POST /v1/admin/reload to load it")
        return 0
    name = registry.rollback(reason=args.reason)
    print(f"rolled back: champion is {name} again; POST /v1/admin/reload to load it")
    return 0


def _list(registry, as_json: bool) -> int:
    import pandas as pd

    if as_json:
        print(json.dumps(registry.to_dict(), indent=2, ensure_ascii=False))
        return 0
    versions = registry.versions()
    champion = registry.champion
    print(f"registry {registry.root}: {len(versions)} version(s), champion: {champion or 'none'}")
    if len(versions):
        shown = versions.assign(
            champion=versions["champion"].map({True: "*", False: ""}),
            created=versions["created"].dt.strftime("%Y-%m-%d %H:%M"),
            window=[_window(s, e) for s, e in zip(versions["training_start"], versions["training_end"])])
        columns = ["champion", "version", "created", "parent", "window", "note"] + [
            c for c in versions.columns if c.startswith("metrics.")]
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(shown[columns].astype(object).fillna("").to_string(index=False))
    history = registry.history()
    if len(history):
        print("history:")
        for row in history.itertuples(index=False):
            print(f"  {row.time:%Y-%m-%d %H:%M:%S} {row.action:<8} {row.version} (was {row.previous or 'none'}): "
                  f"{row.reason}")
    return 0


def _window(start, end) -> str:
    import pandas as pd

    if pd.isna(start) or pd.isna(end):
        return ""
    return f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}"
