"""Which way imports point, checked on the source (docs/architecture.md, "Imports").

The edge node is layered: `node` wires everything; `bridge` joins a caller to a bot and uses
`routing`, `sip`, `rtp` and `drivers`; `rtp` is the bottom and imports nothing else from the
node. The control plane (`functions/`) and the edge node (`edge_media/`) share only `shared/`.
A forbidden import, or any import cycle between modules, fails here with the file and line.

Imports under ``if TYPE_CHECKING:`` are not counted: they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What each part of edge_media may import from edge_media (itself always allowed).
ALLOWED: dict[str, set[str]] = {
    "rtp": set(),
    "sip": {"rtp"},
    "drivers": {"rtp"},  # PlayedMark: what playout reached, handed to the bot
    "routing": {"sip"},  # an extension's digest credentials (sip.registrar.ExtensionAuth)
    "errors": set(),
    "control": {"errors"},
    "bridge": {"routing", "sip", "rtp", "drivers", "errors"},
    "apps": {"bridge", "sip", "rtp"},
    # a provider's stream as a caller leg: LiveCall (bridge), the WebSocket (drivers.ws_client),
    # the pacer and playout (rtp), CallEnd (sip)
    "agent_stream": {"bridge", "drivers", "rtp", "sip"},
    "phone": {"sip", "rtp"},
    "trunk_registrations": {"sip"},
    "loop": set(),
    "node_capacity": set(),
    "node_control": {
        "agent_stream",
        "bridge",
        "routing",
        "control",
        "drivers",
        "sip",
        "rtp",
        "errors",
        "trunk_registrations",
    },
    "node": {
        "agent_stream",
        "apps",
        "bridge",
        "routing",
        "control",
        "drivers",
        "sip",
        "rtp",
        "errors",
        "node_control",
        "trunk_registrations",
        "loop",
        "node_capacity",
    },
}


@dataclass(frozen=True)
class Import:
    source: str  # dotted module that imports
    target: str  # dotted module imported
    path: Path
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def imports_of(path: Path) -> list[Import]:
    source = _module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    found: list[Import] = []
    for node in _walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(source, alias.name, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(Import(source, base, path, node.lineno))
            # ``from edge_media.sip import call`` imports the module edge_media.sip.call
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if _module_path(candidate) is not None:
                    found.append(Import(source, candidate, path, node.lineno))
    return found


def _module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _sources(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


def _part(module: str) -> str:
    """``edge_media.sip.call`` -> ``sip``; ``edge_media.node`` -> ``node``."""
    return module.split(".")[1]


def test_edge_media_imports_point_down_the_layers() -> None:
    wrong: list[str] = []
    for path in _sources("edge_media"):
        for imp in imports_of(path):
            if not imp.target.startswith("edge_media.") or imp.source == "edge_media":
                continue
            mine, theirs = _part(imp.source), _part(imp.target)
            assert mine in ALLOWED, f"{imp.path}: add edge_media.{mine} to ALLOWED"
            if theirs != mine and theirs not in ALLOWED[mine]:
                wrong.append(f"{imp.path.relative_to(ROOT)}:{imp.line}: {mine} -> {imp.target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_control_plane_and_edge_node_share_only_shared() -> None:
    wrong: list[str] = []
    for tops, forbidden in (
        (("functions",), "edge_media"),
        (("edge_media",), "functions"),
        (("shared",), "edge_media"),
        (("shared",), "functions"),
    ):
        for path in _sources(*tops):
            for imp in imports_of(path):
                if imp.target == forbidden or imp.target.startswith(forbidden + "."):
                    wrong.append(f"{imp.path.relative_to(ROOT)}:{imp.line}: {imp.target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for path in _sources("edge_media", "shared", "functions"):
        module = _module_name(path)
        edges = graph.setdefault(module, set())
        for imp in imports_of(path):
            target = imp.target
            while target and _module_path(target) is None:
                target = target.rpartition(".")[0]  # ``from pkg.mod import name``
            ours = target.split(".")[0] in ("edge_media", "shared", "functions")
            if ours and target != module and not module.startswith(target + "."):
                edges.add(target)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The parser finds imports in functions and skips TYPE_CHECKING blocks."""
    path = ROOT / "edge_media" / "rtp" / "session.py"
    found = {imp.target for imp in imports_of(path)}
    assert "edge_media.rtp.playout" in found
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import edge_media.node\n"
        "def f():\n    from edge_media.bridge import live_call\n"
    )
    tree_imports = [
        n.module or n.names[0].name
        for n in _walk(ast.parse(sample.read_text()))
        if isinstance(n, (ast.Import, ast.ImportFrom))
    ]
    assert tree_imports == ["typing", "edge_media.bridge"]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
