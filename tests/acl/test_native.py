import ctypes
import threading

import pytest
import torch

from acl import generate, native

needs_compiler = pytest.mark.skipif(native.load() is None, reason=f"compiled kernels unavailable: {native.status()}")


@needs_compiler
def test_native_library_builds_into_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ACL_CACHE_DIR", str(tmp_path))
    built = native._build()
    assert built.parent == tmp_path and built.is_file()
    assert native._build() == built  # cached: same recipe, same file
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no build leftovers


def test_native_library_reports_why_it_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "_state", {"lib": None, "reason": "", "tried": False})
    monkeypatch.setenv("ACL_NATIVE", "0")
    assert native.load() is None and native.status() == "disabled by ACL_NATIVE=0"
    monkeypatch.setattr(native, "_state", {"lib": None, "reason": "", "tried": False})
    monkeypatch.delenv("ACL_NATIVE")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("ACL_CACHE_DIR", str(tmp_path))
    assert native.load() is None and native.status().startswith("not built:")
    # and the formulas still run, through NumPy
    assert torch.isfinite(generate("G", torch.tensor([[4.0, 0.3, 0.1, 1.5]]), 3)).all()


@needs_compiler
def test_concurrent_builds_leave_one_loadable_library(tmp_path, monkeypatch):
    # DDP ranks start together and may all find the cache empty.
    monkeypatch.setenv("ACL_CACHE_DIR", str(tmp_path))
    built, errors = [], []

    def build():
        try:
            built.append(native._build())
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(built)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [built[0].name]
    assert hasattr(ctypes.CDLL(str(built[0])), "acl_gabor_f32")


@needs_compiler
def test_cache_directory_others_can_write_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("ACL_CACHE_DIR", str(shared))
    with pytest.raises(RuntimeError, match="not private"):
        native._build()
    assert list(shared.iterdir()) == []  # nothing compiled or loaded from there
