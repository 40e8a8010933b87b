"""A Python client for a running daemon, so scripts work without opening the store (no
password, no second writer): status, peers, tenants, databases, documents, the change feed
and the event stream.

    from mindoo_p2p.client import DaemonClient

    with DaemonClient.for_home("~/.local/share/mindoo") as daemon:
        doc = daemon.create_document("acme", "notes", {"title": "hello"})
        daemon.set_path("acme", "notes", doc, ["tags"], ["x"])
        for event in daemon.watch(tenant="acme"):
            print(event)

`DaemonClient.for_home` finds the daemon through the home's control socket (its file mode is
the authentication: only the owner can ask) and reads the HTTP API key from the home; requests
then go to the local HTTP API (docs/control-protocol.md and ``/openapi.json`` describe both).
`DaemonClient(base_url, api_key)` talks to a known address with a known key. Errors are
`ClientError` with the daemon's message and the HTTP status (``status``; 0 when the daemon
could not be reached).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from .control import ControlClient, ControlError, control_socket
from .errors import MindooError
from .http.auth import load_or_create_api_key

DEFAULT_TIMEOUT = 60.0


class ClientError(MindooError):
    """A request the daemon refused or could not answer."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class DaemonClient:
    """A blocking client of one daemon's HTTP API; see the module docstring."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        home: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.home = home
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )

    @classmethod
    def for_home(cls, home: Path | str, *, timeout: float = DEFAULT_TIMEOUT) -> DaemonClient:
        """The client of the daemon running on ``home``; ClientError when none runs or its
        HTTP API is off."""
        home = Path(home).expanduser()
        try:
            info = ControlClient(control_socket(home), timeout=10).call("http.info")
        except ControlError as exc:
            raise ClientError(f"no daemon answers on {home}: {exc}") from None
        if not isinstance(info, dict) or not isinstance(info.get("base_url"), str):
            raise ClientError(f"the daemon on {home} did not say where its HTTP API is")
        return cls(info["base_url"], load_or_create_api_key(home), home=home, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **options: Any) -> Any:
        try:
            response = self._http.request(method, path, **options)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the daemon at {self.base_url}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            message = error.get("message") or f"HTTP {response.status_code}"
            raise ClientError(str(message), response.status_code)
        return body

    @staticmethod
    def _db_path(tenant: str, database: str) -> str:
        return f"/api/tenants/{_segment(tenant)}/databases/{_segment(database)}"

    # -- node ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The daemon's status: peer id, addresses, entries, peers, per-database sync state."""
        result: dict[str, Any] = self._request("GET", "/api/status")
        return result

    def peers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/api/peers")["peers"]
        return result

    def add_peer(self, addr: str) -> dict[str, Any]:
        """Remember ``addr`` (a multiaddr ending in /p2p/PEER_ID) and connect to it."""
        result: dict[str, Any] = self._request("POST", "/api/peers", json={"addr": addr})
        return result

    def sync_now(self) -> int:
        """Run a session with every connected peer now; how many were woken."""
        return int(self._request("POST", "/api/sync")["woken"])

    # -- tenants and databases -----------------------------------------------------------------
    def tenants(self) -> list[dict[str, Any]]:
        """Tenants held here, each with its databases and their counts."""
        result: list[dict[str, Any]] = self._request("GET", "/api/tenants")["tenants"]
        return result

    def databases(self, tenant: str) -> list[dict[str, Any]]:
        path = f"/api/tenants/{_segment(tenant)}/databases"
        result: list[dict[str, Any]] = self._request("GET", path)["databases"]
        return result

    def create_database(self, tenant: str, name: str) -> dict[str, Any]:
        path = f"/api/tenants/{_segment(tenant)}/databases"
        result: dict[str, Any] = self._request("POST", path, json={"name": name})
        return result

    def forget_database(self, tenant: str, name: str) -> None:
        """Stop holding database ``name`` here (`Tenant.forget_db`; its entries stay)."""
        self._request("DELETE", self._db_path(tenant, name))

    def conflicts(self, tenant: str, database: str) -> list[dict[str, Any]]:
        """Documents with unresolved conflicts: ``{"document_id", "fields"}`` each."""
        path = f"{self._db_path(tenant, database)}/conflicts"
        result: list[dict[str, Any]] = self._request("GET", path)["documents"]
        return result

    def document_conflicts(self, tenant: str, database: str, document: str) -> dict[str, Any]:
        """A document's ``content`` and ``conflicts`` (each field's competing values)."""
        path = f"{self._db_path(tenant, database)}/documents/{_segment(document)}/conflicts"
        result: dict[str, Any] = self._request("GET", path)
        return result

    # -- documents -------------------------------------------------------------------------------
    def documents(self, tenant: str, database: str, *, limit: int = 10_000) -> list[str]:
        """Ids of the database's documents, in order of first arrival."""
        path = f"{self._db_path(tenant, database)}/documents"
        result: list[str] = self._request("GET", path, params={"limit": limit})["documents"]
        return result

    def get(self, tenant: str, database: str, document: str) -> dict[str, Any]:
        """A document's current content."""
        path = f"{self._db_path(tenant, database)}/documents/{_segment(document)}"
        result: dict[str, Any] = self._request("GET", path)["content"]
        return result

    def create_document(
        self, tenant: str, database: str, content: dict[str, Any] | None = None
    ) -> str:
        """Create a document; its id."""
        path = f"{self._db_path(tenant, database)}/documents"
        return str(self._request("POST", path, json={"content": content or {}})["id"])

    def patch(
        self, tenant: str, database: str, document: str, ops: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply a JSON Patch (RFC 6902) as one change; the new content."""
        path = f"{self._db_path(tenant, database)}/documents/{_segment(document)}"
        result: dict[str, Any] = self._request(
            "PATCH",
            path,
            content=json.dumps(list(ops)),
            headers={"Content-Type": "application/json-patch+json"},
        )["content"]
        return result

    def set_path(
        self, tenant: str, database: str, document: str, path: Sequence[str | int], value: Any
    ) -> dict[str, Any]:
        """Set the value at ``path`` in one change; the new content."""
        url = f"{self._db_path(tenant, database)}/documents/{_segment(document)}"
        body = {"path": list(path), "value": value}
        result: dict[str, Any] = self._request("PATCH", url, json=body)["content"]
        return result

    def delete(self, tenant: str, database: str, document: str) -> None:
        path = f"{self._db_path(tenant, database)}/documents/{_segment(document)}"
        self._request("DELETE", path)

    def changes(
        self, tenant: str, database: str, since: int = 0, limit: int = 1000
    ) -> tuple[list[dict[str, Any]], int]:
        """Entries that arrived after cursor ``since``, oldest first, and the next cursor."""
        path = f"{self._db_path(tenant, database)}/changes"
        feed = self._request("GET", path, params={"since": since, "limit": limit})
        return feed["changes"], int(feed["next_cursor"])

    # -- events ----------------------------------------------------------------------------------
    def watch(
        self, *, tenant: str | None = None, database: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The daemon's events as they happen (entries, peers, sync, rejections), until the
        daemon goes away (then ClientError) or the caller stops iterating."""
        params = {k: v for k, v in (("tenant", tenant), ("database", database)) if v}
        try:
            with self._http.stream("GET", "/api/events", params=params, timeout=None) as stream:
                if stream.status_code != 200:
                    stream.read()
                    raise ClientError(
                        f"cannot watch: HTTP {stream.status_code}", stream.status_code
                    )
                for line in stream.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = json.loads(line[len("data: ") :])
                    if event.get("type") == "subscribed":
                        continue
                    yield event
                    if event.get("type") == "lagged":
                        raise ClientError("the daemon dropped this watcher: it fell behind")
        except httpx.HTTPError as exc:
            raise ClientError(f"lost the daemon at {self.base_url}: {exc}") from None
        raise ClientError(f"the daemon at {self.base_url} went away")


def _segment(value: str) -> str:
    """``value`` as one URL path segment (names may hold characters URLs reserve)."""
    from urllib.parse import quote

    return quote(value, safe="")
