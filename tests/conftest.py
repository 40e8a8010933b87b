"""Shared fixtures: nodes in temporary homes with a fast (test-only) KDF."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.node import Node

PASSWORD = "correct horse battery staple"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On pytest-xdist workers (``-n``, as scripts/test runs), schedule the tests marked slow
    first, so that no worker is left running a long test while the other idles at the end; a
    run on one process keeps the collection order. The sort is stable and the same on every
    worker (xdist requires identical collections)."""
    if hasattr(config, "workerinput"):  # set by pytest-xdist on its workers
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[[str], Node]]:
    """Create initialised nodes named NAME in tmp_path/NAME; all are closed after the test."""
    nodes: list[Node] = []

    def factory(name: str) -> Node:
        node = Node.init(tmp_path / name, PASSWORD, name=name, kdf=KdfProfile.TESTING)
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        node.close()


pytest_plugins = ["mindoo_p2p.testing.pytest_plugin"]
