"""The training loop: epochs -> steps -> validation -> the learning-rate
schedule -> a checkpoint, for any task (`pipelines.tasks`) on any
tf.distribute strategy.  `pipelines.train.train` is its one-call interface.

The loop is ours (`strategy.run` in a `tf.function`), not `model.fit`:
Keras 3.15's `fit` fails under MultiWorkerMirroredStrategy, and the same loop
then serves OneDevice, Mirrored, MultiWorkerMirrored and TPU strategies.

Checkpoints hold the model's variables, the optimizer, the loop's counters
(`PROGRESS`) and the plateau schedule's state; the run resumes from the last
one, and a non-finite loss rolls back to it.
"""

import collections
import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

import keras_vgg
from keras_vgg import atomic
from keras_vgg import runs
from pipelines import augment
from pipelines import distribute
from pipelines import tasks
from pipelines.schedule import PlateauSchedule

# The loop's own counters; with the schedule's variables, they are the
# checkpoint's keys beside `model_variables` and `optimizer`.
PROGRESS = ("step", "epoch", "epoch_start_step", "images_skipped")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite and rolling back did not help."""


def _kernels(model):
    # Weight decay on the trained layers only.
    return [w for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
            and layer.trainable
            for w in [layer.kernel]]


def _to_display(images, mode):
    """Undoes the preprocessing so TensorBoard shows the augmented pixels."""
    if mode == "caffe":
        images = images + np.array(keras_vgg.preprocessing.CAFFE_MEAN_BGR)
        images = images[..., ::-1]
    elif mode == "torch":
        images = (images * np.array(keras_vgg.preprocessing.TORCH_STD)
                  + np.array(keras_vgg.preprocessing.TORCH_MEAN)) * 255
    return np.clip(images, 0, 255).astype("uint8")


@dataclasses.dataclass
class _EpochResult:
    """What the steps of one epoch (or of its rest, after a resume) did."""

    loss_sum: float = 0.0
    metric_sums: dict = dataclasses.field(
        default_factory=lambda: collections.defaultdict(float))
    images: int = 0
    finished: bool = False
    diverged: bool = False

    def add(self, loss_sum, metric_sums, images):
        self.loss_sum += loss_sum
        for name, value in metric_sums.items():
            self.metric_sums[name] += float(value)
        self.images += images


class Trainer:
    """The training loop; `pipelines.train.train()` is the one-call
    interface.

    `run()` trains epoch after epoch: steps (checkpointing every
    `checkpoint_every`), then validation, the plateau schedule and a
    checkpoint; a non-finite loss rolls back to the last checkpoint.
    """

    def __init__(self, cfg, train_source, val_source, model_dir,
                 strategy=None, init_from=None,
                 verbose=1):
        self.cfg = cfg
        self.train_source = train_source
        self.val_source = val_source
        self.model_dir = model_dir
        self.strategy = strategy or distribute.make_strategy("auto")
        self.verbose = verbose
        self.chief = distribute.is_chief()
        self.num_classes = train_source.num_classes
        if not self.num_classes:
            raise ValueError(
                "The training data does not say how many classes it has "
                "(TFRecords need a class_names.txt beside them).")
        self.micro_batch = cfg.batch_size // cfg.grad_accum
        replicas = self.strategy.num_replicas_in_sync
        if self.micro_batch % replicas:
            raise ValueError(
                f"`batch_size`/`grad_accum` = {self.micro_batch} must be a "
                f"multiple of the {replicas} replicas.")
        self.steps_per_epoch = self._steps_per_epoch()
        self.skip_counter = augment.SkipCounter()
        self.task = tasks.make_task(cfg, self.num_classes)
        self._build()
        self._restore_or_initialize(init_from)
        self.writer = (tf.summary.create_file_writer(
            os.path.join(model_dir, "logs")) if self.chief else
            tf.summary.create_noop_writer())
        self._train_step = self._make_train_step()
        self._eval_step = self._make_eval_step()

    def _steps_per_epoch(self):
        if self.cfg.steps_per_epoch:
            return self.cfg.steps_per_epoch
        if self.train_source.num_examples:
            return max(1, self.train_source.num_examples
                       // self.cfg.batch_size)
        raise ValueError("The number of training examples is unknown: "
                         "pass `steps_per_epoch`.")

    # -- model, optimizer, state ------------------------------------------

    def _build(self):
        """The model, optimizer, schedule and counters, in the strategy's
        scope (mirrored variables under a multi-device strategy)."""
        cfg = self.cfg
        if cfg.mixed_precision != "none":
            keras.mixed_precision.set_global_policy(
                f"mixed_{cfg.mixed_precision}")
        try:
            with self.strategy.scope():
                self.model = self.task.build_model()
                optimizer = keras.optimizers.SGD(cfg.learning_rate,
                                                 momentum=cfg.momentum)
                if cfg.mixed_precision == "float16":
                    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
                optimizer.build(self.model.trainable_variables)
                self.optimizer = optimizer
                self.schedule = PlateauSchedule.from_train_config(cfg)
                self.progress = {name: tf.Variable(0, dtype=tf.int64)
                                 for name in PROGRESS}
        finally:
            keras.mixed_precision.set_global_policy("float32")
        self._batch_norms = [
            layer for layer in self.model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]
        if self.strategy.num_replicas_in_sync > 1:
            # Batch statistics over the global batch, as on one device; it
            # also keeps the moving statistics identical on every replica
            # (unsynchronised, each worker would keep its own).
            for layer in self._batch_norms:
                layer.synchronized = True

    def _restore_or_initialize(self, init_from):
        """Resumes from the model dir's last checkpoint, else starts from
        `init_from` (if given)."""
        cfg = self.cfg
        # Keras 3 models are not tracked by tf.train.Checkpoint as a whole:
        # list every variable (BN statistics and dropout seeds included).
        self.checkpoint = tf.train.Checkpoint(
            model_variables=list(self.model.variables),
            optimizer=self.optimizer, **self.progress,
            **self.schedule.checkpoint_children())
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            os.path.join(distribute.worker_dir(self.model_dir),
                         "checkpoints"),
            max_to_keep=cfg.keep_checkpoints)
        self.restored = self.manager.latest_checkpoint is not None
        if self.restored:
            self.checkpoint.restore(self.manager.latest_checkpoint)
        elif init_from:
            tasks.initialize_from(self.model, init_from, cfg.architecture)
        self._sync_learning_rate()

    def _sync_learning_rate(self):
        # The optimizer follows the schedule (after an update or a restore).
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        optimizer.learning_rate.assign(self.schedule.current_learning_rate)

    def _step(self):
        return int(self.progress["step"].numpy())

    # -- steps ------------------------------------------------------------

    def _make_train_step(self):
        cfg, model, optimizer, task = (self.cfg, self.model, self.optimizer,
                                       self.task)
        kernels = _kernels(model)
        # Summed over replicas and micro-batches, the decay term counts once.
        decay = 0.5 * cfg.weight_decay / (
            self.strategy.num_replicas_in_sync * cfg.grad_accum)

        def replica_fn(micro_batches):
            grads_sum, loss_sum, metric_sums = None, 0.0, {}
            for batch in micro_batches:
                with tf.GradientTape() as tape:
                    outputs = tf.cast(model(batch[0], training=True),
                                      tf.float32)
                    losses = task.per_example_loss(outputs, batch)
                    # Scaled by the global batch: summing over replicas and
                    # micro-batches gives the batch mean.
                    loss = tf.reduce_sum(losses) / cfg.batch_size
                    if cfg.weight_decay:
                        loss += decay * tf.add_n([tf.reduce_sum(tf.square(
                            tf.cast(k, tf.float32))) for k in kernels])
                    scaled = (optimizer.scale_loss(loss)
                              if hasattr(optimizer, "scale_loss") else loss)
                grads = tape.gradient(scaled, model.trainable_variables)
                grads_sum = grads if grads_sum is None else [
                    a + b for a, b in zip(grads_sum, grads)]
                loss_sum += tf.reduce_sum(losses)
                for name, value in task.metric_sums(outputs, batch).items():
                    metric_sums[name] = metric_sums.get(name, 0.0) + value
            optimizer.apply(grads_sum, model.trainable_variables)
            return loss_sum, metric_sums

        replica = (tf.function(replica_fn, jit_compile=True) if cfg.xla
                   else replica_fn)

        @tf.function
        def step(iterator):
            batches = tuple(next(iterator) for _ in range(cfg.grad_accum))
            return self._sum_replicas(self.strategy.run(replica,
                                                        args=(batches,)))

        return step

    def _make_eval_step(self):
        model, task = self.model, self.task

        def replica_fn(*batch):
            outputs = tf.cast(model(batch[0], training=False), tf.float32)
            return task.metric_sums(outputs, batch)

        @tf.function
        def step(*batch):
            return self._sum_replicas(self.strategy.run(replica_fn,
                                                        args=batch))

        return step

    def _sum_replicas(self, per_replica):
        return tf.nest.map_structure(
            lambda v: self.strategy.reduce("SUM", v, axis=None), per_replica)

    # -- data -------------------------------------------------------------

    def _train_dataset(self, epoch, skip_batches):
        cfg = self.cfg
        seed = None if cfg.seed is None else cfg.seed * 100_003 + epoch
        ds = augment.make_dataset(
            self.train_source, training=True, batch_size=self.micro_batch,
            scale=(cfg.scale_min, cfg.scale_max), crop=cfg.crop,
            preprocessing=cfg.preprocessing,
            pca_lighting_std=cfg.pca_lighting_std, repeat=True,
            shuffle_buffer=cfg.shuffle_buffer, seed=seed,
            with_bbox=self.task.with_boxes,
            # In-order parallel decoding: the skipped-image count is then
            # exact at every step (out of order, a slow image counts as
            # skipped until it arrives), and resumes replay the same batches.
            deterministic=True, skip_counter=self.skip_counter)
        if skip_batches:
            ds = ds.skip(skip_batches)
        return self.strategy.experimental_distribute_dataset(ds)

    def validate(self):
        """The task's validation summary (`metrics.json`'s `val_*` fields)
        on the validation source: central crops at the validation scale Q.
        Top-1 / top-5 accuracy for a classifier; for a localiser, the
        fraction of images whose ground-truth-class box has IoU > 0.5."""
        cfg = self.cfg
        ds = augment.make_dataset(
            self.val_source, training=False, batch_size=cfg.val_batch_size,
            scale=cfg.validation_scale, crop=cfg.crop,
            preprocessing=cfg.preprocessing, skip_counter=self.skip_counter,
            with_bbox=self.task.with_boxes)
        totals = collections.defaultdict(float)
        for batch in ds:
            for name, value in self._eval_step(*batch).items():
                totals[name] += float(value)
        return self.task.validation_summary(totals)

    # -- loop -------------------------------------------------------------

    def run(self):
        """Trains until `max_epochs`, `max_steps` or the schedule's stop;
        returns the metrics (the chief also writes the run's outputs)."""
        if self.chief and not self.restored:
            self._log_images(0)
        max_steps = self._max_steps()
        history, summary, stop_reason = [], None, None
        rollbacks = images_trained = 0
        start = time.perf_counter()
        while self._step() < max_steps:
            epoch = int(self.progress["epoch"].numpy())
            result = self._train_epoch(epoch, max_steps)
            images_trained += result.images
            if result.diverged:
                rollbacks += 1
                self._roll_back(rollbacks)
                continue
            if not result.finished:
                self._save()
                stop_reason = "max_steps"
                break
            summary, record = self._end_epoch(epoch, result)
            history.append(record)
            stop = self.schedule.update(summary[self.task.monitor])
            self._sync_learning_rate()
            self._save()
            if stop:
                stop_reason = "plateau"
                break
        seconds = time.perf_counter() - start
        if stop_reason is None:
            stop_reason = ("max_steps" if self.cfg.max_steps and max_steps
                           == self.cfg.max_steps else "max_epochs")
        if summary is None:
            summary = self.validate()
        self._save()
        metrics = self._metrics(summary, stop_reason, history,
                                images_trained / seconds if seconds else 0.0)
        if self.chief:
            self._write_outputs(metrics)
        return metrics

    def _train_epoch(self, epoch, max_steps):
        """Trains the rest of `epoch` (up to `max_steps`), checkpointing
        every `checkpoint_every` steps; stops at a non-finite loss."""
        cfg = self.cfg
        done = self._step() - int(self.progress["epoch_start_step"].numpy())
        iterator = iter(self._train_dataset(epoch, done * cfg.grad_accum))
        progbar = keras.utils.Progbar(
            self.steps_per_epoch, verbose=self.verbose if self.chief else 0,
            stateful_metrics=["loss", *self.task.display_names, "images/s",
                              "lr"])
        if self.verbose and self.chief:
            print(f"Epoch {epoch + 1}/{cfg.max_epochs}")
        result = _EpochResult()
        start = time.perf_counter()
        while done < self.steps_per_epoch and self._step() < max_steps:
            loss_sum, metric_sums = self._train_step(iterator)
            loss_sum = float(loss_sum)
            if not math.isfinite(loss_sum):
                result.diverged = True
                return result
            done += 1
            step = int(self.progress["step"].assign_add(1).numpy())
            result.add(loss_sum, metric_sums, cfg.batch_size)
            values = ([("loss", result.loss_sum / result.images)]
                      + self.task.train_display(result.metric_sums,
                                                result.images)
                      + [("images/s",
                          result.images / (time.perf_counter() - start)),
                         ("lr", self.schedule.current_learning_rate)])
            progbar.update(done, values)
            with self.writer.as_default():
                for name, value in values:
                    tf.summary.scalar(f"train/{name}", value, step=step)
            if step % cfg.checkpoint_every == 0:
                self._save()
        result.finished = done >= self.steps_per_epoch
        return result

    def _end_epoch(self, epoch, result):
        """Validates at the end of `epoch` and moves the counters on;
        returns the validation summary and the epoch's history record."""
        summary = self.validate()
        self.progress["epoch"].assign_add(1)
        self.progress["epoch_start_step"].assign(self.progress["step"])
        record = {"epoch": epoch + 1, "step": self._step(),
                  "train_loss": result.loss_sum / max(result.images, 1),
                  "val_top1_accuracy": summary["val_top1_accuracy"],
                  "val_top5_accuracy": summary["val_top5_accuracy"],
                  "learning_rate": self.schedule.current_learning_rate}
        if self.verbose and self.chief:
            print(self.task.validation_line(summary,
                                            record["learning_rate"]))
        with self.writer.as_default():
            tf.summary.scalar("val/top1", record["val_top1_accuracy"],
                              step=record["step"])
            tf.summary.scalar("val/top5", record["val_top5_accuracy"],
                              step=record["step"])
        return summary, record

    def _roll_back(self, rollbacks):
        """After a non-finite loss: back to the last checkpoint, or
        `TrainingDiverged` when there is none or rolling back
        `max_rollbacks` times did not help."""
        latest = self.manager.latest_checkpoint
        if latest is None or rollbacks > self.cfg.max_rollbacks:
            raise TrainingDiverged(
                f"The training loss became NaN or infinite at step "
                f"{self._step() + 1} (learning rate "
                f"{self.schedule.current_learning_rate:g}); "
                + (f"rolled back {rollbacks - 1} times to "
                   f"{latest} without help. " if latest else
                   "there is no checkpoint to roll back to. ")
                + "Lower --learning_rate or check the data. The "
                "checkpoints in the model dir are kept.")
        if self.verbose:
            print(f"\nNon-finite loss: rolling back to {latest}")
        self.checkpoint.restore(latest)
        self._sync_learning_rate()

    def _save(self):
        self.progress["images_skipped"].assign(
            self.progress["images_skipped"].numpy() + self.skip_counter.count)
        self.skip_counter.reset()
        self.manager.save(checkpoint_number=self._step())

    def _max_steps(self):
        total = self.cfg.max_epochs * self.steps_per_epoch
        return min(total, self.cfg.max_steps or total)

    def _log_images(self, step):
        ds = augment.make_dataset(
            self.train_source, training=True, batch_size=4,
            scale=(self.cfg.scale_min, self.cfg.scale_max), crop=self.cfg.crop,
            preprocessing=self.cfg.preprocessing, seed=0,
            skip_counter=augment.SkipCounter())
        images, _ = next(iter(ds))
        with self.writer.as_default():
            tf.summary.image("augmented", _to_display(
                images.numpy(), self.cfg.preprocessing), step=step,
                max_outputs=4)

    # -- outputs ----------------------------------------------------------

    def _metrics(self, summary, stop_reason, history, images_per_second):
        progress, schedule = self.progress, self.schedule
        return {
            **summary,
            "images_skipped": int(progress["images_skipped"].numpy()),
            "steps": self._step(),
            "epochs": int(progress["epoch"].numpy()),
            "images_per_second": images_per_second,
            "learning_rate": schedule.current_learning_rate,
            "lr_decreases": int(schedule.lr_decreases.numpy()),
            "stop_reason": stop_reason,
            "history": history,
        }

    def _write_outputs(self, metrics):
        d = self.model_dir
        # Plain BN layers in the saved file (synchronised BN exists on the
        # TF backend only).
        synced = [layer.synchronized for layer in self._batch_norms]
        for layer in self._batch_norms:
            layer.synchronized = False
        try:
            with self.task.saved_form(self.model), atomic.atomic_path(
                    os.path.join(d, runs.MODEL_FILE)) as tmp:
                self.model.save(tmp)
        finally:
            for layer, value in zip(self._batch_norms, synced):
                layer.synchronized = value
        names = list(self.train_source.class_names or
                     [str(i) for i in range(self.num_classes)])
        training = dataclasses.asdict(self.cfg)
        training.update(class_names=names, num_classes=self.num_classes,
                        jittered=self.cfg.jittered,
                        validation_scale=self.cfg.validation_scale)
        atomic.atomic_write_file(os.path.join(d, runs.CONFIG_FILE),
                                 json.dumps(training, indent=2))
        atomic.atomic_write_file(os.path.join(d, runs.CLASS_NAMES_FILE),
                                 "\n".join(names) + "\n")
        atomic.atomic_write_file(os.path.join(d, "metrics.json"),
                                 json.dumps(metrics, indent=2))
