"""The HTTP API described once: `Operation` rows, from which the app's routes AND the OpenAPI
document (``GET /openapi.json``) are both made, so the two cannot drift apart.

An operation names its method, path (``{name}`` parameters, as in OpenAPI and starlette), the
handler that serves it, a summary, its query parameters, its request body schema and its
response schema. `openapi_document` turns the rows into an OpenAPI 3.1 document with the
shared schemas, the bearer-token security scheme and the error responses every operation has.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"

Schema = dict[str, Any]


@dataclass(frozen=True)
class Query:
    name: str
    schema: Schema
    description: str
    required: bool = False


@dataclass(frozen=True)
class Operation:
    """One method on one path; see the module docstring."""

    method: str
    path: str
    handler: str
    """The name of the `HttpApi` method that serves it."""
    summary: str
    tag: str
    response: Schema
    status: int = 200
    query: tuple[Query, ...] = ()
    body: dict[str, Schema] = field(default_factory=dict)
    """Request body: media type -> schema (empty: no body)."""
    media_type: str = "application/json"
    """The media type of the success response."""
    public: bool = False
    """Served without the API key (the web page, the login link)."""

    @property
    def operation_id(self) -> str:
        return self.handler

    def path_parameters(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


OBJECT: Schema = {"type": "object", "additionalProperties": True}
JSON_VALUE: Schema = {}
"""Any JSON value."""

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Status": {
        "type": "object",
        "description": "The daemon's status (as `mindoo status --json` shows its live part).",
        "required": ["peer_id", "listen_addrs", "home", "entries", "peers", "databases"],
        "properties": {
            "peer_id": {"type": ["string", "null"]},
            "listen_addrs": {"type": "array", "items": {"type": "string"}},
            "home": {"type": "string"},
            "entries": {"type": "integer"},
            "peers": {"type": "array", "items": ref("Peer")},
            "databases": {"type": "array", "items": ref("DatabaseSync")},
            "forks": {"type": "array", "items": OBJECT},
            "durability": {"type": "array", "items": ref("Durability")},
            "busy": {
                "type": "array",
                "description": "Long background work with its progress (task, doing, done,"
                " total), e.g. the durability count after a start.",
                "items": OBJECT,
            },
            "durability_error": {
                "type": ["string", "null"],
                "description": "Why the last durability count failed (it is retried).",
            },
        },
    },
    "Peer": {
        "type": "object",
        "description": "A peer as the daemon knows it (connected, sessions, errors, ...).",
        "required": ["peer_id", "connected"],
        "properties": {
            "peer_id": {"type": "string"},
            "connected": {"type": "boolean"},
            "keepalive": {"type": ["object", "null"], "additionalProperties": True},
            "dead_path": {"type": ["string", "null"]},
            "databases": {"type": "array", "items": ref("Completion")},
        },
        "additionalProperties": True,
    },
    "Completion": {
        "type": "object",
        "description": "How complete a database is with a peer (`mindoo sync wait`).",
        "properties": {
            "tenant": {"type": "string"},
            "database": {"type": "string"},
            "state": {"type": "string", "description": "syncing, up to date, behind, not synced"},
            "held": {"type": ["integer", "null"]},
            "lacking": {"type": "integer"},
            "peer_lacking": {"type": "integer"},
            "percent": {"type": ["number", "null"]},
            "rate": {"type": ["number", "null"]},
            "eta_s": {"type": ["number", "null"]},
        },
        "additionalProperties": True,
    },
    "Durability": {
        "type": "object",
        "description": "Own entries of a database that no peer or mirror is known to hold.",
        "properties": {
            "tenant": {"type": "string"},
            "tenant_id": {"type": "string"},
            "database": {"type": "string"},
            "only_here": {"type": "integer"},
            "oldest_ms": {"type": ["integer", "null"]},
            "confirmed_by": {"type": ["string", "null"]},
            "confirmed_at_ms": {"type": ["integer", "null"]},
        },
        "additionalProperties": True,
    },
    "ConflictedDocument": {
        "type": "object",
        "required": ["document_id", "fields"],
        "properties": {
            "document_id": {"type": "string"},
            "fields": {"type": "array", "items": {"type": "string"}},
        },
    },
    "DocumentConflicts": {
        "type": "object",
        "required": ["id", "content", "conflicts"],
        "properties": {
            "id": {"type": "string"},
            "content": OBJECT,
            "conflicts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field", "values"],
                    "properties": {
                        "field": {"type": "string"},
                        "path": {"type": "array", "items": {"type": "string"}},
                        "values": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "value": JSON_VALUE,
                                    "entry_id": {"type": "string"},
                                    "author": {"type": "string"},
                                    "author_name": {"type": ["string", "null"]},
                                    "timestamp_ms": {"type": "integer"},
                                    "shown": {"type": "boolean"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "DatabaseSync": {
        "type": "object",
        "required": ["tenant", "tenant_id", "database", "entries", "documents"],
        "properties": {
            "tenant": {"type": "string"},
            "tenant_id": {"type": "string"},
            "database": {"type": "string"},
            "entries": {"type": "integer"},
            "documents": {"type": "integer"},
            "missing": {"type": "integer"},
            "caught_up": {"type": "array", "items": OBJECT},
            "sync": {
                "type": "object",
                "description": "The database's sync state over the connected peers.",
                "additionalProperties": True,
            },
        },
        "additionalProperties": True,
    },
    "Tenant": {
        "type": "object",
        "required": ["id", "name", "admin", "members", "databases"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "admin": {"type": "boolean"},
            "members": {"type": "integer"},
            "databases": {"type": "array", "items": ref("Database")},
        },
    },
    "Database": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "entries": {"type": "integer"},
            "documents": {"type": "integer"},
        },
        "additionalProperties": True,
    },
    "Document": {
        "type": "object",
        "required": ["id", "content"],
        "properties": {"id": {"type": "string"}, "content": OBJECT},
    },
    "Change": {
        "type": "object",
        "required": ["cursor", "entry_id", "document_id", "kind", "author", "timestamp_ms"],
        "properties": {
            "cursor": {"type": "integer"},
            "entry_id": {"type": "string"},
            "document_id": {"type": "string"},
            "kind": {"type": "string"},
            "author": {"type": "string"},
            "timestamp_ms": {"type": "integer"},
        },
    },
    "ChangeFeed": {
        "type": "object",
        "required": ["changes", "next_cursor"],
        "properties": {
            "changes": {"type": "array", "items": ref("Change")},
            "next_cursor": {"type": "integer"},
        },
    },
    "Event": {
        "type": "object",
        "description": "A daemon event (docs/control-protocol.md lists the types).",
        "required": ["type"],
        "properties": {"type": {"type": "string"}},
        "additionalProperties": True,
    },
    "JsonPatch": {
        "type": "array",
        "description": "RFC 6902 operations, applied as one change.",
        "items": {
            "type": "object",
            "required": ["op", "path"],
            "properties": {
                "op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
                "path": {"type": "string"},
                "from": {"type": "string"},
                "value": JSON_VALUE,
            },
        },
    },
    "SetPath": {
        "type": "object",
        "description": "Set the value at a path (map keys and list indexes) in one change.",
        "required": ["path", "value"],
        "properties": {
            "path": {"type": "array", "items": {"type": ["string", "integer"]}, "minItems": 1},
            "value": JSON_VALUE,
        },
    },
}

ERRORS = {
    "400": "The request is malformed (the message says what is wrong).",
    "401": "No API key, or a wrong one.",
    "404": "No such tenant, database or document.",
    "413": "The request body is too large.",
}


def openapi_document(operations: Sequence[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in op.path_parameters()
        ]
        parameters += [
            {
                "name": q.name,
                "in": "query",
                "required": q.required,
                "schema": q.schema,
                "description": q.description,
            }
            for q in op.query
        ]
        responses: dict[str, Any] = {
            str(op.status): {
                "description": "Success.",
                "content": {op.media_type: {"schema": op.response}},
            }
        }
        for code, text in ERRORS.items():
            if op.public and code == "401":
                continue
            responses[code] = {
                "description": text,
                "content": {"application/json": {"schema": ref("Error")}},
            }
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": parameters,
            "responses": responses,
        }
        if op.public:
            entry["security"] = []
        if op.body:
            entry["requestBody"] = {
                "required": True,
                "content": {kind: {"schema": schema} for kind, schema in op.body.items()},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "mindoo node HTTP API",
            "version": API_VERSION,
            "description": (
                "The local HTTP API of a running mindoo daemon, on 127.0.0.1 only. Every"
                " request carries the node's API key (the file http-api-key in the node home)"
                " as 'Authorization: Bearer KEY'."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }
