"""The paper's tables, one command each: plans, runs and reports them.

    python -m pipelines.reproduce --table=3 --dataset=imagenet2012 \\
        --data_dir=~/tensorflow_datasets --work_dir=repro --dry_run
    python -m pipelines.reproduce --table=3,4,5 --scale=small --work_dir=repro

A table needs training runs (the configurations, their training scales and
the paper's initialisation chain: net A from scratch, the deeper nets from A,
S=384 from S=256, jittered S from S=384, localisers from the classifiers)
and evaluations (protocols and test scales): `pipelines.reproduce_plan`
lists them, `pipelines.reproduce_report` writes the tables.  Each run
goes to `<work_dir>/runs/<name>` (the recipe's name) and each evaluation to
`<work_dir>/results/<name>.json`.  A finished run (`model.keras` and
`metrics.json`) and a written result are skipped; an interrupted run
resumes (`pipelines.train` resumes a run dir), so the same command picks a
reproduction up where it stopped.  Steps run in this process: training
through `train.train`, the library function `pipelines.train` wraps, and
evaluation through the `pipelines.evaluate` command line itself, with the
arguments the plan prints; `--dry_run` prints the equivalent `python -m
pipelines.train ...` / `python -m pipelines.evaluate ...` lines, for a
cluster, and runs nothing.

Each table is printed and written as `table<N>.json` and `table<N>.md`
(the paper's rows, the measured errors beside the published ones from
`pipelines.paper_tables`, and the paper's claims checked on both), and
`report.md` gathers every table of the work dir.

`--scale=paper` trains the paper's recipes as they are; `--scale=small`
the same plan with narrow nets (width / 8), 32-pixel crops (every scale S
and Q times 32/224), batch 32 and a few epochs, on any dataset (the built-in
one by default); `--scale=tiny` is for tests.  `--width_divisor`, `--crop`,
`--epochs`, `--steps`, `--batch_size` and `--max_images` override a scale's
sizes.  The settings are recorded in `<work_dir>/plan.json`: a work dir
holding another plan's runs is refused, as is a dataset without classes
(or, for Tables 8 and 9, without boxes).
"""

import contextlib
import dataclasses
import io
import json
import logging
import os
import shlex
import time

import keras
from absl import flags

from keras_vgg import atomic
from keras_vgg import runs
from pipelines import entry
from pipelines import evaluate
from pipelines import recipes
from pipelines import run_dir
from pipelines import sources
from pipelines import train
from pipelines.reproduce_plan import SIZES
from pipelines.reproduce_plan import TABLES
from pipelines.reproduce_plan import Size
from pipelines.reproduce_plan import make_size
from pipelines.reproduce_plan import parse_tables
from pipelines.reproduce_plan import plan_tables
from pipelines.reproduce_plan import q_label
from pipelines.reproduce_plan import result_path
from pipelines.reproduce_plan import run_path
from pipelines.reproduce_report import gather_report
from pipelines.reproduce_report import markdown
from pipelines.reproduce_report import table_report

PLAN_FILE = "plan.json"


# -- commands ----------------------------------------------------------------

def _flag(name, value):
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={value}"


def _data_flags(dataset, data_dir):
    return [f"--dataset={dataset}"] + (
        [f"--data_dir={data_dir}"] if data_dir else [])


def train_args(step, work_dir, dataset, data_dir=None):
    """The `pipelines.train` arguments that train `step`: its recipe and
    every field the plan changes."""
    args = [f"--recipe={step.recipe}"] + _data_flags(dataset, data_dir) + [
        f"--model_dir={run_path(work_dir, step.name)}"]
    if step.init_from:
        args.append(f"--init_from={run_path(work_dir, step.init_from)}")
    recipe = recipes.get_recipe(step.recipe)
    for field in dataclasses.fields(recipes.TrainConfig):
        value = getattr(step.config, field.name)
        if value != getattr(recipe, field.name):
            args.append(_flag(field.name, value))
    return args


