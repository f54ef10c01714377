"""Test helpers: a local Redis Cluster and standalone Redis made of redis-server processes."""

from clusterinval.testing.local import LocalCluster, LocalClusterError, LocalRedis

__all__ = ["LocalCluster", "LocalClusterError", "LocalRedis"]
