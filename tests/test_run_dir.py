"""pipelines.run_dir: one run per model dir (`RunLock`)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from pipelines import run_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny network of tests/test_train.py, one step.
TINY_TRAIN = ["--recipe=demo", "--architecture=A", "--width_multiplier=0.125",
              "--crop=32", "--scale_min=32", "--scale_max=40",
              "--test_scale=32", "--batch_size=16", "--steps_per_epoch=2",
              "--max_steps=1", "--seed=1"]

# Holds the lock of argv[1] until its stdin closes.
HOLDER = ("import sys; from pipelines import run_dir; "
          "lock = run_dir.RunLock(sys.argv[1]).acquire(); "
          "print('held', flush=True); sys.stdin.read()")


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    first = run_dir.RunLock(str(tmp_path)).acquire()
    second = run_dir.RunLock(str(tmp_path))
    with pytest.raises(run_dir.DirectoryInUse,
                       match=rf"{tmp_path} is in use by another run "
                             rf"\(pid {os.getpid()} on "
                             rf"{socket.gethostname()}\)"):
        second.acquire()
    first.release()
    second.acquire()  # free again once released
    assert json.loads((tmp_path / run_dir.LOCK_FILE).read_text()) == {
        "pid": os.getpid(), "host": socket.gethostname()}
    second.release()
    # Never taken for a killed writer's leftovers.
    assert not run_dir.remove_stale_temp_files(str(tmp_path))


@pytest.mark.slow
@pytest.mark.processes
def test_train_into_a_locked_model_dir_refuses_and_leaves_it(tmp_path,
                                                             data_dir):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    # What the running run is writing: a second start would remove it as a
    # killed writer's leftover.
    (model_dir / "checkpoint.tmp3f2a9c").write_text("being written")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(model_dir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env, cwd=ROOT)
    try:
        assert holder.stdout.readline() == "held\n"
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.train", *TINY_TRAIN,
             f"--model_dir={model_dir}", f"--data_dir={data_dir}"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    finally:
        holder.communicate("", timeout=60)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"error: {model_dir} is in use by another run (pid {holder.pid} on "
        f"{socket.gethostname()}): wait for it to end, or use another "
        "--model_dir."]
    assert sorted(os.listdir(model_dir)) == [run_dir.LOCK_FILE,
                                             "checkpoint.tmp3f2a9c"]
    # The holder is gone, and so is its lock: the same command trains.
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.train", *TINY_TRAIN,
         f"--model_dir={model_dir}", f"--data_dir={data_dir}"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((model_dir / "metrics.json").read_text())["steps"] == 1
