"""What every command line's `run()` shares: absl's `app.run`, with `--help`
showing the command's description and own flags however it was started
(exit status 0), one `error: ...` line (exit status 1) for a user's mistake,
and a quiet console.

- An exception with an `exit_status` attribute, e.g. SIGTERM while
  training (`pipelines.trainer.TrainingPreempted`, after its checkpoint):
  its message on stderr, that exit status (143).
- User errors: a bad flag value, an unknown recipe, a missing file, an
  output that exists: `error: <message>` on stderr, exit status 1, no
  traceback.  `--debug` (or `KERAS_VGG_DEBUG=1`) shows the traceback.
- Logging: absl raises its Python logging to INFO in every command line, so
  TensorFlow's internals (checkpoint sharding, signature serialisation) log
  lines every epoch.  Here it stays at WARNING unless the user passes
  `--verbosity` (absl's own flag) or sets `KERAS_VGG_VERBOSE=1`
  (`pipelines/__init__.py` turns TensorFlow's C++ logging down).
"""

import os
import re
import sys

import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

import pipelines
from keras_vgg.fully_conv import STRIDE
from pipelines import run_dir

DEBUG_ENV = "KERAS_VGG_DEBUG"

# Errors whose message says what the user should change.  TensorFlow's
# NotFoundError names the missing path.  Its InvalidArgumentError is left
# out: it names graph ops and tensor shapes, and inputs a user can get wrong
# (images, scales, sizes) are checked into a ValueError before they reach
# TensorFlow, so one that escapes is a bug, for which the traceback helps.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError,
               IsADirectoryError, NotADirectoryError, PermissionError,
               flags.Error, app.UsageError, tf.errors.NotFoundError,
               run_dir.DirectoryInUse)

# TensorFlow's op decoration around a message: "{{function_node ...}} " and
# " [Op:ReadFile] name: ".
_TF_DECORATION = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:.*$")


def error_line(error):
    """The one line `error: <message>` that reports `error`."""
    if isinstance(error, tf.errors.OpError):
        message = _TF_DECORATION.sub("", error.message)
    else:
        message = str(error)
    if isinstance(error, (FileNotFoundError, PermissionError)) and \
            error.filename is not None and error.strerror:
        message = f"{error.strerror}: {error.filename!r}"
    message = " ".join(message.split()) or type(error).__name__
    return f"error: {message}"


def _debug():
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return True
    if flags.FLAGS.is_parsed():
        return "debug" in flags.FLAGS and flags.FLAGS.debug
    return "--debug" in sys.argv  # flag parsing failed


def define_dense_stride(positions, module_name, flag_values=None):
    """`--dense_stride`, the same flag in every command line that makes
    score maps (`evaluate`, `localize`, `scoremap`, the exporters).

    Args:
        positions: what the stride spaces, e.g. "the score-map positions
            the served model averages".
        module_name: the defining command's `__name__`, so that its
            `--help` lists the flag.
        flag_values: default `flags.FLAGS`.
    """
    if module_name == "__main__":  # `python -m`: absl's name for it
        module_name = sys.argv[0]
    flags.DEFINE_integer(
        "dense_stride", STRIDE, f"Input pixels between {positions}: "
        f"{STRIDE} (the network's own), 16 or 8 (its last one or two "
        "max-pools run at both offsets, OverFeat's multiple pooling "
        "offsets: about 4 or 16 times the work after them).",
        flag_values=flag_values or flags.FLAGS, module_name=module_name)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except SystemExit as done:
        # While parsing, only absl's help flags (--help, --helpshort,
        # --helpfull, --helpxml) exit, and they exit 1 after printing the
        # help the user asked for: that is a success.
        if done.code == 1:
            sys.exit(0)
        raise
    except flags.Error as error:
        if _debug():
            raise
        print(f"{error_line(error)} (--helpshort lists the flags)",
              file=sys.stderr)
        sys.exit(1)


def _quiet_main(main):
    def quiet_main(argv):
        if not (flags.FLAGS["verbosity"].present or pipelines.verbose()):
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except Exception as error:
            # An exception that carries its own `exit_status` (the trainer's
            # `TrainingPreempted`: checkpointed, 143) is an expected end:
            # its message, that status.
            status = getattr(error, "exit_status", None)
            if status is not None and not _debug():
                print(error, file=sys.stderr, flush=True)
                return status
            if not isinstance(error, USER_ERRORS) or _debug():
                raise
            print(error_line(error), file=sys.stderr)
            return 1
    return quiet_main


def run(main, module_name):
    """`app.run(main)` for the command line defined in module `module_name`,
    with `--debug`, user errors reported in one line and absl's INFO logging
    off (see the module doc).

    absl's `--help` prints the docstring of `__main__` and the key flags
    of the module `sys.argv[0]` names: the command's module under
    `python -m`, but under a console script (`vgg-train`) the wrapper that
    pip writes, which has neither.  So the command's docstring stands in for
    the wrapper's missing one, and its flags are made key flags of
    `sys.argv[0]` too.  `--help` exits 0.
    """
    main_module = sys.modules["__main__"]
    if not main_module.__doc__:
        main_module.__doc__ = sys.modules[module_name].__doc__
    if "debug" not in flags.FLAGS:
        flags.DEFINE_boolean(
            "debug", False, "On an error, show the Python traceback instead "
            f"of one line (also {DEBUG_ENV}=1).")
    key_flags = list(flags.FLAGS.get_key_flags_for_module(module_name))
    for flag in key_flags + [flags.FLAGS["debug"]]:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(_quiet_main(main), flags_parser=_parse_flags)
