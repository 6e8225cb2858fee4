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


# The floors of the flow, top to bottom. A module may import its own room and any room on a lower
# floor, never one on its own floor or above: entry points → sources, finance → ingest → db → pipeline →
# price → usage → decode → model. (ingest is storage composed with the pipeline, which the Event Hubs
# consumer in sources calls; price reads usage's token kinds; usage reads decode's event values.)
FLOORS: tuple[tuple[str, ...], ...] = (
    ("metering.cli",),
    ("metering.sources", "metering.finance"),
    ("metering.ingest",),
    ("db",),
    ("metering.pipeline",),
    ("metering.price",),
    ("metering.usage",),
    ("metering.decode",),
    ("metering.model", "metering.settings", "metering.safe_text", "metering.short_key_cache"),
)
ROOMS = tuple(room for floor in FLOORS for room in floor)
FLOOR_OF = {room: level for level, floor in enumerate(FLOORS) for room in floor}
PURE_STAGES = ("metering.model", "metering.decode", "metering.usage", "metering.price", "metering.pipeline")
# Rooms on one floor that may use each other: settings reads the model's defaults.
SAME_FLOOR = {("metering.settings", "metering.model")}


def _room(module: str) -> str:
    for room in sorted(ROOMS, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    return module


def test_every_module_lives_on_a_floor():
    assert {name for name in project_modules() if _room(name) not in FLOOR_OF and name not in ("metering", "metering.__main__")} == set()


def imports_against_the_flow(graph: dict[str, set[str]]) -> set[str]:
    wrong = set()
    for module, targets in graph.items():
        room = _room(module)
        if room not in FLOOR_OF:
            continue
        for target in targets:
            target_room = _room(target)
            if target_room == room or target_room not in FLOOR_OF or (room, target_room) in SAME_FLOOR:
                continue
            if FLOOR_OF[target_room] <= FLOOR_OF[room]:
                wrong.add(f"{module} → {target}")
    return wrong


@pytest.mark.parametrize("room", ROOMS)
def test_rooms_import_only_what_lies_below_them(room):
    graph = {module: targets for module, targets in import_graph().items() if _room(module) == room}
    wrong = imports_against_the_flow(graph)
    assert not wrong, "imports against the flow:\n" + "\n".join(sorted(wrong))


def test_the_floor_rule_catches_storage_reaching_up():
    """The rule itself: db importing finance, a stage importing sources or the CLI, fail."""
    planted = {
        "db.bill": {"metering.finance.reconcile.bill"},
        "metering.pipeline": {"metering.sources.files"},
        "metering.usage.tokens": {"metering.cli.common"},
        "metering.finance.focus": {"metering.sources.files"},
        "metering.price.pricing": {"metering.model"},
    }
    assert imports_against_the_flow(planted) == {
        "db.bill → metering.finance.reconcile.bill",
        "metering.pipeline → metering.sources.files",
        "metering.usage.tokens → metering.cli.common",
        "metering.finance.focus → metering.sources.files",
    }


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
