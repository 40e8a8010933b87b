"""Nonces are drawn from the OS in blocks: never handed out twice, not even across a fork."""

from __future__ import annotations

import os
import threading

from mindoo_p2p.crypto import aead


def test_nonces_are_unique_across_refills_and_threads() -> None:
    seen: list[bytes] = []

    def draw() -> None:
        seen.extend(aead.random_nonce() for _ in range(2000))

    threads = [threading.Thread(target=draw) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    draw()
    assert len(seen) == 8000
    assert all(len(nonce) == aead.NONCE_SIZE for nonce in seen)
    assert len(set(seen)) == len(seen)


def test_a_forked_child_never_repeats_the_parents_nonces() -> None:
    aead.random_nonce()  # the pool of this thread now holds unused nonces
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(writer, b"".join(aead.random_nonce() for _ in range(8)))
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = b"".join(aead.random_nonce() for _ in range(8))
    assert len(child) == len(parent) == 8 * aead.NONCE_SIZE
    child_nonces = {child[i : i + 24] for i in range(0, len(child), 24)}
    parent_nonces = {parent[i : i + 24] for i in range(0, len(parent), 24)}
    assert not child_nonces & parent_nonces
