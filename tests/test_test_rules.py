"""The suite's own rules, read from the source of tests/*.py with ``ast`` (issue 19, point 6):

- a test is skipped only through ``conftest.missing_resource`` (skips on a developer machine, fails on
  CI) or the conftest's ``gpu`` marker rule: no ``pytest.skip``, ``importorskip`` or ``mark.skip`` /
  ``mark.skipif`` outside conftest.py;
- an error is never turned into a skip: no catch-all handler (``except:``, ``except Exception``,
  ``except BaseException``) whose body skips;
- a test never passes silently: no bare ``return`` inside an ``if`` / ``for`` / ``while`` / ``with`` /
  ``try`` of a test function's body (a case that returns early asserts nothing).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SKIP_NAMES = {"skip", "importorskip"}
SKIP_MARKS = {"skip", "skipif"}
CATCH_ALL = {"Exception", "BaseException"}
SKIPPING_CALLS = SKIP_NAMES | {"missing_resource"}
BLOCKS = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try)
NESTED_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _name(node: ast.AST) -> str | None:
    """``x`` for ``x`` and ``a.b.x``; None otherwise."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_catch_all(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(_name(t) in CATCH_ALL for t in types)


def _skips(nodes: list[ast.stmt]) -> bool:
    """True when any of ``nodes`` calls skip / importorskip / missing_resource."""
    return any(isinstance(n, ast.Call) and _name(n.func) in SKIPPING_CALLS
               for stmt in nodes for n in ast.walk(stmt))


def _early_returns(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[int]:
    """Lines of bare ``return`` statements inside a block of the test's body (not in nested defs)."""
    found: list[int] = []

    def visit(node: ast.AST, in_block: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, NESTED_SCOPES):
                continue
            if isinstance(child, ast.Return) and child.value is None and in_block:
                found.append(child.lineno)
            visit(child, in_block or isinstance(child, BLOCKS))

    visit(fn, False)
    return found


def violations(source: str, filename: str) -> list[str]:
    """Every breach of the rules above in one test module's source, as 'file:line: what'."""
    tree = ast.parse(source, filename)
    out: list[str] = []
    is_conftest = Path(filename).name == "conftest.py"
    for node in ast.walk(tree):
        where = f"{Path(filename).name}:{getattr(node, 'lineno', 0)}"
        if not is_conftest:
            # pytest.skip / pytest.importorskip, called or passed around (give_up = pytest.skip)
            if isinstance(node, ast.Attribute) and node.attr in SKIP_NAMES and _name(node.value) == "pytest":
                out.append(f"{where}: pytest.{node.attr} outside conftest.py (use conftest.missing_resource)")
            if isinstance(node, ast.ImportFrom) and node.module == "pytest":
                for alias in node.names:
                    if alias.name in SKIP_NAMES:
                        out.append(f"{where}: 'from pytest import {alias.name}' (use conftest.missing_resource)")
            if (isinstance(node, ast.Attribute) and node.attr in SKIP_MARKS and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "mark"):
                out.append(f"{where}: pytest.mark.{node.attr} outside conftest.py (use conftest.missing_resource"
                           " or the gpu marker)")
        if isinstance(node, ast.ExceptHandler) and _is_catch_all(node) and _skips(node.body):
            out.append(f"{where}: a catch-all except that skips (errors must fail; catch the specific error "
                       "of a missing resource)")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            for line in _early_returns(node):
                out.append(f"{Path(filename).name}:{line}: bare return inside a block of {node.name} "
                           "(a case that passes without asserting)")
    return out


def test_every_test_module_follows_the_rules():
    found = []
    files = sorted(TESTS.glob("*.py"))
    assert len(files) > 40, files  # the scan sees the whole suite
    for path in files:
        found += violations(path.read_text(encoding="utf-8"), str(path))
    assert not found, "\n".join(sorted(found))


BAD = '''
import pytest
from pytest import importorskip

ray = pytest.importorskip("ray")
give_up = pytest.skip


@pytest.mark.skipif(True, reason="x")
@pytest.mark.parametrize("n", [1, 2])
def test_a(n):
    if n > 1:
        return
    for k in range(n):
        if k:
            return
    assert n


def test_b():
    try:
        import nltk
    except Exception as exc:
        pytest.skip(str(exc))
    try:
        pass
    except (ValueError, BaseException):
        missing_resource("x")
    try:
        pass
    except:  # noqa: E722
        print("fine: does not skip")


def helper():
    if True:
        return  # not a test: allowed


def test_c():
    def inner():
        if True:
            return  # a nested helper: allowed
    with open(__file__) as fh:
        if not fh:
            return
    assert inner() is None
'''


def test_the_scan_finds_each_kind_of_breach():
    got = violations(BAD, "tests/test_bad.py")
    lines = sorted(int(v.split(":")[1]) for v in got)
    # importorskip import (3), importorskip (5), pytest.skip reference (6), skipif (9); early returns in
    # test_a (13, 16); pytest.skip call (24) + its catch-all (23); the catch-all calling missing_resource
    # (27); test_c's return inside a with (46). helper, inner and the handler that only prints pass.
    assert lines == [3, 5, 6, 9, 13, 16, 23, 24, 27, 46], got
    assert violations(BAD, "tests/conftest.py") == [v.replace("test_bad", "conftest") for v in got
                                                    if "bare return" in v or "catch-all" in v]


@pytest.mark.parametrize("ok", [
    "def test_x():\n    for i in range(3):\n        if i:\n            continue\n    assert True\n",
    "def test_x():\n    try:\n        import x\n    except ImportError as e:\n        missing_resource(str(e))\n",
    "def test_x():\n    return\n",  # a top-level return ends the body: nothing after it is skipped silently
    "def fixture_like():\n    if True:\n        return\n",
])
def test_the_scan_accepts_what_the_rules_allow(ok):
    assert violations(ok, "tests/test_ok.py") == []
