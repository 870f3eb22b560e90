"""The import graph: no circles (type-only imports included) and no layer imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "trioagent"

# DESIGN.md's layers, bottom first. A module may import its own layer and those below.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "audio", "_proto", "chat", "sentences", "states", "_compute", "tracing"),
    ("tools", "metrics", "scheduler", "events"),
    ("providers", "transports", "utterance", "mcp", "agent", "flow"),
    ("pipeline", "session"),
    ("server", "realtime_server", "observe", "recording", "workers", "auth", "cli", "demo", "testing", "web", "__init__", "__main__"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every trioagent module `name` imports: at the top, in functions, under TYPE_CHECKING."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("trioagent."):
                base = node.module.split(".")[1:]
            else:
                continue
            target = ".".join(base)
            for candidate in [target, *(f"{target}.{a.name}" if target else a.name for a in node.names)]:
                if candidate in modules and candidate != name:
                    found.add(candidate)
    return found


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


GRAPH = {name: _imports(name, path, m) for m in [_modules()] for name, path in m.items()}


def test_every_module_has_a_layer() -> None:
    for module in GRAPH:
        _layer(module)


def test_no_module_imports_a_higher_layer() -> None:
    upward = [f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets if _layer(b) > _layer(a)]
    assert upward == []


def test_no_import_circles() -> None:
    done: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            circles.append(path[path.index(node) :] + [node])
            return
        if node in done:
            return
        for target in sorted(GRAPH[node]):
            visit(target, [*path, node])
        done.add(node)

    for module in sorted(GRAPH):
        visit(module, [])
    assert circles == []
