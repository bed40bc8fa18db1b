"""The paper's tables, one command each: plans, runs and reports them.

    python -m pipelines.reproduce --table=3 --dataset=imagenet2012 \\
        --data_dir=~/tensorflow_datasets --work_dir=repro --dry_run
    python -m pipelines.reproduce --table=3,4,5 --scale=small --work_dir=repro

A table needs training runs (the configurations, their training scales and
the paper's initialisation chain: net A from scratch, the deeper nets from A,
S=384 from S=256, jittered S from S=384, localisers from the classifiers)
and evaluations (protocols and test scales).  `plan` lists them; each run
goes to `<work_dir>/runs/<name>` (the recipe's name) and each evaluation to
`<work_dir>/results/<name>.json`.  A finished run (`model.keras` and
`metrics.json`) and a written result are skipped; an interrupted run
resumes (`pipelines.train` resumes a run dir), so the same command picks a
reproduction up where it stopped.  Steps run in this process through the
library functions the command lines wrap (`train.train`,
`evaluate.evaluate`, `localize.evaluate_localization`); `--dry_run` prints
the equivalent `python -m pipelines.train ...` / `python -m
pipelines.evaluate ...` lines, for a cluster, and runs nothing.

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

import dataclasses
import json
import math
import os
import shlex
import time

import keras
from absl import flags

from keras_vgg import atomic
from keras_vgg import runs
from pipelines import entry
from pipelines import evaluate
from pipelines import localize
from pipelines import paper_tables
from pipelines import recipes
from pipelines import run_dir
from pipelines import sources
from pipelines import train

TABLES = tuple(sorted(paper_tables.TITLES))
PLAN_FILE = "plan.json"

# Table 1 letter -> recipe prefix; recipe suffix -> the paper's label of S.
ARCHITECTURES = {"A": "vgg11", "A-LRN": "vgg11_lrn", "B": "vgg13",
                 "C": "vgg16c", "D": "vgg16", "E": "vgg19"}
TRAIN_SCALES = {"s256": "256", "s384": "384", "jitter": "[256;512]"}
METHODS = {"dense": "dense", "multicrop": "multi-crop",
           "combined": "multi-crop & dense"}


@dataclasses.dataclass(frozen=True)
class Size:
    """How big a reproduction's runs are; None keeps the recipe's value."""

    width_divisor: int = 1
    crop: int = runs.PAPER_CROP
    epochs: int = None
    steps: int = None  # steps per epoch; None: one pass over the data
    batch_size: int = None
    max_images: int = None  # evaluated images; None: all
    seed: int = None

    def scaled(self, s):
        """A scale S or Q of the paper at this crop."""
        return int(round(s * self.crop / runs.PAPER_CROP))


SIZES = {
    "paper": Size(),
    # About an hour for Tables 3, 4 and 5 on 2 quiet cores (see README).
    "small": Size(width_divisor=8, crop=32, epochs=6, batch_size=32, seed=0),
    "tiny": Size(width_divisor=16, crop=32, epochs=1, steps=2, batch_size=8,
                 max_images=4, seed=0),
}


def make_size(scale, **overrides):
    """The `Size` of `scale` with the given fields (None: the scale's)."""
    if scale not in SIZES:
        raise ValueError(f"Unknown --scale={scale!r}. Expected one of "
                         f"{sorted(SIZES)}.")
    size = dataclasses.replace(SIZES[scale], **{
        k: v for k, v in overrides.items() if v is not None})
    for name in ("width_divisor", "epochs", "steps", "batch_size",
                 "max_images"):
        value = getattr(size, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1. Received: {value}")
    if size.crop < 32 or size.crop % 32:
        raise ValueError(f"--crop must be a multiple of 32 (the five 2x2 "
                         f"pools). Received: {size.crop}")
    return size


# -- the plan ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainStep:
    """A training run: `name` is its run dir, `init_from` another step's."""

    name: str
    recipe: str
    config: recipes.TrainConfig
    init_from: str = None


@dataclasses.dataclass(frozen=True)
class EvalStep:
    """One `pipelines.evaluate` call; its results file is `name`.json."""

    models: tuple
    protocols: tuple
    scales: tuple
    classifiers: tuple = ()  # localisation: the runs that rate the boxes

    @property
    def task(self):
        return "localization" if self.classifiers else "classification"

    @property
    def name(self):
        rated = ["by_" + "+".join(self.classifiers)] if self.classifiers \
            else []
        return "_".join(["+".join(self.models)] + rated + [
            "-".join(self.protocols), "q" + "-".join(map(str, self.scales))])


@dataclasses.dataclass(frozen=True)
class Row:
    """A row of a table: the paper's cells, its key in `paper_tables`, and
    the result (`protocol`) of an evaluation that measures it."""

    table: int
    cells: tuple
    key: str
    step: EvalStep
    protocol: str
    configs: tuple  # the Table 1 letters of its networks


@dataclasses.dataclass(frozen=True)
class Claim:
    """A finding of the paper: each comparison says that the first row's
    error is below every error of the others (or equal, when not strict)."""

    text: str
    comparisons: tuple  # ((key, (keys...), strict), ...)
    caveat: str


@dataclasses.dataclass(frozen=True)
class Table:
    number: int
    columns: tuple
    measures: tuple  # names of the two measured numbers
    rows: tuple
    support: tuple = ()  # rows of other tables that claims compare with
    claims: tuple = ()


def train_config(recipe, size, **fields):
    """The recipe's `TrainConfig` with `fields`, at `size`."""
    cfg = dataclasses.replace(recipes.get_recipe(recipe), **fields)
    changes = {}
    if size.width_divisor != 1:
        changes["width_multiplier"] = cfg.width_multiplier / size.width_divisor
    if size.crop != cfg.crop:
        changes.update(crop=size.crop, scale_min=size.scaled(cfg.scale_min),
                       scale_max=size.scaled(cfg.scale_max))
    for field, value in (("max_epochs", size.epochs),
                         ("steps_per_epoch", size.steps),
                         ("batch_size", size.batch_size),
                         ("seed", size.seed)):
        if value is not None:
            changes[field] = value
    return dataclasses.replace(cfg, **changes)


def train_steps(size):
    """Every run any table needs, by name, with its initialisation."""
    steps = {}
    for letter, prefix in ARCHITECTURES.items():
        for setting in TRAIN_SCALES:
            if setting == "s384":
                init = f"{prefix}_s256"
            elif setting == "jitter":
                init = f"{prefix}_s384"
            else:  # A and A-LRN from scratch, the deeper nets from A
                init = None if letter in ("A", "A-LRN") else "vgg11_s256"
            name = f"{prefix}_{setting}"
            steps[name] = TrainStep(name, name, train_config(name, size),
                                    init)
    for s in (256, 384):
        recipe = f"vgg16_loc_s{s}"
        for regression in ("scr", "pcr"):
            for layers in ("fc", "all"):
                name = f"{recipe}_{regression}_{layers}"
                steps[name] = TrainStep(
                    name, recipe, train_config(recipe, size,
                                               regression=regression,
                                               fine_tune=layers),
                    f"vgg16_s{s}")
    return steps


def _scales(cfg, multi):
    config = dataclasses.asdict(cfg)
    if multi:
        return runs.multi_scales(config, cfg.crop)
    return [runs.test_scale(config, cfg.crop)]


def _q(scales):
    return ",".join(map(str, scales))


def _classification_rows(table, nets, multi, protocols, size):
    """One row per protocol for the (letter, setting) nets (an ensemble
    when several), evaluated by one call."""
    names = tuple(f"{ARCHITECTURES[letter]}_{s}" for letter, s in nets)
    label_q = _q(_scales(recipes.get_recipe(names[0]), multi))
    step = EvalStep(names, tuple(protocols), tuple(
        _scales(train_config(names[0], size), multi)))
    config = "+".join(letter for letter, _ in nets)
    cells = (config, TRAIN_SCALES[nets[0][1]], label_q)
    return [Row(table, cells + ((METHODS[p],) if len(protocols) > 1 else ()),
                f"{config}/{cells[1]}/{label_q}/{p}", step, p,
                tuple(letter for letter, _ in nets)) for p in protocols]


def _row(size, table, letter, setting, multi=False, protocols=("dense",),
         protocol="dense"):
    """The `protocol` row of `_classification_rows` for one net."""
    return {r.protocol: r for r in _classification_rows(
        table, [(letter, setting)], multi, protocols, size)}[protocol]


def _localization_row(size, table, rows, label_q, protocol):
    """A localisation row: the localisers `rows` ((regression, layers, S)),
    rated by the classifiers they were initialised from; keys and labels
    are the paper's scales, the evaluation runs at `size`'s."""
    locs = tuple(f"vgg16_loc_s{s}_{r}_{layers}" for r, layers, s in rows)
    clfs = tuple(dict.fromkeys(f"vgg16_s{s}" for _, _, s in rows))
    step = EvalStep(locs, (protocol,),
                    tuple(size.scaled(q) for q in label_q), clfs)
    regression, layers, _ = rows[0]
    s_label = "+".join(str(s) for _, _, s in rows)
    cells = (regression.upper(), "all layers" if layers == "all" else
             "FC layers", s_label, _q(label_q))
    return Row(table, cells, f"{regression}/{layers}/{s_label}/"
               f"{_q(label_q)}", step, protocol, ("D",))


_CLASSIFICATION_COLUMNS = ("ConvNet config", "train S", "test Q")
_ERRORS = ("top-1 err %", "top-5 err %")


def _table3(size):
    rows = [_row(size, 3, "A", "s256"), _row(size, 3, "A-LRN", "s256"),
            _row(size, 3, "B", "s256")]
    rows += [_row(size, 3, letter, s) for letter in "CDE" for s in TRAIN_SCALES]
    k = {(r.cells[0], r.cells[1]): r.key for r in rows}
    claims = (
        Claim("LRN does not help (A vs A-LRN)",
              ((k["A", "256"], (k["A-LRN", "256"],), False),),
              "A and A-LRN differ by one normalisation layer; on a few "
              "hundred images and a few epochs the difference is noise."),
        Claim("Depth helps (A > B > D, E in error at S=256)",
              ((k["B", "256"], (k["A", "256"],), True),
               (k["D", "256"], (k["B", "256"],), True),
               (k["E", "256"], (k["B", "256"],), True)),
              "narrow nets trained for a few epochs: deeper ones are "
              "further from convergence, which can reverse the order."),
        Claim("1x1 convs are worse than 3x3 at equal depth (C vs D)",
              tuple((k["D", s], (k["C", s],), True)
                    for s in TRAIN_SCALES.values()),
              "at 32-pixel crops the 3x3 convs of blocks 3-5 see 8x8 to "
              "2x2 maps, where 3x3 and 1x1 context differ little."),
        Claim("Scale jittering in training helps",
              tuple((k[c, "[256;512]"], (k[c, "256"], k[c, "384"]), True)
                    for c in "CDE"),
              "the jittered nets are fine-tuned from S=384 for a few more "
              "epochs; at small scale more epochs alone can explain a "
              "gain, and scaled-down S spans fewer pixels."),
    )
    return Table(3, _CLASSIFICATION_COLUMNS, _ERRORS, tuple(rows),
                 claims=claims)


def _table4(size):
    nets = [("B", "s256")] + [(c, s) for c in "CDE" for s in TRAIN_SCALES]
    rows = tuple(_row(size, 4, c, s, multi=True) for c, s in nets)
    support = tuple(_row(size, 3, c, s) for c, s in nets)
    claims = (Claim(
        "Multi-scale testing helps (Table 4 against Table 3)",
        tuple((m.key, (o.key,), True) for m, o in zip(rows, support)),
        "the test scales differ by a few pixels at a 32-pixel crop, and "
        "a net trained at one fixed S has not learnt the other scales."),)
    return Table(4, _CLASSIFICATION_COLUMNS, _ERRORS, rows, support, claims)


_ALL_PROTOCOLS = ("dense", "multicrop", "combined")


def _table5(size):
    rows = tuple(_row(size, 5, c, "jitter", True, _ALL_PROTOCOLS, p)
                 for c in "DE" for p in _ALL_PROTOCOLS)
    k = {(r.cells[0], r.protocol): r.key for r in rows}
    claims = (Claim(
        "Dense and multi-crop evaluation are complementary",
        tuple((k[c, "combined"], (k[c, "dense"], k[c, "multicrop"]), True)
              for c in "DE"),
        "at a 32-pixel crop the dense net sees a 1x1 to 2x2 score map and "
        "the multi-crop grid overlaps almost entirely: both see nearly "
        "the same pixels."),)
    return Table(5, _CLASSIFICATION_COLUMNS + ("method",), _ERRORS, rows,
                 claims=claims)


def _ensemble_rows(size, table):
    return _classification_rows(table, [("D", "jitter"), ("E", "jitter")],
                                True, _ALL_PROTOCOLS, size)


def _table6(size):
    rows = tuple(_ensemble_rows(size, 6))
    support = tuple(_row(size, 5, c, "jitter", True, _ALL_PROTOCOLS, "combined")
                    for c in "DE")
    claims = (Claim(
        "An ensemble of D and E beats each (multi-crop & dense)",
        ((rows[-1].key, tuple(r.key for r in support), True),),
        "two nets trained from the same chain on the same few images make "
        "similar mistakes."),)
    return Table(6, _CLASSIFICATION_COLUMNS + ("method",), _ERRORS, rows,
                 support, claims)


def _table7(size):
    rows = (_row(size, 7, "E", "jitter", True, _ALL_PROTOCOLS, "combined"),
            _ensemble_rows(size, 7)[-1])
    return Table(7, _CLASSIFICATION_COLUMNS + ("method",), _ERRORS, rows)


def _table8(size):
    kinds = (("scr", "fc"), ("pcr", "fc"), ("pcr", "all"))
    rows = tuple(_localization_row(size, 8, [(r, layers, 384)], [384],
                                   "center") for r, layers in kinds)
    claims = (
        Claim("Per-class regression beats single-class (FC fine-tuned)",
              ((rows[1].key, (rows[0].key,), True),),
              "with five classes a shared box and per-class boxes see "
              "nearly the same objects."),
        Claim("Fine-tuning all layers beats the FC layers only (PCR)",
              ((rows[2].key, (rows[1].key,), True),),
              "a few epochs on a few hundred boxes."))
    return Table(8, ("regression", "fine-tuned", "train S", "test Q"),
                 ("loc. err % (GT class)", "top-5 loc. err %"), rows,
                 claims=claims)


def _table9(size):
    pcr = [("pcr", "all", 256), ("pcr", "all", 384)]
    rows = (_localization_row(size, 9, pcr[:1], [256], "dense"),
            _localization_row(size, 9, pcr[1:], [384], "dense"),
            _localization_row(size, 9, pcr[1:], [352, 384], "dense"),
            _localization_row(size, 9, pcr, [256, 352, 384], "dense"))
    claims = (
        Claim("Testing at two scales helps (S=384)",
              ((rows[2].key, (rows[1].key,), True),),
              "352 and 384 are a few pixels apart at a 32-pixel crop."),
        Claim("Fusing the S=256 and S=384 localisers helps",
              ((rows[3].key, tuple(r.key for r in rows[:3]), True),),
              "the two localisers come from the same chain."))
    return Table(9, ("regression", "fine-tuned", "train S", "test Q"),
                 ("top-5 loc. err %", "loc. err % (GT class)"), rows,
                 claims=claims)


_BUILDERS = {3: _table3, 4: _table4, 5: _table5, 6: _table6, 7: _table7,
             8: _table8, 9: _table9}


def parse_tables(tables):
    """Table numbers from "3", "3,4,5", "all" or a list."""
    if isinstance(tables, (str, int)):
        tables = str(tables).split(",")
    if [str(t).strip() for t in tables] == ["all"]:
        return list(TABLES)
    numbers = []
    for t in tables:
        try:
            n = int(str(t).strip())
        except ValueError:
            n = None
        if n not in TABLES:
            raise ValueError(f"Unknown --table={t!r}: the reproduction has "
                             f"the paper's Tables {', '.join(map(str, TABLES))}"
                             " (or all).")
        if n not in numbers:
            numbers.append(n)
    if not numbers:
        raise ValueError("--table is empty: give some of "
                         f"{', '.join(map(str, TABLES))}.")
    return numbers


def _only(table, configs):
    """`table` with the rows of networks among `configs` only."""
    def kept(rows):
        return tuple(r for r in rows if set(r.configs) <= set(configs))

    rows = kept(table.rows)
    if not rows:
        letters = sorted({c for r in table.rows for c in r.configs})
        raise ValueError(f"--configs={','.join(configs)} leaves no row of "
                         f"Table {table.number} (its networks: "
                         f"{', '.join(letters)}).")
    return dataclasses.replace(table, rows=rows, support=kept(table.support))


def parse_configs(configs):
    """Table 1 letters from "A,B" or a list; None: all."""
    if configs is None:
        return None
    if isinstance(configs, str):
        configs = configs.split(",")
    letters = [str(c).strip().upper() for c in configs if str(c).strip()]
    unknown = [c for c in letters if c not in ARCHITECTURES]
    if unknown or not letters:
        raise ValueError(f"Unknown --configs={','.join(map(str, configs))}:"
                         f" expected some of {', '.join(ARCHITECTURES)}.")
    return letters


def plan_tables(numbers, size, configs=None):
    """The tables (only the rows of `configs`' networks, when given), the
    training runs in the order they can run (each after the run it starts
    from) and the evaluations they need."""
    tables = [_BUILDERS[n](size) for n in numbers]
    configs = parse_configs(configs)
    if configs:
        tables = [_only(t, configs) for t in tables]
    by_name = train_steps(size)
    trains, evals = {}, {}

    def add(name):
        if name not in trains:
            if by_name[name].init_from:
                add(by_name[name].init_from)
            trains[name] = by_name[name]

    for table in tables:
        for row in table.rows + table.support:
            for name in row.step.models + row.step.classifiers:
                add(name)
            evals.setdefault(row.step.name, row.step)
    return tables, list(trains.values()), list(evals.values())


# -- commands ----------------------------------------------------------------

def _run_path(work_dir, name):
    return os.path.join(work_dir, "runs", name)


def _result_path(work_dir, step):
    return os.path.join(work_dir, "results", f"{step.name}.json")


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
        f"--model_dir={_run_path(work_dir, step.name)}"]
    if step.init_from:
        args.append(f"--init_from={_run_path(work_dir, step.init_from)}")
    recipe = recipes.get_recipe(step.recipe)
    for field in dataclasses.fields(recipes.TrainConfig):
        value = getattr(step.config, field.name)
        if value != getattr(recipe, field.name):
            args.append(_flag(field.name, value))
    return args


def evaluate_args(step, work_dir, dataset, data_dir=None, max_images=None):
    """The `pipelines.evaluate` arguments of `step`, writing its result."""
    args = [f"--model={_run_path(work_dir, m)}" for m in step.models]
    if step.classifiers:
        args = ["--task=localization"] + args + [
            f"--classifier={_run_path(work_dir, c)}"
            for c in step.classifiers] + [
            f"--loc_protocol={','.join(step.protocols)}"]
    else:
        args.append(f"--protocol={','.join(step.protocols)}")
    args += _data_flags(dataset, data_dir) + [f"--scales={_q(step.scales)}"]
    if max_images:
        args.append(f"--max_images={max_images}")
    return args + [f"--output={_result_path(work_dir, step)}"]


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
    differ = [f"{k}: {plan['settings'].get(k)!r} -> {v!r}"
              for k, v in settings.items() if plan["settings"].get(k) != v]
    if differ:
        raise ValueError(
            f"--work_dir={work_dir!r} holds the runs of another plan ("
            + "; ".join(differ) + "): use another --work_dir, or the same "
            "settings to go on with it.")
    for step in trains:
        stored = runs.read_training_config(_run_path(work_dir, step.name),
                                           "--work_dir")
        if stored:
            try:
                run_dir.reconcile_config(
                    stored, dataclasses.asdict(step.config), 0)
            except ValueError as e:
                raise ValueError(f"--work_dir: the run "
                                 f"{_run_path(work_dir, step.name)!r} does "
                                 f"not match the plan: {e}") from None


def check_dataset(dataset, data_dir, tables):
    """ValueError when `dataset` has fewer than two named classes, or no
    boxes while a localisation table needs them."""
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


# -- running ----------------------------------------------------------------

def _train_done(work_dir, step):
    d = _run_path(work_dir, step.name)
    return all(os.path.isfile(os.path.join(d, f))
               for f in (runs.MODEL_FILE, "metrics.json"))


def _run_train(step, work_dir, dataset, data_dir, verbose):
    keras.backend.clear_session()  # earlier runs' graphs are not needed
    train.train(step.config, dataset=dataset,
                model_dir=_run_path(work_dir, step.name), data_dir=data_dir,
                init_from=(_run_path(work_dir, step.init_from)
                           if step.init_from else None), verbose=verbose)


def _run_evaluation(step, work_dir, dataset, data_dir, max_images):
    keras.backend.clear_session()
    models = [_run_path(work_dir, m) for m in step.models]
    if step.classifiers:
        results = [localize.evaluate_localization(
            models, [_run_path(work_dir, c) for c in step.classifiers],
            dataset, protocol=step.protocols[0], scales=list(step.scales),
            data_dir=data_dir, max_images=max_images, flip=True)]
    else:
        results = evaluate.evaluate(models, dataset, step.protocols,
                                    scales=list(step.scales),
                                    data_dir=data_dir,
                                    max_images=max_images)
    evaluate.write_json(results, _result_path(work_dir, step))


def _steps(trains, evals, work_dir, dataset, data_dir, max_images):
    """(kind, name, done, command) of every step, in order."""
    out = []
    for step in trains:
        out.append(("train", step, _train_done(work_dir, step), _command(
            "pipelines.train", train_args(step, work_dir, dataset,
                                          data_dir))))
    for step in evals:
        out.append(("evaluate", step,
                    os.path.isfile(_result_path(work_dir, step)), _command(
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
        dry_run: print the plan's commands, run and write nothing.
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
        for _, _, done, command in steps:
            print(("# done: " if done else "") + command)
        return {}
    check_dataset(dataset, data_dir, plan)
    _record_plan(work_dir, settings, numbers, steps)
    todo = [s for s in steps if not s[2]]
    say(f"Tables {', '.join(map(str, numbers))} at scale {scale}: "
        f"{len(steps)} steps, {len(steps) - len(todo)} done, "
        f"{len(todo)} to run.")
    start = time.perf_counter()
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
    if todo:
        say(f"{len(todo)} steps in {time.perf_counter() - start:.0f} s.")
    reports = {}
    for table in plan:
        reports[table.number] = table_report(table, work_dir, settings)
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


# -- reports ----------------------------------------------------------------

# What each table measures, in its two number columns (results' fields).
_FIELDS = {8: ("localization_error", "top5_error"),
           9: ("top5_error", "localization_error")}
_CLASSIFICATION_FIELDS = ("top1_error", "top5_error")


def _measured(row, fields, work_dir):
    """The row's dict: cells, key, scales run, measured and published."""
    results = run_dir.read_json(_result_path(work_dir, row.step)) or []
    found = [r for r in results if r["protocol"] == row.protocol]
    paper = paper_tables.published(row.table, row.key)
    if paper is not None and not isinstance(paper, tuple):
        paper = (paper, None)
    out = {"cells": list(row.cells), "key": row.key,
           "scales_run": list(row.step.scales), "measured": None,
           "published": list(paper) if paper else None, "images": None,
           "result": os.path.relpath(_result_path(work_dir, row.step),
                                     work_dir)}
    if found:
        r = found[0]
        out.update(measured=[None if r.get(f) is None else 100 * r[f]
                             for f in fields],
                   images=r["images"], top5_k=r.get("top5_k", 5))
    return out


def _noise(a, b):
    """Two standard errors (points) of the difference of two error rates
    (a, b: (error %, images))."""
    var = sum((e / 100) * (1 - e / 100) / n for e, n in (a, b))
    return 200 * math.sqrt(var)


def _verdict(claim, values):
    """How `claim` fares on `values` (key -> (error %, images or None)), or
    None when a number is missing."""
    comps = [(b, ws, strict) for b, ws, strict in claim.comparisons
             if b in values and all(w in values for w in ws)]
    if not comps or len(comps) < len(claim.comparisons):
        return None
    held, details, within = 0, [], False
    for better, worse, strict in comps:
        vb = values[better]
        key = min(worse, key=lambda w: values[w][0])
        vw = values[key]
        ok = vb[0] < vw[0] if strict else vb[0] <= vw[0]
        held += ok
        text = f"{better} {vb[0]:.1f} vs {key} {vw[0]:.1f}"
        if vb[1] and vw[1]:
            noise = _noise(vb, vw)
            within = within or abs(vw[0] - vb[0]) < noise
            text += f" (noise ±{noise:.1f})"
        details.append(text)
    return {"holds": held == len(comps), "held": held, "of": len(comps),
            "within_noise": within, "details": details}


def _claim_report(claim, rows):
    keys = {k for b, ws, _ in claim.comparisons for k in (b,) + tuple(ws)}
    if not keys <= {r["key"] for r in rows}:
        return {"claim": claim.text, "paper": None, "measured": None,
                "agrees": None, "caveat": claim.caveat,
                "line": f"- **{claim.text}.** Left out: its rows are not in "
                        "this plan (--configs)."}
    measured = {r["key"]: (r["measured"][0], r["images"]) for r in rows
                if r["measured"] and r["measured"][0] is not None}
    published = {r["key"]: (r["published"][0], None) for r in rows
                 if r["published"]}
    m, p = _verdict(claim, measured), _verdict(claim, published)
    paper_holds = True if p is None else p["holds"]

    def words(v):
        return ("holds" if v["holds"] else "does not hold") + (
            f" ({v['held']} of {v['of']})" if v["of"] > 1 else "")

    line = f"- **{claim.text}.** Paper: " + (
        words(p) + " (" + "; ".join(p["details"]) + ")" if p else
        "stated (its numbers are not all in the reference)") + "."
    if m is None:
        line += " Measured: not yet (results missing)."
    else:
        agrees = m["holds"] == paper_holds
        line += (f" Measured: {words(m)} (" + "; ".join(m["details"])
                 + "). " + ("Agrees" if agrees else "Does not agree")
                 + " with the paper" + (", within noise" if m["within_noise"]
                                        else "") + ".")
        if not agrees or m["within_noise"]:
            line += f" At a small scale: {claim.caveat}"
    return {"claim": claim.text, "paper": p, "measured": m,
            "agrees": None if m is None else m["holds"] == paper_holds,
            "caveat": claim.caveat, "line": line}


def table_report(table, work_dir, settings):
    """The table's rows (measured beside published) and its claims."""
    fields = _FIELDS.get(table.number, _CLASSIFICATION_FIELDS)
    rows = [_measured(r, fields, work_dir) for r in table.rows]
    support = [_measured(r, fields, work_dir) for r in table.support]
    return {"table": table.number,
            "title": paper_tables.TITLES[table.number],
            "settings": settings, "columns": list(table.columns),
            "measures": list(table.measures), "rows": rows,
            "support": support,
            "claims": [_claim_report(c, rows + support)
                       for c in table.claims],
            "note": paper_tables.NOTES.get(table.number)}


def _number(value):
    return "n/a" if value is None else f"{value:.1f}"


def settings_line(settings):
    """One sentence saying how big the runs were."""
    s = settings
    size = (f"width / {s['width_divisor']}, crop {s['crop']} (S and Q x "
            f"{s['crop']}/{runs.PAPER_CROP})" if s["crop"] != runs.PAPER_CROP
            or s["width_divisor"] != 1 else "the paper's networks and crops")
    parts = [size] + [f"{label} {s[k]}" for k, label in (
        ("batch_size", "batch"), ("epochs", "epochs at most"),
        ("steps", "steps per epoch"), ("max_images", "images evaluated"))
        if s[k] is not None]
    return (f"Scale `{s['scale']}` on `{s['dataset']}`: " + ", ".join(parts)
            + "; the paper: ILSVRC-2012 validation (50,000 images).")


def markdown(report):
    """The table in the paper's form, measured beside published, and its
    claims, as Markdown."""
    header = list(report["columns"]) + ["Q run"]
    for name in report["measures"]:
        header += [name, "paper"]
    lines = [f"## Table {report['table']}: {report['title']}", "",
             settings_line(report["settings"]), "",
             "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for row in report["rows"]:
        measured = row["measured"] or [None, None]
        paper = row["published"] or [None, None]
        cells = row["cells"] + [_q(row["scales_run"])]
        for m, p in zip(measured, paper):
            cells += [_number(m), _number(p)]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    images = {r["images"] for r in report["rows"] if r["images"]}
    notes = []
    if images:
        notes.append(f"Measured on {', '.join(map(str, sorted(images)))} "
                     "validation images.")
    small_k = {r.get("top5_k") for r in report["rows"]} - {None, 5}
    if small_k:
        notes.append(f"The dataset has {min(small_k)} classes: its top-5 "
                     f"is top-{min(small_k)}, always right.")
    if report["note"]:
        notes.append(report["note"])
    lines += [""] + ([" ".join(notes), ""] if notes else [])
    if report["claims"]:
        lines += ["### Claims", ""] + [c["line"] for c in report["claims"]]
        lines.append("")
    return "\n".join(lines)


def gather_report(work_dir, settings):
    """Every table of the work dir, as one Markdown report."""
    parts = ["# The paper's tables, reproduced", "",
             settings_line(settings), ""]
    for n in TABLES:
        path = os.path.join(work_dir, f"table{n}.md")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
    return "\n".join(parts)


# -- command line -----------------------------------------------------------

_SIZE_HELP = {
    "width_divisor": "Divide every layer's width by this.",
    "crop": "Training crop (a multiple of 32); S and Q scale with it.",
    "epochs": "Epochs per run at most (the recipes' max_epochs).",
    "steps": "Steps per epoch (default: one pass over the training data).",
    "batch_size": "Batch size of every run.",
    "max_images": "Evaluate the first N validation images only.",
    "seed": "Seed of every run.",
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
        flags.DEFINE_integer(field.name, None, _SIZE_HELP[field.name]
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
