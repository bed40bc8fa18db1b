import os

import pytest

from export import demo
from pipelines import synthetic
from tests import tiny_run


@pytest.mark.slow
def test_export_demo_writes_every_artifact(tmp_path):
    data_dir = str(synthetic.write_builtin(str(tmp_path / "data"),
                                           num_train=20, num_val=20))
    run, _ = tiny_run.write_run(str(tmp_path / "run"))
    rows = demo.export_demo(run, data_dir)
    out = os.path.join(run, "export")
    assert os.path.isfile(os.path.join(out, "saved_model", "saved_model.pb"))
    assert os.path.isdir(os.path.join(out, "serving", "demo", "1"))
    assert os.path.isfile(os.path.join(out, "serving", "models.config"))
    assert os.path.isfile(os.path.join(out, "demo_int8.tflite"))
    assert os.path.isfile(os.path.join(
        out, "demo_int8.tflite.verification.json")) or any(
            f.endswith(".json") for f in os.listdir(out))
    assert [r[0] for r in rows][0].startswith("SavedModel")
    # Agreement values are fractions of the 20 validation images.
    assert 0.0 <= float(rows[0][2]) <= 1.0
    assert 0.0 <= float(rows[2][2]) <= 1.0


def test_export_demo_needs_a_run(tmp_path):
    with pytest.raises(ValueError, match="pipelines.demo"):
        demo.export_demo(str(tmp_path))


@pytest.mark.slow
def test_export_demo_command_reports_a_missing_run_in_one_line(tmp_path):
    from tests.test_entry import cli

    result = cli("export.demo", f"--run={tmp_path}")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: --run={str(tmp_path)!r} holds no model.keras: run "
        "`python -m pipelines.demo` first."]
