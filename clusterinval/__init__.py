"""clusterinval: cache invalidation for Redis Cluster.

Exact keys and Redis glob patterns, across every primary at once, deleted with slot-grouped
``UNLINK`` (never ``KEYS``, never cross-slot), with Prometheus metrics per ``operation_name``.
"""

from clusterinval._core.tally import Progress, ProgressWatch
from clusterinval._invalidator import ClusterInvalidator
from clusterinval.errors import (
    ClusterConnectionError,
    ClusterInvalError,
    ClusterPermissionError,
    InvalidationError,
    InvalidInputError,
    InvalidKeyError,
    InvalidOperationNameError,
    InvalidPatternError,
)
from clusterinval.metrics import Metrics
from clusterinval.options import InvalidatorOptions
from clusterinval.result import Explanation, InvalidationResult, NodeResult, PatternCost
from clusterinval.rules import Rule, RuleSet
from clusterinval.sync import SyncClusterInvalidator

__all__ = [
    "ClusterConnectionError",
    "ClusterInvalError",
    "ClusterInvalidator",
    "ClusterPermissionError",
    "Explanation",
    "InvalidInputError",
    "InvalidKeyError",
    "InvalidOperationNameError",
    "InvalidPatternError",
    "InvalidationError",
    "InvalidationResult",
    "InvalidatorOptions",
    "Metrics",
    "NodeResult",
    "PatternCost",
    "Progress",
    "ProgressWatch",
    "Rule",
    "RuleSet",
    "SyncClusterInvalidator",
]

__version__ = "0.1.0"
