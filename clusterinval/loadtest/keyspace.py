"""The load test's key families (shaped like a typical service's caches) and what each job deletes.

Every family's keys can be listed, so the expected keyspace after any sequence of jobs is known
exactly: that is what the final check of a load test compares the cluster against.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Job", "Keyspace"]

_DETAILS_PER_PROJECT = 20
_PROJECT_LISTS = 50
_CATALOG_MODELS = 500
_CATALOG_DETAILS = 200
_TENANT_KEYS = 100
_USER_SESSIONS = 1000
_EXACT_BATCH = 50


@dataclass(frozen=True, slots=True)
class Job:
    """One invalidation: what to pass to ``invalidate`` and exactly which keys it removes."""

    kind: str
    operation_name: str
    keys: tuple[str, ...]
    patterns: tuple[str, ...]
    removes: tuple[str, ...]


class Keyspace:
    """Families of keys sized to about ``total`` keys; ``cache:item:*`` is the traffic's own."""

    def __init__(self, total: int, *, projects: int = 200, tenants: int = 20) -> None:
        if total < 1000:
            raise ValueError(f"a load test needs at least 1000 keys, got {total}")
        self.projects = max(1, min(projects, total // 200))
        self.tenants = max(1, min(tenants, total // 1000))
        fixed = (
            self.projects * (1 + _DETAILS_PER_PROJECT) + _PROJECT_LISTS + _CATALOG_MODELS
            + _CATALOG_DETAILS + self.tenants * _TENANT_KEYS + _USER_SESSIONS
        )
        self.items = max(100, total - fixed)
        self._job_counter = 0

    # -- families -----------------------------------------------------------------------------

    def project(self, p: int) -> list[str]:
        """A project's own keys: ``project:P`` and its details ``project:P:detail:J``."""
        return [f"project:{p}"] + [f"project:{p}:detail:{j}" for j in range(_DETAILS_PER_PROJECT)]

    @staticmethod
    def project_lists() -> list[str]:
        """The ``projects:list:*`` family every project change invalidates."""
        return [f"projects:list:{n}" for n in range(_PROJECT_LISTS)]

    @staticmethod
    def catalog_models() -> list[str]:
        """The ``catalog:models:*`` listing family."""
        return [f"catalog:models:{m}" for m in range(_CATALOG_MODELS)]

    @staticmethod
    def catalog_detail(e: int) -> str:
        """One endpoint's model detail key."""
        return f"catalog:model:{e}"

    def tenant(self, t: int) -> list[str]:
        """A hash-tagged tenant's keys (all in one slot)."""
        return [f"{{tenant:{t}}}:item:{j}" for j in range(_TENANT_KEYS)]

    @staticmethod
    def user_session(u: int) -> str:
        """One user's session key."""
        return f"user:session:{u}"

    def item(self, i: int) -> str:
        """A key of the ordinary cache traffic (never invalidated)."""
        return f"cache:item:{i}"

    def all_keys(self) -> list[str]:
        """Every key of the initial fill."""
        keys = [self.item(i) for i in range(self.items)]
        for p in range(self.projects):
            keys.extend(self.project(p))
        keys.extend(self.project_lists())
        keys.extend(self.catalog_models())
        keys.extend(self.catalog_detail(e) for e in range(_CATALOG_DETAILS))
        for t in range(self.tenants):
            keys.extend(self.tenant(t))
        keys.extend(self.user_session(u) for u in range(_USER_SESSIONS))
        return keys

    def sample_key(self, n: int) -> str:
        """A key for a cache GET, spread over every family (the n-th draw)."""
        r = n % 10
        if r < 7:
            return self.item((n * 7919) % self.items)
        if r == 7:
            return f"project:{n % self.projects}:detail:{n % _DETAILS_PER_PROJECT}"
        if r == 8:
            return f"catalog:models:{n % _CATALOG_MODELS}"
        return self.user_session(n % _USER_SESSIONS)

    # -- jobs ---------------------------------------------------------------------------------

    def job(self, n: int) -> Job:
        """The n-th invalidation of the rotation: project, catalog, tenant, exact keys."""
        kind = n % 4
        k = n // 4
        if kind == 0:
            p = k % self.projects
            own = self.project(p)
            return Job("project", "project", (own[0],), (f"project:{p}:*", "projects:list:*"),
                       tuple(own + self.project_lists()))
        if kind == 1:
            e = k % _CATALOG_DETAILS
            detail = self.catalog_detail(e)
            return Job("catalog", "catalog", (detail,), ("catalog:models:*",),
                       (detail, *self.catalog_models()))
        if kind == 2:
            t = k % self.tenants
            return Job("tenant", "tenant", (), (f"{{tenant:{t}}}:*",), tuple(self.tenant(t)))
        start = (k * _EXACT_BATCH) % _USER_SESSIONS
        keys = tuple(self.user_session((start + i) % _USER_SESSIONS) for i in range(_EXACT_BATCH))
        return Job("exact", "user_session", keys, (), keys)
