import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from pipelines import recipes
from pipelines import sources
from pipelines import synthetic
from pipelines import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A network small enough to train in seconds on 2 cores.
TINY = dict(width_multiplier=0.125, crop=32, scale_min=32, scale_max=40,
            test_scale=32, batch_size=16, checkpoint_every=5, seed=1)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return str(synthetic.write_builtin(tmp_path_factory.mktemp("builtin")))


def test_recipes_follow_table3():
    assert set(recipes.RECIPES) >= {
        f"{a}_{s}" for a in ("vgg11", "vgg11_lrn", "vgg13", "vgg16c", "vgg16",
                             "vgg19") for s in ("s256", "s384", "jitter")}
    s256, s384 = recipes.RECIPES["vgg16_s256"], recipes.RECIPES["vgg16_s384"]
    jitter = recipes.RECIPES["vgg16_jitter"]
    assert (s256.architecture, s256.scale_min, s256.scale_max,
            s256.learning_rate) == ("D", 256, 256, 1e-2)
    assert (s384.scale_min, s384.learning_rate) == (384, 1e-3)
    assert (jitter.scale_min, jitter.scale_max, jitter.validation_scale) == (
        256, 512, 384)
    assert (s256.batch_size, s256.momentum, s256.weight_decay, s256.dropout,
            s256.max_lr_decreases, s256.max_epochs) == (256, 0.9, 5e-4, 0.5,
                                                        3, 74)
    assert recipes.RECIPES["vgg11_lrn_s256"].architecture == "A-LRN"


@pytest.mark.parametrize("kwargs,name", [
    ({"scale_min": 200}, "scale_min"), ({"grad_accum": 3}, "grad_accum"),
    ({"init": "he"}, "init"), ({"mixed_precision": "fp8"}, "mixed_precision"),
    ({"architecture": "Z"}, "architecture"), ({"task": "detection"}, "task"),
    ({"xla": True, "deterministic": True}, "xla")])
def test_bad_train_config(kwargs, name):
    with pytest.raises(ValueError, match=name):
        recipes.TrainConfig(**kwargs)


def test_unknown_recipe():
    with pytest.raises(ValueError, match="vgg16_jitter"):
        recipes.get_recipe("vgg16_s999")


def test_task_spelled_localisation_is_stored_as_localization():
    cfg = recipes.TrainConfig(task="localisation")
    assert cfg.task == "localization"
    assert dataclasses.asdict(cfg)["task"] == "localization"
    assert recipes.RECIPES["demo_loc"].task == "localization"


def test_old_flag_names_are_aliases():
    fv = flags.FlagValues()
    train._define_flags(fv)
    fv(["train", "--config=demo_loc", "--model_config=B",
        "--task=localisation", "--regression=pcr"])
    cfg = train.config_from_flags(fv)
    assert (fv.recipe, cfg.architecture, cfg.task, cfg.regression) == (
        "demo_loc", "B", "localization", "pcr")
    assert cfg.learning_rate == recipes.RECIPES["demo_loc"].learning_rate