def evaluate_args(step, work_dir, dataset, data_dir=None, max_images=None):
    """The `pipelines.evaluate` arguments of `step`, writing its result."""
    args = [f"--model={run_path(work_dir, m)}" for m in step.models]
    if step.classifiers:
        args = ["--task=localization"] + args + [
            f"--classifier={run_path(work_dir, c)}"
            for c in step.classifiers] + [
            f"--loc_protocol={','.join(step.protocols)}"]
    else:
        args.append(f"--protocol={','.join(step.protocols)}")
    args += _data_flags(dataset, data_dir) + [
        f"--scales={q_label(step.scales)}"]
    if max_images:
        args.append(f"--max_images={max_images}")
    return args + [f"--output={result_path(work_dir, step)}"]


def _command(module, args):
    return " ".join(["python", "-m", module] + [shlex.quote(a) for a in args])


# -- checks -----------------------------------------------------------------

def _settings(scale, size, dataset, data_dir):
    return {"scale": scale, "dataset": dataset, "data_dir": data_dir,
            **dataclasses.asdict(size)}


def check_work_dir(work_dir, settings, trains):
    """ValueError when `work_dir` holds anything but a reproduction with
    these settings, or a run trained with another config than planned."""
    plan = run_dir.read_json(os.path.join(work_dir, PLAN_FILE))
    if plan is None:
        if os.path.isdir(work_dir) and os.listdir(work_dir):
            raise ValueError(f"--work_dir={work_dir!r} holds files but no "
                             f"{PLAN_FILE}: it is no reproduction; give an "
                             "empty or new directory.")
        return
    recorded = plan.get("settings", {})
    differ = [f"{k}: {recorded.get(k)!r} -> {v!r}"
              for k, v in settings.items() if recorded.get(k) != v]
    if differ:
        raise ValueError(
            f"--work_dir={work_dir!r} holds the runs of another plan ("
            + "; ".join(differ) + "): use another --work_dir, or the same "
            "settings to go on with it.")
    for step in trains:
        stored = runs.read_training_config(run_path(work_dir, step.name),
                                           "--work_dir")
        if stored:
            try:
                run_dir.reconcile_config(
                    stored, dataclasses.asdict(step.config), 0)
            except ValueError as e:
                raise ValueError(f"--work_dir: the run "
                                 f"{run_path(work_dir, step.name)!r} does "
                                 f"not match the plan: {e}") from None


def check_dataset(dataset, data_dir, tables):
    """The number of classes of `dataset`; ValueError when it has fewer
    than two named classes, or no boxes while a localisation table needs
    them."""
    source = sources.load_source(dataset, "validation", data_dir=data_dir,
                                 shuffle_files=False)
    n = source.num_classes
    if not n or n < 2:
        raise ValueError(
            f"--dataset={dataset!r} has {n or 'no known number of'} "
            f"class{'es' if n != 1 else ''}: the tables measure "
            "classification errors, which needs at least 2 named classes.")
    localization = [t.number for t in tables if t.rows[0].step.classifiers]
    if localization and not any(
            int(e["bbox"].shape[0]) for e in source.dataset.take(20)):
        raise ValueError(
            f"--dataset={dataset!r} has no object boxes (none in the first "
            f"20 validation images): Table {localization[0]} trains and "
            "measures box regression.")
    return n


# -- running ----------------------------------------------------------------

def _train_done(work_dir, step):
    d = run_path(work_dir, step.name)
    return all(os.path.isfile(os.path.join(d, f))
               for f in (runs.MODEL_FILE, runs.METRICS_FILE))


def _run_train(step, work_dir, dataset, data_dir, verbose):
    keras.backend.clear_session()  # earlier runs' graphs are not needed
    train.train(step.config, dataset=dataset,
                model_dir=run_path(work_dir, step.name), data_dir=data_dir,
                init_from=(run_path(work_dir, step.init_from)
                           if step.init_from else None), verbose=verbose)


