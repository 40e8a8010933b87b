"""Where view definitions live: shared by a tenant, or private to this node.

- **Shared** definitions are documents of the tenant's database `SHARED_VIEWS_DB`
  (``{"name", "definition" (the JSON text), "updated_ms"}``, under the tenant's default key):
  they sync like any document, so every device of every member sees the same views. When two
  devices define one name concurrently, the latest ``updated_ms`` wins (then the larger
  document id), on every node alike.
- **Local** definitions are private to this node: kept in the keystore (``views`` ->
  tenant id -> name -> definition), encrypted with the node's keys and never derived, so an
  index rebuild cannot lose them. A local view hides a shared one of the same name.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import MindooError, NotFoundError
from .expressions import QueryError
from .query_index import SHARED_VIEWS_DB
from .views import MAX_DEFINITION_BYTES, ViewDefinition, ViewReader

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class LocalDefinitions(Protocol):
    """The keystore, as the catalog uses it."""

    def read(self) -> dict[str, Any]: ...

    def update(self, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]: ...


def validate_view_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise QueryError(
            f"invalid view name {name!r}: use 1-64 characters from letters, digits, '.', '_',"
            " '-', starting with a letter or digit"
        )
    return name


class ViewCatalog:
    """Definitions of a node's views. ``node`` is the `Node` (tenants by name, the index)."""

    def __init__(self, node: Any, local: LocalDefinitions) -> None:
        self._node = node
        self._local = local

    def define(self, tenant: Any, name: str, definition: object, *, local: bool = False) -> str:
        """Validate and store a definition; returns ``"local"`` or ``"shared"``."""
        validate_view_name(name)
        parsed = ViewDefinition.parse(definition)
        for spec in parsed.sources:
            self._node.tenant(spec.tenant)  # NotFoundError names a tenant this node lacks
        if local:
            raw = parsed.raw
            replaced = name in self._local_views(tenant)

            def mutate(contents: dict[str, Any]) -> None:
                views = contents.setdefault("views", {}).setdefault(tenant.id_hex, {})
                views[name] = raw

            self._local.update(mutate)
            if replaced:
                self._forget_facets()
            return "local"
        db = tenant.create_db(SHARED_VIEWS_DB)  # registered: it exists before any peer's copy
        text = json.dumps(parsed.raw, sort_keys=True)
        values = {"name": name, "definition": text, "updated_ms": int(time.time() * 1000)}
        found = self._shared(tenant).get(name)
        if found is None:
            db.create_document(values)
        else:
            db.update(found[0], values)
            self._forget_facets()
        return "shared"

    def remove(self, tenant: Any, name: str) -> str:
        """Remove a local definition, else the shared one (every copy of it)."""
        validate_view_name(name)
        if name in self._local_views(tenant):

            def mutate(contents: dict[str, Any]) -> None:
                contents.get("views", {}).get(tenant.id_hex, {}).pop(name, None)

            self._local.update(mutate)
            self._forget_facets()
            return "local"
        shared = [doc for doc, _def, _ms in self._shared_all(tenant) if _def[0] == name]
        if not shared:
            raise NotFoundError(f"no view {name!r} in tenant {tenant.name!r}")
        db = tenant.open_db(SHARED_VIEWS_DB)
        for doc in shared:
            db.delete(doc)
        self._forget_facets()
        return "shared"

    def _forget_facets(self) -> None:
        """A view was removed or replaced: drop the index's facet tables (and their triggers)
        so that none stays that no view uses; the views still defined rebuild theirs when
        next read."""
        self._node.index.store.drop_facets()

    def definitions(self, tenant: Any) -> list[dict[str, Any]]:
        local = self._local_views(tenant)
        out = [{"name": n, "scope": "local", "definition": d} for n, d in sorted(local.items())]
        shared = self._shared(tenant)
        for name, (_doc, definition) in sorted(shared.items()):
            if name not in local:
                out.append({"name": name, "scope": "shared", "definition": definition})
        for name, problem in sorted(self._broken(tenant).items()):
            if name not in local and name not in shared:
                out.append({"name": name, "scope": "broken", "error": problem})
        return sorted(out, key=lambda v: str(v["name"]))

    def definition(self, tenant: Any, name: str) -> ViewDefinition:
        validate_view_name(name)
        local = self._local_views(tenant)
        if name in local:
            return ViewDefinition.parse(local[name])
        shared = self._shared(tenant).get(name)
        if shared is None:
            raise NotFoundError(f"no view {name!r} in tenant {tenant.name!r}")
        return ViewDefinition.parse(shared[1])

    def reader(self, tenant: Any, name: str) -> ViewReader:
        return ViewReader(
            self._node.index, self.definition(tenant, name), self._node.tenant, self._node
        )

    # -- storage -----------------------------------------------------------------------------
    def _local_views(self, tenant: Any) -> dict[str, Any]:
        found: dict[str, Any] = self._local.read().get("views", {}).get(tenant.id_hex, {})
        return found

    def _shared_all(self, tenant: Any) -> list[tuple[str, tuple[str, Any], int]]:
        return self._shared_documents(tenant)[0]

    def _broken(self, tenant: Any) -> dict[str, str]:
        """name -> why: shared definitions of this tenant that cannot be read."""
        return dict(self._shared_documents(tenant)[1])

    def _shared_documents(
        self, tenant: Any
    ) -> tuple[list[tuple[str, tuple[str, Any], int]], list[tuple[str, str]]]:
        """The shared definitions (document id, (name, definition), updated_ms), and the
        (name, problem) of those that cannot be read. A member writes these documents: one
        that is malformed (not JSON, too large, nested too deeply for the parser) is skipped
        with a warning, never breaking the tenant's other views."""
        if SHARED_VIEWS_DB not in tenant.databases():
            return [], []
        db = tenant.open_db(SHARED_VIEWS_DB)
        out = []
        broken: list[tuple[str, str]] = []
        for doc in db.list_documents():
            name: str | None = None
            try:
                content = db.get(doc)
                name = validate_view_name(content.get("name"))
                text = content.get("definition")
                if not isinstance(text, str):
                    raise QueryError("the definition is not a JSON text")
                if len(text) > MAX_DEFINITION_BYTES:
                    raise QueryError(f"definition larger than {MAX_DEFINITION_BYTES} bytes")
                definition = json.loads(text)
                updated = int(content.get("updated_ms", 0))
            except RecursionError:
                problem = "the definition is nested too deeply"
            except (MindooError, ValueError, TypeError) as exc:
                problem = str(exc) or type(exc).__name__
            else:
                out.append((doc, (name, definition), updated))
                continue
            log.warning("shared view document %s of tenant %s skipped: %s", doc, tenant.name,
                        problem)  # fmt: skip
            if name is not None:
                broken.append((name, problem))
        return out, broken

    def _shared(self, tenant: Any) -> dict[str, tuple[str, Any]]:
        """name -> (document id, definition): the latest definition of each name."""
        best: dict[str, tuple[int, str, Any]] = {}
        for doc, (name, definition), updated in self._shared_all(tenant):
            current = best.get(name)
            if current is None or (updated, doc) > (current[0], current[1]):
                best[name] = (updated, doc, definition)
        return {name: (doc, definition) for name, (_u, doc, definition) in best.items()}
