"""The Markdown the project ships holds no control characters: a ``\\f``, ``\\t`` or
``\\b`` left unescaped in a Python string that wrote a formula turns ``\\frac``, ``\\text``
and ``\\beta`` into form feed, tab and backspace bytes that no renderer shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".git", "build", "dist", "node_modules"}
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _markdown_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*.md"):
        parts = set(path.relative_to(ROOT).parts)
        if parts & SKIP or any(p.startswith(".") for p in path.relative_to(ROOT).parts):
            continue
        files.append(path)
    return sorted(files)


def test_the_method_reference_is_among_the_checked_files():
    assert ROOT / "docs" / "method.md" in _markdown_files()


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_has_no_control_characters(path):
    text = path.read_text(encoding="utf-8")
    bad = [(n, repr(m.group())) for n, line in enumerate(text.splitlines(), 1)
           for m in CONTROL.finditer(line)]
    assert not bad, f"{path.relative_to(ROOT)}: control characters at (line, char) {bad[:5]}"
