"""pytest plugin: a ``cluster`` fixture (an empty `Cluster` in the test's tmp_path).

Enable it in a conftest.py with ``pytest_plugins = ["mindoo_p2p.testing.pytest_plugin"]``.
Tests using it must be trio tests (pytest-trio).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .cluster import Cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path / "cluster") as running:
        yield running
