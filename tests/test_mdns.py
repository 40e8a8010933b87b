"""mDNS discovery: announcement validation (no network) and discovery in a private netns.

Multicast must never leave this machine. The discovery test re-executes this file under
``unshare --net`` in a fresh network namespace that holds nothing but loopback; the child
refuses to start (exit code `_NOT_ISOLATED`) unless ``lo`` is its only interface, and binds
every `MdnsDiscovery` to 127.0.0.1. Without root or ``unshare``/``ip`` the test is skipped;
it never falls back to a real interface.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from mindoo_p2p.errors import DecodeError
from mindoo_p2p.net.mdns import (
    MAX_ADDRS,
    MAX_PENDING_NAMES,
    MAX_TXT_BYTES,
    SERVICE_TYPE,
    MdnsDiscovery,
    MdnsError,
    announced_addrs,
    encode_txt,
    instance_peer_id,
    parse_announcement,
    parse_interfaces,
    split_txt,
)
from mindoo_p2p.net.peer_identity import peer_id_of

PEER_A = peer_id_of(b"a" * 32)
PEER_B = peer_id_of(b"b" * 32)
PEER_C = peer_id_of(b"c" * 32)
PEER_D = peer_id_of(b"d" * 32)
PEER_E = peer_id_of(b"e" * 32)
LOOPBACK = parse_interfaces(["127.0.0.1"])
_NOT_ISOLATED = 3
_CHILD_TIMEOUT_S = 60


def instance(peer_id: str) -> str:
    return f"{peer_id}.{SERVICE_TYPE}"


def txt(*strings: bytes) -> bytes:
    return b"".join(bytes([len(s)]) + s for s in strings)


def addr(peer_id: str, port: int = 4001, host: str = "/ip4/127.0.0.1") -> str:
    return f"{host}/tcp/{port}/p2p/{peer_id}"


# -- announcements we send -------------------------------------------------------------------


def test_announced_addrs_keep_only_chosen_interfaces_and_expand_wildcards() -> None:
    interfaces = parse_interfaces(["192.0.2.7", "127.0.0.1", "2001:db8::5"])
    listen = [
        f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER_A}",
        "/ip4/0.0.0.0/tcp/4002",
        "/ip4/198.51.100.9/tcp/4003",  # not a chosen interface
        "/ip6/::/tcp/4004",
        "/ip4/127.0.0.1/tcp/4001",  # duplicate once /p2p/ is added
    ]
    assert announced_addrs(PEER_A, listen, interfaces) == (
        addr(PEER_A, 4001),
        addr(PEER_A, 4002, "/ip4/192.0.2.7"),
        addr(PEER_A, 4002),
        addr(PEER_A, 4004, "/ip6/2001:db8::5"),
    )


def test_announced_addrs_refuse_another_peers_suffix_and_bound_the_count() -> None:
    with pytest.raises(MdnsError):
        announced_addrs(PEER_A, [addr(PEER_B)], LOOPBACK)
    with pytest.raises(MdnsError):
        announced_addrs(PEER_A, ["not a multiaddr"], LOOPBACK)
    many = [f"/ip4/127.0.0.1/tcp/{port}" for port in range(5000, 5020)]
    assert len(announced_addrs(PEER_A, many, LOOPBACK)) == MAX_ADDRS


@pytest.mark.parametrize(
    "interfaces",
    [[], "127.0.0.1", ["eth0"], ["0.0.0.0"], ["::"], ["224.0.0.251"], ["127.0.0.1", "x"]],
)
def test_interfaces_must_be_explicit_unicast_addresses(interfaces: Any) -> None:
    with pytest.raises(MdnsError):
        parse_interfaces(interfaces)


def test_interfaces_are_deduplicated_in_order() -> None:
    assert [str(ip) for ip in parse_interfaces(["127.0.0.1", "::1", "127.0.0.1"])] == [
        "127.0.0.1",
        "::1",
    ]


def test_constructor_validates_without_touching_the_network() -> None:
    with pytest.raises(MdnsError):
        MdnsDiscovery("not-a-peer-id", [], ["127.0.0.1"], lambda p, a: None)
    with pytest.raises(MdnsError):
        MdnsDiscovery(PEER_A, [], [], lambda p, a: None)
    with pytest.raises(MdnsError):
        MdnsDiscovery(PEER_A, [], ["127.0.0.1"], lambda p, a: None, service="no-type")
    discovery = MdnsDiscovery(PEER_A, ["/ip4/0.0.0.0/tcp/4001"], ["127.0.0.1"], print)
    assert discovery.addrs == (addr(PEER_A),)


def test_encoded_txt_round_trips_through_the_parser() -> None:
    addrs = [addr(PEER_A, 4001), addr(PEER_A, 4002, "/ip6/2001:db8::1")]
    peer = parse_announcement(instance(PEER_A), encode_txt(addrs))
    assert peer.peer_id == PEER_A
    assert list(peer.addrs) == addrs


def test_an_address_too_long_for_a_txt_string_is_refused() -> None:
    with pytest.raises(MdnsError):
        encode_txt(["/ip4/127.0.0.1/tcp/1/p2p/" + "x" * 250])


# -- announcements we receive (hostile) ------------------------------------------------------


def test_unknown_keys_and_duplicate_addresses_are_tolerated() -> None:
    good = b"addr=" + addr(PEER_B).encode()
    record = txt(b"hello=world", b"flag", addr(PEER_B).encode(), good, b"v=1", good)
    assert parse_announcement(instance(PEER_B), record).addrs == (addr(PEER_B),)


@pytest.mark.parametrize(
    ("name", "record", "why"),
    [
        (instance(PEER_B), txt(b"addr=" + addr(PEER_C).encode(), b"v=1"), "another peer"),
        ("not-a-peer." + SERVICE_TYPE, txt(b"v=1", b"addr=" + addr(PEER_B).encode()), "label"),
        (instance(PEER_B).lower(), txt(b"v=1", b"addr=" + addr(PEER_B).encode()), "case"),
        (f"{PEER_B}._other._tcp.local.", txt(b"v=1", b"addr=" + addr(PEER_B).encode()), "svc"),
        (instance(PEER_B), txt(b"addr=" + addr(PEER_B).encode()), "no version"),
        (instance(PEER_B), txt(b"v=2", b"addr=" + addr(PEER_B).encode()), "wrong version"),
        (instance(PEER_B), txt(b"v=1"), "no address"),
        (instance(PEER_B), txt(b"v=1", b"addr="), "empty address"),
        (instance(PEER_B), txt(b"v=1", b"addr=garbage"), "garbage address"),
        (instance(PEER_B), txt(b"v=1", b"addr=\xff\xfe"), "not ascii"),
        (
            instance(PEER_B),
            txt(b"v=1", b"addr=" + addr(PEER_B, host="/dns4/evil.example").encode()),
            "dns",
        ),
        (
            instance(PEER_B),
            txt(b"v=1", b"addr=" + addr(PEER_B, host="/ip4/0.0.0.0").encode()),
            "wildcard",
        ),
        (
            instance(PEER_B),
            txt(b"v=1", b"addr=" + addr(PEER_B, host="/ip4/224.0.0.251").encode()),
            "multicast",
        ),
        (instance(PEER_B), txt(b"v=1", b"addr=/ip4/127.0.0.1/tcp/1"), "no /p2p/"),
        (instance(PEER_B), txt(b"v=1", b"addr=" + addr(PEER_B, port=0).encode()), "port 0"),
        (instance(PEER_B), txt(b"v=1") + b"\x10abc", "truncated string"),
    ],
)
def test_bad_announcements_are_rejected_whole(name: str, record: bytes, why: str) -> None:
    with pytest.raises(DecodeError):
        parse_announcement(name, record)


def test_oversized_and_overfull_records_are_rejected() -> None:
    good = b"addr=" + addr(PEER_B).encode()
    with pytest.raises(DecodeError, match="at most"):
        parse_announcement(instance(PEER_B), txt(b"v=1", *[good] * (MAX_ADDRS + 1)))
    padding = [b"p" * 255] * (MAX_TXT_BYTES // 256 + 1)
    with pytest.raises(DecodeError, match="bytes"):
        parse_announcement(instance(PEER_B), txt(b"v=1", good, *padding))
    with pytest.raises(DecodeError):
        instance_peer_id("x" * 10_000 + "." + SERVICE_TYPE)


def test_split_txt_skips_empty_strings() -> None:
    assert split_txt(b"\x00") == []
    assert split_txt(b"\x01a\x00\x02bc") == [b"a", b"bc"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_TXT_BYTES + 64))
def test_garbage_txt_only_ever_raises_decode_error(record: bytes) -> None:
    try:
        peer = parse_announcement(instance(PEER_B), record)
    except DecodeError:
        return
    assert peer.peer_id == PEER_B and all(a.endswith(f"/p2p/{PEER_B}") for a in peer.addrs)


# -- the trio side, fed by hand (no zeroconf) ------------------------------------------------


async def test_reports_once_per_change_and_never_ourselves_nor_a_spoofed_record() -> None:
    reports: list[tuple[str, list[str]]] = []
    discovery = MdnsDiscovery(
        PEER_A, [addr(PEER_A)], ["127.0.0.1"], lambda p, a: reports.append((p, a))
    )
    first = encode_txt([addr(PEER_B)])
    discovery._accept(instance(PEER_B), first)
    discovery._accept(instance(PEER_B), first)  # unchanged: not reported again
    discovery._accept(instance(PEER_A), encode_txt([addr(PEER_A)]))  # ourselves
    discovery._accept(instance(PEER_C), encode_txt([addr(PEER_B)]))  # spoofed
    discovery._accept(instance(PEER_B), encode_txt([addr(PEER_B, 4009)]))  # changed
    assert reports == [(PEER_B, [addr(PEER_B)]), (PEER_B, [addr(PEER_B, 4009)])]


async def test_pending_names_are_bounded_and_deduplicated() -> None:
    from zeroconf import ServiceStateChange

    discovery = MdnsDiscovery(PEER_A, [addr(PEER_A)], ["127.0.0.1"], lambda p, a: None)
    send, receive = trio.open_memory_channel[str](MAX_PENDING_NAMES)
    discovery._send = send
    for i in range(MAX_PENDING_NAMES * 3):
        discovery._on_state_change(f"n{i % (MAX_PENDING_NAMES * 2)}.x", ServiceStateChange.Added)
    discovery._on_state_change("n0.x", ServiceStateChange.Updated)
    assert receive.statistics().current_buffer_used == MAX_PENDING_NAMES
    assert discovery._dropped  # so the browser will be rebuilt and report them again
    names = [receive.receive_nowait() for _ in range(MAX_PENDING_NAMES)]
    assert names == [f"n{i}.x" for i in range(MAX_PENDING_NAMES)]


# -- real discovery, in a network namespace holding only loopback ----------------------------


def _namespace_unavailable() -> str | None:
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux/iproute2) is not installed"
    probe = subprocess.run(
        ["unshare", "--net", "--", "ip", "link", "set", "lo", "up"],
        capture_output=True,
        timeout=10,
        check=False,
    )
    if probe.returncode != 0:
        return f"unshare --net failed: {probe.stderr.decode(errors='replace').strip()}"
    return None


def test_without_root_or_tools_the_namespace_test_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform != "linux":
        pytest.skip("Linux only")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "root" in (_namespace_unavailable() or "")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    assert "not installed" in (_namespace_unavailable() or "")


@pytest.mark.slow
@pytest.mark.timeout(_CHILD_TIMEOUT_S + 30)
def test_two_nodes_find_each_other_on_loopback_in_a_private_namespace() -> None:
    reason = _namespace_unavailable()
    if reason is not None:
        pytest.skip(f"no isolated network for mDNS: {reason}")
    script = 'ip link set lo up && ip link set lo multicast on && exec "$0" "$1" child'
    started = time.monotonic()
    child = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", script, sys.executable, str(Path(__file__))],
        capture_output=True,
        timeout=_CHILD_TIMEOUT_S,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    elapsed = time.monotonic() - started
    stderr = child.stderr.decode(errors="replace")
    assert child.returncode != _NOT_ISOLATED, f"namespace not isolated: {stderr}"
    assert child.returncode == 0, stderr
    result = json.loads(child.stdout.decode().strip().splitlines()[-1])
    seen = result.pop("seen")
    print(f"mDNS in netns: {json.dumps(result)}; child process {elapsed:.2f} s")

    assert result["bad_interface_error"].startswith("no local interface has the address")
    # Each sees the other at once, with exactly the addresses announced on 127.0.0.1: B
    # listens on 0.0.0.0, A's 198.51.100.9 is not on a chosen interface.
    a_saw_b = [report for report in seen["a"] if report[0] == PEER_B]
    b_saw_a = [report for report in seen["b"] if report[0] == PEER_A]
    assert a_saw_b[0] == [PEER_B, [addr(PEER_B, 4002)]]
    assert result["discovery_s"] < 10
    assert result["callbacks_on_trio_thread"] is True
    assert result["max_loop_gap_s"] < 0.25
    # A stops cleanly and fast; its goodbye makes B forget it; back on another port, B
    # reports it again.
    assert result["a_stop_s"] < 5
    assert b_saw_a == [[PEER_A, [addr(PEER_A, 4001)]], [PEER_A, [addr(PEER_A, 4003)]]]
    # The hostile announcer (instance PEER_C, addresses naming B) was resolved and rejected,
    # never reported; nobody reports itself.
    assert result["hostile_rejected"] is True
    for key, me in zip("abcde", [PEER_A, PEER_B, PEER_C, PEER_D, PEER_E], strict=True):
        assert {peer for peer, _ in seen[key]}.isdisjoint({me, PEER_C}), key
    # D dropped every name (queue full) until it drained; the rebuilt browser found them.
    assert result["d_before_drain"] == []
    assert result["d_browser_rebuilt"] is True
    assert {PEER_A, PEER_B} <= {peer for peer, _ in seen["d"]}
    # E was cancelled while probing; C could not claim its name (held by the hostile
    # announcer), logged it and still browses.
    assert result["cancel_while_announcing_s"] < 5
    assert result["conflict_logged"] is True
    assert {PEER_A, PEER_B} <= {peer for peer, _ in seen["c"]}
    assert result["stop_all_s"] < 5
    assert result["zeroconf_threads_left"] == []


class _Rejections(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def _child_scenario() -> dict[str, Any]:
    """Runs in the namespace: see the parent test for what is checked."""
    from zeroconf import ServiceInfo, Zeroconf

    trio_thread = threading.get_ident()
    result: dict[str, Any] = {"callbacks_on_trio_thread": True}
    seen: dict[str, list[list[Any]]] = {key: [] for key in "abcde"}
    rejections = _Rejections()
    logging.getLogger("mindoo_p2p.net.mdns").addHandler(rejections)
    logging.getLogger("mindoo_p2p.net.mdns").setLevel(logging.INFO)

    def recorder(me: str) -> Any:
        def on_peer(peer_id: str, addrs: list[str]) -> None:
            if threading.get_ident() != trio_thread:
                result["callbacks_on_trio_thread"] = False
            seen[me].append([peer_id, addrs])

        return on_peer

    try:
        bad = MdnsDiscovery(PEER_A, [addr(PEER_A)], ["192.0.2.1"], recorder("a"))
        await bad.run()
    except MdnsError as exc:
        result["bad_interface_error"] = str(exc)

    gaps = [0.0]

    async def ticker() -> None:
        last = trio.current_time()
        while True:
            await trio.sleep(0.005)
            now = trio.current_time()
            gaps.append(now - last)
            last = now

    async def until(predicate: Any, timeout: float) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await trio.sleep(0.02)

    async def run_in(
        scope: trio.CancelScope, done: trio.Event, discovery: MdnsDiscovery, *, task_status: Any
    ) -> None:
        with scope:
            await discovery.run(task_status=task_status)
        done.set()

    def hostile_announce() -> Zeroconf:
        zc = Zeroconf(interfaces=["127.0.0.1"], use_asyncio=False)
        info = ServiceInfo(
            SERVICE_TYPE,
            instance(PEER_C),
            port=4005,
            properties=encode_txt([addr(PEER_B, 4005)]),  # names B: must be rejected
            server="hostile.local.",
            parsed_addresses=["127.0.0.1"],
        )
        zc.register_service(info)
        return zc

    hostiles: list[Zeroconf] = []

    async def announce_hostile() -> None:
        hostiles.append(await trio.to_thread.run_sync(hostile_announce))

    async def start_and_cancel_e(*, task_status: Any) -> None:
        e_scope, e_done = trio.CancelScope(), trio.Event()
        e = MdnsDiscovery(PEER_E, [addr(PEER_E, 4006)], ["127.0.0.1"], recorder("e"))
        async with trio.open_nursery() as inner:
            await inner.start(run_in, e_scope, e_done, e)
            task_status.started()
            await trio.sleep(0.2)
            e_scope.cancel()  # while its announcement is still probing (~1.5 s)
            t_e = trio.current_time()
            await e_done.wait()
            result["cancel_while_announcing_s"] = trio.current_time() - t_e

    a_listen = [addr(PEER_A, 4001), "/ip4/198.51.100.9/tcp/4001"]
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            nursery.start_soon(announce_hostile)
            t0 = trio.current_time()
            a_scope, a_done = trio.CancelScope(), trio.Event()
            a = MdnsDiscovery(PEER_A, a_listen, ["127.0.0.1"], recorder("a"))
            b = MdnsDiscovery(PEER_B, ["/ip4/0.0.0.0/tcp/4002"], ["127.0.0.1"], recorder("b"))
            await nursery.start(run_in, a_scope, a_done, a)
            await nursery.start(b.run)
            result["start_s"] = trio.current_time() - t0
            await nursery.start(start_and_cancel_e)
            await until(lambda: PEER_B in a._reported and PEER_A in b._reported, 20)
            result["discovery_s"] = trio.current_time() - t0

            await until(lambda: any("another peer" in m for m in rejections.messages), 10)
            result["hostile_rejected"] = True
            # The hostile announcer holds PEER_C's instance name: C cannot announce, browses.
            c = MdnsDiscovery(PEER_C, [addr(PEER_C, 4007)], ["127.0.0.1"], recorder("c"))
            await nursery.start(c.run)

            t1 = trio.current_time()
            a_scope.cancel()
            await a_done.wait()
            result["a_stop_s"] = trio.current_time() - t1
            await until(lambda: PEER_A not in b._reported, 10)  # A's goodbye reached B

            again = MdnsDiscovery(PEER_A, [addr(PEER_A, 4003)], ["127.0.0.1"], recorder("a"))
            await nursery.start(run_in, trio.CancelScope(), trio.Event(), again)
            await until(lambda: [PEER_A, [addr(PEER_A, 4003)]] in seen["b"], 20)
            result["rediscovery_s"] = trio.current_time() - t1
            await until(lambda: any("cannot announce" in m for m in rejections.messages), 10)
            result["conflict_logged"] = True

            d = MdnsDiscovery(PEER_D, [], ["127.0.0.1"], recorder("d"), rebrowse_interval=0.5)
            d._pending.update(f"filler{i}" for i in range(MAX_PENDING_NAMES))  # queue "full"
            await nursery.start(d.run)
            first_browser = d._browser
            await until(lambda: d._dropped, 10)
            await trio.sleep(0.3)
            result["d_before_drain"] = list(seen["d"])
            d._pending.clear()
            t2 = trio.current_time()
            await until(lambda: {PEER_A, PEER_B} <= {p for p, _ in seen["d"]}, 10)
            result["rebrowse_s"] = trio.current_time() - t2
            result["d_browser_rebuilt"] = d._browser is not first_browser

            t3 = trio.current_time()
            nursery.cancel_scope.cancel()
        result["stop_all_s"] = trio.current_time() - t3
    for hostile in hostiles:
        await trio.to_thread.run_sync(hostile.close)
    result["zeroconf_threads_left"] = [
        t.name for t in threading.enumerate() if "zeroconf" in t.name or "_run_loop" in t.name
    ]
    result["max_loop_gap_s"] = max(gaps)
    result["seen"] = seen
    return result


def _child_main() -> int:
    interfaces = [name for _, name in socket.if_nameindex()]
    if interfaces != ["lo"]:
        print(f"refusing to run mDNS: interfaces {interfaces} besides lo", file=sys.stderr)
        return _NOT_ISOLATED
    print(json.dumps(trio.run(_child_scenario)))
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["child"]:
    sys.exit(_child_main())
