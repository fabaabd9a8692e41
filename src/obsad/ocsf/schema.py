"""Validate nested OCSF events against the OCSF schema, offline, with pydantic-ocsf.

pydantic-ocsf (import name ``ocsf``) bundles the OCSF 1.0-1.7 schemas and builds a pydantic model per
class and version on demand (``ocsf.v1_3_0.events.Authentication``). On its own it is lenient in two ways
that matter for exports, so :func:`validate_events` adds what it leaves out:

* attributes that OCSF classes get through ``$include`` and profiles (``time``, ``class_uid``,
  ``category_uid``, ``type_uid``, ``duration``, ``start_time``, ``device`` on system classes, ``cloud``
  on API Activity, every ``*_dt``...) are **not declared** on its models, so it neither requires nor
  type-checks them. Here they are required where OCSF requires them (``class_uid``, ``category_uid``,
  ``activity_id``, ``type_uid``, ``time``) and type-checked against the schema dictionary (an object is
  validated with its own model);
* its models accept **any extra key** (``extra="allow"``), so a typo or an attribute from a newer
  version (``location.lat`` in a 1.1 event) passes. Here, with ``strict=True`` (the default), an
  attribute that the schema dictionary of that version does not know is an error. ``unmapped`` is
  free-form, as OCSF intends.

Each event is checked against the version in its own ``metadata.version`` (``"1.1"`` is read as
``1.1.0``), or against ``version`` when given; events without a version use ``default_version``.
"""

from __future__ import annotations

import copy
import importlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable

DEFAULT_VERSION = "1.1.0"
_INT_BASES = {"integer_t", "long_t", "timestamp_t", "port_t"}
_FREE_FORM = {"object", "json_t"}
_SKIP_FIELDS = {"unmapped", "xattributes", "data"}


@dataclass
class ValidationIssue:
    """One invalid event: its position in the input, class, schema version and what is wrong."""

    index: int
    class_uid: int | None
    version: str | None
    error: str


