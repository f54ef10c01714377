"""A second process with a local (L1) dict cache kept in step by clusterinval.events.follow.

Usage: python l1_child.py '{"url": ..., "keys": [...], "events": N}'. Prints one JSON line
``{"ready": true}`` once subscribed, then one line per applied event with the monotonic time it
was applied and the keys left in the local cache; exits after N events (or 30 s).
"""

from __future__ import annotations

import functools
import json
import sys
import time

import anyio

from clusterinval.events import InvalidationEvent, follow


def _say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main(url: str, keys: list[str], events: int) -> None:
    cache: dict[str, str] = dict.fromkeys(keys, "cached value")
    seen = 0
    done = anyio.Event()

    def report(event: InvalidationEvent, removed: int) -> None:
        nonlocal seen
        applied_at = time.monotonic()
        seen += 1
        _say(operation=event.operation, resync=event.resync, removed=removed,
             applied_at=applied_at, remaining=sorted(cache))
        if seen >= events:
            done.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(functools.partial(follow, url, cache, on_event=report))
            _say(ready=True)
            await done.wait()
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    anyio.run(main, args["url"], list(args["keys"]), int(args.get("events", 1)))
