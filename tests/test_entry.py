"""pipelines.entry: every command line reports a user's mistake in one
`error:` line with exit status 1, and keeps TensorFlow's logging quiet."""

import importlib
import json
import os
import subprocess
import sys

import pytest

from pipelines import entry
from pipelines import recipes
from tests.helpers import setup_list

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _user_env(env):
    # TensorFlow's log settings from this test process (which imported
    # `pipelines`) are not passed on.
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_VGG_VERBOSE",
                            entry.DEBUG_ENV)}
    environ.update(env)
    return environ


def cli(*args, **env):
    """Runs `python -m <args>` as a user does."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True,
                          text=True, cwd=ROOT, env=_user_env(env),
                          timeout=300)


def console_scripts(scripts, *args):
    """{script: {"returncode", "stdout", "stderr"}}: each console script
    (`"vgg-train=pipelines.train:run"`) run with `args` as the wrapper pip
    writes runs it (a `__main__` without a docstring, the script's path as
    `sys.argv[0]`), by `tests/console_scripts.py`.  (The installed wrappers
    run the main checkout's code.)"""
    result = subprocess.run(
        [sys.executable, "-m", "tests.console_scripts", json.dumps(args)],
        input=json.dumps(scripts), capture_output=True, text=True, cwd=ROOT,
        env=_user_env({}), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def _first_doc_line(module_name):
    return importlib.import_module(module_name).__doc__.splitlines()[0]


def test_recipe_typo_suggests_the_close_name():
    with pytest.raises(ValueError, match=r"Did you mean 'vgg16_s256'\?"):
        recipes.get_recipe("vgg16_s265")
    with pytest.raises(ValueError, match="Expected one of"):
        recipes.get_recipe("resnet50")


def test_error_line_is_one_line():
    assert entry.error_line(ValueError("bad\n  value")) == "error: bad value"
    assert entry.error_line(FileNotFoundError(2, "No such file", "/x")) == \
        "error: No such file: '/x'"


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (("pipelines.train", "--recipe=vgg16_s265", "--model_dir={tmp}"),
     "Did you mean 'vgg16_s256'?"),
    (("pipelines.evaluate", "--model=/nonexistent"), "'/nonexistent'"),
    (("pipelines.scoremap",), "Give one IMAGE"),
    (("pipelines.localize", "image.jpg"), "--model"),
])
def test_user_errors_are_one_error_line(tmp_path, args, message):
    result = cli(*[a.format(tmp=tmp_path / "run") for a in args])
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_debug_shows_the_traceback():
    result = cli("pipelines.scoremap", "--debug")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith(
        "ValueError: Give one IMAGE")
    result = cli("pipelines.scoremap", **{entry.DEBUG_ENV: "1"})
    assert "Traceback (most recent call last)" in result.stderr


@pytest.mark.slow
def test_console_script_help_shows_the_description():
    """absl exits 1 after `--help`, and under a console script it printed
    the wrapper's (missing) docstring instead of the command's."""
    scripts = setup_list("CONSOLE_SCRIPTS")
    results = console_scripts(scripts, "--help")
    assert set(results) == set(scripts)
    for script, result in results.items():
        assert result["returncode"] == 0, (script, result["stderr"][-2000:])
        module_name = script.split("=")[1].split(":")[0]
        assert result["stdout"].startswith(
            _first_doc_line(module_name) + "\n"), (script, result["stdout"])
        # The command's own flags follow.
        assert "--[no]debug" in result["stdout"], script
        assert "Traceback" not in result["stderr"], script
    helpfull = console_scripts(scripts[:1], "--helpfull")[scripts[0]]
    assert helpfull["returncode"] == 0, helpfull["stderr"][-2000:]
    assert "--recipe" in helpfull["stdout"]  # vgg-train's


@pytest.mark.slow
def test_python_m_help_exits_0():
    result = cli("pipelines.train", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(_first_doc_line("pipelines.train") + "\n")
    assert "--recipe" in result.stdout
