"""JSON Patch (RFC 6902) applied to a document as one Automerge change.

The patch is first checked on a plain copy of the document with the ``jsonpatch`` library
(every op, ``test`` included, with the RFC's error rules): a patch that fails there changes
nothing. Then each op is carried out on the live document inside one `Database.change` block,
as the CRDT operation it means, so concurrent edits elsewhere in the document merge as usual:
``add`` on a list inserts (``-`` appends), ``remove`` deletes the key or item, ``replace`` sets,
``move`` and ``copy`` take their value from the plain copy as it is at that op. ``test`` writes
nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import jsonpatch
import jsonpointer

from ..crdt.proxies import ListProxy, MapProxy
from ..database import Database
from ..errors import MindooError

MAX_PATCH_OPS = 1000


class JsonPatchError(MindooError, ValueError):
    """A JSON Patch that is malformed or does not apply to the document."""


def apply_json_patch(db: Database, document_id: str, ops: Sequence[Any]) -> dict[str, Any]:
    """Apply ``ops`` to the document as one change; its new content. `JsonPatchError` (and no
    change) when the patch is malformed or does not apply."""
    if not isinstance(ops, list) or not ops:
        raise JsonPatchError("a JSON Patch is a non-empty list of operations")
    if len(ops) > MAX_PATCH_OPS:
        raise JsonPatchError(f"a JSON Patch may hold at most {MAX_PATCH_OPS} operations")
    plain = db.get(document_id)
    steps: list[tuple[dict[str, Any], Any]] = []
    state = copy.deepcopy(plain)
    try:
        for op in ops:
            if not isinstance(op, dict):
                raise JsonPatchError("each JSON Patch operation is an object")
            source = None
            if op.get("op") in ("move", "copy"):
                source = copy.deepcopy(jsonpointer.resolve_pointer(state, op.get("from", "")))
            state = jsonpatch.JsonPatch([op]).apply(state)
            steps.append((op, source))
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise JsonPatchError(f"the patch does not apply: {exc}") from None
    except (KeyError, TypeError, IndexError) as exc:
        raise JsonPatchError(f"the patch does not apply: {exc}") from None
    if all(op["op"] == "test" for op, _ in steps):
        return state
    with db.change(document_id) as root:
        for op, source in steps:
            _carry_out(root, op, source)
    return db.get(document_id)


def _parts(pointer: str) -> list[str]:
    return list(jsonpointer.JsonPointer(pointer).parts)


def _parent(root: MapProxy, parts: list[str]) -> Any:
    target: Any = root
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, ListProxy) else target[part]
    return target


def _put(root: MapProxy, pointer: str, value: Any, *, insert: bool) -> None:
    parts = _parts(pointer)
    if not parts:
        raise JsonPatchError("replacing the whole document is not supported: patch its fields")
    parent, last = _parent(root, parts), parts[-1]
    if isinstance(parent, ListProxy):
        if last == "-":
            parent.append(value)
        elif insert:
            parent.insert(int(last), value)
        else:
            parent[int(last)] = value
    else:
        parent[last] = value


def _remove(root: MapProxy, pointer: str) -> None:
    parts = _parts(pointer)
    if not parts:
        raise JsonPatchError("removing the whole document is not supported: delete it")
    parent, last = _parent(root, parts), parts[-1]
    if isinstance(parent, ListProxy):
        del parent[int(last)]
    else:
        del parent[last]


def _carry_out(root: MapProxy, op: dict[str, Any], source: Any) -> None:
    kind, path = op["op"], op["path"]
    if kind == "add":
        _put(root, path, op["value"], insert=True)
    elif kind == "replace":
        _put(root, path, op["value"], insert=False)
    elif kind == "remove":
        _remove(root, path)
    elif kind == "move":
        _remove(root, op["from"])
        _put(root, path, source, insert=True)
    elif kind == "copy":
        _put(root, path, source, insert=True)
