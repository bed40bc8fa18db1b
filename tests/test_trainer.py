"""The trainer's loops of steps (`steps_per_loop`): the same training as one
step per call, boundaries where one step per call puts them, and NaN
rollback naming the step that diverged.  (Resume after kill -9 with loops:
tests/test_train.py::test_sigkill_and_resume_matches_uninterrupted.)"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from pipelines import distribute
from pipelines import recipes
from pipelines import run_dir
from pipelines import sources
from pipelines import train
from pipelines import trainer as trainer_lib

TINY = dict(architecture="A", width_multiplier=0.125, crop=32, scale_min=32,
            scale_max=40, test_scale=32, batch_size=16, seed=1,
            deterministic=True)


def _trainer(cfg, model_dir, data_dir):
    # As `train.train` starts a deterministic run: the seed, op determinism,
    # files in a fixed order.
    keras.utils.set_random_seed(cfg.seed)
    train._follow_op_determinism(cfg.deterministic)
    return trainer_lib.Trainer(
        cfg, sources.load_source("builtin", "train", data_dir=data_dir,
                                 seed=cfg.seed, shuffle_files=False),
        sources.load_source("builtin", "validation", data_dir=data_dir,
                            seed=cfg.seed),
        str(model_dir), verbose=0)


def _loop_trainer(steps_per_loop, tmp_path, data_dir, **settings):
    """A TINY trainer running `steps_per_loop` steps a call, in its own
    directory under tmp_path."""
    cfg = recipes.TrainConfig(steps_per_loop=steps_per_loop, **settings,
                              **TINY)
    return _trainer(cfg, tmp_path / str(steps_per_loop), data_dir)


def _numbers(values):
    return [float(v) for v in values]


def test_loop_sums_its_steps_and_stops_after_a_non_finite_loss():
    def step_of(losses):
        @tf.function
        def step(iterator):
            loss = next(iterator)
            return loss, {"count": tf.constant(1.0), "twice": 2 * loss}
        return trainer_lib.make_train_loop(step), iter(
            tf.data.Dataset.from_tensor_slices(losses))

    loop, it = step_of([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    ran, loss, metrics = loop(it, tf.constant(3))
    assert (int(ran), float(loss), float(metrics["count"]),
            float(metrics["twice"])) == (3, 6.0, 3.0, 12.0)
    # The iterator goes on where the loop stopped; one step is a loop too.
    ran, loss, _ = loop(it, tf.constant(1))
    assert (int(ran), float(loss)) == (1, 4.0)

    loop, it = step_of([1.0, np.inf, 3.0, 4.0, 5.0])
    ran, loss, _ = loop(it, tf.constant(4))
    assert int(ran) == 2 and not np.isfinite(float(loss))
    # The step after the non-finite one was not taken.
    assert float(next(it)) == 3.0
    loop, it = step_of([np.nan, 2.0])
    ran, _, _ = loop(it, tf.constant(4))
    assert int(ran) == 1


def test_default_steps_per_loop_is_one_on_the_cpu():
    strategy = distribute.make_strategy("one_device")
    assert trainer_lib.default_steps_per_loop(strategy) == 1
    assert "steps_per_loop" in run_dir.SAFE_CHANGES
    with pytest.raises(ValueError, match="steps_per_loop"):
        recipes.TrainConfig(steps_per_loop=0)


def _record_boundaries(trainer, monkeypatch):
    """Records each loop's length and the progress bar's positions."""
    lengths, bar = [], []
    loop = trainer._train_loop

    def counted(iterator, num_steps):
        lengths.append(int(num_steps))
        return loop(iterator, num_steps)

    trainer._train_loop = counted
    update = keras.utils.Progbar.update

    def recorded(progbar, current, values=None, finalize=None):
        bar.append((progbar.target, current))
        return update(progbar, current, values, finalize)

    monkeypatch.setattr(keras.utils.Progbar, "update", recorded)
    return lengths, bar


@pytest.mark.slow
def test_loops_train_as_single_steps_and_stop_at_boundaries(
        tmp_path, data_dir, monkeypatch):
    """7 steps an epoch, a checkpoint every 3, 11 steps: loops of 5 end at
    steps 3, 6, 7 (epoch end), 9 and 11 (max_steps), and give the weights
    of one step per call."""
    runs = {}
    for k in (1, 5):
        trainer = _loop_trainer(k, tmp_path, data_dir, steps_per_epoch=7,
                                checkpoint_every=3, max_steps=11,
                                keep_checkpoints=10)
        lengths, bar = _record_boundaries(trainer, monkeypatch)
        metrics = trainer.run()
        runs[k] = (trainer, lengths, bar, metrics)
    trainer, lengths, bar, metrics = runs[5]
    assert lengths == [3, 3, 1, 2, 2]
    assert runs[1][1] == [1] * 11
    # Progress within each epoch of 7 steps, updated once per loop.
    assert bar == [(7, 3), (7, 6), (7, 7), (7, 2), (7, 4)]
    for k in (1, 5):
        trainer, _, _, metrics = runs[k]
        assert [int(p.rsplit("-", 1)[1]) for p in
                trainer.manager.checkpoints] == [3, 6, 7, 9, 11]
        assert (metrics["steps"], metrics["epochs"],
                metrics["images_trained"]) == (11, 1, 11 * 16)
        assert [h["step"] for h in metrics["history"]] == [7]
    np.testing.assert_allclose(runs[1][3]["history"][0]["train_loss"],
                               runs[5][3]["history"][0]["train_loss"],
                               rtol=1e-6)
    for a, b in zip(runs[1][0].model.get_weights(),
                    runs[5][0].model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_nan_rollback_names_the_step_inside_a_loop(tmp_path, data_dir):
    """A learning rate of 1e6 from a checkpoint at step 0: the loss turns
    non-finite a few steps in; a loop of 8 stops there, rolls back and
    names the same step as one step per call."""
    diverged = {}
    for k in (1, 8):
        trainer = _loop_trainer(k, tmp_path, data_dir, steps_per_epoch=20,
                                checkpoint_every=1000, max_epochs=1,
                                max_rollbacks=1)
        trainer.schedule.learning_rate.assign(1e6)
        trainer._sync_learning_rate()
        trainer._save()  # ckpt-0, with that rate
        steps = []
        roll_back = trainer._roll_back

        def recorded(rollbacks, step, roll_back=roll_back, steps=steps):
            steps.append(step)
            return roll_back(rollbacks, step)

        trainer._roll_back = recorded
        with pytest.raises(trainer_lib.TrainingDiverged,
                           match="rolled back 1 times to .*ckpt-0") as e:
            trainer.run()
        diverged[k] = steps
        assert f"at step {steps[-1]} " in str(e.value)
    assert diverged[1] == diverged[8]
    assert len(diverged[8]) == 2 and diverged[8][0] == diverged[8][1]
    assert 1 < diverged[8][0] < 8, diverged


def test_steps_per_loop_flag_reaches_the_config():
    fv = flags.FlagValues()
    train._define_flags(fv)
    fv(["prog", "--steps_per_loop=10"])
    cfg = train.config_from_flags(fv)
    assert cfg.steps_per_loop == 10
    assert dataclasses.replace(cfg, steps_per_loop=None).steps_per_loop is None


@pytest.mark.slow
def test_weight_decay_adds_its_gradient_to_kernels_only(tmp_path, data_dir):
    # One SGD step from the same weights on the same batch, with and
    # without weight decay: the decayed run's kernels move by a further
    # -lr * weight_decay * w (the gradient of 0.5 * wd * ||w||^2, the
    # paper's L2 penalty), its biases and BN parameters not at all.
    cfg = recipes.TrainConfig(**{**TINY, "batch_norm": True},
                              learning_rate=0.1, weight_decay=0.05,
                              steps_per_epoch=1, max_epochs=1)
    runs = {}
    for wd in (0.05, 0.0):
        trainer = _trainer(dataclasses.replace(cfg, weight_decay=wd),
                           tmp_path / str(wd), data_dir)
        before = {v.path: v.numpy() for v in trainer.model.trainable_variables}
        trainer._train_loop(iter(trainer._train_dataset(0, 0)),
                            tf.constant(1))
        runs[wd] = {v.path: v.numpy()
                    for v in trainer.model.trainable_variables}
    kernels = {k.path for k in trainer_lib._kernels(trainer.model)}
    assert kernels and len(kernels) < len(before)
    for path, w in before.items():
        extra = runs[0.05][path] - runs[0.0][path]
        if path in kernels:
            np.testing.assert_allclose(extra, -0.1 * 0.05 * w, rtol=1e-3,
                                       atol=1e-7)
            assert np.abs(extra).max() > 1e-5
        else:
            np.testing.assert_array_equal(extra, 0)
