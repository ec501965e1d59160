"""The layer rules of ARCHITECTURE.md hold in the code: each package imports only what its row of the code
map allows, nothing imports in a circle, the top level stays small, errors become messages in the CLI only.

The imports are read from the source with ``ast`` (every import, those inside functions included), so a
lazy import cannot hide a dependency the map does not allow."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "archive_restore"
MAP = ROOT / "ARCHITECTURE.md"
TOP_LEVEL_MODULES = 10  # at most, beside the packages
CLI_MODULE_LINES = 400  # at most, per module of the command line
# What every part may import: the package's own root (``__version__``).
EVERYONE = {"archive_restore"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


class Import:
    def __init__(self, source: str, target: str, runtime: bool, line: int):
        self.source, self.target, self.runtime, self.line = source, target, runtime, line

    def __repr__(self) -> str:
        return f"{MODULES[self.source].relative_to(ROOT)}:{self.line} imports {self.target}"


def _walk(node: ast.AST, runtime: bool):
    """(node, runs when the module is imported) for every node: not inside a function nor under
    ``if TYPE_CHECKING``."""
    for child in ast.iter_child_nodes(node):
        deferred = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        typing_only = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
        yield child, runtime
        yield from _walk(child, runtime and not deferred and not typing_only)


def imports_of(name: str) -> list[Import]:
    """Every import of a module of ``archive_restore`` in module ``name``, resolved to the module it loads
    (``from .pkg import sub`` names the submodule ``sub`` when it is one)."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node, runtime in _walk(ast.parse(path.read_text()), True):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "archive_restore":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append(Import(name, sub if sub in MODULES else target, runtime, node.lineno))
        elif isinstance(node, ast.Import):
            found += [Import(name, a.name, runtime, node.lineno) for a in node.names
                      if a.name.split(".")[0] == "archive_restore"]
    return found


ALL_IMPORTS = [i for name in MODULES for i in imports_of(name)]


def part(module: str) -> str:
    """The code map's unit a module belongs to: its top-level package, or the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "archive_restore"


def code_map() -> dict[str, set[str]]:
    """ARCHITECTURE.md's code map: part -> the parts it may import (its rows ``| `name` | what | may import |``)."""
    rules = {}
    for line in MAP.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = cells[0].strip("`").rstrip("/")
        rules[name] = set(re.findall(r"`(\w+)/?`", cells[2]))
    return rules


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_part_of_the_package_is_on_the_code_map():
    parts = {part(m) for m in MODULES} - EVERYONE
    rules = code_map()
    assert not parts - rules.keys(), f"add these to ARCHITECTURE.md's code map: {sorted(parts - rules.keys())}"
    assert not rules.keys() - parts, f"ARCHITECTURE.md maps parts that do not exist: {sorted(rules.keys() - parts)}"


def test_each_part_imports_only_what_the_code_map_allows():
    rules = code_map()
    wrong = [i for i in ALL_IMPORTS
             if part(i.target) != part(i.source) and part(i.target) not in rules[part(i.source)] | EVERYONE]
    assert not wrong, "imports the code map in ARCHITECTURE.md does not allow:\n" + "\n".join(map(repr, wrong))


def test_the_lowest_layers_never_import_jobs_cli_bench_or_executors():
    """ARCHITECTURE.md's rule, read from the code itself (whatever the map says): networks, degradations and
    media know nothing of jobs, the command line, benchmarks or clusters."""
    above = {"jobs", "cli", "bench", "executors", "pipeline", "report", "demo"}
    wrong = [i for i in ALL_IMPORTS if part(i.source) in {"nets", "degrade", "media", "errors", "compute"}
             and part(i.target) in above]
    assert not wrong, "\n".join(map(repr, wrong))


def test_no_import_circles_between_modules_nor_between_parts():
    runtime: dict[str, set[str]] = {}
    for i in ALL_IMPORTS:
        if i.runtime and i.target != i.source:
            runtime.setdefault(i.source, set()).add(i.target)
    assert find_cycle(runtime) is None, f"modules import each other in a circle: {find_cycle(runtime)}"
    parts: dict[str, set[str]] = {}
    for i in ALL_IMPORTS:  # lazy imports too: a circle of parts is a circle, whenever it closes
        if part(i.target) != part(i.source) and part(i.target) not in EVERYONE:
            parts.setdefault(part(i.source), set()).add(part(i.target))
    assert find_cycle(parts) is None, f"parts import each other in a circle: {find_cycle(parts)}"


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_executor_interface_loads_ray_only_when_asked():
    at_import = {i.target for i in imports_of("archive_restore.executors") if i.runtime}
    assert not any(t.startswith("archive_restore.executors.ray_cluster") for t in at_import)
    ray_users = {m for m, p in MODULES.items() if re.search(r"^\s*(import ray|from ray)\b", p.read_text(), re.M)}
    assert ray_users and all(m.startswith("archive_restore.executors.ray_cluster") for m in ray_users), ray_users


def test_the_top_level_stays_small_and_the_cli_in_short_modules():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= TOP_LEVEL_MODULES, f"{len(top)} modules at the top of archive_restore/: {sorted(top)}"
    long = {p.name: n for p in (PACKAGE / "cli").glob("*.py") if (n := len(p.read_text().splitlines())) > CLI_MODULE_LINES}
    assert not long, f"cli modules over {CLI_MODULE_LINES} lines: {long}"


def test_errors_become_messages_only_in_the_cli():
    """click (the messages, the exit codes) is the command line's alone; the library raises."""
    users = {m for m, p in MODULES.items() if re.search(r"^\s*(import click|from click)\b", p.read_text(), re.M)}
    assert users and all(part(m) == "cli" for m in users), sorted(users - {m for m in users if part(m) == "cli"})
