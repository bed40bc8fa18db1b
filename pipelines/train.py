"""Train a VGG network with the paper's recipe, on any tf.distribute strategy.

    python -m pipelines.train --config=vgg16_jitter --dataset=imagenet2012 \\
        --data_dir=... --model_dir=runs/vgg16_jitter --init_from=runs/vgg16_s384

The loop is ours (`strategy.run` in a `tf.function`), not `model.fit`:
Keras 3.15's `fit` fails under MultiWorkerMirroredStrategy, and the same loop
then serves OneDevice, Mirrored, MultiWorkerMirrored and TPU strategies.

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

import dataclasses
import json
import math
import os
import time

import numpy as np
import tensorflow as tf

import keras
import keras_vgg
from pipelines import augment
from pipelines import box_loss
from pipelines import distribute
from pipelines import entry
from pipelines import recipes
from pipelines import runs
from pipelines import sources

_PLATEAU_STATE = ("step", "epoch", "epoch_start_step", "lr_decreases",
                  "best_val_top1", "epochs_since_best", "images_skipped")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite and rolling back did not help."""


def build_model(cfg, num_classes):
    """The network of `cfg`: a classifier with logits out (the loss applies
    softmax), or a localiser (box regressor) for task="localisation"."""
    if cfg.task == "localisation":
        return keras_vgg.VGGLocalizer(
            cfg.config, regression=cfg.regression, classes=num_classes,
            input_shape=(cfg.crop, cfg.crop, 3), batch_norm=cfg.batch_norm,
            dropout=cfg.dropout, width_multiplier=cfg.width_multiplier)
    model = keras_vgg.VGG(
        cfg.config, batch_norm=cfg.batch_norm, classes=num_classes,
        input_shape=(cfg.crop, cfg.crop, 3), classifier_activation=None,
        dropout=cfg.dropout, width_multiplier=cfg.width_multiplier)
    if cfg.init == "gaussian":
        # The paper's init for net A: N(0, 1e-2) weights, zero biases.
        rng = np.random.RandomState(cfg.seed)
        for layer in model.layers:
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
                kernel, bias = layer.get_weights()
                layer.set_weights([
                    rng.normal(0, 1e-2, kernel.shape).astype(kernel.dtype),
                    np.zeros_like(bias)])
    return model


# The paper initialises deeper nets from a trained net A: its first four conv
# layers (those of blocks 1-3, which exist with the same shapes in every
# configuration) and its three FC layers.
PAPER_INIT_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1",
                     "block3_conv2", "fc1", "fc2", "predictions")


def initialize_from(model, path, same_config):
    """Copies weights from a trained run (a model dir or a `.keras` file).

    With the same configuration every layer is copied (S=384 from S=256,
    jittered from S=384); from another configuration (a deeper net from A)
    only `PAPER_INIT_LAYERS`.
    """
    source, path, _ = runs.load_run_model(path, "`init_from`")
    names = None if same_config else PAPER_INIT_LAYERS
    return keras_vgg.weights.copy_layers(source, model, names,
                                         what=f"`init_from`={path!r}")


def freeze_body(model):
    """Makes every layer before `flatten` (the conv body) untrainable: BN
    layers among them then also keep their moving statistics."""
    names = [layer.name for layer in model.layers]
    if "flatten" not in names:
        raise ValueError(f"`fine_tune`='fc': model {model.name!r} has no "
                         "'flatten' layer (an FC head) to train alone.")
    for layer in model.layers[:names.index("flatten")]:
        layer.trainable = False


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


