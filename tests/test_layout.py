"""The layouts in CONTRIBUTING.md ("Where things live") and README.md ("How it is built")
name only files and folders that exist.

In each layout's code block, a line whose first word ends in ``/`` or has a file suffix
names a path relative to the closest less-indented folder line above it; other lines
continue a description.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Modules named in the layouts that other changes add; remove each once it exists.
_PATH = re.compile(r"^[\w.-]+(/[\w.-]+)*(/|\.\w+)$")


def layout_paths(text: str, heading: str) -> list[str]:
    """Paths named in the first code block after ``heading``, relative to the repository."""
    block = text.split(heading, 1)[1].split("```", 2)[1]
    folders: list[tuple[int, str]] = []  # (indent, path) of the open folders
    paths = []
    for line in block.splitlines():
        words = line.split()
        if not words or not _PATH.match(words[0]):
            continue
        indent = len(line) - len(line.lstrip())
        folders = [(i, p) for i, p in folders if i < indent]
        path = (folders[-1][1] if folders else "") + words[0]
        paths.append(path)
        if path.endswith("/"):
            folders.append((indent, path))
    return paths


def test_layout_parser_nests_by_indentation():
    text = "## T\n\n```\nx/a/\n  b.py   text\n         more text\n  c/\n    d.py\ne.md\n```\n"
    assert layout_paths(text, "## T") == ["x/a/", "x/a/b.py", "x/a/c/", "x/a/c/d.py", "e.md"]


@pytest.mark.parametrize(("document", "heading"), [("CONTRIBUTING.md", "## Where things live"),
                                                    ("README.md", "## How it is built")])
def test_every_path_in_the_layout_exists(document, heading):
    paths = layout_paths((REPO / document).read_text(encoding="utf-8"), heading)
    assert len(paths) > 10
    missing = [p for p in paths if not (REPO / p).exists()]
    assert missing == []


def test_every_package_is_in_the_contributing_layout():
    """A new subpackage of src/napari_correlax gets a line in CONTRIBUTING.md."""
    paths = set(layout_paths((REPO / "CONTRIBUTING.md").read_text(encoding="utf-8"),
                             "## Where things live"))
    package = REPO / "src" / "napari_correlax"
    folders = {f"{p.relative_to(REPO).as_posix()}/" for p in package.iterdir()
               if (p / "__init__.py").is_file()}
    assert folders - paths == set()
