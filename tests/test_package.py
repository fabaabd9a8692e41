"""The model package: round trip, refusal of tampered / unknown packages, atomic overwrite, deterministic payload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from obsad.features import FeatureEncoder
from obsad.models import TabularResNet
from obsad.package import (
    FORMAT_VERSION,
    ModelPackage,
    PackageError,
    fingerprint_frame,
    load_package,
    save_package,
    verify_package,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "duration": rng.lognormal(3, 1, n),
        "status": rng.choice(["ok", "fail", "retry"], n),
        "user.name": rng.choice([f"u{i}" for i in range(8)], n),
        "http_response.code": rng.choice([200, 404, 500], n),
    })


@pytest.fixture(scope="module")
def parts():
    df = frame()
    enc = FeatureEncoder().fit(df)
    feats = enc.transform(df)
    torch.manual_seed(0)
    model = TabularResNet(len(feats.numeric_names), feats.cardinalities, d_model=8, n_blocks=1, d_hidden=16).eval()
    rng = np.random.default_rng(1)
    detector = {"kind": "knn", "k": 5, "threshold": 0.8125, "score_stats": {"mean": 0.25, "std": 0.5},
                "fields": ["duration", "status"]}
    arrays = {"reference_embeddings": rng.standard_normal((20, 8)).astype(np.float32),
              "surprise_mean": rng.standard_normal(4),
              "ids": np.arange(20, dtype=np.int64)}
    return dict(encoder=enc, model=model, detector=detector, arrays=arrays, reference=df.head(30),
                config={"note": "tiny", "window": [1, 2]}, seed=7, training_fingerprint=fingerprint_frame(df))


@pytest.fixture
def pkg(tmp_path, parts) -> Path:
    return save_package(tmp_path / "pkg", **parts)


def refused(path: Path, *words: str) -> str:
    with pytest.raises(PackageError) as info:
        load_package(path)
    msg = str(info.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_round_trip(pkg, parts):
    names = sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file())
    assert names == ["arrays.safetensors", "config.json", "detector.json", "encoder.json", "manifest.json",
                     "model/config.json", "model/weights.safetensors", "reference.parquet"]
    assert not [p for p in pkg.parent.iterdir() if p.name != "pkg"]  # no temporary directory left behind
    loaded = load_package(pkg)
    assert isinstance(loaded, ModelPackage) and loaded.path == pkg
    df = frame(50, seed=3)
    a, b = parts["encoder"].transform(df), loaded.encoder.transform(df)
    np.testing.assert_array_equal(a.numeric, b.numeric)
    np.testing.assert_array_equal(a.categorical, b.categorical)
    assert a.numeric_names == b.numeric_names and a.cardinalities == b.cardinalities
    sa, sb = parts["model"].state_dict(), loaded.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with torch.no_grad():
        x = (torch.from_numpy(b.numeric), torch.from_numpy(b.categorical))
        assert torch.equal(parts["model"](*x), loaded.model(*x))
    assert loaded.detector == parts["detector"] and loaded.config == parts["config"]
    assert loaded.arrays.keys() == parts["arrays"].keys()
    for k, v in parts["arrays"].items():
        assert loaded.arrays[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded.arrays[k], v)
    pd.testing.assert_frame_equal(loaded.reference, parts["reference"])
    m = loaded.manifest
    assert m["format"] == "obsad-package" and m["format_version"] == FORMAT_VERSION
    assert m["seed"] == 7 and m["training_fingerprint"] == parts["training_fingerprint"]
    assert {"python", "torch", "numpy", "pandas", "pyarrow", "scikit-learn", "safetensors"} <= set(m["libraries"])
    assert set(m["files"]) == set(names) - {"manifest.json"}
    assert m["created"].endswith("+00:00")
    assert loaded.warnings == [] and verify_package(pkg) == []


def test_optional_parts_and_version_warnings(tmp_path, parts):
    path = save_package(tmp_path / "p", encoder=parts["encoder"], model=parts["model"])
    loaded = load_package(path)
    assert loaded.reference is None and loaded.detector == {} and loaded.arrays == {} and loaded.config == {}
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["libraries"]["torch"] = "0.0.1"
    (path / "manifest.json").write_text(json.dumps(manifest))
    warned = load_package(path).warnings  # a library version difference is a warning, not an error
    assert any("torch" in w and "0.0.1" in w for w in warned)


def test_flipped_byte_in_weights_is_refused(pkg):
    w = pkg / "model" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    refused(pkg, "model/weights.safetensors", "checksum mismatch")
    assert any(p.startswith("model/weights.safetensors") for p in verify_package(pkg))


def test_edited_detector_is_refused(pkg):
    d = pkg / "detector.json"
    state = json.loads(d.read_text())
    state["threshold"] = 99.0
    d.write_text(json.dumps(state, indent=2) + "\n")
    refused(pkg, "detector.json", "modified")


def test_deleted_file_is_refused(pkg):
    (pkg / "arrays.safetensors").unlink()
    refused(pkg, "arrays.safetensors", "missing")


def test_added_file_is_refused(pkg):
    (pkg / "model" / "extra.bin").write_bytes(b"x")
    refused(pkg, "model/extra.bin", "added")


def test_newer_format_version_is_refused(pkg):
    m = pkg / "manifest.json"
    manifest = json.loads(m.read_text())
    manifest["format_version"] = 99
    m.write_text(json.dumps(manifest))
    refused(pkg, "manifest.json", "99", f"format_version {FORMAT_VERSION}")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": "something-else", "format_version": 1}', ""])
def test_garbage_manifest_is_refused(pkg, text):
    (pkg / "manifest.json").write_text(text)
    refused(pkg, "manifest.json")
    assert verify_package(pkg)


def test_missing_package_is_refused(tmp_path):
    refused(tmp_path / "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "manifest.json", "missing")


def test_verify_lists_every_problem(pkg):
    (pkg / "config.json").write_text("{}\n")
    (pkg / "reference.parquet").unlink()
    (pkg / "stray.txt").write_text("hi")
    problems = verify_package(pkg)
    assert len(problems) == 3
    assert {p.split(":")[0] for p in problems} == {"config.json", "reference.parquet", "stray.txt"}
    msg = refused(pkg)
    assert all(p in msg for p in problems)


def test_failed_overwrite_keeps_the_old_package(pkg, parts):
    before = {p: p.read_bytes() for p in pkg.rglob("*") if p.is_file()}
    bad = dict(parts, config={"not_json": object()})
    with pytest.raises(PackageError, match="config.json"):
        save_package(pkg, **bad)
    after = {p: p.read_bytes() for p in pkg.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in pkg.parent.iterdir()] == ["pkg"]  # the temporary directory was removed
    assert load_package(pkg).detector == parts["detector"]


def test_overwrite_replaces_the_package(pkg, parts):
    save_package(pkg, **dict(parts, detector={"threshold": 1.5}, reference=None))
    loaded = load_package(pkg)
    assert loaded.detector == {"threshold": 1.5} and loaded.reference is None
    assert not (pkg / "reference.parquet").exists()
    assert [p.name for p in pkg.parent.iterdir()] == ["pkg"]


def test_refuses_to_replace_a_directory_that_is_not_a_package(tmp_path, parts):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(PackageError, match="not an obsad package"):
        save_package(other, **parts)
    assert (other / "precious.txt").read_text() == "keep me"


def test_same_inputs_give_identical_payload(tmp_path, parts):
    a = save_package(tmp_path / "a", **parts)
    b = save_package(tmp_path / "b", **parts)
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel != "manifest.json":
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    ma.pop("created"), mb.pop("created")
    assert ma == mb


def test_fingerprint_frame():
    df = frame(50)
    assert fingerprint_frame(df) == fingerprint_frame(df.copy())
    assert fingerprint_frame(df) == fingerprint_frame(df.set_index(np.arange(100, 150)))  # index ignored
    changed = df.copy()
    changed.loc[3, "duration"] += 1.0
    assert fingerprint_frame(changed) != fingerprint_frame(df)
    assert fingerprint_frame(df.astype({"http_response.code": "int32"})) != fingerprint_frame(df)
    assert fingerprint_frame(df.rename(columns={"status": "state"})) != fingerprint_frame(df)
    assert len(fingerprint_frame(df)) == 64


def test_package_without_encoder_with_documents(tmp_path, parts):
    """A log-pipeline package: no feature encoder, a named JSON document (the template parser) instead."""
    parser = {"format": "hdfs", "templates": ["PacketResponder <NUM> for block <BLK> terminating"]}
    path = save_package(tmp_path / "logs", encoder=None, model=parts["model"], detector={"kind": "rules"},
                        documents={"parser": parser})
    assert (path / "parser.json").is_file() and not (path / "encoder.json").exists()
    loaded = load_package(path)
    assert loaded.encoder is None and loaded.documents == {"parser": parser}
    (path / "parser.json").write_text(json.dumps({**parser, "templates": []}), encoding="utf-8")
    refused(path, "parser.json", "modified")
    for bad in ("Parser", "config", "../x", "detector"):
        with pytest.raises(PackageError, match="invalid document name"):
            save_package(tmp_path / "bad", encoder=None, model=parts["model"], documents={bad: {}})


def test_event_pipeline_refuses_a_package_without_its_encoder(tmp_path, parts):
    from obsad.pipeline import load_pipeline

    path = save_package(tmp_path / "noenc", encoder=None, model=parts["model"],
                        config={"format": "obsad-pipeline", "format_version": 3})
    with pytest.raises(PackageError, match="encoder.json: missing"):
        load_pipeline(path)
