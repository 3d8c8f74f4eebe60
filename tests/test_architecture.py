"""The structure docs/architecture.md describes, checked against the code's own imports: every module
on exactly one floor, imports only to the same floor or below, no import circles, no source file over
the size bound."""
import ast
import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 420


def modules() -> dict[str, Path]:
    """Module name (relative to dsvbench; the top-level ``baselines/`` is ``baselines``) -> file."""
    found = {}
    for package in ("dsvbench", "baselines"):
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts[1:]) if parts[0] == "dsvbench" else ".".join(parts)
            found[name or "dsvbench"] = path
    return found


def _absolute(name: str, module: str | None, level: int, is_package: bool) -> str:
    if level == 0:
        return module or ""
    base = name.split(".") if name != "dsvbench" else []
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The dsvbench modules ``name`` imports anywhere in its file (lazy imports included)."""
    def local(target: str) -> str | None:
        for prefix in ("dsvbench.baselines", "dsvbench"):
            if target == prefix:
                return "baselines" if prefix == "dsvbench.baselines" else "dsvbench"
            if target.startswith(prefix + "."):
                rest = target[len(prefix) + 1:]
                return f"baselines.{rest}" if prefix == "dsvbench.baselines" else rest
        return target if target.split(".")[0] == "baselines" else None

    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [local(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                inside = "baselines" if name.split(".")[0] == "baselines" else None
                base = _absolute(name if not inside else name, node.module, node.level, is_package)
            else:
                base = local(node.module or "")
            if base is None:
                continue
            subs = [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
            submodules = [s for s in subs if s in known]
            targets = submodules if (node.module is None and submodules) else [base, *submodules]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def floors() -> dict[int, list[str]]:
    """floor -> module patterns, from the table in docs/architecture.md."""
    table = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        match = re.match(r"^\|\s*(\d+)\s*\|[^|]*\|(.*)\|\s*$", line)
        if match:
            table[int(match.group(1))] = re.findall(r"`([^`]+)`", match.group(2))
    return table


def floor_of(name: str, table: dict[int, list[str]]) -> list[int]:
    return [floor for floor, patterns in table.items() if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return known, {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_is_on_exactly_one_floor(graph):
    known, _ = graph
    table = floors()
    assert len(table) >= 5
    placed = {name: floor_of(name, table) for name in known}
    assert {n: f for n, f in placed.items() if len(f) != 1} == {}


def test_imports_never_run_back_up_the_floors(graph):
    _, edges = graph
    table = floors()
    upward = [(a, b) for a, targets in edges.items() for b in targets
              if floor_of(b, table)[0] > floor_of(a, table)[0]]
    assert upward == []


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle a depth-first walk meets, as the path that closes it."""
    state: dict[str, int] = {}   # 1 on the stack, 2 done
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2
    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_circles(graph):
    _, edges = graph
    assert find_cycles(edges) == []


def test_no_source_file_is_over_the_size_bound(graph):
    known, _ = graph
    assert {n: len(p.read_text().splitlines()) for n, p in known.items()
            if len(p.read_text().splitlines()) > MAX_LINES} == {}


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path):
    """The checks above can fail: a planted circle and an upward import are found."""
    assert find_cycles({"plan": {"tasks"}, "tasks": {"plan"}}) == [["plan", "tasks", "plan"]]
    table = floors()
    assert floor_of("plan", table)[0] < floor_of("api", table)[0]   # plan importing api would be upward
    known = modules()
    planted = tmp_path / "planted.py"
    planted.write_text("from .api import run\nfrom . import tasks\n")
    assert imports("plan", planted, known) == {"api", "tasks"}
