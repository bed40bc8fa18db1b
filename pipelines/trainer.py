"""The training loop: epochs -> steps -> validation -> the learning-rate
schedule -> a checkpoint, for any task (`pipelines.tasks`) on any
tf.distribute strategy.  `pipelines.train.train` is its one-call interface.

The loop is ours (`strategy.run` in a `tf.function`), not `model.fit`:
Keras 3.15's `fit` fails under MultiWorkerMirroredStrategy, and the same loop
then serves OneDevice, Mirrored, MultiWorkerMirrored and TPU strategies.

Checkpoints hold the model's variables, the optimizer, the loop's counters
(`PROGRESS`) and the plateau schedule's state; the run resumes from the last
one, and a non-finite loss rolls back to it.  They also hold the per-epoch
history and the training throughput, so that `metrics.json` describes the
whole run however often it was resumed.  An unreadable latest checkpoint
falls back to the one before it; SIGTERM checkpoints at the end of the
running loop and stops (`TrainingPreempted`); in a multi-worker cluster,
SIGTERM to any worker stops every worker at the same step.

Steps run `steps_per_loop` at a time in one compiled call (a `tf.while_loop`
over the input iterator, `strategy.run` per step), and the host reads the
loss back once per loop: on accelerators the per-step dispatch and
read-back would otherwise leave the device idle.  A loop never crosses an
epoch end, a `checkpoint_every` step or the end of training, so that
checkpoints, validation, NaN rollback and resumes fall on the same steps
whatever the loop length.  `pipelines.run_dir` keeps the directory's
training config honest across resumes.

The input pipeline only decodes and resizes (`make_dataset(
defer_pixel_ops=True)`); each step flips, lights and preprocesses its batch
(`augment.finish_pixels`) on the accelerator, bit-identical to doing it in
the pipeline.
"""

import collections
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

import keras_vgg
from keras_vgg import atomic
from keras_vgg import runs
from pipelines import augment
from pipelines import distribute
from pipelines import run_dir
from pipelines import service_watch
from pipelines import tasks
from pipelines.schedule import PlateauSchedule

# The loop's own counters; with the schedule's variables, they are the
# checkpoint's keys beside `model_variables` and `optimizer`.
PROGRESS = ("step", "epoch", "epoch_start_step", "images_skipped",
            "images_trained")


# Steps per compiled call when `steps_per_loop` is not set: on a GPU or TPU
# a step takes milliseconds and the host's dispatch and read-back per step
# would idle the device; on a CPU a VGG step takes far longer than its
# dispatch, and one step per call keeps the progress bar live.
ACCELERATOR_STEPS_PER_LOOP = 50


def default_steps_per_loop(strategy):
    """`steps_per_loop` unless set: `ACCELERATOR_STEPS_PER_LOOP` when the
    strategy trains on GPUs or TPUs, else 1."""
    devices = strategy.extended.worker_devices
    on_cpu = all(tf.DeviceSpec.from_string(d).device_type in (None, "CPU")
                 for d in devices)
    return 1 if on_cpu else ACCELERATOR_STEPS_PER_LOOP


def float32_outputs(model):
    """Under a mixed precision policy, the output layers compute in
    float32, as Keras advises: the loss sees float32 logits, and the saved
    model's softmax gives float32 probabilities (in bfloat16 they would sum
    to 1 only within 1e-2)."""
    for name in model.output_names:
        model.get_layer(name).dtype_policy = "float32"


def make_train_loop(step):
    """Up to `num_steps` calls of `step(iterator)` in one compiled call
    (orbit's `steps_per_loop`): the host dispatches once and reads the sums
    back once per loop, not per step.

    `step` returns (loss sum, {name: metric sum}); the loop returns (steps
    run, loss sum, metric sums) over its steps.  It stops after the first
    step whose loss is not finite, so that the count names the step that
    diverged.
    """

    @tf.function
    def loop(iterator, num_steps):
        # The first step outside the while loop gives the sums their
        # structure (the task's metric names); `step` is one traced
        # function, called twice.
        loss_sum, metric_sums = step(iterator)

        def body(done, loss_sum, metric_sums):
            loss, metrics = step(iterator)
            return done + 1, loss_sum + loss, tf.nest.map_structure(
                tf.add, metric_sums, metrics)

        def more(done, loss_sum, metric_sums):
            del metric_sums
            return tf.logical_and(done < num_steps,
                                  tf.math.is_finite(loss_sum))

        return tf.while_loop(more, body, (tf.constant(1), loss_sum,
                                          metric_sums))

    return loop


