"""Testing helpers for apps and for mindoo_p2p itself: clusters of nodes on loopback.

`Cluster` scripts in-process nodes, `ProcessCluster` real daemon processes; the pytest plugin
(`mindoo_p2p.testing.pytest_plugin`) gives a ``cluster`` fixture.
"""

from .cluster import Cluster, ClusterNode, ConvergenceError
from .processes import DaemonProcess, ProcessCluster

__all__ = ["Cluster", "ClusterNode", "ConvergenceError", "DaemonProcess", "ProcessCluster"]
