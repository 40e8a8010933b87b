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
from http_helpers import api_client, http_daemon
from prometheus_client.parser import text_string_to_metric_families

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
        # Issue 10's completion and durability columns: one per database row, one per peer.
        names, sync = cells(dom, "database-name"), cells(dom, "database-sync")
        assert len(sync) == len(cells(dom, "only-here")) == 2
        assert sync[names.index("books")] == "not synced"  # no peer shares globex
        assert len(cells(dom, "peer-sync")) == 1
        assert 'id="problem" hidden' in dom

        # The session shows in the metrics of both sides.
        for side in (daemon, other):
            async with api_client(side) as client:
                scraped = (await client.get("/metrics")).text
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(scraped)
                for s in family.samples
            }
            assert samples[("mindoo_connected_peers", ())] == 1, scraped
            ok = sum(
                value
                for (name, labels), value in samples.items()
                if name == "mindoo_sync_sessions_total" and ("outcome", "ok") in labels
            )
            assert ok >= 1  # one side initiated, the other responded
            assert samples[("mindoo_bytes_total", (("direction", "out"), ("protocol", "sync")))] > 0
            assert samples[("mindoo_recon_round_trips_total", ())] >= 1

        # Without the login link the page loads but shows what to do, and no data.
        refused = await load(daemon.http_url or "", "!document.getElementById('problem').hidden")
        assert cells(refused, "tenant-name") == []
        assert "mindoo http url" in refused
