"""The folder tree is the flow: no import cycles, stages that never reach up or out, and heavy
libraries loaded only by the commands that use them (issue: the flow is the folder tree)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("metering", "db")
HEAVY = ("pandas", "pyarrow", "openpyxl", "fastavro", "azure.eventhub", "azure.identity", "azure.storage")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module ``path`` imports, anywhere in the file (lazy and TYPE_CHECKING imports
    count: a cycle hidden inside a function is still two rooms that know each other)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_in_metering_or_db():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]


# Each stage may import only what lies below it in the flow. ``db`` may use the typed values and
# the pure price stage (to load a rate card, to reprice); nothing below the entry points imports them.
ALLOWED = {
    "metering.model": set(),
    "metering.decode": {"metering.model", "metering.decode"},
    "metering.usage": {"metering.model", "metering.decode", "metering.usage"},
    "metering.price": {"metering.model", "metering.usage", "metering.price"},
    "metering.pipeline": {"metering.model", "metering.decode", "metering.usage", "metering.price", "metering.sources.llm_logs"},
    "metering.settings": {"metering.model"},
}
PURE_STAGES = ("metering.model", "metering.decode", "metering.usage", "metering.price", "metering.pipeline")


def _room(module: str) -> str:
    for room in sorted(ALLOWED, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    return module


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_stages_import_only_what_lies_below_them(room):
    graph = import_graph()
    allowed = ALLOWED[room]
    wrong = {
        f"{module} → {target}"
        for module, targets in graph.items() if _room(module) == room
        for target in targets
        if _room(target) != room and not any(target == a or target.startswith(a + ".") for a in allowed)
    }
    assert not wrong, "imports against the flow:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("room", PURE_STAGES)
def test_pure_stages_speak_no_sql(room):
    modules = project_modules()
    for name, path in modules.items():
        if _room(name) != room:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m for m in imported if m.split(".")[0] in ("sqlalchemy", "db")}, name


def loaded_after(code: str) -> set[str]:
    """The top-level packages in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def heavy_in(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)}


def test_help_loads_no_sql_no_pandas_no_sdk():
    modules = loaded_after(
        "import contextlib, io\nfrom metering.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
    )
    assert "metering.cli" in modules
    assert heavy_in(modules) == set()
    assert "sqlalchemy" not in modules  # a third of a second that --help need not pay


def test_the_function_loads_no_pandas_pyarrow_openpyxl_or_avro():
    modules = loaded_after("import function_app")
    assert "function_app" in modules and "metering.ingest" in modules
    assert heavy_in(modules) == set()


def test_replay_loads_no_pandas(tmp_path):
    db = f"sqlite:///{tmp_path / 'replay.db'}"
    events = ROOT / "samples" / "events" / "2026-10-special-cases.jsonl"
    modules = loaded_after(
        "import contextlib, io\nfrom metering.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['--db', {db!r}, 'db', 'upgrade']) == 0\n"
        f"    assert main(['--db', {db!r}, 'replay', '--progress', 'off', {str(events)!r}]) == 0\n"
    )
    assert "metering.ingest" in modules
    assert heavy_in(modules) == set()


SQL_BUILDERS = {"select", "insert", "update", "delete", "text", "exec_driver_sql", "union_all"}


def test_only_db_builds_sql_statements():
    """Entry points and stages hand a connection to ``db`` functions; none writes a statement itself."""
    offenders = set()
    for name, path in project_modules().items():
        if name.startswith("db"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in SQL_BUILDERS and isinstance(node.value, ast.Name) \
                    and node.value.id in ("sa", "sqlalchemy", "conn", "connection"):
                offenders.add(f"{name}: {node.value.id}.{node.attr}")
    assert not offenders, "SQL outside db/:\n" + "\n".join(sorted(offenders))
