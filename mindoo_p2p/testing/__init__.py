"""Testing helpers for apps and for mindoo_p2p itself: clusters of nodes on loopback.

`Cluster` scripts in-process nodes; the pytest plugin (`mindoo_p2p.testing.pytest_plugin`)
gives a ``cluster`` fixture.
"""

from .cluster import Cluster, ClusterNode, ConvergenceError

__all__ = ["Cluster", "ClusterNode", "ConvergenceError"]
