"""The local HTTP API of a running daemon: the key, documents, the change feed, the event
stream, OpenAPI, metrics, bounded bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import trio
from helpers import copy_tenant
from http_helpers import api_client, http_daemon
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from mindoo_p2p.client import DaemonClient
from mindoo_p2p.daemon import NodeDaemon
from mindoo_p2p.http.api import OPERATIONS, SITE
from mindoo_p2p.http.app import PAGE_ASSETS, build_app
from mindoo_p2p.http.auth import API_KEY_FILE, LoginTokens
from mindoo_p2p.http.request_body import MAX_BODY
from mindoo_p2p.node import Node

NodeFactory = Callable[[str], Node]


def _acme(make_node: NodeFactory) -> Node:
    node = make_node("alice")
    node.create_tenant("acme").create_db("notes")
    return node


async def test_requests_without_or_with_a_wrong_key_are_refused(make_node: NodeFactory) -> None:
    node = _acme(make_node)
    async with http_daemon(node) as daemon:
        key_file = node.home / API_KEY_FILE
        assert key_file.stat().st_mode & 0o777 == 0o600
        for key in ("", "not-the-key", (key_file.read_text().strip()[:-1] + "x")):
            async with api_client(daemon, key=key) as client:
                for path in ("/api/status", "/api/tenants", "/metrics", "/openapi.json"):
                    response = await client.get(path)
                    assert response.status_code == 401, (key, path)
                    assert response.headers["www-authenticate"] == "Bearer"
                    error = response.json()["error"]
                    assert error["type"] == "unauthorized"
                    assert ("wrong API key" in error["message"]) == bool(key)
                response = await client.post(
                    "/api/tenants/acme/databases/notes/documents", json={"content": {"x": 1}}
                )
                assert response.status_code == 401
        assert node.tenant("acme").open_db("notes").list_documents() == []
        async with api_client(daemon) as client:
            assert (await client.get("/api/status")).status_code == 200
            # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host.
            rebound = await client.get("/api/status", headers={"Host": "evil.example:80"})
            assert rebound.status_code == 403
            assert rebound.json()["error"]["type"] == "forbidden_host"
            cross_site = await client.post(
                "/api/sync", headers={"Origin": "http://evil.example"}, content=b""
            )
            assert cross_site.status_code == 403
        # The key survives a restart (scripts keep working).
        first_key = key_file.read_text()
    async with http_daemon(node):
        assert key_file.read_text() == first_key


async def test_documents_created_changed_and_read_through_the_api(
    make_node: NodeFactory,
) -> None:
    node = _acme(make_node)
    async with http_daemon(node) as daemon, api_client(daemon) as client:
        base = "/api/tenants/acme/databases/notes"
        created = await client.post(f"{base}/documents", json={"content": {"title": "t"}})
        assert created.status_code == 201, created.text
        doc = created.json()["id"]
        assert created.json()["content"] == {"title": "t"}

        patch = [
            {"op": "add", "path": "/tags", "value": ["a", "c"]},
            {"op": "add", "path": "/tags/1", "value": "b"},
            {"op": "replace", "path": "/title", "value": "T"},
            {"op": "copy", "from": "/title", "path": "/copy"},
            {"op": "move", "from": "/copy", "path": "/moved"},
        ]
        changed = await client.patch(
            f"{base}/documents/{doc}",
            content=json.dumps(patch),
            headers={"Content-Type": "application/json-patch+json"},
        )
        assert changed.status_code == 200, changed.text
        expected = {"title": "T", "tags": ["a", "b", "c"], "moved": "T"}
        assert changed.json()["content"] == expected
        set_path = await client.patch(
            f"{base}/documents/{doc}", json={"path": ["meta", "stars"], "value": 5}
        )
        assert set_path.json()["content"]["meta"] == {"stars": 5}
        removed = await client.patch(
            f"{base}/documents/{doc}",
            content=json.dumps(
                [
                    {"op": "remove", "path": "/tags/0"},
                    {"op": "add", "path": "/tags/0", "value": "a"},
                ]
            ),
            headers={"Content-Type": "application/json-patch+json"},
        )
        assert removed.json()["content"]["tags"] == ["a", "b", "c"]
        # A failing test op changes nothing.
        failed = await client.patch(
            f"{base}/documents/{doc}",
            content=json.dumps(
                [{"op": "remove", "path": "/tags"}, {"op": "test", "path": "/title", "value": "x"}]
            ),
            headers={"Content-Type": "application/json-patch+json"},
        )
        assert failed.status_code == 422
        assert "does not apply" in failed.json()["error"]["message"]
        read = (await client.get(f"{base}/documents/{doc}")).json()["content"]
        assert read == {**expected, "meta": {"stars": 5}}
        assert node.tenant("acme").open_db("notes").get(doc) == read

        listing = (await client.get(f"{base}/documents")).json()
        assert listing == {"documents": [doc], "total": 1}
        feed = (await client.get(f"{base}/changes", params={"since": 0, "limit": 2})).json()
        assert [c["document_id"] for c in feed["changes"]] == [doc, doc]
        rest = (await client.get(f"{base}/changes", params={"since": feed["next_cursor"]})).json()
        assert len(rest["changes"]) == 2  # create, patch, set path, patch: four changes

        for path, status in [
            ("/api/tenants/nope/databases", 404),
            ("/api/tenants/acme/databases/nope/documents", 404),
            (f"{base}/documents/{'0' * 32}", 404),
            (f"{base}/documents/xyz", 400),
            (f"{base}/changes?limit=0", 400),
            ("/api/nothing-here", 404),
        ]:
            response = await client.get(path)
            assert response.status_code == status, (path, response.text)
            assert response.json()["error"]["message"]

        too_large = await client.post(
            f"{base}/documents",
            content=b"{" + b" " * MAX_BODY + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert too_large.status_code == 413
        bad_json = await client.post(f"{base}/documents", content=b"{nope")
        assert bad_json.status_code == 400
        assert "not valid JSON" in bad_json.json()["error"]["message"]
        assert node.tenant("acme").open_db("notes").list_documents() == [doc]

        made = await client.post("/api/tenants/acme/databases", json={"name": "todo"})
        assert made.status_code == 201
        names = [
            d["name"] for d in (await client.get("/api/tenants/acme/databases")).json()["databases"]
        ]
        assert names == ["notes", "todo"]


async def _read_events(
    lines: AsyncIterator[str], wanted: Callable[[dict[str, object]], bool]
) -> dict[str, object]:
    """The first event of an SSE stream's ``lines`` that is ``wanted``."""
    kind = None
    async for line in lines:
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            event = json.loads(line[len("data: ") :])
            assert event["type"] == kind
            if wanted(event):
                return event
    raise AssertionError("the event stream ended")


