"""The layout keeps its promises, read from the source (ast; nothing is imported): dependencies point
one way (flows -> tasks -> pst_core), pst_core never imports Prefect, no module imports itself back
through others, and every stage names the module holding its maths."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "tasks", "pst_core")


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the three packages (a package is its __init__)."""
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, anywhere in the file (deferred imports too), as dotted names:
    for ``from a import b`` the module a.b where b is one, else a."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES}
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _ours(module: str) -> set[str]:
    """The modules of ours that importing ``module`` runs: it and the packages above it."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(MODULES)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of ``graph`` (module -> modules it imports) runs into."""
    done, cycles = set(), []

    def visit(node, path):
        if node in path:
            cycles.append(path[path.index(node):] + [node])
        elif node not in done:
            for nxt in sorted(graph.get(node, ())):
                visit(nxt, path + [node])
            done.add(node)

    for name in sorted(graph):
        visit(name, [])
    return cycles


def test_the_cycle_finder_finds_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles():
    # Importing a module runs the packages above it first (their __init__): edges to those count too.
    graph = {name: set().union(*(_ours(m) for m in imported)) - {name} for name, imported in IMPORTS.items()}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_dependencies_point_one_way():
    wrong = []
    for name, imported in IMPORTS.items():
        top = name.split(".")[0]
        for module in imported:
            target = module.split(".")[0]
            if (top == "pst_core" and target in ("prefect", "prefect_dask", "tasks", "flows")) or \
                    (top == "tasks" and target == "flows"):
                wrong.append(f"{name} imports {module}")
    assert not wrong, wrong


def test_every_stage_names_the_module_holding_its_maths():
    from pst_core.config.schema import STAGE_MODELS
    from pst_core.pipeline.stages import MATHS, STAGES

    assert set(MATHS) == set(STAGES) == set(STAGE_MODELS)
    for stage, module in MATHS.items():
        assert module in MODULES, f"{stage}: no module {module}"
        assert module in IMPORTS["pst_core.pipeline.stages"] or any(
            m.startswith(module) for m in IMPORTS["pst_core.pipeline.stages"]), f"stages never calls {module}"
