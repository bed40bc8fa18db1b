"""pipelines.reproduce (and its reproduce_plan, reproduce_report): the
plan follows the paper's chain, its printed commands are what runs, a tiny
table runs end to end and resumes, the report checks the paper's claims on
the numbers, bad input is refused."""

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags
from PIL import Image

from pipelines import evaluate
from pipelines import paper_tables
from pipelines import reproduce
from pipelines import reproduce_plan as plan
from pipelines import reproduce_report as report_lib
from pipelines import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = plan.SIZES["paper"]
SMALL = plan.SIZES["small"]


def write_folder(directory, classes=("dark", "light"), per_class=10,
                 boxes=False):
    """A folder dataset of small images, one sub-folder per class (a disc
    on a background whose brightness gives the class away)."""
    rng = np.random.RandomState(0)
    rows = ["filename,xmin,ymin,xmax,ymax"]
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(directory, name))
        for i in range(per_class):
            pixels = rng.randint(0, 60, (40, 48, 3)) + 150 * c
            pixels[10:30, 12:36] = rng.randint(0, 255, 3)
            path = os.path.join(name, f"{i}.png")
            Image.fromarray(pixels.astype("uint8")).save(
                os.path.join(directory, path))
            rows.append(f"{path},12,10,36,30")
    if boxes:
        with open(os.path.join(directory, "boxes.csv"), "w") as f:
            f.write("\n".join(rows) + "\n")
    return f"folder:{directory}"


def _names(steps):
    return [s.name for s in steps]


def test_plan_follows_the_papers_chain_and_scales():
    tables, trains, evals = plan.plan_tables([3, 4, 5, 9], PAPER)
    by_name = {s.name: s for s in trains}
    order = _names(trains)
    # A and A-LRN from scratch; deeper nets from A; S=384 from S=256;
    # jittered from S=384; localisers from the classifier of their S.
    assert by_name["vgg11_s256"].init_from is None
    assert by_name["vgg11_lrn_s256"].init_from is None
    assert by_name["vgg13_s256"].init_from == "vgg11_s256"
    assert by_name["vgg19_s256"].init_from == "vgg11_s256"
    assert by_name["vgg16_s384"].init_from == "vgg16_s256"
    assert by_name["vgg16_jitter"].init_from == "vgg16_s384"
    assert by_name["vgg16_loc_s384_pcr_all"].init_from == "vgg16_s384"
    for step in trains:
        if step.init_from:
            assert order.index(step.init_from) < order.index(step.name)
    assert by_name["vgg16_jitter"].config.scale_max == 512
    assert by_name["vgg16_s384"].config.learning_rate == 1e-3
    assert by_name["vgg16_loc_s256_pcr_all"].config.task == "localization"
    rows = {r.key: r for t in tables for r in t.rows}
    # Table 3: Q = S, or 384 for S in [256, 512]; Table 4: three scales.
    assert rows["A/256/256/dense"].step.scales == (256,)
    assert rows["C/[256;512]/384/dense"].step.scales == (384,)
    assert rows["B/256/224,256,288/dense"].step.scales == (224, 256, 288)
    assert rows["E/384/352,384,416/dense"].step.scales == (352, 384, 416)
    d5 = rows["D/[256;512]/256,384,512/combined"].step
    assert d5.protocols == ("dense", "multicrop", "combined")
    fusion = rows["pcr/all/256+384/256,352,384"].step
    assert fusion.models == ("vgg16_loc_s256_pcr_all",
                             "vgg16_loc_s384_pcr_all")
    assert fusion.classifiers == ("vgg16_s256", "vgg16_s384")
    # Table 4 compares with Table 3's single-scale results: one evaluation.
    assert len({e.name for e in evals}) == len(evals)
    assert "vgg13_s256_dense_q256" in _names(evals)

    # The same plan scaled down: same names and keys, scales times 32/224.
    small_tables, small_trains, _ = plan.plan_tables([3, 4, 5, 9],
                                                          SMALL)
    assert _names(small_trains) == order
    small_rows = {r.key: r for t in small_tables for r in t.rows}
    assert small_rows.keys() == rows.keys()
    assert small_rows["D/[256;512]/384/dense"].step.scales == (55,)
    assert small_rows["B/256/224,256,288/dense"].step.scales == (32, 37, 42)
    assert small_rows["pcr/all/256+384/256,352,384"].step.scales == (
        37, 50, 55)
    cfg = {s.name: s.config for s in small_trains}["vgg19_jitter"]
    assert (cfg.crop, cfg.scale_min, cfg.scale_max) == (32, 37, 73)
    assert cfg.width_multiplier == 1 / 8 and cfg.batch_size == 32
    assert cfg.batch_norm and cfg.dropout == 0.0


