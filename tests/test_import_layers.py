"""Rules of the code's shape that no linter checks, read from the source of every module.

- No import cycle between node, tenant, database and recovery, not even at type level.
- One rule for private modules, in every package: a module whose name starts with ``_`` belongs
  to its package; only modules of that package import it (tests may, for the package they
  test). A package's public surface is its ``__init__`` and its modules without the underscore.

Every import statement of the package is read from the source (module level, inside
functions and under ``if TYPE_CHECKING:`` alike), so a cycle hidden from the interpreter by a
lazy or type-only import is still found.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mindoo_p2p
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.node import Node

PACKAGE = Path(mindoo_p2p.__file__).parent
LAYERED = (
    "mindoo_p2p.node",
    "mindoo_p2p.tenant",
    "mindoo_p2p.tenant_access",
    "mindoo_p2p.tenant_keys",
    "mindoo_p2p.tenant_secrets",
    "mindoo_p2p.tenant_collaborators",
    "mindoo_p2p.database",
    "mindoo_p2p.recovery",
    "mindoo_p2p.admission",
    "mindoo_p2p.membership",
    "mindoo_p2p.membership_records",
)


def module_name(path: Path) -> str:
    parts = ["mindoo_p2p", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports anywhere in its source (an imported name that is a
    submodule counts as that submodule; subpackages count with their ``__init__``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = (
                (f"{base}.{node.module}" if node.level and node.module else base)
                if node.level
                else (node.module or "")
            )
            targets = [source, *(f"{source}.{alias.name}" for alias in node.names)]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != "mindoo_p2p" and target != name:
                found.add(target)
                parent = target.rpartition(".")[0]
                while parent and parent != "mindoo_p2p":  # a submodule runs its package
                    if parent != name:
                        found.add(parent)
                    parent = parent.rpartition(".")[0]
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start in ``graph``, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        current, path = stack.pop()
        for nxt in sorted(graph.get(current, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_the_import_graph_is_read_from_every_kind_of_import() -> None:
    graph = import_graph()
    assert "mindoo_p2p.tenant" in graph["mindoo_p2p.node"]
    assert "mindoo_p2p.database" in graph["mindoo_p2p.tenant"]
    assert "mindoo_p2p.store" in graph["mindoo_p2p.database"]  # a package, via its submodule


def test_no_cycle_through_node_tenant_database_recovery() -> None:
    graph = import_graph()
    cycles = {name: cycle_through(graph, name) for name in LAYERED}
    assert {name: cycle for name, cycle in cycles.items() if cycle} == {}


def test_tenant_database_and_recovery_never_name_the_node() -> None:
    graph = import_graph()
    for name in LAYERED:
        if name != "mindoo_p2p.node":
            assert "mindoo_p2p.node" not in graph[name], name
    assert "mindoo_p2p.tenant" not in graph["mindoo_p2p.database"]
    assert "mindoo_p2p.tenant" not in graph["mindoo_p2p.recovery"]


def test_a_tenant_holds_narrow_collaborators_not_the_node(tmp_path: Path) -> None:
    with Node.init(tmp_path / "home", "a test password", name="n", kdf=KdfProfile.TESTING) as node:
        tenant = node.create_tenant("acme")
        parts = [tenant, tenant.access, tenant.keys, tenant.create_db("notes")]
        held = [value for part in parts for value in vars(part).values()]
        assert not any(isinstance(value, Node) for value in held)
        assert tenant.writer is node.writer and tenant.store is node.store


def private_owner(name: str) -> str | None:
    """The package that owns ``name`` when ``name`` is (inside) a private module, else None."""
    parts = name.split(".")
    for index, part in enumerate(parts):
        if index and part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:index])
    return None


def test_private_modules_are_imported_only_inside_their_package() -> None:
    graph = import_graph()
    violations = sorted(
        f"{importer} imports {target}"
        for importer, targets in graph.items()
        for target in targets
        if (owner := private_owner(target)) is not None
        and not (importer + ".").startswith(owner + ".")
    )
    assert violations == []


def test_the_private_module_rule_sees_a_violation() -> None:
    assert private_owner("mindoo_p2p.store._batch") == "mindoo_p2p.store"
    assert private_owner("mindoo_p2p.store.entry_store") is None
    assert private_owner("mindoo_p2p.__init__") is None