class Trainer:
    """The training loop; `train()` below is the one-call interface."""

    def __init__(self, cfg, train_source, val_source, model_dir,
                 strategy=None, init_from=None, init_config=None, verbose=1):
        self.cfg = cfg
        self.train_source = train_source
        self.val_source = val_source
        self.model_dir = model_dir
        self.strategy = strategy or distribute.make_strategy("auto")
        self.verbose = verbose
        self.chief = distribute.is_chief()
        num_classes = train_source.num_classes
        if not num_classes:
            raise ValueError(
                "The training data does not say how many classes it has "
                "(TFRecords need a class_names.txt beside them).")
        self.num_classes = num_classes
        replicas = self.strategy.num_replicas_in_sync
        self.micro_batch = cfg.batch_size // cfg.grad_accum
        if self.micro_batch % replicas:
            raise ValueError(
                f"`batch_size`/`grad_accum` = {self.micro_batch} must be a "
                f"multiple of the {replicas} replicas.")
        if cfg.steps_per_epoch:
            self.steps_per_epoch = cfg.steps_per_epoch
        elif train_source.num_examples:
            self.steps_per_epoch = max(
                1, train_source.num_examples // cfg.batch_size)
        else:
            raise ValueError("The number of training examples is unknown: "
                             "pass `steps_per_epoch`.")
        self.skip_counter = augment.SkipCounter()

        if cfg.mixed_precision != "none":
            keras.mixed_precision.set_global_policy(
                f"mixed_{cfg.mixed_precision}")
        with self.strategy.scope():
            self.model = build_model(cfg, num_classes)
            if cfg.fine_tune == "fc":
                freeze_body(self.model)
            optimizer = keras.optimizers.SGD(cfg.learning_rate,
                                             momentum=cfg.momentum)
            if cfg.mixed_precision == "float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.optimizer.build(self.model.trainable_variables)
            self.state = {
                "step": tf.Variable(0, dtype=tf.int64),
                "epoch": tf.Variable(0, dtype=tf.int64),
                "epoch_start_step": tf.Variable(0, dtype=tf.int64),
                "lr_decreases": tf.Variable(0, dtype=tf.int64),
                "best_val_top1": tf.Variable(-1.0, dtype=tf.float64),
                "epochs_since_best": tf.Variable(0, dtype=tf.int64),
                "images_skipped": tf.Variable(0, dtype=tf.int64),
                "learning_rate": tf.Variable(cfg.learning_rate,
                                             dtype=tf.float64),
            }
        keras.mixed_precision.set_global_policy("float32")
        self._batch_norms = [layer for layer in self.model.layers if isinstance(
            layer, keras.layers.BatchNormalization)]
        if replicas > 1:
            # Batch statistics over the global batch, as on one device; it
            # also keeps the moving statistics identical on every replica
            # (unsynchronised, each worker would keep its own).
            for layer in self._batch_norms:
                layer.synchronized = True
        # Keras 3 models are not tracked by tf.train.Checkpoint as a whole:
        # list every variable (BN statistics and dropout seeds included).
        self.checkpoint = tf.train.Checkpoint(
            model_variables=list(self.model.variables),
            optimizer=self.optimizer, **self.state)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            os.path.join(distribute.worker_dir(model_dir), "checkpoints"),
            max_to_keep=cfg.keep_checkpoints)
        self.restored = False
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint)
            self.restored = True
        elif init_from:
            initialize_from(self.model, init_from,
                            (init_config or cfg.config) == cfg.config)
        self._set_lr(float(self.state["learning_rate"].numpy()))
        self.writer = (tf.summary.create_file_writer(
            os.path.join(model_dir, "logs")) if self.chief else
            tf.summary.create_noop_writer())
        self._train_step = self._make_train_step()
        self._eval_step = self._make_eval_step()

    # -- steps ------------------------------------------------------------

    def _set_lr(self, value):
        self.state["learning_rate"].assign(value)
        opt = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        opt.learning_rate.assign(value)

    def _make_train_step(self):
        cfg, model, optimizer = self.cfg, self.model, self.optimizer
        global_batch = cfg.batch_size
        replicas = self.strategy.num_replicas_in_sync
        kernels = _kernels(model)

        localisation = cfg.task == "localisation"

        def replica_fn(micro_batches):
            grads_sum = None
            ce_sum = top1 = top5 = 0.0
            for batch in micro_batches:
                images, labels = batch[0], batch[1]
                with tf.GradientTape() as tape:
                    logits = tf.cast(model(images, training=True), tf.float32)
                    if localisation:
                        ce, valid = box_loss.euclidean_loss(
                            logits, labels, batch[2], cfg.regression)
                    else:
                        ce = keras.losses.sparse_categorical_crossentropy(
                            labels, logits, from_logits=True)
                    # Scaled by the global batch: summing over replicas and
                    # micro-batches gives the batch mean.
                    loss = tf.reduce_sum(ce) / global_batch
                    if cfg.weight_decay:
                        l2 = tf.add_n([tf.reduce_sum(tf.square(
                            tf.cast(k, tf.float32))) for k in kernels])
                        loss += (0.5 * cfg.weight_decay * l2
                                 / (replicas * cfg.grad_accum))
                    scaled = (optimizer.scale_loss(loss)
                              if hasattr(optimizer, "scale_loss") else loss)
                grads = tape.gradient(scaled, model.trainable_variables)
                grads_sum = grads if grads_sum is None else [
                    a + b for a, b in zip(grads_sum, grads)]
                ce_sum += tf.reduce_sum(ce)
                if localisation:
                    # top1: boxes with IoU > 0.5; top5: images with a box.
                    hits, valid = box_loss.correct_boxes(
                        logits, labels, batch[2], cfg.regression)
                    top1 += tf.reduce_sum(hits)
                    top5 += tf.reduce_sum(valid)
                    continue
                top1 += tf.reduce_sum(tf.cast(tf.math.in_top_k(
                    tf.cast(labels, tf.int32), logits, 1), tf.float32))
                top5 += tf.reduce_sum(tf.cast(tf.math.in_top_k(
                    tf.cast(labels, tf.int32), logits,
                    min(5, self.num_classes)), tf.float32))
            optimizer.apply(grads_sum, model.trainable_variables)
            return ce_sum, top1, top5

        replica = (tf.function(replica_fn, jit_compile=True) if cfg.xla
                   else replica_fn)

        @tf.function
        def step(iterator):
            batches = tuple(next(iterator) for _ in range(cfg.grad_accum))
            out = self.strategy.run(replica, args=(batches,))
            return [self.strategy.reduce("SUM", v, axis=None) for v in out]

        return step

    def _make_eval_step(self):
        model = self.model
        k = min(5, self.num_classes)
        cfg = self.cfg

        def replica_fn(images, labels, boxes=None):
            logits = tf.cast(model(images, training=False), tf.float32)
            if boxes is not None:
                hits, valid = box_loss.correct_boxes(logits, labels, boxes,
                                                     cfg.regression)
                return (tf.reduce_sum(hits), tf.reduce_sum(valid),
                        tf.reduce_sum(valid))
            labels = tf.cast(labels, tf.int32)
            return (tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1),
                                          tf.float32)),
                    tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k),
                                          tf.float32)),
                    tf.cast(tf.shape(labels)[0], tf.float32))

        @tf.function
        def step(*batch):
            out = self.strategy.run(replica_fn, args=batch)
            return [self.strategy.reduce("SUM", v, axis=None) for v in out]

        return step

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
            with_bbox=cfg.task == "localisation",
            # In-order parallel decoding: the skipped-image count is then
            # exact at every step (out of order, a slow image counts as
            # skipped until it arrives), and resumes replay the same batches.
            deterministic=True, skip_counter=self.skip_counter)
        if skip_batches:
            ds = ds.skip(skip_batches)
        return self.strategy.experimental_distribute_dataset(ds)

    def evaluate(self):
        """Top-1 / top-5 accuracy on the validation source (central crop at
        the validation scale Q); for localisation, the fraction of images
        whose ground-truth-class box has IoU > 0.5 (twice)."""
        cfg = self.cfg
        ds = augment.make_dataset(
            self.val_source, training=False, batch_size=cfg.val_batch_size,
            scale=cfg.validation_scale, crop=cfg.crop,
            preprocessing=cfg.preprocessing, skip_counter=self.skip_counter,
            with_bbox=cfg.task == "localisation")
        totals = np.zeros(3)
        for batch in ds:
            totals += [float(v) for v in self._eval_step(*batch)]
        if not totals[2]:
            raise ValueError("The validation data yielded no image.")
        return totals[0] / totals[2], totals[1] / totals[2]

    # -- loop -------------------------------------------------------------

    def _save(self):
        self.state["images_skipped"].assign(
            self.state["images_skipped"].numpy() + self.skip_counter.count)
        self.skip_counter.reset()
        self.manager.save(checkpoint_number=int(self.state["step"].numpy()))

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

    def run(self):
        cfg, state = self.cfg, self.state
        max_steps = self._max_steps()
        rollbacks = 0
        history = []
        stop_reason = "max_epochs"
        if self.chief and not self.restored:
            self._log_images(0)
        train_start = time.perf_counter()
        images_trained = 0
        val_top1 = val_top5 = None
        while int(state["step"].numpy()) < max_steps:
            epoch = int(state["epoch"].numpy())
            done = int(state["step"].numpy()) - int(
                state["epoch_start_step"].numpy())
            iterator = iter(self._train_dataset(epoch, done * cfg.grad_accum))
            progbar = keras.utils.Progbar(
                self.steps_per_epoch, verbose=self.verbose if self.chief else 0,
                stateful_metrics=["loss", "top1", "top5", "images/s", "lr"])
            if self.verbose and self.chief:
                print(f"Epoch {epoch + 1}/{cfg.max_epochs}")
            sums = np.zeros(3)
            seen = 0
            t0 = time.perf_counter()
            diverged = False
            while done < self.steps_per_epoch and int(
                    state["step"].numpy()) < max_steps:
                ce, top1, top5 = [float(v) for v in self._train_step(iterator)]
                if not math.isfinite(ce):
                    diverged = True
                    break
                done += 1
                step = int(state["step"].assign_add(1).numpy())
                sums += [ce, top1, top5]
                seen += cfg.batch_size
                images_trained += cfg.batch_size
                ips = seen / (time.perf_counter() - t0)
                values = [("loss", sums[0] / seen), ("top1", sums[1] / seen),
                          ("top5", sums[2] / seen), ("images/s", ips),
                          ("lr", float(state["learning_rate"].numpy()))]
                progbar.update(done, values)
                with self.writer.as_default():
                    for name, value in values:
                        tf.summary.scalar(f"train/{name}", value, step=step)
                if step % cfg.checkpoint_every == 0:
                    self._save()
            if diverged:
                rollbacks += 1
                latest = self.manager.latest_checkpoint
                if latest is None or rollbacks > cfg.max_rollbacks:
                    raise TrainingDiverged(
                        f"The training loss became NaN or infinite at step "
                        f"{int(state['step'].numpy()) + 1} (learning rate "
                        f"{float(state['learning_rate'].numpy()):g}); "
                        + (f"rolled back {rollbacks - 1} times to "
                           f"{latest} without help. " if latest else
                           "there is no checkpoint to roll back to. ")
                        + "Lower --learning_rate or check the data. The "
                        "checkpoints in the model dir are kept.")
                if self.verbose:
                    print(f"\nNon-finite loss: rolling back to {latest}")
                self.checkpoint.restore(latest)
                self._set_lr(float(state["learning_rate"].numpy()))
                continue
            if done < self.steps_per_epoch:
                self._save()
                stop_reason = "max_steps"
                break
            # End of epoch: validate, adjust the learning rate, checkpoint.
            val_top1, val_top5 = self.evaluate()
            state["epoch"].assign_add(1)
            state["epoch_start_step"].assign(state["step"])
            record = {"epoch": epoch + 1, "step": int(state["step"].numpy()),
                      "train_loss": sums[0] / max(seen, 1),
                      "val_top1_accuracy": val_top1,
                      "val_top5_accuracy": val_top5,
                      "learning_rate": float(state["learning_rate"].numpy())}
            history.append(record)
            if self.verbose and self.chief:
                if cfg.task == "localisation":
                    print(f"  val localisation accuracy (IoU > 0.5) "
                          f"{val_top1:.4f}  lr {record['learning_rate']:g}")
                else:
                    print(f"  val top-1 {val_top1:.4f}  top-5 "
                          f"{val_top5:.4f}  lr {record['learning_rate']:g}")
            with self.writer.as_default():
                tf.summary.scalar("val/top1", val_top1, step=record["step"])
                tf.summary.scalar("val/top5", val_top5, step=record["step"])
            stop = self._plateau(val_top1)
            self._save()
            if stop:
                stop_reason = "plateau"
                break
        else:
            stop_reason = ("max_steps" if cfg.max_steps and max_steps ==
                           cfg.max_steps else "max_epochs")
        seconds = time.perf_counter() - train_start
        if val_top1 is None:
            val_top1, val_top5 = self.evaluate()
        self._save()
        metrics = {
            "val_top1_accuracy": val_top1,
            "val_top5_accuracy": val_top5,
            **({"val_localization_accuracy": val_top1,
                "val_localization_error": 1 - val_top1}
               if cfg.task == "localisation" else {}),
            "images_skipped": int(state["images_skipped"].numpy()),
            "steps": int(state["step"].numpy()),
            "epochs": int(state["epoch"].numpy()),
            "images_per_second": images_trained / seconds if seconds else 0.0,
            "learning_rate": float(state["learning_rate"].numpy()),
            "lr_decreases": int(state["lr_decreases"].numpy()),
            "stop_reason": stop_reason,
            "history": history,
        }
        if self.chief:
            self._write_outputs(metrics)
        return metrics

    def _plateau(self, val_top1):
        """The paper's schedule: divide the lr by 10 when validation accuracy
        stops improving; after `max_lr_decreases` decreases, stop at the next
        plateau.  Returns True to stop."""
        state, cfg = self.state, self.cfg
        if val_top1 > float(state["best_val_top1"].numpy()):
            state["best_val_top1"].assign(val_top1)
            state["epochs_since_best"].assign(0)
            return False
        state["epochs_since_best"].assign_add(1)
        if int(state["epochs_since_best"].numpy()) < cfg.lr_patience:
            return False
        if int(state["lr_decreases"].numpy()) >= cfg.max_lr_decreases:
            return True
        state["lr_decreases"].assign_add(1)
        state["epochs_since_best"].assign(0)
        self._set_lr(float(state["learning_rate"].numpy())
                     * cfg.lr_decay_factor)
        return False

    def _write_outputs(self, metrics):
        d = self.model_dir
        # The trained network with its softmax, as a user loads it, and
        # plain BN layers (synchronised BN exists on the TF backend only).
        head = (self.model.get_layer("predictions")
                if self.cfg.task == "classification" else None)
        if head is not None:
            head.activation = keras.activations.softmax
        synced = [layer.synchronized for layer in self._batch_norms]
        for layer in self._batch_norms:
            layer.synchronized = False
        try:
            # Written beside, then renamed: a reader never sees half a file.
            tmp = os.path.join(d, ".model.tmp.keras")
            self.model.save(tmp)
            os.replace(tmp, os.path.join(d, "model.keras"))
        finally:
            if head is not None:
                head.activation = keras.activations.linear
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