@dataclass
class ValidationReport:
    n_events: int
    n_valid: int
    issues: list[ValidationIssue] = field(default_factory=list)
    by_class: dict[int | None, dict[str, int]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def n_invalid(self) -> int:
        return self.n_events - self.n_valid

    @property
    def ok(self) -> bool:
        return self.n_invalid == 0

    def summary(self, max_issues: int = 5) -> str:
        lines = [f"{self.n_valid}/{self.n_events} events valid"]
        for cls, c in sorted(self.by_class.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
            lines.append(f"  class {cls}: {c['valid']} valid, {c['invalid']} invalid")
        for iss in self.issues[:max_issues]:
            lines.append(f"  #{iss.index} class {iss.class_uid} v{iss.version}: {iss.error[:300]}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "n_events": self.n_events, "n_valid": self.n_valid, "n_invalid": self.n_invalid,
            "by_class": {str(k): v for k, v in self.by_class.items()}, "versions": dict(self.versions),
            "issues": [vars(i) for i in self.issues],
        }


# --------------------------------------------------------------------------------------------------
# schema access
# --------------------------------------------------------------------------------------------------


def available_versions() -> list[str]:
    from ocsf._schema_loader import get_schema_loader

    return list(get_schema_loader().get_available_versions())


def normalize_version(v: Any) -> str | None:
    """``"1.1"`` -> ``"1.1.0"``; ``None`` or an unknown version -> None."""
    if v is None:
        return None
    s = str(v).strip().lstrip("v")
    parts = s.split(".")
    if len(parts) == 2:
        s = f"{s}.0"
    return s if s in available_versions() else None


@lru_cache(maxsize=None)
def _schema(version: str) -> dict:
    from ocsf._schema_loader import get_schema_loader

    return get_schema_loader().load_schema(version)


@lru_cache(maxsize=None)
def _class_index(version: str) -> dict[int, tuple[str, int]]:
    """class_uid -> (schema event name, category_uid) for one version."""
    s = _schema(version)
    cats = {k: v["uid"] for k, v in s.get("categories_meta", {}).get("attributes", {}).items()}
    events = s["events"]

    def category(name: str) -> int | None:
        spec = events.get(name, {})
        if spec.get("category") in cats:
            return cats[spec["category"]]
        parent = spec.get("extends")
        return category(parent) if parent in events else None

    out = {}
    for name, spec in events.items():
        if spec.get("uid") is None:
            continue
        cat = category(name)
        if cat is None:
            continue
        out[cat * 1000 + int(spec["uid"])] = (name, cat)
    return out


@lru_cache(maxsize=None)
def activity_enum(class_uid: int, version: str) -> frozenset[int] | None:
    """The activity ids OCSF defines for a class in a version, or None when the schema does not say.

    Some bundled schemas (1.0.0: Process, HTTP, DNS and Network Activity) keep the class's activity
    enum behind an unresolved ``$include``; then the enum of the next version that has one is used.
    """
    for v in [x for x in available_versions() if x >= version]:
        index = _class_index(v)
        if class_uid not in index:
            continue
        events = _schema(v)["events"]
        name = index[class_uid][0]
        while name in events:
            spec = events[name]["attributes"].get("activity_id")
            if isinstance(spec, dict) and "enum" in spec:
                return frozenset(int(k) for k in spec["enum"]) | {0, 99}
            if isinstance(spec, dict) and "$include" in spec:
                break  # unresolved here: try the next version
            name = events[name].get("extends")
    return None


@lru_cache(maxsize=None)
def _model_activity_ids(class_uid: int, version: str) -> frozenset[int] | None:
    enum = getattr(class_model(class_uid, version), "ActivityId", None)
    return None if enum is None else frozenset(int(m.value) for m in enum)


@lru_cache(maxsize=None)
def _schema_enum(model_name: str, field_name: str, version: str) -> tuple | None:
    """The enum keys the schema gives ``field_name`` on the object/event behind ``model_name``
    (following ``extends``, then the dictionary); ints where the keys are numeric."""
    from ocsf._utils import pascal_to_snake

    s = _schema(version)
    snake = pascal_to_snake(model_name)
    for table in (s.get("objects", {}), s.get("events", {})):
        name = snake if snake in table else f"_{snake}" if f"_{snake}" in table else None
        while name in table:
            spec = table[name].get("attributes", {}).get(field_name)
            if isinstance(spec, dict) and "enum" in spec:
                return _enum_keys(spec["enum"])
            name = table[name].get("extends")
    spec = _dictionary(version)[0].get(field_name, {})
    return _enum_keys(spec["enum"]) if "enum" in spec else None


def _enum_keys(enum: dict) -> tuple:
    keys = list(enum)
    try:
        return tuple(sorted(int(k) for k in keys))
    except ValueError:
        return tuple(sorted(keys))


def _annotation_parts(ann) -> tuple[type | None, type | None, bool, frozenset]:
    """(enum class, nested model class, admits int, scalar types) found in a field annotation."""
    import enum as _enum
    from typing import get_args

    from pydantic import BaseModel

    enum_cls = model_cls = None
    admits_int = False
    scalars: set = set()
    stack = [ann]
    while stack:
        a = stack.pop()
        if isinstance(a, type):
            if issubclass(a, _enum.Enum):
                enum_cls = a
            elif issubclass(a, BaseModel):
                model_cls = a
            elif a is int:
                admits_int = True
            if a in (int, float, bool, str):
                scalars.add(a)
        stack.extend(get_args(a))
    return enum_cls, model_cls, admits_int, frozenset(scalars)


def _sanitize(payload: dict, model, version: str, path: str, errors: list[str]) -> None:
    """Work around pydantic-ocsf models that disagree with their own schema.

    Some enum attributes are built with only 0/99 (``device.type_id`` in 1.1+: ``device`` overrides the
    attribute without repeating the enum of ``endpoint``) and some string enums are typed ``int``
    (``http_request.http_method`` in 1.3). Such values are checked against the schema here and removed
    from what the model sees. Recurses into nested objects and arrays of objects.
    """
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    for key in list(payload):
        finfo = fields.get(key)
        if finfo is None or key in _SKIP_FIELDS:
            continue
        val = payload[key]
        enum_cls, sub_model, admits_int, scalars = _annotation_parts(finfo.annotation)
        sub = f"{path}.{key}" if path else key
        if isinstance(val, str) and str not in scalars and (enum_cls is not None or scalars) and sub_model is None:
            # pydantic's lax mode would turn "200" into 200 and "true" into True: exports drift like that,
            # but the event as given is not valid OCSF
            true_s = _schema_enum(model.__name__, key, version) if admits_int else None
            if not (true_s and any(isinstance(k, str) for k in true_s)):
                want = "integer" if (enum_cls is not None or int in scalars) else "number" if float in scalars else "boolean"
                errors.append(f"{sub}: expected {want}, got the string {val!r}")
                continue
        true = None
        if enum_cls is not None or admits_int:
            true = _schema_enum(model.__name__, key, version)
        if enum_cls is not None and true is not None and all(isinstance(k, int) for k in true):
            declared = {int(m.value) for m in enum_cls}
            if not set(true) <= declared:
                if not (isinstance(val, int) and not isinstance(val, bool)) or val not in set(true) | {99}:
                    errors.append(f"{sub}: {val!r} is not one of {sorted(set(true) | {99})}")
                payload[key] = 99  # "Other": accepted by the model with any sibling label
                continue
        if admits_int and enum_cls is None and true is not None and any(isinstance(k, str) for k in true):
            if not isinstance(val, str):
                errors.append(f"{sub}: expected a string, got {type(val).__name__}")
            if finfo.is_required():
                payload[key] = 0
            else:
                payload.pop(key)
            continue
        if sub_model is not None:
            if isinstance(val, dict):
                _sanitize(val, sub_model, version, sub, errors)
            elif isinstance(val, list):
                for i, item in enumerate(val):
                    if isinstance(item, dict):
                        _sanitize(item, sub_model, version, f"{sub}[{i}]", errors)


def _module(version: str):
    return importlib.import_module("ocsf.v" + version.replace(".", "_"))


@lru_cache(maxsize=None)
def class_model(class_uid: int, version: str):
    """The pydantic model of OCSF class ``class_uid`` in schema ``version`` (e.g. 3002, "1.3.0")."""
    from ocsf._utils import snake_to_pascal

    name, _cat = _class_index(version)[int(class_uid)]
    return getattr(_module(version).events, snake_to_pascal(name))


@lru_cache(maxsize=None)
def _object_model(type_name: str, version: str):
    from ocsf._utils import snake_to_pascal

    return getattr(_module(version).objects, snake_to_pascal(type_name))


@lru_cache(maxsize=None)
def _dictionary(version: str) -> tuple[dict, dict]:
    s = _schema(version)
    d = s.get("dictionary", {})
    types = d.get("types", {}).get("attributes", {})
    return d.get("attributes", {}), types


def _base_type(t: str, version: str) -> str:
    _attrs, types = _dictionary(version)
    seen = 0
    while t in types and types[t].get("type") and types[t]["type"] != t and seen < 5:
        t = types[t]["type"]
        seen += 1
    return t


# --------------------------------------------------------------------------------------------------
# checks pydantic-ocsf does not make
# --------------------------------------------------------------------------------------------------


def _check_value(key: str, value: Any, version: str, path: str, errors: list[str], strict: bool) -> None:
    """Type-check an attribute the model does not declare, using the schema dictionary."""
    attrs, _types = _dictionary(version)
    spec = attrs.get(key)
    if spec is None:
        if key.endswith("_dt") and attrs.get(key[:-3], {}).get("type") == "timestamp_t":
            if not isinstance(value, str):
                errors.append(f"{path}: datetime must be an RFC 3339 string, got {type(value).__name__}")
            return
        if strict:
            errors.append(f"{path}: unknown attribute for OCSF {version}")
        return
    t = spec.get("type", "string_t")
    values = value if spec.get("is_array") and isinstance(value, list) else [value]
    if spec.get("is_array") and not isinstance(value, list):
        errors.append(f"{path}: expected an array")
        return
    base = _base_type(t, version)
    for v in values:
        if t in _FREE_FORM or base in _FREE_FORM:
            continue
        if not base.endswith("_t"):  # an object type
            if not isinstance(v, dict):
                errors.append(f"{path}: expected object {t}, got {type(v).__name__}")
                continue
            try:
                model = _object_model(t, version)
            except AttributeError:
                continue
            try:
                inst = model.model_validate(copy.deepcopy(v))
            except Exception as exc:  # pydantic.ValidationError
                errors.append(f"{path}: {_short(exc)}")
                continue
            _walk(inst, version, path, errors, strict)
        elif base in _INT_BASES:
            if not isinstance(v, int) or isinstance(v, bool):
                errors.append(f"{path}: expected integer ({t}), got {type(v).__name__}")
        elif base == "float_t":
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                errors.append(f"{path}: expected number, got {type(v).__name__}")
        elif base == "boolean_t":
            if not isinstance(v, bool):
                errors.append(f"{path}: expected boolean, got {type(v).__name__}")
        elif not isinstance(v, str):
            errors.append(f"{path}: expected string ({t}), got {type(v).__name__}")


def _walk(inst, version: str, path: str, errors: list[str], strict: bool) -> None:
    """Visit a validated model: recurse into declared objects, check undeclared (extra) keys."""
    from pydantic import BaseModel

    for name, finfo in type(inst).model_fields.items():
        alias = finfo.alias or name
        if alias in _SKIP_FIELDS:
            continue
        v = getattr(inst, name, None)
        sub = f"{path}.{alias}" if path else alias
        if isinstance(v, BaseModel):
            _walk(v, version, sub, errors, strict)
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, BaseModel):
                    _walk(item, version, f"{sub}[{i}]", errors, strict)
    for key, v in (inst.model_extra or {}).items():
        if key in _SKIP_FIELDS:
            continue
        _check_value(key, v, version, f"{path}.{key}" if path else key, errors, strict)


def _short(exc: Exception, limit: int = 600) -> str:
    s = str(exc).replace("\n", " | ")
    return s if len(s) <= limit else s[:limit] + "..."


_REQUIRED_TOP = ("class_uid", "category_uid", "activity_id", "type_uid", "time", "severity_id", "metadata")


def validate_event(event: dict, version: str | None = None, default_version: str = DEFAULT_VERSION,
                   strict: bool = True) -> tuple[str | None, list[str]]:
    """Validate one nested event. Returns (schema version used, list of errors; empty when valid)."""
    errors: list[str] = []
    if not isinstance(event, dict):
        return None, ["event is not an object"]
    meta = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
    raw_v = version or meta.get("version") or default_version
    v = normalize_version(raw_v)
    if v is None:
        return None, [f"unknown OCSF schema version {raw_v!r} (available: {', '.join(available_versions())})"]
    for k in _REQUIRED_TOP:
        if event.get(k) is None:
            errors.append(f"{k}: required attribute missing")
    cls = event.get("class_uid")
    if not isinstance(cls, int) or isinstance(cls, bool):
        errors.append(f"class_uid: expected integer, got {cls!r}")
        return v, errors
    index = _class_index(v)
    if cls not in index:
        return v, errors + [f"class_uid {cls} is not a class of OCSF {v}"]
    _name, cat = index[cls]
    if event.get("category_uid") not in (None, cat):
        errors.append(f"category_uid: must be {cat} for class {cls}, got {event.get('category_uid')!r}")
    act = event.get("activity_id")
    if isinstance(act, int) and event.get("type_uid") not in (None, cls * 100 + act):
        errors.append(f"type_uid: must be {cls * 100 + act}, got {event.get('type_uid')!r}")
    model = class_model(cls, v)
    payload = copy.deepcopy(event)
    known = activity_enum(cls, v)
    declared = _model_activity_ids(cls, v)
    if known is not None and isinstance(act, int):
        if act not in known:
            errors.append(f"activity_id: {act} is not an activity of class {cls} in OCSF {v}")
        if declared is not None and not known <= declared:
            # pydantic-ocsf built this class's ActivityId from an unresolved include (only 0 and 99):
            # the id was checked above, keep it away from the model
            payload.pop("activity_id", None)
            payload.pop("activity_name", None)
    _sanitize(payload, model, v, "", errors)
    try:
        inst = model.model_validate(payload)
    except Exception as exc:  # pydantic.ValidationError and the uid pre-fill's ValueError
        errors.append(_short(exc))
        return v, errors
    _walk(inst, v, "", errors, strict)
    return v, errors


def validate_events(events: Iterable[dict], version: str | None = None, default_version: str = DEFAULT_VERSION,
                    strict: bool = True, max_issues: int = 1_000) -> ValidationReport:
    """Validate nested OCSF events (e.g. from :func:`obsad.ocsf.nested.to_nested`).

    Each event is checked against its own ``metadata.version`` unless ``version`` forces one. The report
    counts valid events overall and per class and keeps up to ``max_issues`` issues (index, class,
    version, error text).
    """
    n = n_valid = 0
    issues: list[ValidationIssue] = []
    by_class: dict[int | None, dict[str, int]] = {}
    versions: Counter = Counter()
    for i, ev in enumerate(events):
        n += 1
        v, errs = validate_event(ev, version=version, default_version=default_version, strict=strict)
        cls = ev.get("class_uid") if isinstance(ev, dict) else None
        cls = cls if isinstance(cls, int) else None
        c = by_class.setdefault(cls, {"valid": 0, "invalid": 0})
        versions[str(v)] += 1
        if errs:
            c["invalid"] += 1
            if len(issues) < max_issues:
                issues.append(ValidationIssue(i, cls, v, "; ".join(errs)))
        else:
            c["valid"] += 1
            n_valid += 1
    return ValidationReport(n_events=n, n_valid=n_valid, issues=issues, by_class=by_class, versions=dict(versions))
