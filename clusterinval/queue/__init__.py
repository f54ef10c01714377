"""A durable invalidation queue: a Redis Stream, a local spool behind it, workers that apply it.

::

    async with InvalidationQueue.from_url(url, spool="/var/lib/app/inval.spool") as q:
        request_id = await q.submit(keys=[...], patterns=[...], operation_name="project")

Modules: ``request`` (validation and encoding), ``stream`` (the Redis side), ``spool`` (SQLite),
``client`` (InvalidationQueue), ``worker`` (QueueWorker), ``status`` (QueueStatus).
"""

from clusterinval.queue.client import InvalidationQueue, Receipt
from clusterinval.queue.request import QueueRequest
from clusterinval.queue.status import QueueStatus
from clusterinval.queue.stream import DEFAULT_GROUP, DEFAULT_STREAM
from clusterinval.queue.worker import QueueWorker, WorkerOptions, WorkerStats

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_STREAM",
    "InvalidationQueue",
    "QueueRequest",
    "QueueStatus",
    "QueueWorker",
    "Receipt",
    "WorkerOptions",
    "WorkerStats",
]
