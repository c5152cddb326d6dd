"""rsd.engine.cachedir: where the cache lives and atomic writes."""
import os

import pytest

from rsd.engine.cachedir import atomic_write, cache_dir


def test_cache_dir_env_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("RSD_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("a", "b") == str(tmp_path / "explicit" / "a" / "b")
    assert os.path.isdir(tmp_path / "explicit" / "a" / "b")
    monkeypatch.delenv("RSD_CACHE_DIR")
    assert cache_dir("x", create=False) == str(tmp_path / "xdg" / "rsd-kernels" / "x")
    assert not os.path.exists(tmp_path / "xdg" / "rsd-kernels" / "x")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir(create=False) == str(tmp_path / "home" / ".cache" / "rsd-kernels")


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "entry.bin"
    with atomic_write(str(path)) as f:
        f.write(b"first")
    assert path.read_bytes() == b"first"
    with pytest.raises(RuntimeError):
        with atomic_write(str(path)) as f:
            f.write(b"partial")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"first"  # the interrupted write left the old entry
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.bin"]  # and no temporary file
    with atomic_write(str(tmp_path / "new" / "t.txt"), "w") as f:
        f.write("text")
    assert (tmp_path / "new" / "t.txt").read_text() == "text"
