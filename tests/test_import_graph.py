"""The package's imports go one way: no import circle, no import from a lower layer up.

Every module under ``src/napari_correlax`` is parsed with :mod:`ast` (nothing is
imported); an edge ``a → b`` is any ``import``/``from … import`` of ``b`` in ``a``, at
module level or inside a function, resolved to a module of the package. Imports under
``if TYPE_CHECKING:`` are left out: they never run. The one deliberate exception to the
layering is not an ``import`` statement at all: the registries
(:mod:`napari_correlax.registry`) load :mod:`napari_correlax.builtin`, the top of the
package, by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import napari_correlax

ROOT = Path(napari_correlax.__file__).parent
PACKAGE = "napari_correlax"
#: Modules of the third-party GUI stack that only ``_napari`` may import.
GUI_LIBRARIES = ("napari", "qtpy", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2",
                 "PySide6", "vispy")
#: Modules below the map methods, models and GUI: they import none of those.
CORE = ("io", "windows", "labels", "boxes", "errors", "files", "preprocess", "registry",
        "synth")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute names ``module`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    found: set[str] = set()
    base = module.split(".") if is_package else module.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1]
                target = ".".join(stem + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(internal, external)``: per module, the package modules and the other top-level
    modules it imports."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    internal: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = _imports(tree, name, path.name == "__init__.py")
        internal[name] = {n for n in names if n in files and n != name}
        external[name] = {n.split(".")[0] for n in names if not n.startswith(PACKAGE)}
    return internal, external


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def _in(module: str, *parts: str) -> bool:
    """Whether ``module`` is ``napari_correlax.<part>`` or inside it, for any part."""
    return any(module == f"{PACKAGE}.{p}" or module.startswith(f"{PACKAGE}.{p}.")
               for p in parts)


def _climbing(lower: tuple[str, ...], higher: tuple[str, ...]) -> list[str]:
    internal, _ = _graph()
    return sorted(f"{a} → {b}" for a, targets in internal.items() if _in(a, *lower)
                  for b in targets if _in(b, *higher))


def test_the_graph_sees_known_edges():
    """The parser finds imports at module level, inside functions and relative ones."""
    internal, external = _graph()
    assert f"{PACKAGE}.errors" in internal[f"{PACKAGE}.registry"]  # module level, relative
    # inside a function, relative two levels up
    assert f"{PACKAGE}.maps.image_explain" in internal[f"{PACKAGE}.maps.adapters.correlax"]
    assert f"{PACKAGE}.maps.methods" in internal[f"{PACKAGE}.maps.settings"]  # in a method
    # only under TYPE_CHECKING
    assert f"{PACKAGE}.maps.settings" not in internal[f"{PACKAGE}.maps.methods"]
    assert "napari" in set().union(*(v for k, v in external.items() if _in(k, "_napari")))
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    internal, _ = _graph()
    assert _cycles(internal) == []


def test_only_the_gui_package_imports_napari_or_qt():
    internal, external = _graph()
    up = sorted(f"{a} → {b}" for a, targets in internal.items() if not _in(a, "_napari")
                for b in targets if _in(b, "_napari"))
    gui = sorted(f"{a} → {lib}" for a, libs in external.items() if not _in(a, "_napari")
                 for lib in libs if lib in GUI_LIBRARIES)
    assert up == [] and gui == []


def test_core_imports_no_higher_layer():
    assert _climbing(CORE, ("maps", "models", "gmic", "train", "evaluate", "cli", "_napari",
                            "builtin", "export", "figures")) == []


def test_maps_and_models_do_not_import_gmic():
    assert _climbing(("maps", "models"), ("gmic",)) == []


def test_registries_are_filled_from_the_top():
    """Map methods and checkpoint formats are registered by ``builtin``, never imported
    back by the layers that keep the registries."""
    assert _climbing(("models", "maps", "gmic"), ("builtin",)) == []


def test_train_does_not_import_evaluate():
    assert _climbing(("train",), ("evaluate",)) == []
