"""A training run's directory as the one truth about the run.

- `training_config.json` is written when a run starts; a rerun into the same
  directory is compared with it (`reconcile_config`): the settings that are
  safe to change on a resume (`SAFE_CHANGES`) are applied and recorded in its
  `changes` list, any other difference is refused.
- `remove_stale_temp_files` removes what a killed writer left behind: only
  names of the temporary patterns that TensorFlow's checkpoint writer and
  `keras_vgg.atomic` use.
- `removed_on_failure` removes the directories a failed start created (and
  never anything that was there before).
- `RunLock`: one run per directory.  A run holds an exclusive `flock` on
  `LOCK_FILE` in its directory while it trains; a second start into the
  same directory is refused (`DirectoryInUse`, naming the holder's pid and
  host).  The kernel drops the lock when the holder dies, however it dies,
  so a killed run leaves no stale lock; the file itself stays.
"""

import contextlib
import json
import os
import re
import shutil
import socket

try:
    import fcntl
except ImportError:  # not POSIX (Windows): runs are not locked there
    fcntl = None

from keras_vgg import runs

# Settings a resumed run may change: they steer the loop from the resume
# step on, and leave what was trained so far meaning what it did.
# learning_rate overrides the checkpointed (scheduled) rate from that step.
SAFE_CHANGES = ("learning_rate", "max_epochs", "max_steps",
                "checkpoint_every", "keep_checkpoints", "val_batch_size",
                "max_rollbacks", "lr_patience", "lr_decay_epochs",
                "steps_per_loop", "data_service", "data_service_timeout")

# The file a run locks, in its directory.  Not one of `_TEMP_NAMES`: a
# start must never remove it.
LOCK_FILE = ".lock"

# Fields that follow from others: a difference there is already listed.
_DERIVED = ("jittered", "validation_scale", "changes")

# What an interrupted writer leaves: `tf.train.CheckpointManager`'s sharded
# save (`ckpt-N_temp/`), TF's atomic write of the `checkpoint` state file
# (`checkpoint.tmp<hex>`), and `keras_vgg.atomic` (`.<name>.tmp-*`,
# `.<name>.old-*`).
_TEMP_NAMES = re.compile(r"^(ckpt-\d+_temp.*|checkpoint\.tmp[0-9a-f]+"
                         r"|\..+\.(tmp|old)-.+)$")


def remove_stale_temp_files(*directories):
    """Removes the temporary files and dirs of an interrupted write from
    `directories` (not recursively); returns the paths removed.  Call it
    before this process writes there."""
    removed = []
    for directory in directories:
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            if not _TEMP_NAMES.match(name):
                continue
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
            removed.append(path)
    return removed


def _json_value(value):
    # Tuples and lists, ints and floats compare as JSON stores them.
    return json.loads(json.dumps(value))


def reconcile_config(stored, config, step):
    """The training config to record for a resume of a run whose stored
    config is `stored`, and the changes made now.

    Args:
        stored: the run's `training_config.json` (a dict; {} when absent).
        config: this start's training config dict.
        step: the step the run resumes from.

    Returns:
        (config to write, with the `changes` list carried on; the list of
        {"step", "field", "from", "to"} made by this start).

    Raises:
        ValueError: a field outside `SAFE_CHANGES` differs; every one is
            named, old -> new.
    """
    stored = runs.normalize_training_config(stored)
    config = _json_value(config)
    refused, changes = [], []
    for field, new in config.items():
        if field in _DERIVED or field not in stored:
            continue  # written by an older version: nothing to compare
        old = stored[field]
        if old == new:
            continue
        if field in SAFE_CHANGES:
            changes.append({"step": step, "field": field, "from": old,
                            "to": new})
        else:
            refused.append(f"{field}: {old!r} -> {new!r}")
    if refused:
        raise ValueError(
            "The model dir holds a run with other settings (" +
            "; ".join(refused) + "). Only " + ", ".join(SAFE_CHANGES) +
            " may change on a resume: use a new --model_dir.")
    config["changes"] = list(stored.get("changes", [])) + changes
    return config, changes


def read_json(path):
    """The JSON object in `path`, or None when there is no such file."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextlib.contextmanager
def removed_on_failure(directory):
    """Removes `directory` (and the parents created for it) when the block
    raises, if they did not exist before it; what was there is kept."""
    directory = os.path.abspath(directory)
    top = None
    path = directory
    while not os.path.exists(path):
        top = path
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    try:
        yield
    except BaseException:
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        raise


class DirectoryInUse(RuntimeError):
    """Another process holds the run lock of the directory."""


class RunLock:
    """An exclusive lock on `directory` for one run (see the module doc).

    `acquire()` raises `DirectoryInUse` naming the holder when another
    process (or another `RunLock` in this one) holds it; `release()` (or
    closing the process) frees it.  Both may be called again.
    """

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_FILE)
        self._fd = None

    def acquire(self):
        """Takes the lock (the directory must exist); returns self."""
        if self._fd is not None or fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DirectoryInUse(
                f"{self.directory} is in use by another run ({holder}): "
                "wait for it to end, or use another --model_dir.") from None
        except BaseException:
            os.close(fd)
            raise
        # Written under the lock, for the message of the next start.
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(),
                                  "host": socket.gethostname()}).encode(), 0)
        self._fd = fd
        return self

    def release(self):
        """Frees the lock if this object holds it."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __del__(self):
        self.release()


def _read_holder(fd):
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        return f"pid {holder['pid']} on {holder['host']}"
    except (OSError, ValueError, TypeError, KeyError):
        # Locked, but its holder has not written its name yet.
        return "a process that is starting"
