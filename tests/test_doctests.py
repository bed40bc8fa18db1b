"""The `>>>` examples in keras_vgg's docstrings run, and none hides where
doctest does not look (an example that cannot run offline and fast is a
plain code block instead)."""

import doctest
import importlib
import inspect
import pkgutil
import re

import pytest

import keras_vgg

MODULES = sorted(
    [keras_vgg.__name__]
    + [f"keras_vgg.{m.name}" for m in pkgutil.iter_modules(
        keras_vgg.__path__)])


def _prompts_in_source(module):
    return len(re.findall(r"^\s*>>>", inspect.getsource(module), re.M))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(module, name)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
    collected = sum(len(test.examples) for test in tests)
    # Every `>>>` in the file is one doctest collects: none sits in a comment,
    # a string that is not a docstring, or a private object doctest skips.
    assert collected >= _prompts_in_source(module), name


def test_some_examples_run():
    """The collection above is not empty by accident."""
    module = importlib.import_module("keras_vgg.configs")
    tests = doctest.DocTestFinder().find(module)
    assert sum(len(t.examples) for t in tests) >= 2