def _run_evaluation(step, work_dir, dataset, data_dir, max_images):
    """Runs the `pipelines.evaluate` command the plan prints for `step`
    (`evaluate_args`), so that a step pasted from the plan computes what
    this one does; its table is left to the report."""
    keras.backend.clear_session()
    with contextlib.redirect_stdout(io.StringIO()):
        evaluate.cli(evaluate_args(step, work_dir, dataset, data_dir,
                                   max_images))


def _steps(trains, evals, work_dir, dataset, data_dir, max_images):
    """(kind, name, done, command) of every step, in order."""
    out = []
    for step in trains:
        out.append(("train", step, _train_done(work_dir, step), _command(
            "pipelines.train", train_args(step, work_dir, dataset,
                                          data_dir))))
    for step in evals:
        out.append(("evaluate", step,
                    os.path.isfile(result_path(work_dir, step)), _command(
                        "pipelines.evaluate", evaluate_args(
                            step, work_dir, dataset, data_dir,
                            max_images))))
    return out


def reproduce(tables, work_dir, dataset="builtin", data_dir=None,
              scale="paper", configs=None, dry_run=False, verbose=1,
              **sizes):
    """Plans, runs (what is missing) and reports the paper's `tables`.

    Args:
        tables: table numbers ("3", "3,4,5", "all" or a list).
        work_dir: where the runs, results and tables go.
        dataset, data_dir: as `pipelines.train` takes them.
        scale: "paper", "small" or "tiny" (see `SIZES`).
        configs: only the rows of these Table 1 networks ("A,B" or a
            list; None: every row).
        dry_run: check the dataset (a tfds one not prepared here: its
            name), print the plan's commands, run and write nothing.
        verbose: 0 prints nothing; 1 the steps and tables, and the
            trainer's progress.
        **sizes: `Size` fields overriding the scale's (width_divisor,
            crop, epochs, steps, batch_size, max_images).

    Returns:
        {table number: the table's report dict} (empty for a dry run).
    """
    numbers = parse_tables(tables)
    size = make_size(scale, **sizes)
    settings = _settings(scale, size, dataset, data_dir)
    plan, trains, evals = plan_tables(numbers, size, configs)
    check_work_dir(work_dir, settings, trains)
    steps = _steps(trains, evals, work_dir, dataset, data_dir,
                   size.max_images)
    say = print if verbose else (lambda *a, **k: None)
    if dry_run:
        # As the run would, without downloading a tfds dataset that the
        # machine running the plan will prepare: then its name only.
        # (The built-in dataset is always there: not written for a check.)
        if dataset != "builtin" and sources.tfds_prepared(
                dataset, data_dir) is not False:
            check_dataset(dataset, data_dir, plan)
        for _, _, done, command in steps:
            print(("# done: " if done else "") + command)
        return {}
    num_classes = check_dataset(dataset, data_dir, plan)
    _record_plan(work_dir, settings, numbers, steps)
    todo = [s for s in steps if not s[2]]
    say(f"Table{'s' if len(numbers) > 1 else ''} "
        f"{', '.join(map(str, numbers))} at scale {scale}: "
        f"{len(steps)} steps, {len(steps) - len(todo)} done, "
        f"{len(todo)} to run.")
    start = time.perf_counter()
    logging.getLogger("tensorflow").addFilter(_retracing_filter)
    try:
        for i, (kind, step, _, command) in enumerate(todo, 1):
            say(f"[{i}/{len(todo)}] {command}", flush=True)
            began = time.perf_counter()
            if kind == "train":
                _run_train(step, work_dir, dataset, data_dir, verbose)
            else:
                _run_evaluation(step, work_dir, dataset, data_dir,
                                size.max_images)
            say(f"  {kind} {step.name}: {time.perf_counter() - began:.0f} s",
                flush=True)
    finally:  # the note is back for whatever this process runs next
        logging.getLogger("tensorflow").removeFilter(_retracing_filter)
    if todo:
        say(f"{len(todo)} steps in {time.perf_counter() - start:.0f} s.")
    reports = {}
    for table in plan:
        reports[table.number] = table_report(table, work_dir, settings,
                                             num_classes)
        atomic.atomic_write_file(
            os.path.join(work_dir, f"table{table.number}.json"),
            json.dumps(reports[table.number], indent=2))
        text = markdown(reports[table.number])
        atomic.atomic_write_file(
            os.path.join(work_dir, f"table{table.number}.md"), text)
        say(text)
    atomic.atomic_write_file(os.path.join(work_dir, "report.md"),
                             gather_report(work_dir, settings))
    return reports


