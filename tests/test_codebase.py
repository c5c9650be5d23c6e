"""The code's shape, held as the redesign left it: no function over 60 lines in lrpgraph/
or rules/, no import cycle among lrpgraph's modules (imports inside functions included),
and rules/ registered by explicit imports that cover every rule module."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"lrpgraph": os.path.join(ROOT, "lrpgraph"), "lrpgraph.rules": os.path.join(ROOT, "rules")}


def _modules():
    for package, folder in PACKAGES.items():
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                stem = name[:-3]
                yield (package if stem == "__init__" else f"{package}.{stem}"), os.path.join(folder, name)


def _tree(path):
    with open(path, encoding="utf-8") as fh:
        return ast.parse(fh.read(), path)


@pytest.mark.parametrize("module,path", list(_modules()))
def test_no_function_over_60_lines(module, path):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(_tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > 60]
    assert not long, f"{module}: {long}"


def _imports(module, path):
    """The lrpgraph modules ``module`` imports, at any level of its code."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}")
                found.add(base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_import_cycle():
    modules = dict(_modules())
    graph = {m: {i for i in _imports(m, p) if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ importing its own modules is how registration works, not a cycle
    for package in PACKAGES:
        graph[package] = {i for i in graph[package] if not i.startswith(package + ".")} \
            if package == "lrpgraph" else graph[package]
    state = {}

    def visit(m, trail):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(trail + [m])
        state[m] = "open"
        for dep in sorted(graph[m]):
            visit(dep, trail + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])


def test_every_rule_module_is_registered():
    from lrpgraph import rules

    registered = {m.__name__.rsplit(".", 1)[1] for m in rules.MODULES}
    on_disk = {name[:-3] for name in os.listdir(PACKAGES["lrpgraph.rules"])
               if name.endswith(".py") and hasattr(__import__(f"lrpgraph.rules.{name[:-3]}",
                                                              fromlist=["RULES"]), "RULES")}
    assert on_disk == registered
