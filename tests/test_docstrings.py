"""Every public name of ``utils`` has a docstring a user can act on, and its examples run.

For each name in ``utils.__all__``: the docstring has an Args section (or Attributes, for a class or exception), a
Returns section when it is a function, and an Example section with at least one ``>>>`` line; and those examples
pass as doctests, run in a namespace of their own (so each example imports what it uses, as a reader copying it
would). A constant that is not callable (``GATES``, a dict, whose ``__doc__`` is ``dict``'s) is documented by
its module's docstring instead: see :data:`BY_MODULE`.
"""
import doctest
import importlib
import inspect
import re

import pytest

import utils

# Public names that are not callable carry no docstring of their own: their module's docstring documents them.
BY_MODULE = {"GATES": "utils.core.gates"}

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def section(doc: str, *titles: str) -> bool:
    """Whether ``doc`` has a Google-style section header (``Title:`` alone on its line) of one of ``titles``."""
    return any(re.search(rf"^\s*{title}:\s*$", doc, re.MULTILINE) for title in titles)


def example_lines(doc: str) -> list[str]:
    """The ``>>>`` lines after the docstring's ``Example:`` (or ``Examples:``) header."""
    match = re.search(r"^\s*Examples?:\s*$", doc, re.MULTILINE)
    if match is None:
        return []
    return [line for line in doc[match.end():].splitlines() if line.lstrip().startswith(">>> ")]


def documented(name: str):
    """The public object, and where its documentation lives: the object itself, or its module (:data:`BY_MODULE`)."""
    obj = getattr(utils, name)
    if callable(obj):
        return obj
    assert name in BY_MODULE, f"{name} is not callable: name the module whose docstring documents it in BY_MODULE"
    return importlib.import_module(BY_MODULE[name])


def doctests(name: str) -> list[doctest.DocTest]:
    """The doctests of the public name: the object's docstring and those of its methods, or its module's docstring
    alone for a constant; every one gets an empty namespace."""
    target = documented(name)
    finder = doctest.DocTestFinder(recurse=not inspect.ismodule(target))
    return [test for test in finder.find(target, name, globs={}) if test.examples]


@pytest.mark.parametrize("name", sorted(utils.__all__))
def test_public_name_is_documented_and_its_examples_run(name, one_thread, monkeypatch):
    monkeypatch.setenv("PULLBACK_DOWNLOAD", "0")  # as under `make test`: the explorer probes no download
    target = documented(name)
    doc = inspect.getdoc(target) or ""
    if inspect.ismodule(target):
        assert name in doc, f"the docstring of {target.__name__} does not mention {name}"
    elif inspect.isclass(target):
        assert section(doc, "Args", "Attributes"), f"{name}: no Args or Attributes section"
    else:
        assert section(doc, "Args"), f"{name}: no Args section"
        assert section(doc, "Returns", "Yields"), f"{name}: no Returns (or Yields, for a context manager) section"
    assert example_lines(doc), f"{name}: no Example section with a >>> line"

    tests = doctests(name)
    assert tests, f"{name}: doctest finds no examples"
    report = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.attempted >= len(example_lines(doc))
    assert results.failed == 0, "".join(report)


def test_every_constant_is_documented_by_a_module_that_defines_it():
    for name, module in BY_MODULE.items():
        assert name in utils.__all__
        assert getattr(importlib.import_module(module), name) is getattr(utils, name)
