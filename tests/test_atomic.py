"""keras_vgg.atomic: all or nothing, and ordinary permissions."""

import os
import stat

import pytest

from keras_vgg import atomic


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_directory(tmp_path):
    target = tmp_path / "out"
    with atomic.atomic_directory(target) as tmp:
        (open(os.path.join(tmp, "a"), "w")).write("1")
        assert not target.exists()
    assert (target / "a").read_text() == "1"
    with pytest.raises(FileExistsError):
        with atomic.atomic_directory(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic.atomic_directory(tmp_path / "half") as tmp:
            open(os.path.join(tmp, "a"), "w").write("x")
            raise RuntimeError("interrupted")
    assert not (tmp_path / "half").exists()
    with atomic.atomic_directory(target, overwrite=True) as tmp:
        open(os.path.join(tmp, "b"), "w").write("2")
    assert sorted(os.listdir(target)) == ["b"]
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temp dirs left


def test_files_are_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "x.json"
    atomic.atomic_write_file(path, "{}")
    assert path.read_text() == "{}"
    with pytest.raises(FileExistsError):
        atomic.atomic_write_file(path, "new", overwrite=False)
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "{}"
    with atomic.atomic_path(tmp_path / "fig.png") as tmp:
        assert tmp.endswith(".png")  # writers that pick the format by suffix
        open(tmp, "wb").write(b"png")
    assert sorted(os.listdir(tmp_path / "sub")) == ["x.json"]


def test_artifacts_get_the_umask_modes_not_private_ones(tmp_path):
    # tempfile makes 0600 files and 0700 directories; a server under another
    # uid must be able to read what was renamed into place.
    old = os.umask(0o022)
    try:
        atomic.atomic_write_file(tmp_path / "f.txt", b"x")
        with atomic.atomic_directory(tmp_path / "d") as tmp:
            os.makedirs(os.path.join(tmp, "variables"))
            open(os.path.join(tmp, "variables", "v"), "w").write("1")
        os.umask(0o027)
        atomic.atomic_write_file(tmp_path / "g.txt", b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "f.txt") == 0o644
    assert _mode(tmp_path / "d") == 0o755
    assert _mode(tmp_path / "d" / "variables") == 0o755
    assert _mode(tmp_path / "d" / "variables" / "v") == 0o644
    assert _mode(tmp_path / "g.txt") == 0o640
