"""The journey of issue 10 driven through the HTTP API alone: a laptop, a phone and a keyless
mirror on loopback; the laptop and the phone are never online together, edits are made offline,
and everything converges through the mirror. (The nodes and the tenant are set up with the
library first: enrolment is not an HTTP operation.)"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio
from http_helpers import api_client, http_daemon

from mindoo_p2p.node import Node

NOTES = "/api/tenants/acme/databases/notes"


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    """Poll ``check`` until it returns something truthy (bounded); that value."""
    with trio.fail_after(timeout):
        while True:
            found = await check()
            if found:
                return found
            await trio.sleep(0.05)


async def content(client: httpx.AsyncClient, doc: str) -> dict[str, Any] | None:
    response = await client.get(f"{NOTES}/documents/{doc}")
    return response.json()["content"] if response.status_code == 200 else None


async def connect(client: httpx.AsyncClient, to: httpx.AsyncClient) -> None:
    """``client``'s node dials ``to``'s node, at the address ``to``'s status tells."""
    addr = (await to.get("/api/status")).json()["listen_addrs"][0]
    added = (await client.post("/api/peers", json={"addr": addr})).json()
    assert added["connected"], added


async def test_laptop_phone_and_mirror_converge_through_the_http_api(
    make_node: Callable[[str], Node],
) -> None:
    laptop, phone, mirror = make_node("laptop"), make_node("phone"), make_node("mirror")
    tenant = laptop.create_tenant("acme")
    tenant.create_db("notes")
    phone.join(laptop.invite(tenant, phone.public_identity()))
    mirror.join(laptop.invite(tenant, mirror.public_identity(), role="mirror"))

    async with http_daemon(mirror) as mirror_daemon, api_client(mirror_daemon) as m:
        async with http_daemon(laptop) as laptop_daemon, api_client(laptop_daemon) as lap:
            created = await lap.post(f"{NOTES}/documents", json={"content": {"title": "plan"}})
            doc = created.json()["id"]
            await connect(lap, m)

            async def mirror_holds() -> bool:
                listing = await m.get(f"{NOTES}/documents")
                return listing.status_code == 200 and doc in listing.json()["documents"]

            await until(mirror_holds)
            # The mirror stores the ciphertext but holds no key to read it.
            refused = await m.get(f"{NOTES}/documents/{doc}")
            assert refused.status_code == 403
            assert refused.json()["error"]["type"] == "missing_key"
        # The laptop is offline now. The phone comes online and reads through the mirror.
        async with http_daemon(phone) as phone_daemon, api_client(phone_daemon) as ph:
            await connect(ph, m)
            assert await until(lambda: content(ph, doc)) == {"title": "plan"}
            reply = await ph.patch(
                f"{NOTES}/documents/{doc}",
                content=json.dumps([{"op": "add", "path": "/reply", "value": "from phone"}]),
                headers={"Content-Type": "application/json-patch+json"},
            )
            assert reply.status_code == 200

            async def mirror_has_reply() -> bool:
                return len((await m.get(f"{NOTES}/changes")).json()["changes"]) == 2

            await until(mirror_has_reply)
        # The phone is gone; the laptop edits offline, then comes back.
        async with http_daemon(laptop) as laptop_daemon, api_client(laptop_daemon) as lap:
            offline = await lap.patch(
                f"{NOTES}/documents/{doc}", json={"path": ["title"], "value": "plan v2"}
            )
            assert offline.json()["content"] == {"title": "plan v2"}
            await connect(lap, m)
            merged = {"title": "plan v2", "reply": "from phone"}

            async def laptop_merged() -> bool:
                return await content(lap, doc) == merged

            await until(laptop_merged)
            status = (await lap.get("/api/status")).json()
            notes = next(d for d in status["databases"] if d["database"] == "notes")
            assert notes["entries"] == 3 and notes["documents"] == 1
            peers = (await lap.get("/api/peers")).json()["peers"]
            assert [p["peer_id"] for p in peers if p["connected"]] == [mirror_daemon.peer_id]
        # The phone, back once more, gets the laptop's offline edit from the mirror.
        async with http_daemon(phone) as phone_daemon, api_client(phone_daemon) as ph:
            await connect(ph, m)

            async def phone_merged() -> bool:
                return await content(ph, doc) == merged

            await until(phone_merged)
        feed = (await m.get(f"{NOTES}/changes")).json()["changes"]
        assert [c["document_id"] for c in feed] == [doc, doc, doc]
