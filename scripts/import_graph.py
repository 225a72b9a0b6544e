"""The import graph of ``builders/``, per folder, and what it must not hold.

    python scripts/import_graph.py [--root REPO]

Reads every module's imports with ``ast`` (relative ones resolved, imports inside functions and under
``TYPE_CHECKING`` included), prints which modules each one imports, folder by folder, and exits 1
naming each problem:

- a cycle (modules that import each other, directly or round a loop);
- an upward arrow: a stage importing a later stage (the order is :data:`STAGES`; the modules at the top
  of ``builders/`` are shared utilities below every stage, except :data:`TOP`, which is above them all);
- a private name (``_name``) imported from another file, or read from another module as ``module._name``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: The build's stages in pipeline order: a folder of ``builders/`` each; a module may import its own
#: stage and the stages before it, never one after it.
STAGES = ("source", "export", "precision", "qat", "checks", "engine")
#: Modules at the top of ``builders/`` that drive the stages (above all of them); every other top-level
#: module is a shared utility, below every stage.
TOP = ("pipeline",)
PACKAGE = "builders"  # the folder, relative to the repository root
IMPORT_NAME = "trtinfer.builders"  # what it is installed as (setup.py's package_dir)


@dataclass
class Module:
    name: str  # dotted, relative to the package: "source.archs"; the package itself is ""
    path: Path
    is_package: bool
    imports: dict[str, int] = field(default_factory=dict)  # imported module -> first line
    private: list[str] = field(default_factory=list)  # "line N: _name from module"


def find_modules(package_dir: Path) -> dict[str, Module]:
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        modules[name] = Module(name, path, is_package)
    return modules


def _absolute(module: Module, node: ast.ImportFrom) -> str | None:
    """The package-relative dotted name ``node`` imports from ('' for the package); None: outside it."""
    if node.level:
        base = module.name.split(".") if module.name else []
        if not module.is_package:
            base = base[:-1]
        up = node.level - 1
        if up > len(base):
            return None
        base = base[:len(base) - up]
        return ".".join(base + ([node.module] if node.module else []))
    return _inside(node.module or "")


def _inside(dotted: str) -> str | None:
    for prefix in (IMPORT_NAME, PACKAGE):
        if dotted == prefix:
            return ""
        if dotted.startswith(prefix + "."):
            return dotted[len(prefix) + 1:]
    return None


def read_imports(module: Module, modules: dict[str, Module]) -> None:
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    bound: dict[str, str] = {}  # local name -> module it stands for (``from . import archs``, ``import x.y as z``)

    def add(target: str, line: int) -> None:
        if target != module.name:
            module.imports.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _inside(alias.name)
                if target is not None and target in modules:
                    add(target, node.lineno)
                    if alias.asname:
                        bound[alias.asname] = target
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if source is None or source not in modules:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}" if source else alias.name
                if sub in modules:  # ``from . import archs``: the submodule itself
                    add(sub, node.lineno)
                    bound[alias.asname or alias.name] = sub
                    continue
                add(source, node.lineno)
                if alias.name.startswith("_") and not alias.name.startswith("__") and source != module.name:
                    module.private.append(f"line {node.lineno}: {alias.name} from {_shown(source)}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            module.private.append(f"line {node.lineno}: {node.value.id}.{node.attr} of {_shown(bound[node.value.id])}")


def _shown(name: str) -> str:
    return name or f"{PACKAGE}/__init__"


def folder_of(module: Module) -> str:
    """The folder a module sits in ('' for the top of the package); a folder's ``__init__`` is in it."""
    return module.name.split(".")[0] if "." in module.name or module.is_package else ""


def rank(module: Module) -> int:
    folder = folder_of(module)
    if folder in STAGES:
        return 1 + STAGES.index(folder)
    if module.name in TOP:
        return 1 + len(STAGES)
    return 0  # shared: the package's other top-level modules (and any folder not declared as a stage)


def cycles(modules: dict[str, Module]) -> list[list[list[str]]]:
    """Each strongly connected group of two or more modules (Tarjan), as the shortest loop through each of
    its members (one loop may pass through several)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(modules[v].imports):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(modules) + 100))
    for name in sorted(modules):
        if name not in index:
            visit(name)
    found = []
    for group in sorted(groups):
        loops: list[list[str]] = []
        for start in group:
            loop = _loop(start, set(group), modules)
            if not any(set(loop) == set(known) for known in loops):
                loops.append(loop)
        found.append(loops)
    return found


def _loop(start: str, members: set[str], modules: dict[str, Module]) -> list[str]:
    """The shortest path from ``start`` back to itself inside ``members`` (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(modules[v].imports):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w in members and w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]


def upward(modules: dict[str, Module]) -> Iterator[str]:
    for name in sorted(modules):
        for target, line in sorted(modules[name].imports.items()):
            if rank(modules[target]) > rank(modules[name]):
                yield (f"{_shown(name)} -> {_shown(target)} (line {line}): "
                       f"{_level(modules[name])} imports {_level(modules[target])}, which comes later")


def _level(module: Module) -> str:
    r = rank(module)
    if r == 0:
        return "a shared module"
    if r > len(STAGES):
        return "the pipeline"
    return f"stage {STAGES[r - 1]!r}"


def report(root: Path, out=sys.stdout) -> int:
    package_dir = root / PACKAGE
    if not package_dir.is_dir():
        print(f"no {PACKAGE}/ under {root}", file=sys.stderr)
        return 2
    modules = find_modules(package_dir)
    for module in modules.values():
        read_imports(module, modules)

    folders: dict[str, list[str]] = {}
    for name in sorted(modules):
        folders.setdefault(folder_of(modules[name]), []).append(name)
    order = [""] + [f for f in STAGES if f in folders] + sorted(f for f in folders if f and f not in STAGES)
    for folder in order:
        where = f"{PACKAGE}/{folder + '/' if folder else ''}"
        kind = "top: the pipeline above the stages, shared modules below them" if not folder else (
            f"stage {STAGES.index(folder) + 1} of {len(STAGES)}" if folder in STAGES else "not a declared stage")
        print(f"{where}  ({kind})", file=out)
        for name in folders[folder]:
            short = "__init__" if modules[name].is_package else name.rsplit(".", 1)[-1]
            targets = [_shown(t) for t in sorted(modules[name].imports)] or ["-"]
            lines = [""]
            for target in targets:  # wrapped after about 80 characters of names
                if lines[-1] and len(lines[-1]) + len(target) > 80:
                    lines.append("")
                lines[-1] += (", " if lines[-1] else "") + target
            print(f"  {short:<24} -> {lines[0]}", file=out)
            for more in lines[1:]:
                print(f"  {'':<24}    {more}", file=out)

    problems = [f"cycle: {' -> '.join(_shown(n) for n in loop)}" for group in cycles(modules) for loop in group]
    problems += [f"upward arrow: {line}" for line in upward(modules)]
    problems += [f"private import: {_shown(name)} {entry}"
                 for name in sorted(modules) for entry in modules[name].private]
    print(file=out)
    if problems:
        for problem in problems:
            print(problem, file=out)
        print(f"{len(problems)} problem(s) in the import graph of {PACKAGE}/", file=out)
        return 1
    print(f"{len(modules)} modules: no cycles, no upward arrows, no private names across files", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help=f"the repository root holding {PACKAGE}/ (default: this checkout)")
    return report(parser.parse_args(argv).root)


if __name__ == "__main__":
    sys.exit(main())
