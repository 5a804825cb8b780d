"""What a newcomer can read: no module of the product (backend/, model/) over MAX_MODULE_LINES
lines and no function over MAX_FUNCTION_LINES, so each module has one job and each function fits
on a screen (docs/architecture.md says where a change goes)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("backend", "model")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return [path for folder in PRODUCT for path in sorted((REPO / folder).rglob("*.py"))]


def long_functions(source: str, limit: int) -> list[tuple[str, int]]:
    """(name, lines) of every function or method in ``source`` longer than ``limit`` lines,
    decorators excluded, docstring included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                found.append((node.name, lines))
    return found


def test_the_size_rule_finds_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    assert long_functions(f"def short():\n    pass\n\ndef long():\n{body}\n", 60) == [("long", 62)]


def test_no_product_module_is_over_the_limit():
    assert _modules(), "no module found: the folders moved?"
    over = {
        str(p.relative_to(REPO)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not over, f"split these modules (at most {MAX_MODULE_LINES} lines): {over}"


def test_no_product_function_is_over_the_limit():
    over = {
        str(p.relative_to(REPO)): found
        for p in _modules()
        if (found := long_functions(p.read_text(), MAX_FUNCTION_LINES))
    }
    assert not over, f"split these functions (at most {MAX_FUNCTION_LINES} lines): {over}"
