"""Paths, runtime, atomic I/O and the CLI's error handling: the ground every notebook stands on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from obsad import io, paths, runtime

ROOT = Path(__file__).resolve().parents[1]


def test_data_dir_is_the_same_from_any_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("OBSAD_DATA_DIR", raising=False)
    expected = ROOT / "data"
    for cwd in (ROOT, ROOT / "notebooks", ROOT / "src" / "obsad"):
        monkeypatch.chdir(cwd)
        assert paths.data_dir() == expected
        assert paths.project_root() == ROOT


def test_data_dir_follows_the_environment_override(monkeypatch, tmp_path):
    monkeypatch.setenv("OBSAD_DATA_DIR", str(tmp_path / "elsewhere"))
    assert paths.data_dir() == (tmp_path / "elsewhere").resolve()
    assert paths.data_path("x.json") == (tmp_path / "elsewhere" / "x.json").resolve()
    assert (tmp_path / "elsewhere").is_dir()


def test_a_copy_of_the_book_has_its_own_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("OBSAD_DATA_DIR", raising=False)
    for marker in ("_config.yml", "pyproject.toml"):
        (tmp_path / marker).write_text("")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert paths.data_dir() == tmp_path.resolve() / "data"


def test_seed_everything_makes_numpy_and_torch_repeat():
    import torch

    first = runtime.seed_everything(7)
    a = (first.random(3), np.random.rand(3), torch.rand(3))
    second = runtime.seed_everything(7)
    b = (second.random(3), np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])
    runtime.seed_everything(8)
    assert not torch.equal(torch.rand(3), b[2])


def test_pick_device_falls_back_to_cpu_and_refuses_missing_cuda(monkeypatch):
    import torch

    monkeypatch.delenv("OBSAD_DEVICE", raising=False)
    device = runtime.pick_device()
    if torch.cuda.is_available():
        assert device.is_cuda and device.autocast_dtype in (torch.bfloat16, torch.float16)
    else:
        assert device.name == "cpu" and device.autocast_dtype is None
        with device.autocast():
            assert (torch.ones(2) @ torch.ones(2)).dtype == torch.float32
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            runtime.pick_device("cuda")
    assert runtime.pick_device("cpu").name == "cpu"


def test_scaled_respects_the_minimum():
    assert runtime.scaled(1000) == round(1000 * runtime.BOOK_SCALE) or runtime.scaled(1000) == 1
    assert runtime.scaled(0, minimum=5) == 5


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    io.write_json({"a": 1}, target)
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        io.write_json({"x": float("nan")}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_write_parquet_is_byte_deterministic(tmp_path):
    df = pd.DataFrame({"a": np.arange(1000), "b": [f"v{i % 7}" for i in range(1000)]})
    io.write_parquet(df, tmp_path / "one.parquet")
    io.write_parquet(df, tmp_path / "two.parquet")
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), df)


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "obsad.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_cli_user_mistakes_give_a_message_not_a_traceback(tmp_path):
    missing = _cli("inspect", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr and "nope.jsonl" in missing.stderr
    bad_number = _cli("simulate", "--events", "-5", "--out", str(tmp_path))
    assert bad_number.returncode == 2 and "Traceback" not in bad_number.stderr
    assert "number > 0" in bad_number.stderr


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        io.write_json({"a": 1}, tmp_path / "perm.json")
    finally:
        os.umask(umask)
    assert (tmp_path / "perm.json").stat().st_mode & 0o777 == 0o644


def test_tune_allocator_reports_whether_it_applied():
    import platform

    applied = runtime.tune_allocator()
    assert isinstance(applied, bool)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied


def test_collector_paused_turns_the_collector_off_for_the_block_only():
    """Within the block no automatic pass runs, a cycle made there is freed by the first pass after it, an error
    in the block still turns the collector back on, and a collector that was off before stays off."""
    import gc
    import weakref

    from obsad.runtime import collector_paused

    class Node:
        pass

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        node = Node()
        node.me = node
        alive = weakref.ref(node)
        del node
        kept = [[] for _ in range(50_000)]  # far past the threshold of an automatic pass
        assert alive() is not None
        del kept
    assert gc.isenabled()
    gc.collect()
    assert alive() is None
    with pytest.raises(RuntimeError):
        with collector_paused():
            raise RuntimeError("a failing request")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_freeze_loaded_objects_leaves_them_out_of_collections_until_the_next_freeze():
    """What is alive at the freeze (a service's packages) is skipped by the collector's passes; the next freeze
    (after a reload) takes the earlier one back first, so an old package's cycles are freed then."""
    import gc
    import weakref

    from obsad.runtime import freeze_loaded_objects

    class Node:
        pass

    node = Node()
    node.me = node  # a cycle: only the collector frees it
    alive = weakref.ref(node)
    try:
        freeze_loaded_objects()
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert alive() is not None  # frozen: not looked at
        freeze_loaded_objects()
        assert alive() is None
    finally:
        gc.unfreeze()
