"""The web page, loaded in headless Chromium as a person would open it: the one-time login
link from ``mindoo http url`` sets the cookie, the page's JS reads the API, and the DOM then
shows the tenants, databases and peers."""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable

import pytest
import trio
from chromium import CHROMIUM, page_html
from helpers import eventually
from http_helpers import http_daemon

from mindoo_p2p.node import Node

READY = (
    "document.body.dataset.ready === 'true' && document.getElementById('stream').textContent"
    " === 'event stream: live'"
)


async def load(url: str, ready: str) -> str:
    """The page's HTML once ``ready`` holds, from Chromium in a thread (the daemon serves on
    this loop meanwhile)."""
    return await trio.to_thread.run_sync(functools.partial(page_html, url, ready))


def cells(dom: str, css_class: str) -> list[str]:
    """The text of every ``<td class="... css_class ...">`` in ``dom``."""
    pattern = rf'<td class="[^"]*\b{re.escape(css_class)}\b[^"]*">([^<]*)</td>'
    return [html.unescape(text) for text in re.findall(pattern, dom)]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (scripts/_venv.sh does)")
async def test_the_web_page_shows_tenants_databases_and_peers(
    make_node: Callable[[str], Node],
) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    tenant.create_db("notes").create_document({"x": 1})
    alice.create_tenant("globex").create_db("books")
    bob.join(alice.invite(tenant, bob.public_identity()))
    async with http_daemon(alice) as daemon, http_daemon(bob) as other:
        await daemon.add_peer(other.listen_addrs()[0])
        await eventually(lambda: daemon.peers[other.peer_id].last_session is not None)

        dom = await load(daemon.http_login()["login_url"], READY)
        assert sorted(set(cells(dom, "tenant-name"))) == ["acme", "globex"]
        assert sorted(cells(dom, "database-name")) == ["books", "notes"]
        assert cells(dom, "peer-id") == [other.peer_id]
        assert cells(dom, "peer-state") == ["connected"]
        assert 'id="problem" hidden' in dom

        # Without the login link the page loads but shows what to do, and no data.
        refused = await load(daemon.http_url or "", "!document.getElementById('problem').hidden")
        assert cells(refused, "tenant-name") == []
        assert "mindoo http url" in refused
