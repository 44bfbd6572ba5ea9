"""The import rules of the layout (docs/architecture.md), checked on the source.

- nothing under kcm/ imports prefect (the library is a library; flows/ and kcm_app/ may);
- only kcm/adapters/ imports mlflow, great_expectations and dvc;
- an adapter imports only the layers below it (config, data, evaluation, persist, errors, env):
  never the steps, the loop, the bench or the app (it takes plain data);
- no private name (``_x``) is imported from, or reached into, another module;
- modules stay small: at most 400 lines;
- no import cycle between kcm's modules, the app's and the flows', lazy imports included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBRARY = sorted((REPO / "kcm").rglob("*.py"))
ALL = sorted([*LIBRARY, *(REPO / "kcm_app").rglob("*.py"), *(REPO / "flows").rglob("*.py")])
TESTS = sorted((REPO / "tests").rglob("*.py"))
HEAVY = ("mlflow", "great_expectations", "dvc")
# private attributes of third-party objects that kcm reads on purpose (not kcm's own)
THIRD_PARTY_PRIVATE = {"_version"}  # torch.Tensor's version counter (kan_layer's caches)
# what an adapter may import of kcm: the layers below it (plain data, config, persistence)
ADAPTER_MAY_IMPORT = (
    "kcm.adapters",
    "kcm.config",
    "kcm.data",
    "kcm.env",
    "kcm.errors",
    "kcm.evaluation",
    "kcm.persist",
    "kcm.scoring",  # answering a frame: what the pyfunc and every scoring engine serve
)


def _name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import statement, nested ones included."""
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
    return out


def _top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("path", LIBRARY, ids=_name)
def test_the_library_never_imports_prefect(path: Path) -> None:
    bad = [m for m, _ in _imports(path) if _top(m) == "prefect" or _top(m) in ("flows", "kcm_app")]
    assert not bad, f"{_name(path)} imports {bad}: only flows/ and kcm_app/ may"


@pytest.mark.parametrize("path", LIBRARY, ids=_name)
def test_only_adapters_import_mlflow_gx_and_dvc(path: Path) -> None:
    if _name(path).startswith("kcm.adapters"):
        return
    bad = [m for m, _ in _imports(path) if _top(m) in HEAVY]
    assert not bad, f"{_name(path)} imports {bad}: put that code in kcm/adapters/"


@pytest.mark.parametrize("path", sorted((REPO / "kcm" / "adapters").glob("*.py")), ids=_name)
def test_adapters_never_import_what_sits_above_them(path: Path) -> None:
    mine = [m for m, _ in _imports(path) if _top(m) in ("kcm", "kcm_app", "flows")]
    bad = [m for m in mine if not m.startswith(ADAPTER_MAY_IMPORT)]
    assert not bad, f"{_name(path)} imports {bad}: an adapter takes plain data"


def _defined_private(tree: ast.AST) -> set[str]:
    """Private names a module defines itself (functions, classes, attributes it assigns)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


@pytest.mark.parametrize("path", [*ALL, *TESTS], ids=_name)
def test_no_private_name_crosses_a_module(path: Path) -> None:
    tree = ast.parse(path.read_text())
    own = _defined_private(tree)
    bad = [
        f"from {m} import {n}"
        for m, names in _imports(path)
        if _top(m) in ("kcm", "kcm_app", "flows")
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.attr not in own
            and node.attr not in THIRD_PARTY_PRIVATE
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            bad.append(f"line {node.lineno}: .{node.attr}")
    assert not bad, f"{_name(path)} uses another module's private names: {bad}"


@pytest.mark.parametrize("path", ALL, ids=_name)
def test_modules_stay_small(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= 400, f"{_name(path)} has {n} lines: split it by concern"


def test_the_shipped_mlflow_folder_does_not_shadow_the_library() -> None:
    """``mlflow/`` at the top level holds the workspace's store and a README, no package: with
    the repository on sys.path, ``import mlflow`` is still the installed library."""
    import subprocess
    import sys

    code = "import mlflow, pathlib; print(pathlib.Path(mlflow.__file__).resolve())"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "site-packages" in out.stdout, out.stdout
    assert not (REPO / "mlflow" / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    """First-party module -> the first-party modules it imports (anywhere in the file)."""
    mods = {_name(p): p for p in ALL}
    graph: dict[str, set[str]] = {}
    for m, path in mods.items():
        out = set()
        for module, names in _imports(path):
            hits = [f"{module}.{n}" for n in names if f"{module}.{n}" in mods]
            out |= set(hits) or ({module} if module in mods else set())
        graph[m] = out - {m}
    return graph


def test_no_import_cycles() -> None:
    """Strongly connected components of the import graph (Tarjan): none may have two
    modules (a cycle, e.g. the CLI and a command module importing each other)."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_every_module_is_named_in_the_architecture_page() -> None:
    """docs/architecture.md maps the code: each module appears there by its file name (under
    its folder's entry), so a newcomer finds every file from one page."""
    page = (REPO / "docs" / "architecture.md").read_text()
    missing = [
        str(p.relative_to(REPO)) for p in ALL if p.name != "__init__.py" and p.name not in page
    ]
    assert not missing, f"docs/architecture.md does not name {missing}"