def train(cfg, dataset="builtin", model_dir="runs/train", data_dir=None,
          val_dataset=None, strategy="auto", init_from=None, tpu=None,
          verbose=1):
    """Trains `cfg` (a `TrainConfig` or a recipe name) and returns metrics.

    Args:
        cfg: a `recipes.TrainConfig` or the name of one ("vgg16_s256").
        dataset: "builtin", a tfds name, "tfrecord:GLOB" or "folder:DIR".
        model_dir: checkpoints, logs and outputs; a run resumes from it.
        data_dir: tfds data_dir, or the built-in dataset's cache dir.
        val_dataset: same forms; default the validation split of `dataset`.
        strategy: a `tf.distribute.Strategy` or a name (see
            `pipelines.distribute.make_strategy`).
        init_from: a trained model dir or `.keras` to start from.

    Returns:
        The metrics dict also written to `<model_dir>/metrics.json`.

    Example:
    >>> metrics = train("demo", model_dir="/tmp/demo")
    >>> metrics["val_top1_accuracy"] > 0.5
    True
    """
    if isinstance(strategy, str):
        # First: a multi-worker strategy must exist before any TF op runs.
        strategy = distribute.make_strategy(strategy, tpu=tpu)
    if isinstance(cfg, str):
        cfg = recipes.get_recipe(cfg)
    if cfg.seed is not None:
        keras.utils.set_random_seed(cfg.seed)
    # Op determinism is process-wide: make it follow this run's setting (a
    # notebook may train a deterministic run, then an XLA one).  TF exports
    # no public switch back off.
    from tensorflow.python.framework import config as tf_config

    if cfg.deterministic:
        tf_config.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
    os.makedirs(model_dir, exist_ok=True)
    seed = cfg.seed or 0
    train_source = sources.load_source(
        dataset, "train", data_dir=data_dir, seed=seed,
        shuffle_files=False if cfg.deterministic else None)
    val_source = sources.load_source(val_dataset or dataset, "validation",
                                     data_dir=data_dir, seed=seed)
    init_config = None
    if init_from:
        config_path = os.path.join(
            init_from if os.path.isdir(init_from) else
            os.path.dirname(init_from), "training_config.json")
        if os.path.exists(config_path):
            with open(config_path) as f:
                init_config = json.load(f)["config"]
    trainer = Trainer(cfg, train_source, val_source, model_dir, strategy,
                      init_from=init_from, init_config=init_config,
                      verbose=verbose)
    return trainer.run()


