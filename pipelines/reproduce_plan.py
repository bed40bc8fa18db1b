"""The plan of a reproduction: which runs and evaluations each of the
paper's tables needs, its rows and the claims they test.

A table (`Table`) is rows of the paper's form (`Row`: its cells, its key in
`pipelines.paper_tables`, the evaluation that measures it) and claims
(`Claim`: comparisons of rows' errors).  An evaluation (`EvalStep`) is one
`pipelines.evaluate` call; a training run (`TrainStep`) a recipe with the
fields the size changes and the run it starts from (the paper's chain: A
from scratch, deeper nets from A, S=384 from S=256, jittered S from S=384,
localisers from the classifiers).  `plan_tables` gathers them, every run
after the one it starts from.  Keys and labels are the paper's scales at
any `Size`; only the steps' scales and configs follow the size.
"""

import dataclasses
import os

from keras_vgg import runs
from pipelines import paper_tables
from pipelines import recipes

TABLES = tuple(sorted(paper_tables.TITLES))

# Table 1 letter -> recipe prefix; recipe suffix -> the paper's label of S.
ARCHITECTURES = {"A": "vgg11", "A-LRN": "vgg11_lrn", "B": "vgg13",
                 "C": "vgg16c", "D": "vgg16", "E": "vgg19"}
TRAIN_SCALES = {"s256": "256", "s384": "384", "jitter": "[256;512]"}
METHODS = {"dense": "dense", "multicrop": "multi-crop",
           "combined": "multi-crop & dense"}


@dataclasses.dataclass(frozen=True)
class Size:
    """How big a reproduction's runs are; None keeps the recipe's value.

    A small scale also changes how the nets train (`batch_norm`,
    `dropout`): without BatchNorm, and with dropout 0.5 on a narrow head,
    net A stays near chance for the few epochs a small run has.
    """

    width_divisor: int = 1
    crop: int = runs.PAPER_CROP
    epochs: int = None
    steps: int = None  # steps per epoch; None: one pass over the data
    batch_size: int = None
    max_images: int = None  # evaluated images; None: all
    seed: int = None
    batch_norm: bool = None
    dropout: float = None

    def scaled(self, s):
        """A scale S or Q of the paper at this crop."""
        return int(round(s * self.crop / runs.PAPER_CROP))


SIZES = {
    "paper": Size(),
    # Tables 3, 4 and 5 together in under an hour on 2 quiet cores: timed
    # on Table 5 (6 epochs, 2 cores shared with other jobs), a run took
    # about 5 CPU-s per epoch and a multi-scale dense + multi-crop
    # evaluation 60 CPU-s, so the 12 runs at 25 epochs and the 24
    # evaluations of Tables 3-5 come to about 2,200 CPU-s.  With BatchNorm
    # and no dropout net A reached 49 % validation top-1 on the built-in
    # data after 10 epochs, against 33 % for the paper's plain net.
    "small": Size(width_divisor=8, crop=32, epochs=25, batch_size=32, seed=0,
                  batch_norm=True, dropout=0.0),
    "tiny": Size(width_divisor=16, crop=32, epochs=1, steps=2, batch_size=8,
                 max_images=5, seed=0),
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
    if size.dropout is not None and not 0 <= size.dropout < 1:
        raise ValueError(f"--dropout must be in [0, 1). Received: "
                         f"{size.dropout}")
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
                         ("seed", size.seed),
                         ("batch_norm", size.batch_norm),
                         ("dropout", size.dropout)):
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


def q_label(scales):
    """Scales as the tables print them: \"256,384,512\"."""
    return ",".join(map(str, scales))


def _classification_rows(table, nets, multi, protocols, size):
    """One row per protocol for the (letter, setting) nets (an ensemble
    when several), evaluated by one call."""
    names = tuple(f"{ARCHITECTURES[letter]}_{s}" for letter, s in nets)
    label_q = q_label(_scales(recipes.get_recipe(names[0]), multi))
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
             "FC layers", s_label, q_label(label_q))
    return Row(table, cells, f"{regression}/{layers}/{s_label}/"
               f"{q_label(label_q)}", step, protocol, ("D",))


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


def run_path(work_dir, name):
    """Where the training run `name` goes."""
    return os.path.join(work_dir, "runs", name)


def result_path(work_dir, step):
    """Where the results of the `EvalStep` go."""
    return os.path.join(work_dir, "results", f"{step.name}.json")