def test_every_published_number_belongs_to_a_row():
    tables, _, _ = plan.plan_tables(plan.TABLES, PAPER)
    for table in tables:
        keys = {r.key for r in table.rows}
        numbers = {**paper_tables.CLASSIFICATION,
                   **paper_tables.LOCALIZATION}[table.number]
        assert set(numbers) <= keys, (table.number, set(numbers) - keys)
        for claim in table.claims:
            support = keys | {r.key for r in table.support}
            for better, worse, _ in claim.comparisons:
                assert {better, *worse} <= support, claim.text
    assert paper_tables.published(3, "A-LRN/256/256/dense") == (29.7, 10.5)
    assert paper_tables.published(8, "pcr/all/384/384") == 33.1


def _parse(module_flags, command):
    fv = flags.FlagValues()
    module_flags(fv)
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"]
    fv(argv[2:])
    return fv


@pytest.mark.parametrize("size", [PAPER, SMALL], ids=["paper", "small"])
def test_printed_commands_are_what_runs(size):
    _, trains, evals = plan.plan_tables(plan.TABLES, size)
    work = "/w d"  # a space: the commands quote their arguments
    for step in trains:
        command = reproduce._command("pipelines.train", reproduce.train_args(
            step, work, "folder:/data", "/tfds"))
        fv = _parse(train._define_flags, command)
        assert train.config_from_flags(fv) == step.config, step.name
        assert fv.model_dir == os.path.join(work, "runs", step.name)
        assert fv.init_from == (None if step.init_from is None else
                                os.path.join(work, "runs", step.init_from))
        assert (fv.dataset, fv.data_dir) == ("folder:/data", "/tfds")
    for step in evals:
        command = reproduce._command(
            "pipelines.evaluate", reproduce.evaluate_args(
                step, work, "builtin", max_images=size.max_images))
        fv = _parse(evaluate.define_flags, command)
        assert fv.model == [os.path.join(work, "runs", m)
                            for m in step.models]
        assert [int(q) for q in fv.scales] == list(step.scales)
        assert fv.output == os.path.join(work, "results", f"{step.name}.json")
        if step.classifiers:
            assert fv.task == "localization"
            assert fv.loc_protocol == list(step.protocols)
            assert fv.classifier == [os.path.join(work, "runs", c)
                                     for c in step.classifiers]
        else:
            assert fv.protocol == list(step.protocols) and not fv.classifier


def _fake_results(work, tables, errors):
    """Writes the result files of `tables`' rows, each row's top-1 error
    from `errors` (key -> percent), as `pipelines.evaluate` writes them."""
    for table in tables:
        for row in table.rows + table.support:
            path = plan.result_path(work, row.step)
            old = json.load(open(path)) if os.path.exists(path) else []
            old.append({"protocol": row.protocol, "images": 200,
                        "top1_error": errors[row.key] / 100,
                        "top5_error": errors[row.key] / 200, "top5_k": 5})
            os.makedirs(os.path.dirname(path), exist_ok=True)
            evaluate.write_json(old, path)


