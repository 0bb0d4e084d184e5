"""The architecture, kept by a test: the core imports no wire protocol, and no two modules import
each other (directly or around a loop)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "appliance"
#: Protocol-free: every front end (REST, gRPC, batch jobs) builds on these.
CORE = ("appliance.dataplane", "appliance.parts", "appliance.modelconfig", "appliance.repository",
        "appliance.runtimes", "appliance.audit", "appliance.auth", "appliance.observability", "appliance.system",
        "appliance.config", "appliance.errors", "appliance.metrics", "appliance.jobs", "appliance.spark")
WIRE = ("appliance.protocol", "appliance.grpc", "appliance.appkeys", "appliance.app", "appliance.status",
        "aiohttp", "grpc")
#: Command-line modules may import a front end to run it; they are not part of the request path.
COMMAND_LINE = ("appliance.audit.cli", "appliance.auth.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, *, top_level_only: bool, known: frozenset[str] = frozenset()) -> set[str]:
    """Absolute module names imported by ``path`` (only at module level when asked: imports inside
    functions run late and cannot form import-time cycles; nor can ``if TYPE_CHECKING:`` blocks).
    ``from package import submodule`` imports the submodule, not the package's other names."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = {f"{node.module}.{alias.name}" for alias in node.names}
            submodules = names & known
            found.update(submodules)
            if submodules != names or not known:
                found.add(node.module)
    return found


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_core_imports_no_wire_protocol() -> None:
    offenders = {}
    for name, path in modules().items():
        if under(name, CORE) and not under(name, COMMAND_LINE):
            wire = sorted(i for i in imports(path, top_level_only=False) if under(i, WIRE))
            if wire:
                offenders[name] = wire
    assert offenders == {}


def test_no_import_cycles_between_modules() -> None:
    known = modules()
    names = frozenset(known)
    graph = {name: {i for i in imports(path, top_level_only=True, known=names) if i in known and i != name}
             for name, path in known.items()}
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for target in graph[node]:
                if target == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*trail, target]))
    assert cycles == []
