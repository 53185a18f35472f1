"""Functions stay short enough to read in one screen; the search runner reads as a list of steps."""

import ast
import inspect
from pathlib import Path

import aebnas
from aebnas.search import run_search
from aebnas.search.algorithms import ALGORITHM_BUILDERS
from aebnas.search.settings import ALGORITHMS

PACKAGE = Path(aebnas.__file__).parent


def _function_lengths():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1


def test_no_function_in_the_package_is_longer_than_80_lines():
    lengths = dict(_function_lengths())
    assert len(lengths) > 100  # the walk really saw the package
    too_long = {name: n for name, n in lengths.items() if n > 80}
    assert not too_long, f"functions over 80 lines: {too_long}"


def test_run_search_is_at_most_60_lines():
    lines, _ = inspect.getsourcelines(run_search)
    assert len(lines) <= 60, f"run_search is {len(lines)} lines"


def test_every_search_algorithm_setting_has_a_builder():
    assert set(ALGORITHM_BUILDERS) == set(ALGORITHMS)
