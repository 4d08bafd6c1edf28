"""The package's shape: no import cycle, small modules, model defaults equal to the schema."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import yaml

import qmri
from qmri import models

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(qmri.__file__).resolve().parent
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

#: Longest module (lines) without a reason in its docstring.
MAX_LINES = 600
#: The reason: a sentence of the module docstring that starts with these words.
LONG_REASON = "Longer than 600 lines because"

#: Model class -> the config sections whose defaults its constructor defaults must equal
#: (workflow/schemas/config.schema.yaml). The schema has no section for inversion-recovery T1 or
#: DTI (their options are not configurable), so those models compare with nothing.
MODEL_SECTIONS: dict[type, tuple[str, ...]] = {
    models.VFAModel: ("t1_vfa",),
    models.MonoExponentialModel: ("t2", "t2star"),
    models.InversionRecoveryModel: (),
    models.ADCModel: ("adc",),
    models.IVIMModel: ("ivim",),
    models.DTIModel: (),
}


# ------------------------------------------------------------------------------------------
# the import graph
# ------------------------------------------------------------------------------------------


def package_modules(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module of a package by dotted name (a package by its own name, for ``__init__``).

    Parameters
    ----------
    package_dir : Path
        Folder of the top-level package (holding its ``__init__.py``).
    package : str
        Its import name.

    Returns
    -------
    dict of str to Path
        ``"pkg.sub.mod"`` -> ``pkg/sub/mod.py``; ``"pkg.sub"`` -> ``pkg/sub/__init__.py``.
    """
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((package, *parts))] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:`` (imports that never run)."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every ``import`` / ``from ... import`` statement at any depth (module, class, function),
    except the body of an ``if TYPE_CHECKING:`` block (its ``else`` branch does run)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is a module of the package."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Which module of a package imports which (runtime imports at any depth).

    ``import pkg.a.b`` and ``from pkg.a.b import x`` are edges to ``pkg.a.b``; ``from pkg.a
    import b`` is an edge to the module ``pkg.a.b`` when that is a module, else to ``pkg.a``
    (its ``__init__``). Relative imports are resolved against the importing module's package.
    Importing ``pkg.a.b`` is *not* counted as importing the packages ``pkg`` and ``pkg.a``
    (Python runs their ``__init__`` first, but a package's ``__init__`` importing its own
    submodules is the normal layout, not a cycle); a submodule that imports a name from its
    parent package (``from pkg.a import x``, ``import pkg.a``) is an edge to the parent.

    Parameters
    ----------
    package_dir : Path
        Folder of the top-level package.
    package : str
        Its import name.

    Returns
    -------
    dict of str to set of str
        Module -> the package modules it imports (itself excluded).
    """
    modules = package_modules(package_dir, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _runtime_imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".")
                    drop = node.level - 1 if is_package else node.level
                    base = base[: len(base) - drop] if drop else base
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in modules else source)
            for target in targets:
                if target != package and not target.startswith(package + "."):
                    continue
                module = _known_prefix(target, modules)
                if module is not None and module != name:
                    graph[name].add(module)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through every strongly connected component of more than one module.

    Returns
    -------
    list of list of str
        Each cycle as ``[a, b, ..., a]``, sorted; empty when the graph is acyclic.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for component in components:
        start = min(component)
        # shortest path back to start inside the component (breadth first)
        previous: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in previous:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & component):
                    if w not in previous:
                        previous[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [start]
        v = previous[start]
        while v != start:
            path.append(v)
            v = previous[v]
        path.append(start)
        cycles.append(path[::-1])
    return sorted(cycles)


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "toy"


def test_cycle_finder_finds_a_deliberate_cycle(tmp_path):
    pkg = _write_package(
        tmp_path,
        {
            "toy/__init__.py": "from toy import a\n",
            # a -> b (top level), b -> c (inside a function), c -> a (relative import)
            "toy/a.py": "from toy import b\nX = 1\n",
            "toy/b.py": "def f():\n    import toy.c\n    return toy.c\n",
            "toy/c.py": "from .a import X\n",
            # not cycles: a re-exporting __init__, a TYPE_CHECKING import, an import of a
            # sibling through the package path
            "toy/sub/__init__.py": "from .leaf import Y\n",  # relative, in a package
            "toy/sub/leaf.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy.d import Z\n"
                "from toy.sub import other\nY = 2\n"
            ),
            "toy/sub/other.py": "import os\n",
            "toy/d.py": "from toy.sub.leaf import Y\nZ = 3\n",
        },
    )
    graph = import_graph(pkg, "toy")
    assert graph["toy"] == {"toy.a"}
    assert graph["toy.b"] == {"toy.c"}
    assert graph["toy.c"] == {"toy.a"}
    assert graph["toy.sub"] == {"toy.sub.leaf"}
    assert graph["toy.sub.leaf"] == {"toy.sub.other"}  # not toy.d (TYPE_CHECKING)
    assert find_cycles(graph) == [["toy.a", "toy.b", "toy.c", "toy.a"]]


def test_cycle_finder_counts_importing_the_parent_package(tmp_path):
    # leaf takes a name from its parent's __init__, which imports leaf: a real cycle
    pkg = _write_package(
        tmp_path,
        {
            "toy/__init__.py": "",
            "toy/sub/__init__.py": "from toy.sub.leaf import Y\nW = 1\n",
            "toy/sub/leaf.py": "def f():\n    from toy.sub import W\n    return W\nY = 2\n",
        },
    )
    assert find_cycles(import_graph(pkg, "toy")) == [["toy.sub", "toy.sub.leaf", "toy.sub"]]


def test_no_import_cycle():
    cycles = find_cycles(import_graph(PACKAGE_DIR, "qmri"))
    assert not cycles, "import cycles in qmri:\n" + "\n".join(" -> ".join(c) for c in cycles)


# ------------------------------------------------------------------------------------------
# module size
# ------------------------------------------------------------------------------------------


def _states_why_long(docstring: str | None) -> bool:
    """Whether a sentence of the docstring starts with :data:`LONG_REASON`."""
    text = " ".join((docstring or "").split())
    return any(s.startswith(LONG_REASON) for s in re.split(r"(?<=[.!?:])\s+", text))


def test_long_reason_is_a_sentence_start():
    assert _states_why_long(f"Fits things. {LONG_REASON} the kernels share state.")
    assert _states_why_long(f"{LONG_REASON}\n    the kernels share state.")
    assert not _states_why_long(f"Fits things; it is not {LONG_REASON} of anything.")
    assert not _states_why_long(None)


def test_modules_are_small():
    too_long = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        n_lines = len(text.splitlines())
        if n_lines > MAX_LINES and not _states_why_long(ast.get_docstring(ast.parse(text))):
            too_long.append(f"{path.relative_to(ROOT)}: {n_lines} lines")
    assert not too_long, (
        f"modules over {MAX_LINES} lines whose docstring does not say "
        f"'{LONG_REASON} ...':\n" + "\n".join(too_long)
    )


# ------------------------------------------------------------------------------------------
# model defaults
# ------------------------------------------------------------------------------------------


def _schema_defaults() -> dict[str, dict[str, object]]:
    schema = yaml.safe_load(SCHEMA.read_text())
    return {
        section: {key: spec["default"] for key, spec in body.get("properties", {}).items()}
        for section, body in schema["properties"].items()
        if body.get("type") == "object"
    }


def test_every_relaxometry_and_diffusion_model_is_mapped_to_its_sections():
    dce = set(models.DCE_MODELS.values())
    exported = {
        cls
        for cls in (getattr(models, name) for name in models.__all__)
        if isinstance(cls, type)
        and issubclass(cls, models.Model)
        and cls is not models.Model
        and cls not in dce
    }
    assert exported == set(MODEL_SECTIONS)
    sections = _schema_defaults()
    for names in MODEL_SECTIONS.values():
        assert set(names) <= set(sections)


@pytest.mark.parametrize(
    ("model", "section"),
    [(m, s) for m, names in MODEL_SECTIONS.items() for s in names],
    ids=lambda v: v.__name__ if isinstance(v, type) else v,
)
def test_model_defaults_match_the_schema(model, section):
    schema = _schema_defaults()[section]
    params = inspect.signature(model.__init__).parameters.values()
    compared = {
        p.name: (p.default, schema[p.name])
        for p in params
        if p.default is not inspect.Parameter.empty and p.name in schema
    }
    assert compared, f"{model.__name__} shares no keyword with the schema section {section!r}"
    differ = {name: pair for name, pair in compared.items() if pair[0] != pair[1]}
    assert not differ, (
        f"{model.__name__} defaults differ from config section {section!r} "
        f"(keyword: (model default, schema default)): {differ}"
    )


def test_steps_take_keyword_arguments_without_defaults():
    """Issue #12: a step has no defaults of its own (they live in the schema alone)."""
    import importlib
    import inspect
    import pkgutil

    import qmri.steps

    checked = 0
    for info in pkgutil.iter_modules(qmri.steps.__path__):
        if info.name == "runner":
            continue
        module = importlib.import_module(f"qmri.steps.{info.name}")
        for name in module.__all__:
            function = getattr(module, name)
            if not inspect.isfunction(function):
                continue
            for param in inspect.signature(function).parameters.values():
                assert param.kind is param.KEYWORD_ONLY, f"{info.name}.{name}({param.name})"
                assert param.default is param.empty, f"{info.name}.{name}({param.name}=...)"
            checked += 1
    assert checked >= 13  # one step per rule
