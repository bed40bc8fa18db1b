"""Runs console scripts as the wrapper pip writes does, each in a forked
child of this one process, so that TensorFlow is imported once rather than
once per command (every command defines its flags in `run()`, so each child
starts from absl's empty flag registry).

    python -m tests.console_scripts ARGS_JSON < SCRIPTS_JSON

reads a JSON list of console-script entries ("vgg-train=pipelines.train:run")
on stdin, runs each with the arguments ARGS_JSON (a JSON list) and prints a
JSON object: {entry: {"returncode", "stdout", "stderr"}}.
"""

import importlib
import json
import os
import sys
import tempfile


def _child(script, args, out_path, err_path):
    name, target = script.split("=")
    module_name, function = target.split(":")
    entry_function = getattr(importlib.import_module(module_name), function)
    with open(out_path, "w") as out, open(err_path, "w") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    # The wrapper pip writes: no docstring, its own path as argv[0].
    sys.modules["__main__"].__doc__ = None
    sys.argv = [os.path.join(sys.prefix, "bin", name), *args]
    try:
        code = entry_function()
    except SystemExit as done:
        code = done.code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def run_all(scripts, args):
    """{script: {"returncode", "stdout", "stderr"}} of each console script
    run with `args`."""
    for script in scripts:  # imported before forking: once for all
        importlib.import_module(script.split("=")[1].split(":")[0])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, script in enumerate(scripts):
            out_path = os.path.join(tmp, f"{i}.out")
            err_path = os.path.join(tmp, f"{i}.err")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                try:
                    _child(script, args, out_path, err_path)
                finally:  # never back into the parent's loop
                    os._exit(70)
            _, status = os.waitpid(pid, 0)
            with open(out_path) as out, open(err_path) as err:
                results[script] = {
                    "returncode": os.waitstatus_to_exitcode(status),
                    "stdout": out.read(), "stderr": err.read()}
    return results


if __name__ == "__main__":
    print(json.dumps(run_all(json.load(sys.stdin), json.loads(sys.argv[1]))))
