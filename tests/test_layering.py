"""The layers only go down: keras_vgg <- pipelines <- export (<- benchmarks).

Parses every module's imports (`ast`, nothing is imported) and fails on:
- a cycle between project modules;
- keras_vgg importing pipelines, export or benchmarks, or TensorFlow at
  module level (it runs on any Keras backend);
- pipelines importing export or benchmarks; export importing benchmarks;
- a project import inside a function (a cycle in hiding).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("keras_vgg", "pipelines", "export", "benchmarks")
# Which packages each may import (itself included).
ALLOWED = {"keras_vgg": {"keras_vgg"},
           "pipelines": {"keras_vgg", "pipelines"},
           "export": {"keras_vgg", "pipelines", "export"},
           "benchmarks": {"keras_vgg", "pipelines", "export", "benchmarks"}}


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = f"{package}.{path.stem}".removesuffix(".__init__")
            yield name, ast.parse(path.read_text(), str(path))


def _imported(node):
    """Module names an Import / ImportFrom node brings in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.module is None:
        return []
    if node.module in PACKAGES:  # `from pipelines import sources`
        return [f"{node.module}.{alias.name}" for alias in node.names]
    return [node.module]


def _graph():
    """{module: [(imported module, line, at module level)]}."""
    graph = {}
    for name, tree in _modules():
        edges = []
        function_lines = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        function_lines.add(inner.lineno)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(node):
                    edges.append((target, node.lineno,
                                  node.lineno not in function_lines))
        graph[name] = edges
    return graph


GRAPH = _graph()


def _project(target):
    return target.split(".")[0] in PACKAGES


def test_the_graph_was_read():
    assert "keras_vgg.vgg" in GRAPH and "pipelines.train" in GRAPH
    assert "keras_vgg.configs" in {t for t, _, _ in GRAPH["keras_vgg.vgg"]}
    assert "pipelines.sources" in {t for t, _, _ in GRAPH["pipelines.train"]}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_go_down(module):
    package = module.split(".")[0]
    for target, line, _ in GRAPH[module]:
        if _project(target):
            assert target.split(".")[0] in ALLOWED[package], (
                f"{module}:{line} imports {target}: {package} may import "
                f"only {sorted(ALLOWED[package])}")


@pytest.mark.parametrize("module", sorted(m for m in GRAPH
                                          if m.startswith("keras_vgg")))
def test_keras_vgg_imports_no_tensorflow_at_module_level(module):
    for target, line, top_level in GRAPH[module]:
        if target.split(".")[0] == "tensorflow":
            assert not top_level, f"{module}:{line} imports {target}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_project_import_inside_a_function(module):
    for target, line, top_level in GRAPH[module]:
        if _project(target):
            assert top_level, (f"{module}:{line} imports {target} inside a "
                               "function: move the shared piece down a floor")


def test_no_import_cycle():
    edges = {m: {t for t, _, _ in GRAPH[m] if t in GRAPH and t != m}
             for m in GRAPH}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_no_single_letter_module_aliases():
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    assert not (alias.asname and len(alias.asname) == 1), (
                        f"{name}:{node.lineno} imports {alias.name} as "
                        f"{alias.asname}")
