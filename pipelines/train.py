"""Train a VGG network with the paper's recipe, on any tf.distribute strategy.

    python -m pipelines.train --recipe=vgg16_jitter --dataset=imagenet2012 \\
        --data_dir=... --model_dir=runs/vgg16_jitter --init_from=runs/vgg16_s384

What is trained is a task (`pipelines.tasks`: the network, its loss and
metrics); how the learning rate falls is `pipelines.schedule`; this module is
the loop.  The loop is ours (`strategy.run` in a `tf.function`), not
`model.fit`: Keras 3.15's `fit` fails under MultiWorkerMirroredStrategy, and
the same loop then serves OneDevice, Mirrored, MultiWorkerMirrored and TPU
strategies.

What a run leaves in `--model_dir`:
- `checkpoints/`: model, optimizer, step, epoch and learning-rate state,
  every `checkpoint_every` steps and at each epoch end
  (`tf.train.CheckpointManager`).  The same command resumes from the last one;
- `logs/`: TensorBoard scalars (loss, top-1/top-5, learning rate, images/s)
  and a few augmented training images;
- `model.keras`, `training_config.json`, `class_names.txt` and
  `metrics.json` when the run ends.

Resume is exact in deterministic mode (`--deterministic --seed=N`): every
epoch's input is a function of (seed, epoch), and the batches of an epoch
already trained are skipped on restart.
"""

import collections
import dataclasses
import json
import math
import os
import time

import numpy as np
import tensorflow as tf
# Op determinism is process-wide and TF exports no public switch back off.
from tensorflow.python.framework import config as tf_config

from absl import app
from absl import flags

import keras
import keras_vgg
from pipelines import augment
from pipelines import distribute
from pipelines import recipes
from pipelines import sources
from pipelines import tasks
from pipelines.schedule import PlateauSchedule
# Public names of this module since before the split into tasks.
from pipelines.tasks import PAPER_INIT_LAYERS  # noqa: F401
from pipelines.tasks import build_model  # noqa: F401
from pipelines.tasks import freeze_body  # noqa: F401
from pipelines.tasks import initialize_from  # noqa: F401

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


