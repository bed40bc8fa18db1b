"""Train a VGG network with the paper's recipe, on any tf.distribute strategy.

    python -m pipelines.train --recipe=vgg16_jitter --dataset=imagenet2012 \\
        --data_dir=... --model_dir=runs/vgg16_jitter --init_from=runs/vgg16_s384

`train()` is the library function a notebook calls, the command line a thin
shell over it.  What is trained is a task (`pipelines.tasks`: the network,
its loss and metrics); how the learning rate falls is `pipelines.schedule`;
the loop is `pipelines.trainer`.

What a run leaves in `--model_dir` (created once the run really starts: a
failed start leaves nothing behind):
- `.lock`, locked while a process trains the run: a second start into the
  same directory is refused, naming that process (`run_dir.RunLock`);
- `training_config.json` and `class_names.txt`, written when it starts;
- `checkpoints/`: model, optimizer, step, epoch, learning-rate state and the
  per-epoch history, every `checkpoint_every` steps, at each epoch end and
  on SIGTERM (`tf.train.CheckpointManager`);
- `logs/`: TensorBoard scalars (loss, top-1/top-5, learning rate, images/s)
  and a few augmented training images;
- `model.keras` and `metrics.json` when the run ends.  `metrics.json`'s
  `history` holds every epoch of the run, and `images_per_second` is the
  training throughput of the whole run, resumes included.

The same command resumes from the last readable checkpoint and says so.
Only `run_dir.SAFE_CHANGES` (learning rate, max epochs / steps, ...) may
differ on a resume: they are applied from the resume step and recorded in
`training_config.json`'s `changes`; any other difference is refused.  A
finished run is left as it is.

Resume is exact in deterministic mode (`--deterministic --seed=N`): every
epoch's input is a function of (seed, epoch), and the batches of an epoch
already trained are skipped on restart.
"""

import dataclasses
import json

import keras
import tensorflow as tf
from absl import flags

# Op determinism is process-wide and TF exports no public switch back off.
from tensorflow.python.framework import config as tf_config

from pipelines import augment
from pipelines import distribute
from pipelines import entry
from pipelines import recipes
from pipelines import run_dir
from pipelines import sources

# Public names of this module from before the trainer was split by task.
from pipelines.tasks import PAPER_INIT_LAYERS  # noqa: F401
from pipelines.tasks import build_model  # noqa: F401
from pipelines.tasks import freeze_body  # noqa: F401
from pipelines.tasks import initialize_from  # noqa: F401
from pipelines.trainer import ACCELERATOR_STEPS_PER_LOOP
from pipelines.trainer import Trainer
from pipelines.trainer import TrainingDiverged  # noqa: F401
from pipelines.trainer import TrainingPreempted  # noqa: F401


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
            A folder given here is read whole (every image validates),
            unless it is laid out by split (DIR/train/, DIR/val/).
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
    seed = cfg.seed or 0
    with run_dir.removed_on_failure(model_dir):
        train_source = sources.load_source(
            dataset, "train", data_dir=data_dir, seed=seed,
            shuffle_files=False if cfg.deterministic else None)
        # A folder given as validation data is validation data, whole.
        val_fraction = 1.0 if val_dataset else 0.1
        val_source = sources.load_source(val_dataset or dataset, "validation",
                                         data_dir=data_dir, seed=seed,
                                         val_fraction=val_fraction)
        _check_decodable(dataset, "train", data_dir, cfg)
        _check_decodable(val_dataset or dataset, "validation", data_dir, cfg,
                         val_fraction)
        trainer = Trainer(
            cfg, train_source, val_source, model_dir, strategy,
            init_from=init_from, verbose=verbose)
    return trainer.run()