def test_report_checks_the_claims_on_the_numbers(tmp_path):
    work = str(tmp_path)
    tables, _, _ = plan.plan_tables([3], PAPER)
    # Made-up errors: LRN helps here (against the paper) by 10 points,
    # every other Table 3 claim holds by a wide margin.
    errors = {"A/256/256/dense": 60.0, "A-LRN/256/256/dense": 50.0,
              "B/256/256/dense": 45.0}
    for c, base in (("C", 40.0), ("D", 30.0), ("E", 28.0)):
        errors.update({f"{c}/256/256/dense": base,
                       f"{c}/384/384/dense": base - 1,
                       f"{c}/[256;512]/384/dense": base - 10})
    _fake_results(work, tables, errors)
    report = report_lib.table_report(tables[0], work, {
        "scale": "paper", "dataset": "builtin", "width_divisor": 1,
        "crop": 224, "batch_size": None, "epochs": None, "steps": None,
        "max_images": None})
    claims = {c["claim"].split(" (")[0]: c for c in report["claims"]}
    lrn = claims["LRN does not help"]
    assert lrn["paper"]["holds"] and not lrn["measured"]["holds"]
    assert lrn["agrees"] is False
    # 60 % against 50 % over 200 images each: 2 SE = 9.9 points < 10.
    assert not lrn["measured"]["within_noise"]
    assert "noise ±9.9" in lrn["line"] and "Does not agree" in lrn["line"]
    depth = claims["Depth helps"]
    assert depth["measured"]["holds"] and depth["agrees"]
    assert depth["measured"]["held"] == depth["measured"]["of"] == 3
    # C 40 / 39 / 30 against D 30 / 29 / 20: 1x1 worse in every column.
    assert claims["1x1 convs are worse than 3x3 at equal depth"][
        "measured"]["held"] == 3
    assert claims["Scale jittering in training helps"]["agrees"]
    a_row = report["rows"][0]
    assert a_row["measured"] == [60.0, 30.0]
    assert a_row["published"] == [29.6, 10.4]
    text = report_lib.markdown(report)
    assert "| A | 256 | 256 | 256 | 60.0 | 29.6 | 30.0 | 10.4 |" in text
    assert text.count("\n- **") == 4  # four claims, one line each


@pytest.mark.slow
def test_tiny_table_runs_then_resumes_without_rerunning(tmp_path, capsys):
    dataset = write_folder(str(tmp_path / "data"))
    work = str(tmp_path / "work")
    kwargs = dict(dataset=dataset, scale="tiny", configs="A,B", verbose=0)
    reports = reproduce.reproduce("3", work, **kwargs)
    rows = reports[3]["rows"]
    assert [r["cells"][0] for r in rows] == ["A", "B"]
    for row, run in zip(rows, ("vgg11_s256", "vgg13_s256")):
        result = json.load(open(os.path.join(work, row["result"])))[0]
        assert row["measured"] == [100 * result["top1_error"],
                                   100 * result["top5_error"]]
        assert result["models"] == [os.path.join(work, "runs", run,
                                                 "model.keras")]
        assert result["scales"] == [37] and result["protocol"] == "dense"
        # --max_images: every class, not the first images of one.
        assert result["class_counts"] == {"dark": 1, "light": 1}
    b = json.load(open(os.path.join(work, "runs", "vgg13_s256",
                                    "training_config.json")))
    assert (b["architecture"], b["crop"], b["scale_min"]) == ("B", 32, 37)
    written = {name: os.path.getmtime(os.path.join(work, name))
               for name in ("runs/vgg11_s256/model.keras",
                            "runs/vgg13_s256/model.keras",
                            "results/vgg13_s256_dense_q37.json")}
    assert json.load(open(os.path.join(work, "table3.json")))["rows"] == rows
    report_md = open(os.path.join(work, "report.md")).read()
    assert "## Table 3" in report_md and "Left out" in report_md

    # An interrupted reproduction: one result lost.  The rerun evaluates
    # only that; finished runs are not trained again.
    os.remove(os.path.join(work, "results", "vgg11_s256_dense_q37.json"))
    capsys.readouterr()
    reproduce.reproduce("3", work, **dict(kwargs, verbose=1, dry_run=True))
    lines = capsys.readouterr().out.splitlines()
    assert [line.startswith("# done: ") for line in lines] == [
        True, True, False, True]
    again = reproduce.reproduce("3", work, **kwargs)
    assert again[3]["rows"] == rows  # the same network, the same images
    for name, mtime in written.items():
        assert os.path.getmtime(os.path.join(work, name)) == mtime, name

    # Another plan in the same work dir: refused, nothing touched.
    with pytest.raises(ValueError, match=r"another plan \(.*crop: 32 -> 64"):
        reproduce.reproduce("3", work, **dict(kwargs, crop=64))
    for name, mtime in written.items():
        assert os.path.getmtime(os.path.join(work, name)) == mtime, name


