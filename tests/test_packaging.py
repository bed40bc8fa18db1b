"""The package as installed: its version in one place, `keras_vgg` needing
only its own requirements at import, every console script pointing at a
function."""

import ast
import pathlib
import re
import sys

import pytest

import keras_vgg
from tests.helpers import setup_list

ROOT = pathlib.Path(__file__).resolve().parent.parent
# install_requires of setup.py, as import names, plus keras_vgg itself.
CORE = {"keras", "numpy", "h5py", "safetensors", "keras_vgg"}


def _module_level_imports(tree):
    """Top names imported when the module is imported (function bodies and
    `if TYPE_CHECKING:` blocks excluded)."""
    names = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                stack.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                stack.extend(handler.body)
    return names


def test_version_is_single_sourced():
    text = (ROOT / "keras_vgg" / "version.py").read_text()
    assert re.search(r'^__version__ = "(.+)"$', text, re.M).group(1) == (
        keras_vgg.__version__)
    assert "version=read_version()" in (ROOT / "setup.py").read_text()


@pytest.mark.parametrize("path", sorted(
    (ROOT / "keras_vgg").glob("*.py")), ids=lambda p: p.name)
def test_keras_vgg_imports_only_its_requirements(path):
    """`pip install keras_vgg` without extras must import: no TensorFlow,
    pillow, absl or pipelines at module level (late imports are allowed)."""
    names = _module_level_imports(ast.parse(path.read_text()))
    outside = {n for n in names - CORE if n not in sys.stdlib_module_names
               and n != "__future__"}
    assert not outside, f"{path.name} imports {sorted(outside)} at import"


def test_console_scripts_point_at_functions():
    scripts = setup_list("CONSOLE_SCRIPTS")
    # Every command line (a module with a `run()`) has its console script.
    commands = {f"{path.parent.name}.{path.stem}"
                for package in ("pipelines", "export")
                for path in (ROOT / package).glob("*.py")
                if "\ndef run():" in path.read_text()}
    assert {s.split("=")[1].split(":")[0] for s in scripts} == commands
    for script in scripts:
        name, target = script.split("=")
        module_name, function = target.split(":")
        # Read, not imported: the commands need TensorFlow, and this test
        # runs on every backend.
        path = ROOT / (module_name.replace(".", "/") + ".py")
        source = path.read_text()
        defined = {node.name for node in ast.parse(source).body
                   if isinstance(node, ast.FunctionDef)}
        assert function in defined, script
        # `python -m module` runs the same function.
        assert source.rstrip().endswith(
            'if __name__ == "__main__":\n    run()'), module_name


def test_core_requirements_leave_tensorflow_to_the_extras():
    core = {re.split(r"[<>=~!]", r)[0]
            for r in setup_list("INSTALL_REQUIRES")}
    assert core == {"keras", "numpy", "h5py", "safetensors"}
    assert "tensorflow>=2.21,<2.22" in setup_list("TRAIN")


def test_slow_marks_from_conftest_name_existing_tests():
    """conftest's list of slow tests in other modules goes stale silently
    when a test is renamed: each entry must name a test function."""
    from tests import conftest

    for node_id in conftest._SLOW_ELSEWHERE:
        path, name = node_id.split("::")
        assert f"\ndef {name}(" in (ROOT / path).read_text(), node_id
