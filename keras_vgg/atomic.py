"""Writing files and directories so that a reader sees all or nothing.

Every artifact the project writes (a run's `model.keras` and JSON files,
results, pictures, SavedModels, TFLite files, the TF-Serving layout) goes
through these: the content is written beside the target under a hidden
temporary name, then renamed into place, which POSIX makes atomic on one
file system.  A crash leaves the old target or none, never half of one.

The temporary files come from `tempfile`, which creates them private
(0600 files, 0700 directories); renamed as they are, a TF-Serving container
running as another user could not read them.  They get the ordinary modes
of the process umask (0644 / 0755 with the usual 022) before the rename.
"""

import contextlib
import os
import shutil
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ordinary_modes(path):
    """Gives `path` (a file, or a directory and all below it) the modes a
    plain `open()` / `os.makedirs()` would have given it."""
    mask = _umask()
    if not os.path.isdir(path):
        os.chmod(path, 0o666 & ~mask)
        return
    os.chmod(path, 0o777 & ~mask)
    for root, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            full = os.path.join(root, name)
            # Keep the executable bit of files written executable.
            executable = os.stat(full).st_mode & 0o111
            os.chmod(full, (0o777 if executable else 0o666) & ~mask)


def _check_target(target, overwrite):
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target!r} exists; pass overwrite=True "
                              "(--overwrite) to replace it.")


@contextlib.contextmanager
def atomic_directory(target, overwrite=False):
    """Yields a temporary directory beside `target`; renames it to `target`
    when the block ends without an exception, else deletes it.

    Raises:
        FileExistsError: `target` exists and `overwrite` is False (checked
            before and again after the block).

    Example::

        with atomic_directory("models/vgg16/1") as tmp:
            tf.saved_model.save(module, tmp)
    """
    target = os.path.abspath(os.fspath(target))
    _check_target(target, overwrite)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(target)
    # A leading dot keeps TF-Serving's version scan (numeric names only) and
    # most globbing away from the half-written directory.
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    try:
        yield tmp
        _ordinary_modes(tmp)
        old = None
        if os.path.exists(target):
            if not overwrite:
                raise FileExistsError(f"{target!r} appeared while writing; "
                                      "not replacing it.")
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.rename(target, os.path.join(old, base))
        os.rename(tmp, target)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_path(path, overwrite=True):
    """Yields a temporary file name beside `path` (same extension, so that
    writers that choose the format by suffix still do); renames it to
    `path` when the block ends without an exception, else removes it.

    For writers that want a file name (`model.save`, `fig.savefig`).
    """
    path = os.path.abspath(os.fspath(path))
    _check_target(path, overwrite)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.tmp-",
                               suffix=os.path.splitext(base)[1], dir=parent)
    os.close(fd)
    try:
        yield tmp
        _ordinary_modes(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_file(path, data, overwrite=True):
    """Writes bytes or text (UTF-8) to `path` through a temporary file and
    a rename.

    Raises:
        FileExistsError: `path` exists and `overwrite` is False.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