def test_bad_datasets_and_work_dirs_are_refused(tmp_path):
    boxless = write_folder(str(tmp_path / "boxless"))
    work = tmp_path / "work"
    with pytest.raises(ValueError, match="no object boxes.*Table 8"):
        reproduce.reproduce("8", str(work), dataset=boxless, scale="tiny",
                            verbose=0)
    assert not work.exists()
    one_class = write_folder(str(tmp_path / "one"), classes=("only",))
    # A dry run checks the dataset as the run does.
    with pytest.raises(ValueError, match="has 1 class: .*at least 2"):
        reproduce.reproduce("3", str(work), dataset=one_class, scale="tiny",
                            dry_run=True, verbose=0)
    with pytest.raises(ValueError, match="Unknown dataset 'imagnet2012'.*"
                                         "Did you mean 'imagenet2012'"):
        reproduce.reproduce("3", str(work), dataset="imagnet2012",
                            dry_run=True, verbose=0)
    with pytest.raises(ValueError, match="is not a folder"):
        reproduce.reproduce("3", str(work), dry_run=True, verbose=0,
                            dataset=f"folder:{tmp_path / 'none'}")
    with pytest.raises(ValueError, match="has 1 class: .*at least 2"):
        reproduce.reproduce("3", str(work), dataset=one_class, scale="tiny",
                            verbose=0)
    assert not work.exists()
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="no plan.json: it is no "
                                         "reproduction"):
        reproduce.reproduce("3", str(work), dry_run=True)
    with pytest.raises(ValueError, match="leaves no row of Table 9"):
        reproduce.reproduce("9", str(work), configs="A", dry_run=True)
    with pytest.raises(ValueError, match="Unknown --configs=A,F"):
        reproduce.reproduce("3", str(work), configs="A,F", dry_run=True)
    with pytest.raises(ValueError, match="--crop must be a multiple of 32"):
        plan.make_size("small", crop=48)
    assert os.listdir(work) == ["notes.txt"]
    two = plan.make_size("small", epochs=2)
    assert two.epochs == 2 and two != SMALL
    assert dataclasses.replace(two, epochs=SMALL.epochs) == SMALL


@pytest.mark.slow
def test_unknown_table_is_one_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.reproduce", "--table=3,10",
         f"--work_dir={tmp_path / 'w'}", "--dry_run"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines == ["error: Unknown --table='10': the reproduction has the "
                     "paper's Tables 3, 4, 5, 6, 7, 8, 9 (or all)."]
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
@pytest.mark.processes
def test_sigterm_while_training_is_one_line_and_status_143(tmp_path):
    dataset = write_folder(str(tmp_path / "data"))
    work = tmp_path / "work"
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.reproduce", "--table=3",
         "--configs=A", "--scale=tiny", "--epochs=100",
         f"--dataset={dataset}", f"--work_dir={work}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=env)
    # Epoch 1's checkpoint: the trainer's SIGTERM handler is in place.
    marker = work / "runs" / "vgg11_s256" / "checkpoints" / "ckpt-2.index"
    deadline = time.time() + 240
    while not marker.exists() and time.time() < deadline \
            and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate(timeout=60)[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith("SIGTERM: saved ") and line.endswith(
        "; the same command resumes from it."), err[-2000:]
    saved = int(line.split(" at step ")[1].split(";")[0])
    assert saved >= 2 and (marker.parent / f"ckpt-{saved}.index").exists()
    assert not (marker.parent.parent / "metrics.json").exists()