# -- command line -----------------------------------------------------------


def _define_flags():
    from absl import flags

    defaults = recipes.TrainConfig()
    flags.DEFINE_string("config", "demo",
                        f"Training recipe: one of {sorted(recipes.RECIPES)}.")
    flags.DEFINE_string("dataset", "builtin",
                        "builtin, a tfds name (with --data_dir), "
                        "tfrecord:GLOB or folder:DIR.")
    flags.DEFINE_string("val_dataset", None,
                        "Validation data, same forms; default the "
                        "validation split of --dataset.")
    flags.DEFINE_string("data_dir", None,
                        "tfds data_dir, or the built-in dataset's cache.")
    flags.DEFINE_string("model_dir", "runs/train",
                        "Checkpoints, TensorBoard logs and outputs; the same "
                        "command resumes from it.")
    flags.DEFINE_enum("strategy", "auto", list(distribute.STRATEGIES),
                      "tf.distribute strategy (auto: all local GPUs, else "
                      "the CPU).")
    flags.DEFINE_string("tpu", None, "TPU name or address (--strategy=tpu).")
    flags.DEFINE_string("init_from", None,
                        "Trained run (model dir or .keras) to start from: "
                        "all layers for the same config, the paper's four "
                        "convs + three FC layers from net A.")
    # Every TrainConfig field can be overridden; unset means the recipe's.
    for field in dataclasses.fields(recipes.TrainConfig):
        if field.name == "config":
            flags.DEFINE_string("model_config", None,
                                "Table 1 configuration (A, A-LRN, B, C, D, "
                                "E), overriding the recipe's.")
            continue
        default = getattr(defaults, field.name)
        help_text = (f"Override the recipe's {field.name} (TrainConfig "
                     f"default: {default}).")
        # The fields whose default is None (max_steps, seed, ...) are ints.
        kind = type(default) if default is not None else int
        if kind is bool:
            flags.DEFINE_boolean(field.name, None, help_text)
        elif kind is float:
            flags.DEFINE_float(field.name, None, help_text)
        elif kind is int:
            flags.DEFINE_integer(field.name, None, help_text)
        else:
            flags.DEFINE_string(field.name, None, help_text)


def config_from_flags(flag_values):
    """The recipe named by --config with every flag that was set applied."""
    cfg = recipes.get_recipe(flag_values.config)
    changes = {}
    for field in dataclasses.fields(recipes.TrainConfig):
        name = "model_config" if field.name == "config" else field.name
        value = getattr(flag_values, name)
        if value is not None:
            changes[field.name] = value
    return dataclasses.replace(cfg, **changes)


def main(argv):
    from absl import flags

    del argv
    f = flags.FLAGS
    cfg = config_from_flags(f)
    metrics = train(cfg, dataset=f.dataset, model_dir=f.model_dir,
                    data_dir=f.data_dir, val_dataset=f.val_dataset,
                    strategy=f.strategy, init_from=f.init_from, tpu=f.tpu)
    summary = {k: v for k, v in metrics.items() if k != "history"}
    print(json.dumps(summary, indent=2))


def run():
    """The command line, as `python -m pipelines.train` runs it; also the
    `vgg-train` console script."""
    _define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