def _check_decodable(spec, split, data_dir, cfg, val_fraction=0.1):
    """Raises a ValueError naming `spec` when none of its images decodes
    (reading stops at the first good one).  On a source of its own: reading
    the run's would advance its file shuffle, and the run would then see
    other epochs than a run without the check."""
    source = sources.load_source(spec, split, data_dir=data_dir,
                                 shuffle_files=False,
                                 val_fraction=val_fraction)
    counter = augment.SkipCounter()
    ds = augment.make_dataset(source, training=False, batch_size=1,
                              scale=cfg.validation_scale, crop=cfg.crop,
                              preprocessing=cfg.preprocessing,
                              skip_counter=counter)
    try:
        next(iter(ds))
    except StopIteration:
        raise ValueError(
            f"No decodable image in {spec} ({split}): {counter.count} files "
            "skipped" + _examples(counter) + ".") from None
    except tf.errors.InvalidArgumentError as e:
        if "in a row" not in str(e):
            raise
        raise ValueError(
            f"{spec} ({split}): the first {counter.count} images read could "
            "not be decoded" + _examples(counter) + ".") from None


def _examples(counter):
    bad = getattr(counter, "bad_files", None)
    return f", e.g. {bad[0]}" if bad else ""


# -- command line -----------------------------------------------------------

_FIELD_HELP = {
    "architecture": "Table 1 architecture (A, A-LRN, B, C, D, E), "
                    "overriding the recipe's.",
    "task": "classification or localization (box regression; "
            "'localisation' also accepted), overriding the recipe's.",
    "weights": "Start from a weight set (imagenet, tv_in1k) or a weight "
               "file: layers whose shapes fit are loaded; the head "
               "(predictions) stays new unless the dataset's classes are "
               "the weights' own (ImageNet's 1000 for a weight set; unknown "
               "for a file); preprocessing follows the weights.",
    "keep_head": "With --weights: keep the weights' predictions layer "
                 "although the dataset's classes are not known to be its "
                 "own (same count).",
    "fine_tune": "Layers trained: all, fc (the FC head only) or "
                 "from:<block or layer> (e.g. from:block4).",
    "lr_decay_epochs": "Multiply the learning rate by --lr_decay_factor "
                       "(0.1) after these epochs (e.g. 24,28: a step "
                       "schedule, training to --max_epochs) instead of on "
                       "validation plateaus; '' for the plateau rule, "
                       "overriding the recipe's.",
    "body_lr_multiplier": "The conv body's learning rate as a multiple of "
                          "--learning_rate (e.g. 0.1 when fine-tuning).",
    "preprocessing": "caffe, torch or none; default the --weights' own, "
                     "else caffe.",
    "data_service": "grpc://HOST:PORT of a tf.data service (python -m "
                    "pipelines.data_service): its workers decode and augment "
                    "the training images. Bad images are then not counted, "
                    "and runs are not reproducible (no --deterministic).",
    "data_service_timeout": "Seconds the tf.data service's dispatcher (or "
                            "every worker) may not answer before training "
                            "ends with an error, keeping the last "
                            "checkpoint (the service's client itself waits "
                            "forever).",
    "mixed_precision": "none, bfloat16 or float16. bfloat16: about 2x "
                       "faster VGG16 steps on CPUs with AVX512_BF16/AMX, "
                       "TPUs and Ampere-or-later GPUs (python -m "
                       "benchmarks.precision); float16 adds loss scaling "
                       "and is slow on CPUs.",
    "steps_per_loop": "Training steps per compiled call: the host reads the "
                      "loss back and updates the progress bar once per loop; "
                      "a loop ends at every epoch end and checkpoint_every "
                      "step, SIGTERM waits for its end. Default 1 on a CPU, "
                      f"{ACCELERATOR_STEPS_PER_LOOP} on GPUs/TPUs.",
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
                        "validation split of --dataset (a folder's val/ "
                        "sub-folder, else a held-out tenth). A folder "
                        "given here is read whole.", flag_values=fv)
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
        kind = field.type  # the annotation: bool, float, int or str
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
    # SIGTERM's `TrainingPreempted` is reported by `entry.run` (status 143).
    metrics = train(config_from_flags(fv), dataset=fv.dataset,
                    model_dir=fv.model_dir, data_dir=fv.data_dir,
                    val_dataset=fv.val_dataset, strategy=fv.strategy,
                    init_from=fv.init_from, tpu=fv.tpu)
    summary = {k: v for k, v in metrics.items() if k != "history"}
    print(json.dumps(summary, indent=2))


def run():
    """The command line, as `python -m pipelines.train` runs it; also the
    `vgg-train` console script."""
    _define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
