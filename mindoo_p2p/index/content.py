"""What the query index keeps of a document's content: its JSON body and its full-text text.

Pure functions of the materialized content (`Database.get`'s plain Python form), shared by the
follower and the build workers (`build_workers`) so that both write byte-identical rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .expressions import JsonPath


def _json_default(value: object) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return str(value)


def body_json(content: dict[str, Any]) -> str:
    """The ``docs.body`` of a document: its content as compact JSON, keys sorted; bytes as
    hex, other non-JSON values (timestamps) as their ``str``."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), default=_json_default)


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)


def pick(body: Any, path: JsonPath) -> Any:
    """The value at ``path`` in a document's content (None when absent)."""
    value: Any = body
    for part in path.text.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def searchable_text(body: Any, fields: Sequence[JsonPath] | None) -> str:
    """What the full-text index holds of a document: its string values (all of them, or those
    under the chosen ``fields``), one per line."""
    words: list[str] = []
    if fields is None:
        _strings(body, words)
    else:
        for path in fields:
            _strings(pick(body, path), words)
    return "\n".join(words)