def test_short_training_loss_falls_and_outputs(tmp_path, data_dir):
    cfg = dataclasses.replace(recipes.RECIPES["demo"], max_epochs=4,
                              lr_patience=10)
    metrics = train.train(cfg, model_dir=str(tmp_path), data_dir=data_dir,
                          verbose=0)
    losses = [h["train_loss"] for h in metrics["history"]]
    assert losses[-1] < losses[0] - 0.1, losses
    assert metrics["steps"] == 4 * (600 // 32)
    for key in ("val_top1_accuracy", "val_top5_accuracy", "images_skipped",
                "steps", "images_per_second"):
        assert key in json.loads((tmp_path / "metrics.json").read_text())
    model = keras.saving.load_model(str(tmp_path / "model.keras"))
    probs = model.predict(np.zeros((2, 64, 64, 3), "float32"), verbose=0)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    config = json.loads((tmp_path / "training_config.json").read_text())
    assert (config["architecture"], config["scale_min"],
            config["preprocessing"], config["task"]) == (
        "A", 64, "caffe", "classification")
    assert config["class_names"] == list(synthetic.CLASS_NAMES)
    assert os.listdir(tmp_path / "logs")
    assert not [f for f in os.listdir(tmp_path) if "tmp" in f]


def test_gradient_accumulation_equals_full_batch(tmp_path, data_dir):
    """Two micro-batches of 8 with accumulation give the update of one batch
    of 16 (no dropout, no BN: the only difference is summation order)."""
    weights = []
    for accum in (1, 2):
        cfg = recipes.TrainConfig(
            architecture="A", dropout=0.0, max_steps=2, steps_per_epoch=10,
            grad_accum=accum, pca_lighting_std=0.0, deterministic=True,
            **TINY)
        metrics = train.train(cfg, model_dir=str(tmp_path / str(accum)),
                              data_dir=data_dir, verbose=0)
        assert metrics["steps"] == 2
        weights.append(keras.saving.load_model(
            str(tmp_path / str(accum) / "model.keras")).get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# The keys of every checkpoint written so far, beside model_variables and
# optimizer: an old run must resume with its schedule and counters.
CHECKPOINT_KEYS = {"step": 7, "epoch": 2, "epoch_start_step": 6,
                   "lr_decreases": 1, "best_val_top1": 0.75,
                   "epochs_since_best": 1, "images_skipped": 3,
                   "learning_rate": 1e-3}


def test_checkpoints_of_earlier_runs_resume(tmp_path, data_dir):
    old = {name: tf.Variable(value, dtype=tf.float64 if isinstance(
        value, float) else tf.int64) for name, value in
        CHECKPOINT_KEYS.items()}
    tf.train.CheckpointManager(tf.train.Checkpoint(**old),
                               str(tmp_path / "checkpoints"),
                               max_to_keep=1).save(checkpoint_number=7)
    cfg = recipes.TrainConfig(architecture="A", steps_per_epoch=10, **TINY)
    trainer = train.Trainer(
        cfg, sources.load_source("builtin", "train", data_dir=data_dir),
        sources.load_source("builtin", "validation", data_dir=data_dir),
        str(tmp_path), verbose=0)
    assert trainer.restored
    schedule = trainer.schedule
    assert [int(trainer.progress[k].numpy()) for k in (
        "step", "epoch", "epoch_start_step", "images_skipped")] == [7, 2, 6, 3]
    assert (float(schedule.best_accuracy.numpy()),
            int(schedule.epochs_since_best.numpy()),
            int(schedule.lr_decreases.numpy()),
            schedule.current_learning_rate) == (0.75, 1, 1, 1e-3)
    np.testing.assert_allclose(
        float(trainer.optimizer.learning_rate.numpy()), 1e-3)
    # And what it writes keeps the same keys.
    trainer._save()
    written = {name.split("/")[0] for name, _ in
               tf.train.list_variables(trainer.manager.latest_checkpoint)}
    assert written >= set(CHECKPOINT_KEYS) | {"model_variables", "optimizer"}


def test_nan_loss_rolls_back_then_stops(tmp_path, data_dir):
    cfg = recipes.TrainConfig(architecture="A", learning_rate=1e6,
                              max_epochs=1,
                              steps_per_epoch=20, max_rollbacks=2,
                              **dict(TINY, checkpoint_every=1))
    with pytest.raises(train.TrainingDiverged,
                       match="rolled back 2 times.*Lower --learning_rate"):
        train.train(cfg, model_dir=str(tmp_path), data_dir=data_dir,
                    verbose=0)
    assert any(f.startswith("ckpt-") for f in
               os.listdir(tmp_path / "checkpoints"))


def _cli(model_dir, data_dir):
    return [sys.executable, "-m", "pipelines.train", "--recipe=demo",
            f"--model_dir={model_dir}", f"--data_dir={data_dir}",
            "--architecture=A", "--width_multiplier=0.125", "--crop=32",
            "--scale_min=32", "--scale_max=40", "--test_scale=32",
            "--batch_size=16", "--steps_per_epoch=30", "--max_epochs=3",
            "--checkpoint_every=5", "--seed=7", "--deterministic",
            "--dropout=0.5"]


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.mark.processes
def test_sigkill_and_resume_matches_uninterrupted(tmp_path, data_dir):
    """One step per loop straight through; loops of 4 steps (4, 1, 4, 1:
    they end at every 5th step) killed after step 15, then resumed with
    loops of 3: the same weights to the bit."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    subprocess.run(_cli(straight, data_dir) + ["--steps_per_loop=1"],
                   check=True, env=_env(), cwd=ROOT, capture_output=True)
    proc = subprocess.Popen(_cli(resumed, data_dir) + ["--steps_per_loop=4"],
                            env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = resumed / "checkpoints" / "ckpt-15.index"
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists()
    assert not (resumed / "metrics.json").exists(), "finished before the kill"
    subprocess.run(_cli(resumed, data_dir) + ["--steps_per_loop=3"],
                   check=True, env=_env(), cwd=ROOT, capture_output=True)
    a = keras.saving.load_model(str(straight / "model.keras")).get_weights()
    b = keras.saving.load_model(str(resumed / "model.keras")).get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert json.loads((resumed / "metrics.json").read_text())["steps"] == 90
    changes = json.loads((resumed / "training_config.json").read_text())[
        "changes"]
    assert [(c["field"], c["from"], c["to"]) for c in changes] == [
        ("steps_per_loop", 4, 3)]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_workers(tmp_path, data_dir, changes=None):
    """Both workers of a two-process cluster on localhost
    (tests/mwms_worker.py), training tmp_path/run."""
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                       "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "mwms_worker.py"),
             data_dir, str(tmp_path / "run"), str(tmp_path / f"w{i}.npz"),
             json.dumps(changes or {})],
            env=env, cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    return procs


def _wait_workers(procs, timeout):
    """The workers' outputs once both have exited; a worker still running
    after `timeout` seconds (a hang) is killed and fails the test."""
    deadline = time.time() + timeout
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(
                timeout=max(1.0, deadline - time.time()))[0][-3000:])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the workers did not exit within {timeout} s: "
                    + " | ".join(p.communicate()[0][-2000:] for p in procs))
    return outputs


def _same_weights(tmp_path):
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    names = [k for k in w0.files if k.startswith("arr_")]
    assert names
    for k in names:
        np.testing.assert_array_equal(w0[k], w1[k])
    assert int(w0["steps"]) == int(w1["steps"])
    return int(w0["steps"])


@pytest.mark.processes
def test_multi_worker_mirrored_two_processes(tmp_path, data_dir):
    procs = _start_workers(tmp_path, data_dir)
    outputs = _wait_workers(procs, 300)
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert _same_weights(tmp_path) == 4
    # Only the chief writes the run's outputs.
    assert (tmp_path / "run" / "model.keras").exists()


@pytest.mark.slow
@pytest.mark.processes
def test_sigterm_to_one_worker_stops_both_at_one_step_and_rerun_resumes(
        tmp_path, data_dir):
    run = tmp_path / "run"
    dirs = [run / "checkpoints", run / ".workers" / "worker_1" / "checkpoints"]
    # 4 steps an epoch in loops of 3 (a loop ends at an epoch end): loops
    # end at steps 3, 4, 7, 8, ...; far more epochs than the test waits for.
    changes = {"max_epochs": 500, "steps_per_loop": 3}
    procs = _start_workers(tmp_path, data_dir, changes)
    # Both have trained epoch 1: its checkpoint is in both workers' dirs.
    deadline = time.time() + 300
    while (not all((d / "ckpt-4.index").exists() for d in dirs)
           and time.time() < deadline
           and all(p.poll() is None for p in procs)):
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # worker 1 only
    outputs = _wait_workers(procs, 60)
    assert [p.returncode for p in procs] == [143, 143], outputs
    saved = [re.findall(r"SIGTERM to a worker: saved \S+ at step (\d+);", out)
             for out in outputs]
    assert saved[0] == saved[1] and len(saved[0]) == 1, outputs
    step = int(saved[0][0])
    assert step > 4 and step % 4 in (0, 3), step  # after epoch 1, a loop end
    for d in dirs:
        assert tf.train.latest_checkpoint(str(d)) == str(d / f"ckpt-{step}")
    assert not (run / "metrics.json").exists()

    # The same command on both, told to stop 5 steps later.
    procs = _start_workers(tmp_path, data_dir,
                           dict(changes, max_steps=step + 5))
    outputs = _wait_workers(procs, 300)
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert (f"from ckpt-{step}: epoch {(step - 1) // 4 + 1}, step {step}"
            in outputs[0]), outputs[0]
    assert _same_weights(tmp_path) == step + 5
    changes = json.loads((run / "training_config.json").read_text())[
        "changes"]
    assert [(c["field"], c["to"], c["step"]) for c in changes] == [
        ("max_steps", step + 5, step)]
    assert json.loads((run / "metrics.json").read_text())["steps"] == step + 5


@pytest.mark.parametrize("changes", [{"mixed_precision": "bfloat16"},
                                     {"mixed_precision": "float16"},
                                     {"xla": True}])
def test_mixed_precision_and_xla_train(tmp_path, data_dir, changes):
    cfg = recipes.TrainConfig(architecture="A", max_steps=3,
                              steps_per_epoch=10,
                              **TINY, **changes)
    metrics = train.train(cfg, model_dir=str(tmp_path), data_dir=data_dir,
                          verbose=0)
    assert metrics["steps"] == 3
    assert keras.mixed_precision.global_policy().name == "float32"
    model = keras.saving.load_model(str(tmp_path / "model.keras"))
    assert np.isfinite(model.get_weights()[0]).all()
    # The output layer computes in float32: probabilities that sum to 1.
    probs = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)


def test_init_from_net_a_copies_the_papers_layers(tmp_path):
    small = dict(width_multiplier=0.125, crop=32, scale_min=32, scale_max=40)
    net_a = train.build_model(recipes.TrainConfig(architecture="A", **small),
                              5)
    net_a.save(str(tmp_path / "model.keras"))
    # A run of an earlier version: its architecture under the key "config".
    (tmp_path / "training_config.json").write_text(json.dumps({"config": "A"}))
    net_d = train.build_model(recipes.TrainConfig(architecture="D", **small),
                              5)
    before = net_d.get_layer("block1_conv2").get_weights()[0].copy()
    copied = train.initialize_from(net_d, str(tmp_path), "D")
    assert copied == list(train.PAPER_INIT_LAYERS)
    for name in train.PAPER_INIT_LAYERS:
        for a, b in zip(net_d.get_layer(name).get_weights(),
                        net_a.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    # block4_conv1 has the same shape in A and D but is not one of the four.
    assert not np.array_equal(net_d.get_layer("block4_conv1").get_weights()[0],
                              net_a.get_layer("block4_conv1").get_weights()[0])
    np.testing.assert_array_equal(
        net_d.get_layer("block1_conv2").get_weights()[0], before)
    with pytest.raises(ValueError, match="init_from"):
        train.initialize_from(net_d, str(tmp_path / "missing"), "D")


# -- a run directory: resume, faults, failed starts --------------------------

def _tiny(**changes):
    fields = dict(TINY, architecture="A", steps_per_epoch=4, max_epochs=1)
    fields.update(changes)
    return recipes.TrainConfig(**fields)


@pytest.mark.slow
def test_step_schedule_divides_after_its_epochs_across_a_resume(
        tmp_path, data_dir):
    run = str(tmp_path / "run")
    first = train.train(_tiny(learning_rate=0.01, lr_decay_epochs="1"),
                        model_dir=run, data_dir=data_dir, verbose=0)
    assert first["learning_rate"] == pytest.approx(0.001)
    # Resumed with one more decay epoch and two more epochs (safe changes).
    metrics = train.train(
        _tiny(learning_rate=0.01, lr_decay_epochs="1,2", max_epochs=3),
        model_dir=run, data_dir=data_dir, verbose=0)
    rates = [h["learning_rate"] for h in metrics["history"]]
    assert rates == pytest.approx([0.01, 0.001, 0.0001])
    assert metrics["lr_decreases"] == 2
    assert metrics["learning_rate"] == pytest.approx(0.0001)
    assert metrics["stop_reason"] == "max_epochs"
    changes = json.loads(open(os.path.join(
        run, "training_config.json")).read())["changes"]
    assert {(c["field"], c["from"], c["to"]) for c in changes} >= {
        ("lr_decay_epochs", "1", "1,2"), ("max_epochs", 1, 3)}


def _mtimes(path, names):
    return {n: os.stat(path / n).st_mtime_ns for n in names}


@pytest.mark.slow
def test_rerun_refuses_other_settings_keeps_finished_applies_safe_changes(
        tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    train.train(_tiny(), model_dir=str(run), data_dir=data_dir, verbose=0)
    config_before = (run / "training_config.json").read_text()
    # Another recipe of the same architecture: refused, every field named.
    with pytest.raises(ValueError, match=r"scale_min: 32 -> 36; "
                       r"scale_max: 40 -> 44.*batch_size: 16 -> 8.*"
                       r"new --model_dir"):
        train.train(_tiny(scale_min=36, scale_max=44, batch_size=8),
                    model_dir=str(run), data_dir=data_dir, verbose=0)
    assert (run / "training_config.json").read_text() == config_before
    # The same settings again: finished, nothing rewritten.
    outputs = ("metrics.json", "model.keras")
    before = _mtimes(run, outputs)
    metrics = train.train(_tiny(), model_dir=str(run), data_dir=data_dir)
    assert "is finished (max_epochs at step 4)" in capsys.readouterr().out
    assert _mtimes(run, outputs) == before
    assert len(metrics["history"]) == 1 and metrics["images_per_second"] > 0
    # More epochs and another rate: applied from step 4 and recorded.
    metrics = train.train(_tiny(max_epochs=2, learning_rate=0.05),
                          model_dir=str(run), data_dir=data_dir)
    out = capsys.readouterr().out
    assert "Resuming " + str(run) + " from ckpt-4: epoch 2, step 4" in out
    assert "learning_rate: 0.01 -> 0.05 (from step 4)" in out
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert [h["learning_rate"] for h in metrics["history"]] == [0.01, 0.05]
    assert metrics["images_trained"] == 8 * 16
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["history"] == metrics["history"]
    config = json.loads((run / "training_config.json").read_text())
    assert (config["learning_rate"], config["max_epochs"]) == (0.05, 2)
    assert config["changes"] == [
        {"step": 4, "field": "learning_rate", "from": 0.01, "to": 0.05},
        {"step": 4, "field": "max_epochs", "from": 1, "to": 2}]


@pytest.mark.slow
def test_unreadable_checkpoint_falls_back_and_stale_temp_files_go(
        tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    cfg = _tiny(steps_per_epoch=20, max_steps=10)
    train.train(cfg, model_dir=str(run), data_dir=data_dir, verbose=0)
    ckpts = run / "checkpoints"
    data = ckpts / "ckpt-10.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    # What kill -9 leaves mid-write, and a user's file that is no temp file.
    (ckpts / "ckpt-12_temp").mkdir()
    (ckpts / "ckpt-12_temp" / "part-00000-of-00001.index").write_text("x")
    (ckpts / "checkpoint.tmp3f2a9c").write_text("x")
    (run / ".metrics.json.tmp-k2j4.json").write_text("x")
    (run / ".model.keras.old-ab12").mkdir()
    (run / "notes.tmp.txt").write_text("mine")
    trainer = train.Trainer(
        dataclasses.replace(cfg, max_steps=12),
        sources.load_source("builtin", "train", data_dir=data_dir),
        sources.load_source("builtin", "validation", data_dir=data_dir),
        str(run), verbose=0)
    err = capsys.readouterr().err
    assert f"checkpoint {ckpts / 'ckpt-10'} is unreadable" in err
    assert trainer._step() == 5
    assert sorted(os.listdir(run)) == sorted([
        ".lock", "checkpoints", "class_names.txt", "logs", "metrics.json",
        "model.keras", "notes.tmp.txt", "training_config.json"])
    assert not [f for f in os.listdir(ckpts) if "tmp" in f or "temp" in f]
    assert trainer.run()["steps"] == 12


def _bad_folder(root, per_class=10):
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.jpg").write_bytes(b"not a jpeg")
    return root


def test_undecodable_folder_is_a_clear_error_and_leaves_no_model_dir(
        tmp_path):
    images = _bad_folder(tmp_path / "images")
    new = tmp_path / "runs" / "new"
    with pytest.raises(ValueError, match=r"No decodable image in folder:.*"
                       r"images \(train\): 18 files skipped"):
        train.train(_tiny(), dataset=f"folder:{images}", model_dir=str(new),
                    verbose=0)
    assert not (tmp_path / "runs").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a folder"):
        train.train(_tiny(), dataset=f"folder:{tmp_path / 'missing'}",
                    model_dir=str(existing), verbose=0)
    assert os.listdir(existing) == ["keep.txt"]


def test_cli_bad_input_is_one_line_and_no_model_dir(tmp_path):
    images = _bad_folder(tmp_path / "images")
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.train",
         f"--model_dir={tmp_path / 'run'}", f"--dataset=folder:{images}",
         "--crop=32", "--scale_min=32", "--scale_max=40"],
        env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: No decodable image in folder:")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.processes
def test_sigterm_checkpoints_the_step_and_rerun_resumes(tmp_path, data_dir):
    run = tmp_path / "run"
    args = [a for a in _cli(run, data_dir) if not a.startswith(
        ("--max_epochs", "--checkpoint_every"))]
    args += ["--max_epochs=2", "--checkpoint_every=1000"]
    proc = subprocess.Popen(args, env=_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # Mid-epoch 2: after epoch 1's checkpoint (step 30), before step 60.
    marker = run / "checkpoints" / "ckpt-30.index"
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    saved = int(err.split(" at step ")[-1].split(";")[0])
    assert 30 < saved < 60, err[-2000:]
    assert (run / "checkpoints" / f"ckpt-{saved}.index").exists()
    assert not (run / "metrics.json").exists()
    done = subprocess.run(args, env=_env(), cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert f"from ckpt-{saved}: epoch 2, step {saved}" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 60
    assert [h["step"] for h in metrics["history"]] == [30, 60]
    # Not a terminal: one progress line per epoch, no redrawing.
    assert "\r" not in done.stdout and "\x1b" not in done.stdout
    assert sum(line.startswith("Epoch 2/") and " 30/30 - loss " in line
               for line in done.stdout.splitlines()) == 1


def _jpegs(root, layout, size=40):
    rng = np.random.default_rng(0)
    for rel in layout:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(path), tf.io.encode_jpeg(
            rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)))


@pytest.mark.slow
def test_validation_folders_are_read_whole(tmp_path):
    # DIR/train/<class>/ + DIR/val/<class>/: the val folder validates,
    # whole; a flat folder passed as --val_dataset validates, whole.
    data = tmp_path / "data"
    _jpegs(data, [f"train/{c}/{i}.jpg" for c in ("ant", "bee")
                  for i in range(6)]
           + ["val/ant/0.jpg", "val/bee/0.jpg", "val/bee/1.jpg"])
    other = tmp_path / "other"
    _jpegs(other, [f"{c}/{i}.jpg" for c in ("ant", "bee") for i in range(5)])
    cfg = _tiny(steps_per_epoch=1, batch_size=4, val_batch_size=4)
    metrics = train.train(cfg, dataset=f"folder:{data}",
                          model_dir=str(tmp_path / "a"), verbose=0)
    assert metrics["val_images"] == 3
    metrics = train.train(cfg, dataset=f"folder:{data}",
                          val_dataset=f"folder:{other}",
                          model_dir=str(tmp_path / "b"), verbose=0)
    assert metrics["val_images"] == 10