def _warn(message):
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite and rolling back did not help."""


class TrainingPreempted(RuntimeError):
    """SIGTERM arrived (in a cluster: at any worker): a checkpoint was saved
    at the step reached; the same command resumes from it."""

    # A command line ends with this status (`pipelines.entry`): 128 +
    # SIGTERM, as a shell reports a process the signal ended.
    exit_status = 128 + signal.SIGTERM


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
    # The step whose loss was NaN or infinite (None: none was).
    diverged_step: int = None
    preempted: bool = False

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
        self.task = tasks.make_task(cfg, self.num_classes,
                                    train_source.class_names)
        self._sigterm = False
        self._prepare_dirs()
        try:
            self._build()
            self._restore_or_initialize(init_from)
            self.writer = (tf.summary.create_file_writer(
                os.path.join(model_dir, "logs")) if self.chief else
                tf.summary.create_noop_writer())
            self.steps_per_loop = (cfg.steps_per_loop
                                   or default_steps_per_loop(self.strategy))
            self._train_step = self._make_train_step()
            self._train_loop = make_train_loop(self._train_step)
            self._eval_step = self._make_eval_step()
        except BaseException:
            self.lock.release()
            raise

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
                if cfg.mixed_precision != "none":
                    float32_outputs(self.model)
                optimizer = keras.optimizers.SGD(cfg.learning_rate,
                                                 momentum=cfg.momentum)
                if cfg.mixed_precision == "float16":
                    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
                optimizer.build(self.model.trainable_variables)
                self.optimizer = optimizer
                self.schedule = PlateauSchedule.from_train_config(cfg)
                self.progress = {name: tf.Variable(0, dtype=tf.int64)
                                 for name in PROGRESS}
                # Seconds spent in training steps, over the whole run.
                self.train_seconds = tf.Variable(0.0, dtype=tf.float64)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        # The per-epoch records (JSON), checkpointed with the weights so that
        # a resume, a rollback or a fallback keeps exactly the epochs that
        # the restored state trained.  A host variable (made outside the
        # strategy's scope): strings need no mirroring.
        self.history = tf.Variable("[]", dtype=tf.string)
        self._pending_images = self._pending_seconds = 0
        self._batch_norms = [
            layer for layer in self.model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]
        if self.strategy.num_replicas_in_sync > 1:
            # Batch statistics over the global batch, as on one device; it
            # also keeps the moving statistics identical on every replica
            # (unsynchronised, each worker would keep its own).
            for layer in self._batch_norms:
                layer.synchronized = True

    def _prepare_dirs(self):
        """Creates the model dir (the run really starts here), locks it
        against a second run (`run_dir.RunLock`, held until `run()` ends)
        and removes what an interrupted write left in it."""
        own_dir = distribute.worker_dir(self.model_dir)
        self.checkpoint_dir = os.path.join(own_dir, "checkpoints")
        os.makedirs(own_dir, exist_ok=True)
        # Before anything is removed: the temp files may be another live
        # run's.
        self.lock = run_dir.RunLock(own_dir).acquire()
        dirs = [self.checkpoint_dir] + ([self.model_dir] if self.chief
                                        else [])
        for path in run_dir.remove_stale_temp_files(*dirs):
            _warn(f"removed {path}, left by an interrupted write.")

    def _restore_or_initialize(self, init_from):
        """Resumes from the model dir's last readable checkpoint (checking
        and recording the settings), else starts from `init_from` (if
        given).  Writes `training_config.json` and `class_names.txt`."""
        # Keras 3 models are not tracked by tf.train.Checkpoint as a whole:
        # list every variable (BN statistics and dropout seeds included).
        self.checkpoint = tf.train.Checkpoint(
            model_variables=list(self.model.variables),
            optimizer=self.optimizer, **self.progress,
            train_seconds=self.train_seconds, history=self.history,
            **self.schedule.checkpoint_children())
        self._make_manager()
        config_path = os.path.join(self.model_dir, runs.CONFIG_FILE)
        config = self._training_config()
        stored = run_dir.read_json(config_path)
        changes = []
        if self.manager.latest_checkpoint is not None:
            # Before restoring: another architecture would not even restore.
            if stored is None:
                _warn(f"{config_path} is missing: the settings of the run "
                      "being resumed cannot be checked.")
            config, changes = run_dir.reconcile_config(stored or {}, config,
                                                       None)
        else:
            config["changes"] = []
        restored = self._restore_latest()
        # Here: it restores the latest checkpoint again, which is now the
        # readable one just chosen, and the changes below must come after.
        self._preemption = distribute.preemption_handler(
            self.strategy, self.manager, save_fn=self._save,
            exit_fn=self._raise_preempted,
            termination_watcher_fn=lambda: self._sigterm)
        self.restored = restored is not None
        if self.restored:
            self._announce_resume(restored, changes)
        else:
            self._announce_pretrained()
            if init_from:
                tasks.initialize_from(self.model, init_from,
                                      self.cfg.architecture)
        self._sync_learning_rate()
        if self.chief and config != stored:
            atomic.atomic_write_file(config_path, json.dumps(config,
                                                             indent=2))
            atomic.atomic_write_file(
                os.path.join(self.model_dir, runs.CLASS_NAMES_FILE),
                "\n".join(config["class_names"]) + "\n")

    def _announce_pretrained(self):
        report = self.task.pretrained
        if report is None or not (self.verbose and self.chief):
            return
        new = report.mismatched + report.missing
        reason = self.task.new_head_reason
        print(f"Loaded {len(report.loaded)} layers from {self.cfg.weights}: "
              f"{', '.join(report.loaded)}"
              + (f"; new (not in the weights, of another shape or of other "
                 f"classes): {', '.join(new)}" if new else "")
              + (f". A new {tasks.HEAD} layer: {reason} (--keep_head keeps "
                 "the weights' one)" if reason else ""), flush=True)

    def _make_manager(self):
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.checkpoint_dir,
            max_to_keep=self.cfg.keep_checkpoints)

    def _restore_latest(self):
        """Restores the newest checkpoint that reads; returns its path (None
        without checkpoints).  Unreadable ones (a truncated file) are named
        in a warning, kept on disk and dropped from the manager's list."""
        bad = []
        for path in reversed(self.manager.checkpoints):
            try:
                self.checkpoint.restore(path)
            except (tf.errors.OpError, IndexError, ValueError) as e:
                _warn(f"checkpoint {path} is unreadable ({type(e).__name__}:"
                      f" {e}); falling back to the one before it.")
                bad.append(path)
                continue
            if bad:
                # So that rollbacks and the next saves ignore the bad ones.
                tf.compat.v1.train.update_checkpoint_state(
                    self.checkpoint_dir, path, all_model_checkpoint_paths=[
                        p for p in self.manager.checkpoints if p not in bad])
                self._make_manager()
            return path
        if bad:
            raise ValueError(
                f"Every checkpoint in {self.checkpoint_dir} is unreadable "
                f"({', '.join(bad)}): move them away to start over, or use "
                "a new --model_dir.")
        return None

    def _announce_resume(self, path, changes):
        """Says what is resumed, and applies and prints the changes."""
        step = self._step()
        for change in changes:
            change["step"] = step
        if self.verbose and self.chief:
            epoch = int(self.progress["epoch"].numpy())
            print(f"Resuming {self.model_dir} from {os.path.basename(path)}:"
                  f" epoch {epoch + 1}, step {step}", flush=True)
            for c in changes:
                print(f"  {c['field']}: {c['from']} -> {c['to']} "
                      f"(from step {step})", flush=True)
        if any(c["field"] == "learning_rate" for c in changes):
            # The rate asked for now wins over the checkpointed one.
            self.schedule.learning_rate.assign(self.cfg.learning_rate)

    def _training_config(self):
        """`training_config.json`'s fields (read by `keras_vgg.runs`)."""
        names = list(self.train_source.class_names or
                     [str(i) for i in range(self.num_classes)])
        config = dataclasses.asdict(self.cfg)
        config.update(class_names=names, num_classes=self.num_classes,
                      **{runs.NAMES_INVENTED:
                         not self.train_source.class_names},
                      jittered=self.cfg.jittered,
                      validation_scale=self.cfg.validation_scale)
        return json.loads(json.dumps(config))

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
        kernels = {id(k) for k in _kernels(model)}
        decayed = [id(v) in kernels for v in model.trainable_variables]
        # Summed over replicas, the decay term counts once.
        decay = 0.5 * cfg.weight_decay / self.strategy.num_replicas_in_sync
        # A slower body: its gradients (weight decay included) scaled, which
        # for SGD with momentum is the same as scaling its learning rate.
        body = (tasks.body_variables(model) if cfg.body_lr_multiplier != 1
                else [False] * len(model.trainable_variables))

        def replica_fn(micro_batches):
            grads_sum, loss_sum, metric_sums = None, 0.0, {}
            for batch in micro_batches:
                # The flip, lighting and preprocessing, left to the step by
                # the input pipeline (`defer_pixel_ops`): here they run on
                # the accelerator, not on the host's CPUs.
                ops = batch[-1]
                batch = (augment.finish_pixels(
                    batch[0], ops["flip"], ops["shift"], cfg.preprocessing),
                ) + tuple(batch[1:-1])
                with tf.GradientTape() as tape:
                    outputs = tf.cast(model(batch[0], training=True),
                                      tf.float32)
                    losses = task.per_example_loss(outputs, batch)
                    # Scaled by the global batch: summing over replicas and
                    # micro-batches gives the batch mean.
                    loss = tf.reduce_sum(losses) / cfg.batch_size
                    scaled = optimizer.scale_loss(loss)
                grads = tape.gradient(scaled, model.trainable_variables)
                grads_sum = grads if grads_sum is None else [
                    a + b for a, b in zip(grads_sum, grads)]
                loss_sum += tf.reduce_sum(losses)
                for name, value in task.metric_sums(outputs, batch).items():
                    metric_sums[name] = metric_sums.get(name, 0.0) + value
            if cfg.weight_decay:
                # The gradient of decay * sum(||kernel||^2), added once per
                # step, directly: through the tape, the same products (bit
                # for bit) came after a pass over every weight for the
                # unused sum and one for its broadcast, per micro-batch.
                rate = optimizer.scale_loss(tf.constant(2.0 * decay))
                grads_sum = [g + rate * w if in_decay else g
                             for g, w, in_decay in zip(
                                 grads_sum, model.trainable_variables,
                                 decayed)]
            grads_sum = [g * cfg.body_lr_multiplier if in_body else g
                         for g, in_body in zip(grads_sum, body)]
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

    def _loop_length(self, done, max_steps):
        """The steps of the next loop: at most `steps_per_loop`, and a loop
        ends at the epoch's end, at a `checkpoint_every` step and at
        `max_steps`, so that those happen between loops exactly where they
        happen with one step per loop."""
        step = self._step()
        every = self.cfg.checkpoint_every
        return min(self.steps_per_loop, self.steps_per_epoch - done,
                   max_steps - step, every - step % every)

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
            deterministic=True, skip_counter=self.skip_counter,
            data_service=cfg.data_service, defer_pixel_ops=True)
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
        returns the metrics (the chief also writes the run's outputs).  A
        finished run is left as it is (its metrics are returned).  The
        model dir's lock is released when it returns or raises."""
        self.lock.acquire()  # again, on a second call
        try:
            return self._run()
        finally:
            # Not before the last validation: until that collective, a
            # worker may still be naming the step to stop at (an error once
            # the others have stopped their handlers).
            distribute.stop_preemption_handler(self._preemption)
            self.lock.release()

    def _run(self):
        finished = self._finished_metrics()
        if finished is not None:
            return finished
        if self.chief and not self.restored:
            self._log_images(0)
        with self._checkpoint_on_sigterm(), self._watching_data_service():
            summary, stop_reason = self._loop()
        if summary is None:
            summary = self.validate()
        self._save()
        metrics = self._metrics(summary, stop_reason)
        if self.chief:
            self._write_outputs(metrics)
        return metrics

    def _loop(self):
        """The epochs; returns the last validation summary (or None) and
        why training stopped."""
        max_steps = self._max_steps()
        summary, rollbacks = None, 0
        while self._step() < max_steps:
            self._stop_if_preempted()
            epoch = int(self.progress["epoch"].numpy())
            result = self._train_epoch(epoch, max_steps)
            if self.cfg.data_service:
                self._service_watch.release_input()
            if result.diverged_step is not None:
                rollbacks += 1
                self._roll_back(rollbacks, result.diverged_step)
                continue
            if result.preempted:
                self._stop_if_preempted()
            if not result.finished:
                return summary, "max_steps"
            summary, record = self._end_epoch(epoch, result)
            history = json.loads(self.history.numpy())
            self.history.assign(json.dumps(history + [record]))
            stop = self.schedule.update(summary[self.task.monitor],
                                        epoch + 1)
            self._sync_learning_rate()
            self._save()
            if stop:
                return summary, "plateau"
        return summary, ("max_steps" if self.cfg.max_steps and max_steps
                         == self.cfg.max_steps else "max_epochs")

    def _finished_metrics(self):
        """The metrics of a run that already finished with these settings,
        else None."""
        if not self.restored:
            return None
        metrics = run_dir.read_json(os.path.join(self.model_dir,
                                                 runs.METRICS_FILE))
        if (not metrics or metrics.get("steps") != self._step() or not (
                metrics.get("stop_reason") == "plateau"
                or self._step() >= self._max_steps())):
            return None
        if self.verbose and self.chief:
            print(f"{self.model_dir} is finished ({metrics['stop_reason']} "
                  f"at step {self._step()}): nothing to do; raise "
                  "--max_epochs or --max_steps to train on.", flush=True)
        return metrics

    @contextlib.contextmanager
    def _checkpoint_on_sigterm(self):
        """While training, SIGTERM (how schedulers and preemptible machines
        stop a job) only sets a flag: the loop checkpoints at the end of the
        running loop of steps and raises `TrainingPreempted`.

        In a multi-worker cluster the flag goes to `distribute.
        preemption_handler` instead, which has every worker checkpoint at
        the same loop end (a loop or two later) and raise.  One process
        keeps this path: with one process that handler saves a loop later,
        and on Google Cloud CPU machines and TPUs it ignores SIGTERM.
        Either way this handler owns the signal, and the previous one comes
        back after.
        """
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return

        def handler(signum, frame):
            del signum, frame
            self._sigterm = True

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous if previous is not None
                          else signal.SIG_DFL)

    @contextlib.contextmanager
    def _watching_data_service(self):
        """With a tf.data service, a `service_watch.ServiceWatch` while
        training: its client never times out, and SIGTERM goes unanswered
        while the loop waits for a batch that will not come."""
        if not self.cfg.data_service:
            yield
            return
        loop = self._train_loop
        # Only a single process can save alone; float16's loss scaling
        # skips updates, and the update count then says nothing.
        alone = not (distribute.cluster_task()[0]
                     or self.cfg.mixed_precision == "float16")
        with service_watch.ServiceWatch(
                self.cfg.data_service, self.cfg.data_service_timeout,
                self._save_stalled if alone else None, self._last_checkpoint,
                lambda: int(self.optimizer.iterations.numpy())
        ) as self._service_watch:
            self._train_loop = self._service_watch.timed(loop)
            try:
                yield
            finally:
                self._train_loop = loop

    def _save_stalled(self, applied):
        # From the watch thread, while the main thread is stuck in a loop
        # call of one step: `applied` (0 or 1) is whether that step's update
        # is in the variables; the main thread never counts it.
        self.progress["step"].assign_add(applied)
        self._pending_images += applied * self.cfg.batch_size
        self._save()
        return (f"saved {self.manager.latest_checkpoint} at step "
                f"{self._step()}")

    def _last_checkpoint(self):
        latest = self.manager.latest_checkpoint
        return f"step {latest.rsplit('-', 1)[1]}" if latest else "none yet"

    def _stop_if_preempted(self):
        if not self._sigterm or self._preemption is not None:
            return
        self._save()
        self._raise_preempted()

    def _raise_preempted(self):
        raise TrainingPreempted(
            ("SIGTERM to a worker" if self._preemption is not None
             else "SIGTERM")
            + f": saved {self.manager.latest_checkpoint} at step "
            f"{self._step()}; the same command resumes from it.")

    def _train_epoch(self, epoch, max_steps):
        """Trains the rest of `epoch` (up to `max_steps`), checkpointing
        every `checkpoint_every` steps; stops at a non-finite loss or at
        SIGTERM."""
        cfg = self.cfg
        done = self._step() - int(self.progress["epoch_start_step"].numpy())
        iterator = iter(self._train_dataset(epoch, done * cfg.grad_accum))
        verbose = self.verbose if self.chief else 0
        # Not a terminal (a log file): no redrawn bar; `_end_epoch` prints
        # the epoch as one line.
        one_line = not sys.stdout.isatty()
        progbar = keras.utils.Progbar(
            self.steps_per_epoch, verbose=0 if one_line else verbose,
            stateful_metrics=["loss", *self.task.display_names, "images/s",
                              "lr"])
        if verbose and not one_line:
            print(f"Epoch {epoch + 1}/{cfg.max_epochs}", flush=True)
        result = _EpochResult()
        while done < self.steps_per_epoch and self._step() < max_steps:
            start = time.perf_counter()
            ran, loss_sum, metric_sums = self._train_loop(
                iterator, tf.constant(self._loop_length(done, max_steps)))
            loss_sum, ran = float(loss_sum), int(ran)
            if not math.isfinite(loss_sum):
                result.diverged_step = self._step() + ran
                return result
            self._pending_seconds += time.perf_counter() - start
            self._pending_images += ran * cfg.batch_size
            done += ran
            step = int(self.progress["step"].assign_add(ran).numpy())
            result.add(loss_sum, metric_sums, ran * cfg.batch_size)
            values = ([("loss", result.loss_sum / result.images)]
                      + self.task.train_display(result.metric_sums,
                                                result.images)
                      + [("images/s", self._images_per_second()),
                         ("lr", self.schedule.current_learning_rate)])
            progbar.update(done, values)
            with self.writer.as_default():
                for name, value in values:
                    tf.summary.scalar(f"train/{name}", value, step=step)
            if step % cfg.checkpoint_every == 0:
                self._save()
            if self._preemption is not None:
                # Once per loop on every worker: the count of calls is how
                # the workers agree on where to stop (it saves and raises).
                self._preemption.save_checkpoint_if_preempted()
            elif self._sigterm:
                result.preempted = True
                break
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
            line = self.task.validation_line(summary,
                                             record["learning_rate"])
            if not sys.stdout.isatty():
                train = [f"{name} {value:.4f}" for name, value in
                         self.task.train_display(result.metric_sums,
                                                 max(result.images, 1))]
                line = (f"Epoch {epoch + 1}/{self.cfg.max_epochs} "
                        f"{self.steps_per_epoch}/{self.steps_per_epoch} - "
                        f"loss {record['train_loss']:.4f} - "
                        + " - ".join(train)
                        + f" - {self._images_per_second():.0f} images/s - "
                        + line.strip().replace("  ", " "))
            print(line, flush=True)
        with self.writer.as_default():
            tf.summary.scalar("val/top1", record["val_top1_accuracy"],
                              step=record["step"])
            tf.summary.scalar("val/top5", record["val_top5_accuracy"],
                              step=record["step"])
        return summary, record

    def _roll_back(self, rollbacks, diverged_step):
        """After a non-finite loss: back to the last checkpoint, or
        `TrainingDiverged` when there is none or rolling back
        `max_rollbacks` times did not help."""
        latest = self.manager.latest_checkpoint
        if latest is None or rollbacks > self.cfg.max_rollbacks:
            raise TrainingDiverged(
                f"The training loss became NaN or infinite at step "
                f"{diverged_step} (learning rate "
                f"{self.schedule.current_learning_rate:g}); "
                + (f"rolled back {rollbacks - 1} times to "
                   f"{latest} without help. " if latest else
                   "there is no checkpoint to roll back to. ")
                + "Lower --learning_rate or check the data. The "
                "checkpoints in the model dir are kept.")
        if self.verbose:
            print(f"\nNon-finite loss: rolling back to {latest}")
        self.checkpoint.restore(latest)
        self._pending_images = self._pending_seconds = 0
        self._sync_learning_rate()

    def _save(self):
        self.progress["images_skipped"].assign(
            self.progress["images_skipped"].numpy() + self.skip_counter.count)
        self.skip_counter.reset()
        self.progress["images_trained"].assign_add(self._pending_images)
        self.train_seconds.assign_add(self._pending_seconds)
        self._pending_images = self._pending_seconds = 0
        self.manager.save(checkpoint_number=self._step())

    def _images_per_second(self):
        """Training throughput over the whole run (every process that
        trained it): images / seconds spent in training steps."""
        seconds = float(self.train_seconds.numpy()) + self._pending_seconds
        images = (int(self.progress["images_trained"].numpy())
                  + self._pending_images)
        return images / seconds if seconds else 0.0

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

    def _metrics(self, summary, stop_reason):
        progress, schedule = self.progress, self.schedule
        return {
            **summary,
            "images_skipped": int(progress["images_skipped"].numpy()),
            # Distinct files behind `images_skipped` (met by this process).
            "bad_files_count": self.skip_counter.bad_files_count,
            "bad_files": self.skip_counter.bad_files,
            "steps": self._step(),
            "epochs": int(progress["epoch"].numpy()),
            "images_trained": int(progress["images_trained"].numpy()),
            # Of the whole run, resumes included (see _images_per_second).
            "images_per_second": self._images_per_second(),
            "learning_rate": schedule.current_learning_rate,
            "lr_decreases": int(schedule.lr_decreases.numpy()),
            "stop_reason": stop_reason,
            "history": json.loads(self.history.numpy()),
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
        atomic.atomic_write_file(os.path.join(d, runs.METRICS_FILE),
                                 json.dumps(metrics, indent=2))
