"""Django settings for the cache backend tests, pointed at the session cluster once."""

from __future__ import annotations

import os

import pytest

from clusterinval.testing.local import LocalCluster

BACKEND = "clusterinval.contrib.django.RedisClusterCache"


def custom_key_func(key: str, key_prefix: str, version: int | str) -> str:
    """A customised cache key function (as in Django's own cache tests)."""
    return "CUSTOM-" + "-".join([key_prefix, str(version), key])


@pytest.fixture(scope="session")
def django_caches(local_cluster: LocalCluster) -> dict[str, dict[str, object]]:
    """Configure Django once with the caches the tests use, all on the session cluster."""
    pytest.importorskip("django")
    import django
    from django.conf import settings

    url = local_cluster.url
    caches: dict[str, dict[str, object]] = {
        "default": {},
        "prefix": {"KEY_PREFIX": f"cacheprefix{os.getpid()}"},
        "v2": {"VERSION": 2},
        "custom_key": {"KEY_FUNCTION": custom_key_func},
        "custom_key2": {"KEY_FUNCTION": "test_django_cache.custom_key_func"},
        "flush": {"OPTIONS": {"clear": "flush"}},
    }
    for params in caches.values():
        params.update(BACKEND=BACKEND, LOCATION=url)
    if not settings.configured:
        settings.configure(CACHES=caches, USE_TZ=True, INSTALLED_APPS=[])
        django.setup()
    return caches
