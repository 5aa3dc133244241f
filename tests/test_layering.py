"""The floors of the code base, read from the imports of every module.

    application   nitisim.* outside nitisim.contract: training, calibration, reports, run, CLIs
    gpu_backend   the C and CUDA kernel tables                  (imports: the contract floor)
    hwmodels      the accelerator model                         (imports: the contract floor)
    contract      nitisim.contract: ops, numerics, models, graph, executor, reference, ...

A module may import its own floor and the floors below it; gpu_backend and hwmodels do not import
each other. Every import counts, at module level or inside a function: a lazy import is still a
dependency, it only moves the failure to run time. Circles are found over the same edges.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("nitisim", "gpu_backend", "hwmodels")
ALLOWED = {  # floor -> the floors it may import
    "contract": {"contract"},
    "gpu_backend": {"contract", "gpu_backend"},
    "hwmodels": {"contract", "hwmodels"},
    "application": {"contract", "gpu_backend", "hwmodels", "application"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _floor(module: str) -> str:
    if module == "nitisim.contract" or module.startswith("nitisim.contract."):
        return "contract"
    top = module.split(".")[0]
    return "application" if top == "nitisim" else top


def import_edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (the most specific module each import names)."""
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                names = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    targets.add(name)
        edges[module] = targets
    return edges


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                  if _floor(b) not in ALLOWED[_floor(a)])


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges without the package-to-own-submodule ones (`from . import x` in an __init__ re-exporting
    its own modules is how a package names its API, not a dependency between floors)."""
    return {a: {b for b in targets if not b.startswith(a + ".")} for a, targets in edges.items()}


def test_no_module_imports_a_floor_above_its_own():
    assert upward_imports(import_edges(_modules())) == []


def test_no_circles_between_modules():
    assert circles(_package_edges(import_edges(_modules()))) == []


def test_the_checker_sees_an_upward_import_and_a_circle():
    edges = {"nitisim.contract.graph": {"nitisim.train.config"}, "hwmodels.sim": {"gpu_backend.lib"},
             "nitisim.train.config": {"nitisim.contract.graph"}, "gpu_backend.lib": set()}
    assert upward_imports(edges) == ["hwmodels.sim -> gpu_backend.lib", "nitisim.contract.graph -> nitisim.train.config"]
    assert circles(edges) == [["nitisim.contract.graph", "nitisim.train.config"]]


def test_the_floors_are_real():
    modules = _modules()
    floors = {_floor(m) for m in modules}
    assert floors == set(ALLOWED)
    assert "nitisim.contract.reference" in modules and "nitisim.contract.models" in modules
