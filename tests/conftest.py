"""Shared fixtures: nodes in temporary homes with a fast (test-only) KDF."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.node import Node

PASSWORD = "correct horse battery staple"


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