async def test_the_event_stream_carries_entries_written_through_the_api(
    make_node: NodeFactory,
) -> None:
    node = _acme(make_node)
    async with http_daemon(node) as daemon, api_client(daemon) as client:
        with trio.fail_after(20):
            async with client.stream("GET", "/api/events", params={"tenant": "acme"}) as events:
                assert events.headers["content-type"].startswith("text/event-stream")
                lines = events.aiter_lines()
                await _read_events(lines, lambda e: e["type"] == "subscribed")
                created = await client.post(
                    "/api/tenants/acme/databases/notes/documents", json={"content": {"a": 1}}
                )
                doc = created.json()["id"]
                event = await _read_events(lines, lambda e: e["type"] == "entry")
        assert event["document_id"] == doc
        assert event["tenant_name"] == "acme" and event["database"] == "notes"
        assert event["origin"] == "local"
        recent = (await client.get("/api/events/recent")).json()["events"]
        assert any(e.get("document_id") == doc for e in recent)


def app_routes(daemon: NodeDaemon) -> list[Route]:
    """The routes of the app the daemon serves (built the same way)."""
    guard = build_app(daemon, "k" * 43, LoginTokens())
    app = guard._app  # type: ignore[attr-defined]  # the Starlette app inside the guard
    return [r for r in app.routes if isinstance(r, Route)]