def _retracing_filter(record):
    """Drops TensorFlow's note that a tf.function retraced: every run of
    the plan builds its own trainer and model in this process, so the
    step functions are traced again by design."""
    return "triggered tf.function retracing" not in record.getMessage()


def _record_plan(work_dir, settings, numbers, steps):
    """Writes plan.json: the settings, the tables asked for so far and every
    step's command."""
    path = os.path.join(work_dir, PLAN_FILE)
    old = run_dir.read_json(path) or {}
    commands = dict(old.get("commands", {}))
    commands.update({f"{kind} {step.name}": command
                     for kind, step, _, command in steps})
    atomic.atomic_write_file(path, json.dumps({
        "settings": settings,
        "tables": sorted(set(old.get("tables", [])) | set(numbers)),
        "commands": commands}, indent=2))

# -- command line -----------------------------------------------------------

_SIZE_HELP = {
    "width_divisor": "Divide every layer's width by this.",
    "crop": "Training crop (a multiple of 32); S and Q scale with it.",
    "epochs": "Epochs per run at most (the recipes' max_epochs).",
    "steps": "Steps per epoch (default: one pass over the training data).",
    "batch_size": "Batch size of every run.",
    "max_images": "Evaluate N validation images only, drawn from every "
                  "class alike (seeded).",
    "seed": "Seed of every run.",
    "batch_norm": "Train every net with BatchNorm (--nobatch_norm: not).",
    "dropout": "Dropout of the FC layers.",
}


def define_flags(fv=flags.FLAGS):
    flags.DEFINE_list("table", None, "The paper's tables to reproduce: some "
                      f"of {', '.join(map(str, TABLES))}, or all.",
                      flag_values=fv)
    flags.DEFINE_string("work_dir", None, "Where the runs, results and "
                        "tables go; the same command resumes from it.",
                        flag_values=fv)
    flags.DEFINE_string("dataset", "builtin", "builtin, a tfds name (with "
                        "--data_dir), tfrecord:GLOB or folder:DIR.",
                        flag_values=fv)
    flags.DEFINE_string("data_dir", None, "tfds data_dir, or the built-in "
                        "dataset's cache.", flag_values=fv)
    flags.DEFINE_enum("scale", "paper", sorted(SIZES), "paper: the paper's "
                      "recipes; small: narrow nets on 32-pixel crops for a "
                      "few epochs; tiny: for tests.", flag_values=fv)
    flags.DEFINE_list("configs", None, "Only the rows of these Table 1 "
                      "networks (e.g. A,A-LRN); default: every row.",
                      flag_values=fv)
    flags.DEFINE_boolean("dry_run", False, "Print the plan's train and "
                         "evaluate commands (finished ones commented out); "
                         "run nothing.", flag_values=fv)
    for field in dataclasses.fields(Size):
        define = {"bool": flags.DEFINE_boolean, "float": flags.DEFINE_float
                  }.get(getattr(field.type, "__name__", field.type),
                        flags.DEFINE_integer)
        define(field.name, None, _SIZE_HELP[field.name]
               + " Default: the --scale's.", flag_values=fv)
    flags.mark_flags_as_required(["table", "work_dir"], flag_values=fv)


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments: {argv[1:]}")
    fv = flags.FLAGS
    reproduce(fv.table, fv.work_dir, dataset=fv.dataset,
              data_dir=fv.data_dir, scale=fv.scale, configs=fv.configs,
              dry_run=fv.dry_run,
              **{f.name: getattr(fv, f.name)
                 for f in dataclasses.fields(Size)})


def run():
    """The command line, as `python -m pipelines.reproduce` runs it; also
    the `vgg-reproduce` console script."""
    define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
