"""The package never deserialises with pickle or runs strings as code.

Stored values are JSON only (serialization.py refuses unknown tags); these checks
keep it that way as the code grows. SQL built with f-strings is covered by ruff's
S608, which CI runs: each exception there formats table and column names from
_meta, never a value.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hotmesh_django

PACKAGE = Path(hotmesh_django.__file__).parent
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "jsonpickle"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


def _findings(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
            UNSAFE_MODULES
        ):
            found.append(str(node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in UNSAFE_CALLS
        ):
            found.append(f"{node.func.id}() at line {node.lineno}")
    return found


def test_the_scan_sees_what_it_looks_for() -> None:
    tree = ast.parse("import pickle\nfrom marshal import loads\neval('1')\n")
    assert _findings(tree) == ["pickle", "marshal", "eval() at line 3"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_pickle_eval_or_exec(path: Path) -> None:
    assert SOURCES, "no sources found"
    assert _findings(ast.parse(path.read_text(), filename=str(path))) == []