async def test_openapi_describes_every_route_and_is_valid(make_node: NodeFactory) -> None:
    node = _acme(make_node)
    async with http_daemon(node) as daemon, api_client(daemon) as client:
        spec = (await client.get("/openapi.json")).json()
    validate(spec)
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    served = {
        (method, route.path)
        for route in app_routes(daemon)
        for method in route.methods or ()
        if method != "HEAD" and route.path not in PAGE_ASSETS
    }
    assert described == served
    assert described == {(op.method, op.path) for op in (*OPERATIONS, *SITE)}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and op["operationId"], (method, path)
            public = path in ("/", "/login")
            assert ("401" in op["responses"]) != public, path
            assert (op.get("security") == []) == public, path


async def test_metrics_are_scraped_and_parsed(make_node: NodeFactory) -> None:
    node = _acme(make_node)
    async with http_daemon(node) as daemon, api_client(daemon) as client:
        for _ in range(3):
            await client.post("/api/tenants/acme/databases/notes/documents", json={"content": {}})
        await trio.sleep(0.1)  # let the daemon consume the entry events
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    held = node.store.count()
    assert samples[("mindoo_entries_held", ())] == held
    assert samples[("mindoo_entries_written_total", (("origin", "local"),))] == 3
    assert samples[("mindoo_connected_peers", ())] == 0
    assert ("mindoo_event_loop_lag_seconds_count", ()) in samples


async def test_a_login_link_works_once_and_sets_the_page_cookie(make_node: NodeFactory) -> None:
    node = _acme(make_node)
    async with http_daemon(node) as daemon:
        login = daemon.http_login()
        assert login["base_url"] == daemon.http_url
        async with httpx.AsyncClient(timeout=20) as browser:
            page = await browser.get(login["login_url"], follow_redirects=True)
            assert page.status_code == 200 and "<title>mindoo node" in page.text
            cookie = browser.cookies.get("mindoo_api_key")
            assert cookie is not None
            status = await browser.get(f"{daemon.http_url}/api/status")
            assert status.status_code == 200
            assert status.json()["home"] == str(node.home)
        async with httpx.AsyncClient(timeout=20) as other:
            again = await other.get(login["login_url"])
            assert again.status_code == 401
            assert "mindoo http url" in again.json()["error"]["message"]
            assert (await other.get(f"{daemon.http_url}/api/status")).status_code == 401
        assert "mindoo_api_key" not in login["login_url"] and cookie not in login["login_url"]


async def test_the_event_stream_shows_peers_and_sync_sessions(make_node: NodeFactory) -> None:
    alice, bob = _acme(make_node), make_node("bob")
    bob.join(alice.invite(alice.tenant("acme"), bob.public_identity()))
    alice.tenant("acme").open_db("notes").create_document({"x": 1})
    async with http_daemon(alice) as daemon, api_client(daemon) as client:
        with trio.fail_after(30):
            async with client.stream("GET", "/api/events", params={"tenant": "acme"}) as events:
                lines = events.aiter_lines()
                await _read_events(lines, lambda e: e["type"] == "subscribed")
                async with http_daemon(bob) as other:
                    await other.add_peer(daemon.listen_addrs()[0])
                    joined = await _read_events(lines, lambda e: e["type"] == "peer")
                    assert joined == {"type": "peer", "peer_id": other.peer_id, "connected": True}
                    done = await _read_events(
                        lines, lambda e: e["type"] == "sync" and e["state"] == "done"
                    )
                    assert done["peer_id"] == other.peer_id and done["tenant_name"] == "acme"
                    assert done["sent"] + done["received"] >= 1
                    await daemon.block_peer(other.peer_id)  # alice hangs up on bob
                    left = await _read_events(lines, lambda e: e["type"] == "peer")
                    assert left == {"type": "peer", "peer_id": other.peer_id, "connected": False}


