"""The house's arrows, read from the code: every import inside ``jobs`` points to a lower room,
so there is no cycle; Spark is imported only by the Spark rooms and boto3 only by ``aws``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

JOBS = Path(__file__).resolve().parent.parent / "jobs"

# Lower number = lower room. A module may import only modules of a strictly lower rank.
RANKS = {
    "errors": 0,
    "settings": 1,
    "aws": 2,
    "codec": 2,
    "interrupts": 2,
    "progress": 2,
    "worker": 2,
    "exact": 2,
    "storage": 3,
    "expressions": 3,
    "contract": 3,
    "selection": 4,
    "config": 4,
    "runinfo": 4,
    "parquet": 4,
    "sample": 4,
    "planning": 5,
    "lease": 5,
    "preflight": 5,
    "task": 5,
    "inspection": 5,
    "training": 5,
    "series": 5,
    "session": 6,
    "handoff": 6,
    "runners": 6,
    "spark_planning": 7,
    "spark_job": 8,
    "emr": 7,
    "iam": 7,
    "schedule": 8,
    "cli": 9,
    "entry": 10,
    "__main__": 10,
    "__init__": -1,  # the package itself: only its version string
}
SPARK_ROOMS = {"spark_job", "spark_planning", "runners", "session", "handoff"}


def _room(module: str) -> str:
    """jobs.storage.s3 → storage; jobs → __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules():
    for path in sorted(JOBS.rglob("*.py")):
        rel = path.relative_to(JOBS.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(module: str, path: Path):
    """(imported module, line) for every import not under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join([*up, base]) if base else ".".join(up)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if _is_module(full) else base), node.lineno


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (JOBS.parent / rel).with_suffix(".py").is_file() or (JOBS.parent / rel).is_dir()


EDGES = [
    (module, imported, line)
    for module, path in _modules()
    for imported, line in _imports(module, path)
]


def test_every_room_has_a_rank():
    assert {_room(m) for m, _ in _modules()} <= set(RANKS)


def test_every_arrow_points_to_a_lower_room():
    wrong = [
        f"{m}:{line} imports {i}"
        for m, i, line in EDGES
        if i.startswith("jobs") and _room(i) != _room(m) and RANKS[_room(i)] >= RANKS[_room(m)]
        and not (_room(m) == "__init__")
    ]  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_there_is_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for m, i, _ in EDGES:
        if i.startswith("jobs.") and i != m:
            graph.setdefault(m, set()).add(i)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " → ".join([*stack, node, nxt]))
            if not state.get(nxt):
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in list(graph):
        if not state.get(node):
            visit(node, [])


@pytest.mark.parametrize("library, allowed", [("pyspark", SPARK_ROOMS), ("boto3", {"aws"})])
def test_spark_and_boto3_stay_in_their_rooms(library, allowed):
    wrong = [
        f"{m}:{line}"
        for m, i, line in EDGES
        if (i == library or i.startswith(library + ".")) and _room(m) not in allowed
    ]
    assert not wrong, f"{library} imported outside {sorted(allowed)}: {wrong}"


def test_the_codec_does_no_io():
    allowed = {"__future__", "struct", "dataclasses", "collections.abc", "typing", "numpy"}
    codec = {i for m, i, _ in EDGES if _room(m) == "codec" and not i.startswith("jobs.codec")}
    assert codec <= allowed | {"jobs.errors"}


def test_the_code_map_in_the_design_notes_names_every_room_and_the_spark_rooms():
    """docs/design.md's table of rooms is read against the code: a room added, removed or
    renamed without the map fails here, and so does its list of the rooms that import Spark."""
    import re

    text = (JOBS.parent / "docs" / "design.md").read_text()
    section = text.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| `")]
    cells = [ln.split("|")[1].split("(")[0] for ln in rows]  # `codec/` (`wire`, …): codec
    named = {n.rstrip("/") for cell in cells for n in re.findall(r"`([\w/]+)`", cell)}
    rooms = {_room(m) for m, _ in _modules()} - {"__init__", "__main__"}
    assert named == rooms, f"missing {rooms - named}, not rooms {named - rooms}"
    spark_line = re.search(r"pyspark only in (.+?), boto3", section.replace("\n", " ")).group(1)
    assert set(re.findall(r"`(\w+)`", spark_line)) == SPARK_ROOMS
