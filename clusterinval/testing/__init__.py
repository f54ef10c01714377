"""Test helpers: throwaway Redis Clusters (local redis-server processes or containers)."""

from clusterinval.testing.base import ClusterBackend, ClusterNode
from clusterinval.testing.local import LocalCluster, LocalClusterError, LocalRedis

__all__ = ["ClusterBackend", "ClusterNode", "LocalCluster", "LocalClusterError", "LocalRedis"]
