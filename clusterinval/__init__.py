"""clusterinval: cache invalidation for Redis Cluster.

Exact keys, Redis glob patterns and tags, across every primary at once, deleted with
slot-grouped ``UNLINK`` (never ``KEYS``, never cross-slot), with Prometheus metrics per
``operation_name``.
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
    QueueError,
    QueueUnavailableError,
)
from clusterinval.metrics import Metrics
from clusterinval.options import InvalidatorOptions
from clusterinval.queue import InvalidationQueue, QueueStatus
from clusterinval.result import (
    Explanation,
    InvalidationResult,
    NodeResult,
    PatternCost,
    TagGcResult,
)
from clusterinval.rules import Rule, RuleSet
from clusterinval.sync import SyncClusterInvalidator
from clusterinval.tagging import TaggedWriter

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
    "InvalidationQueue",
    "InvalidationResult",
    "InvalidatorOptions",
    "Metrics",
    "NodeResult",
    "PatternCost",
    "Progress",
    "ProgressWatch",
    "QueueError",
    "QueueStatus",
    "QueueUnavailableError",
    "Rule",
    "RuleSet",
    "SyncClusterInvalidator",
    "TagGcResult",
    "TaggedWriter",
]

__version__ = "0.1.0"
