"""The README's testing sample names nothing it does not import or define."""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_block(containing: str) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.M | re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


def _unbound_names(source: str) -> set[str]:
    """Names the code reads that no import, def, argument or assignment binds."""
    bound = set(dir(builtins))
    read = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
    return read - bound


def test_the_testing_sample_imports_what_it_uses() -> None:
    assert _unbound_names(_python_block("run_until_finished")) == set()


def test_an_unimported_name_is_caught() -> None:
    assert _unbound_names("@pytest.mark.django_db\ndef test(): x = y") == {"pytest", "y"}