async def test_forget_and_conflicts_through_the_api_and_the_client(
    make_node: NodeFactory,
) -> None:
    """Issue 10's library questions over HTTP: ``db forget`` and the conflicts listing."""
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    notes = tenant.create_db("notes")
    tenant.create_db("scratch")
    doc = notes.create_document({"title": "draft"})
    copy_tenant(alice, bob, tenant)
    notes.update(doc, {"title": "from alice"})
    bob.tenant("acme").open_db("notes").update(doc, {"title": "from bob"})
    copy_tenant(bob, alice, tenant)
    async with http_daemon(alice, control=True) as daemon, api_client(daemon) as client:
        listed = (await client.get("/api/tenants/acme/databases/notes/conflicts")).json()
        assert listed == {"documents": [{"document_id": doc, "fields": ["title"]}]}
        view = await client.get(f"/api/tenants/acme/databases/notes/documents/{doc}/conflicts")
        body = view.json()
        assert body["id"] == doc and body["content"]["title"] in ("from alice", "from bob")
        (conflict,) = body["conflicts"]
        assert conflict["field"] == "title"
        assert {v["value"] for v in conflict["values"]} == {"from alice", "from bob"}
        assert {v["author_name"] for v in conflict["values"]} == {"alice", "bob"}
        assert [v["shown"] for v in conflict["values"]] == [True, False]

        def script() -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
            with DaemonClient.for_home(alice.home) as api:
                found = api.conflicts("acme", "notes")
                one = api.document_conflicts("acme", "notes", doc)
                api.forget_database("acme", "scratch")
                return found, one, [d["name"] for d in api.databases("acme")]

        found, one, names = await trio.to_thread.run_sync(script)
        assert found == listed["documents"] and one == body
        assert names == ["notes"]
        gone = await client.delete("/api/tenants/acme/databases/scratch")
        assert gone.status_code == 404 and "forgotten" in gone.json()["error"]["message"]
        missing = await client.get("/api/tenants/acme/databases/notez/conflicts")
        assert (
            missing.status_code == 404
            and "did you mean 'notes'" in missing.json()["error"]["message"]
        )
    assert not alice.tenant("acme").replicates("scratch")


async def test_a_write_on_a_restored_node_before_its_first_sync_is_a_409(
    make_node: NodeFactory,
) -> None:
    """The restore guard seen through HTTP: its refusal is a conflict with the node's state
    (409, ``restored_not_synced``, the message naming the way out), not a malformed request;
    nothing is written, and the write goes through once the user confirmed the chain head."""
    from mindoo_p2p.crypto.keystore import KdfProfile
    from mindoo_p2p.recovery import export_recovery_kit

    lost = _acme(make_node)
    kit = export_recovery_kit(lost, "kit password 123", KdfProfile.TESTING)
    home = lost.home.parent / "restored"
    lost.close()
    node = Node.restore(home, kit, "kit password 123", "node password 1", kdf=KdfProfile.TESTING)
    try:
        async with http_daemon(node) as daemon, api_client(daemon) as client:
            documents = "/api/tenants/acme/databases/notes/documents"
            refused = await client.post(documents, json={"content": {"title": "early"}})
            assert refused.status_code == 409, refused.text
            error = refused.json()["error"]
            assert error["type"] == "restored_not_synced"
            assert "confirm-head acme" in error["message"]
            assert (await client.get(documents)).json()["documents"] == []
            assert node.confirm_chain_head(node.tenant("acme"))
            created = await client.post(documents, json={"content": {"title": "now"}})
            assert created.status_code == 201, created.text
    finally:
        node.close()
