"""pipelines.entry: every command line reports a user's mistake in one
`error:` line with exit status 1, and keeps TensorFlow's logging quiet."""

import os
import subprocess
import sys

import pytest

from pipelines import entry
from pipelines import recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, **env):
    """Runs `python -m <args>` as a user does: TensorFlow's log settings
    from this test process (which imported `pipelines`) are not passed on."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_VGG_VERBOSE",
                            entry.DEBUG_ENV)}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", *args], capture_output=True,
                          text=True, cwd=ROOT, env=environ, timeout=300)


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
