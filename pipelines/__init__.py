"""Datasets, the trainer, the evaluation protocols and their command lines.

This file runs before any other module of `pipelines` or `export` (`export`
imports it first), so it is where TensorFlow's own console output is turned
down, before TensorFlow is imported:

- `TF_CPP_MIN_LOG_LEVEL` is read once, when TensorFlow loads.  Level 3 drops
  its C++ INFO, WARNING and ERROR lines: on a machine without a GPU the CUDA
  wheel's probe alone logs an ERROR ("failed call to cuInit") on every run,
  and the errors that stop a run reach Python as exceptions anyway.
- A few INFO lines ("oneDNN custom operations are on", "Could not find cuda
  drivers", absl's "before absl::InitializeLog()" warning) are written while
  TensorFlow loads, before it reads that level, twice per process; they are
  dropped from what the import writes to stderr, and everything else it
  writes is passed on.

A user's own `TF_CPP_MIN_LOG_LEVEL` wins (0 shows everything), and
`KERAS_VGG_VERBOSE=1` leaves TensorFlow's defaults alone, here and in
`pipelines.entry` (which turns absl's Python INFO lines down in every command
line).
"""

import contextlib
import os
import re
import sys
import tempfile

VERBOSE_ENV = "KERAS_VGG_VERBOSE"
# What absl's C++ logging writes for an INFO line ("I0000 00:00:17... port.cc")
# and its one warning that logging is not initialised yet.
_NATIVE_INFO = re.compile(
    r"^(I\d{4} |WARNING: All log messages before absl::InitializeLog)")


def verbose():
    """Whether the user asked for TensorFlow's own log lines
    (`KERAS_VGG_VERBOSE` set to anything but empty or 0)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def native_lines_dropped(pattern, fd=2):
    """Captures what is written to file descriptor `fd` (1: stdout, 2:
    stderr; C++ code's output included) and passes on every line but those
    matching the regular expression `pattern`."""
    stream = sys.stdout if fd == 1 else sys.stderr
    try:
        saved = os.dup(fd)
    except OSError:  # nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        stream.flush()
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not re.match(pattern, line)]
            if kept:
                stream.write("".join(kept))
                stream.flush()


if not verbose():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "tensorflow" in sys.modules or verbose() or \
        os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "0":
    import tensorflow  # noqa: F401
else:
    with native_lines_dropped(_NATIVE_INFO):
        import tensorflow  # noqa: F401
