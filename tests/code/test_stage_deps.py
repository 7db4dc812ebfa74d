"""Each DVC stage depends on exactly the tasks/ code it runs, and tasks/ has no import circle.

A stage that misses a module it imports is not re-run when that module changes (stale
results); a stage that lists a module it never imports re-runs for nothing (an edit of the
report's CSS used to re-predict every model). Imports are read from the source (function-level
ones included), so nothing is imported here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# house-wide helpers every stage imports; their edits never change a stage's results
UNTRACKED = {"tasks/__init__.py", "tasks/common.py", "tasks/params.py", "tasks/paramfile.py"}


def module_files() -> dict[str, str]:
    files = {}
    for p in (ROOT / "tasks").rglob("*.py"):
        rel = p.relative_to(ROOT)
        files[".".join(rel.with_suffix("").parts).removesuffix(".__init__")] = rel.as_posix()
    return files


def direct_imports(module: str, files: dict[str, str]) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse((ROOT / files[module]).read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        out |= {n for n in names if n in files and n != module}
    return out


def closure(module: str, files: dict[str, str]) -> set[str]:
    seen, todo = {module}, [module]
    while todo:
        for m in direct_imports(todo.pop(), files) - seen:
            seen.add(m)
            todo.append(m)
    return seen


def covers(dep: str, file: str) -> bool:
    return file == dep or file.startswith(dep.rstrip("/") + "/")


def test_every_stage_lists_exactly_the_code_it_imports() -> None:
    files = module_files()
    problems = []
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        module = stage["cmd"].split("python -m ", 1)[1].split()[0]
        code = [d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith("tasks")]
        runs = {files[m] for m in closure(module, files)} - UNTRACKED
        if missing := sorted(f for f in runs if not any(covers(d, f) for d in code)):
            problems.append(f"{name}: imports {missing} but does not list them as deps")
        if extra := sorted(d for d in code if not any(covers(d, f) for f in runs)):
            problems.append(f"{name}: lists {extra} but never imports them")
    assert not problems, "\n".join(problems)


def test_tasks_modules_import_only_downward() -> None:
    files = module_files()
    graph = {m: direct_imports(m, files) for m in files}
    # a package imports its own submodules (tasks.figures -> tasks.figures.x) by design
    graph = {
        m: {v for v in vs if not v.startswith(m + ".") and not m.startswith(v + ".")}
        for m, vs in graph.items()
    }
    state: dict[str, int] = {}

    def circle(u: str, path: list[str]) -> list[str] | None:
        state[u] = 1
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return [*path[path.index(v) :], v] if v in path else [u, v]
            if not state.get(v) and (c := circle(v, [*path, v])):
                return c
        state[u] = 2
        return None

    for m in sorted(graph):
        if not state.get(m):
            found = circle(m, [m])
            assert found is None, "import circle: " + " -> ".join(found)