def _atomic_write(path, write):
    tmp = path + ".tmp"
    write(tmp)
    os.replace(tmp, path)


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
    """The training loop; `train()` below is the one-call interface.

    `run()` trains epoch after epoch: steps (checkpointing every
    `checkpoint_every`), then validation, the plateau schedule and a
    checkpoint; a non-finite loss rolls back to the last checkpoint.
    """

    def __init__(self, cfg, train_source, val_source, model_dir,
                 strategy=None, init_from=None, init_architecture=None,
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
        self._restore_or_initialize(init_from, init_architecture)
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
        self._batch_norms = [layer for layer in self.model.layers if isinstance(
            layer, keras.layers.BatchNormalization)]
        if self.strategy.num_replicas_in_sync > 1:
            # Batch statistics over the global batch, as on one device; it
            # also keeps the moving statistics identical on every replica
            # (unsynchronised, each worker would keep its own).
            for layer in self._batch_norms:
                layer.synchronized = True

    def _restore_or_initialize(self, init_from, init_architecture):
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
            same = (init_architecture or cfg.architecture) == cfg.architecture
            tasks.initialize_from(self.model, init_from, same)
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
            with self.task.saved_form(self.model):
                # Written beside, then renamed: a reader never sees half a
                # file.
                tmp = os.path.join(d, ".model.tmp.keras")
                self.model.save(tmp)
                os.replace(tmp, os.path.join(d, "model.keras"))
        finally:
            for layer, value in zip(self._batch_norms, synced):
                layer.synchronized = value
        names = list(self.train_source.class_names or
                     [str(i) for i in range(self.num_classes)])
        training = dataclasses.asdict(self.cfg)
        training.update(class_names=names, num_classes=self.num_classes,
                        jittered=self.cfg.jittered,
                        validation_scale=self.cfg.validation_scale)
        _atomic_write(os.path.join(d, "training_config.json"),
                      lambda p: _dump(training, p))
        _atomic_write(os.path.join(d, "class_names.txt"),
                      lambda p: open(p, "w").write("\n".join(names) + "\n"))
        _atomic_write(os.path.join(d, "metrics.json"),
                      lambda p: _dump(metrics, p))


def _dump(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def _run_architecture(path):
    """The architecture a trained run (model dir or `.keras` file) was
    trained with, from its training_config.json; None without one.  Runs
    before the rename to `architecture` wrote it as `config`."""
    config_path = os.path.join(
        path if os.path.isdir(path) else os.path.dirname(path),
        "training_config.json")
    if not os.path.exists(config_path):
        return None
    with open(config_path) as f:
        training = json.load(f)
    return training.get("architecture", training.get("config"))


def _follow_op_determinism(deterministic):
    # Op determinism is process-wide: make it follow this run's setting (a
    # notebook may train a deterministic run, then an XLA one).
    if deterministic:
        tf_config.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()


def train(recipe_or_cfg, dataset="builtin", model_dir="runs/train",
          data_dir=None, val_dataset=None, strategy="auto", init_from=None,
          tpu=None, verbose=1):
    """Trains a recipe (or any `TrainConfig`) and returns its metrics.

    Args:
        recipe_or_cfg: a `recipes.TrainConfig`, or the name of a recipe
            ("vgg16_s256"; see `recipes.RECIPES`).
        dataset: "builtin", a tfds name, "tfrecord:GLOB" or "folder:DIR".
        model_dir: checkpoints, logs and outputs; a run resumes from it.
        data_dir: tfds data_dir, or the built-in dataset's cache dir.
        val_dataset: same forms; default the validation split of `dataset`.
        strategy: a `tf.distribute.Strategy` or a name (see
            `pipelines.distribute.make_strategy`).
        init_from: a trained model dir or `.keras` to start from.
        tpu: TPU name or address, for strategy="tpu".
        verbose: 0 silent, 1 a progress bar per epoch.

    Returns:
        The metrics dict also written to `<model_dir>/metrics.json`.

    Example (a few minutes on a CPU):

        metrics = train("demo", model_dir="/tmp/demo")
        metrics["val_top1_accuracy"]  # about 0.9
    """
    if isinstance(strategy, str):
        # First: a multi-worker strategy must exist before any TF op runs.
        strategy = distribute.make_strategy(strategy, tpu=tpu)
    cfg = (recipes.get_recipe(recipe_or_cfg)
           if isinstance(recipe_or_cfg, str) else recipe_or_cfg)
    if cfg.seed is not None:
        keras.utils.set_random_seed(cfg.seed)
    _follow_op_determinism(cfg.deterministic)
    os.makedirs(model_dir, exist_ok=True)
    seed = cfg.seed or 0
    train_source = sources.load_source(
        dataset, "train", data_dir=data_dir, seed=seed,
        shuffle_files=False if cfg.deterministic else None)
    val_source = sources.load_source(val_dataset or dataset, "validation",
                                     data_dir=data_dir, seed=seed)
    trainer = Trainer(
        cfg, train_source, val_source, model_dir, strategy,
        init_from=init_from,
        init_architecture=_run_architecture(init_from) if init_from else None,
        verbose=verbose)
    return trainer.run()


# -- command line -----------------------------------------------------------

_FIELD_HELP = {
    "architecture": "Table 1 architecture (A, A-LRN, B, C, D, E), "
                    "overriding the recipe's.",
    "task": "classification or localization (box regression; "
            "'localisation' also accepted), overriding the recipe's.",
}


def _define_flags(flag_values=flags.FLAGS):
    """Defines the command line's flags in `flag_values`."""
    fv = flag_values
    flags.DEFINE_string("recipe", "demo", "Training recipe: one of "
                        f"{sorted(recipes.RECIPES)}.", flag_values=fv)
    flags.DEFINE_alias("config", "recipe", flag_values=fv)
    flags.DEFINE_string("dataset", "builtin",
                        "builtin, a tfds name (with --data_dir), "
                        "tfrecord:GLOB or folder:DIR.", flag_values=fv)
    flags.DEFINE_string("val_dataset", None,
                        "Validation data, same forms; default the "
                        "validation split of --dataset.", flag_values=fv)
    flags.DEFINE_string("data_dir", None,
                        "tfds data_dir, or the built-in dataset's cache.",
                        flag_values=fv)
    flags.DEFINE_string("model_dir", "runs/train",
                        "Checkpoints, TensorBoard logs and outputs; the same "
                        "command resumes from it.", flag_values=fv)
    flags.DEFINE_enum("strategy", "auto", list(distribute.STRATEGIES),
                      "tf.distribute strategy (auto: all local GPUs, else "
                      "the CPU).", flag_values=fv)
    flags.DEFINE_string("tpu", None, "TPU name or address (--strategy=tpu).",
                        flag_values=fv)
    flags.DEFINE_string("init_from", None,
                        "Trained run (model dir or .keras) to start from: "
                        "all layers for the same architecture, the paper's "
                        "four convs + three FC layers from net A.",
                        flag_values=fv)
    _define_field_flags(fv)
    flags.DEFINE_alias("model_config", "architecture", flag_values=fv)


def _define_field_flags(fv):
    # Every TrainConfig field can be overridden; unset means the recipe's.
    defaults = recipes.TrainConfig()
    for field in dataclasses.fields(recipes.TrainConfig):
        default = getattr(defaults, field.name)
        help_text = _FIELD_HELP.get(
            field.name, f"Override the recipe's {field.name} (TrainConfig "
                        f"default: {default}).")
        # The fields whose default is None (max_steps, seed, ...) are ints.
        kind = type(default) if default is not None else int
        define = {bool: flags.DEFINE_boolean, float: flags.DEFINE_float,
                  int: flags.DEFINE_integer}.get(kind, flags.DEFINE_string)
        define(field.name, None, help_text, flag_values=fv)


def config_from_flags(flag_values):
    """The `TrainConfig` of --recipe with every field flag that was set
    applied."""
    cfg = recipes.get_recipe(flag_values.recipe)
    changes = {}
    for field in dataclasses.fields(recipes.TrainConfig):
        value = getattr(flag_values, field.name)
        if value is not None:
            changes[field.name] = value
    return dataclasses.replace(cfg, **changes)


def main(argv):
    del argv
    fv = flags.FLAGS
    metrics = train(config_from_flags(fv), dataset=fv.dataset,
                    model_dir=fv.model_dir, data_dir=fv.data_dir,
                    val_dataset=fv.val_dataset, strategy=fv.strategy,
                    init_from=fv.init_from, tpu=fv.tpu)
    summary = {k: v for k, v in metrics.items() if k != "history"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
