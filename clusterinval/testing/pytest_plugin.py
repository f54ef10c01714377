"""pytest plugin: a throwaway Redis Cluster for your tests, local processes or Docker containers.

Installed with clusterinval (entry point ``pytest11``), it adds:

- the session fixture ``redis_cluster``: a running 3-primary, 1-replica-each cluster, a
  ``ClusterBackend`` (``.url``, ``.startup_nodes``, ``.primaries()``, ``.flushall()``, and the
  fault verbs ``kill``, ``restart``, ``pause``, ``resume``). Its backend is
  ``--clusterinval-backend=local|docker`` or ``$CLUSTERINVAL_TEST_BACKEND`` (default ``local``):
  ``local`` runs redis-server processes on loopback ports (``LocalCluster``), ``docker`` runs one
  container per node (``RedisClusterContainer``, image from ``$CLUSTERINVAL_REDIS_IMAGE``);
- ``require_docker()``: skip the calling test (or fixture) with the reason when no Docker engine
  or node image is usable, or fail it when ``CI`` is true, where a missing Docker is a broken CI
  and not a reason to skip.

Nothing heavy is imported until a fixture runs, so the plugin costs nothing to sessions that do
not use it and needs neither testcontainers nor docker installed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    # Only for annotations: the backends load when a fixture first runs.
    from clusterinval.testing.base import ClusterBackend

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "docker_problem",
    "in_ci",
    "redis_cluster",
    "require_docker",
    "unavailable",
]

BACKEND_ENV = "CLUSTERINVAL_TEST_BACKEND"
BACKENDS = ("local", "docker")
_OPTION = "--clusterinval-backend"
_DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def in_ci() -> bool:
    """Return True when the environment says it is CI (``CI`` set to true, 1 or yes)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(what: str) -> NoReturn:
    """Skip the current test with ``what`` as the reason; in CI, fail it, since CI must run it."""
    if in_ci():
        pytest.fail(f"CI=true, so this must run, but {what}", pytrace=False)
    pytest.skip(what)


def docker_problem(image: str | None = None) -> str | None:
    """Say why Docker cannot run cluster nodes here (no library, engine, image); None if it can."""
    try:
        # docker.client, not the top-level package: the repository's docker/ folder would shadow
        # the top-level name for type checkers run from the project root.
        from docker.client import DockerClient
        from docker.errors import DockerException, ImageNotFound

        from clusterinval.testing.container import default_image
    except ImportError as exc:
        missing = exc.name or "a Docker client package"
        return f"{missing} is not installed (pip install 'clusterinval[testing]')"

    image = image or default_image()
    host = os.environ.get("DOCKER_HOST") or _DEFAULT_DOCKER_HOST
    where = host
    if host.startswith("unix://"):
        # Probe the socket first: docker-py leaks its socket when the connect fails.
        path = host.removeprefix("unix://")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(5)
            try:
                probe.connect(path)
            except OSError as exc:
                return f"no Docker engine listens on {where}: {exc.strerror or exc}"
    try:
        client = DockerClient.from_env(timeout=5)
    except DockerException as exc:
        return f"no Docker engine is reachable at {where}: {exc}"
    try:
        client.ping()
        client.images.get(image)
    except ImageNotFound:
        return (
            f"the node image {image!r} is not present; build it from the clusterinval repository "
            f"with docker/build-offline-image.sh (no registry needed) or `docker build -t {image} "
            "docker/`, or set CLUSTERINVAL_REDIS_IMAGE to an image you have (e.g. redis:7.2)"
        )
    except Exception as exc:
        # DockerException, or requests' and the socket's own errors, which docker-py lets through.
        return f"the Docker engine at {where} does not answer: {type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def require_docker(image: str | None = None) -> None:
    """Skip (or, in CI, fail) the current test with the reason Docker cannot run cluster nodes."""
    problem = docker_problem(image)
    if problem is not None:
        unavailable(f"Docker tests cannot run: {problem}")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add --clusterinval-backend."""
    parser.getgroup("clusterinval").addoption(
        _OPTION,
        choices=BACKENDS,
        default=None,
        help=f"backend of the redis_cluster fixture (default: ${BACKEND_ENV} or 'local')",
    )


def _backend(config: pytest.Config) -> str:
    chosen = config.getoption(_OPTION) or os.environ.get(BACKEND_ENV) or "local"
    if chosen not in BACKENDS:
        raise pytest.UsageError(f"{BACKEND_ENV}={chosen!r}: choose one of {', '.join(BACKENDS)}")
    return str(chosen)


def _local_cluster() -> Iterator[ClusterBackend[Any]]:
    from clusterinval.testing.local import LocalCluster, RedisServerNotFoundError

    cluster = LocalCluster(primaries=3, replicas=1)
    try:
        cluster.start(timeout=60)
    except RedisServerNotFoundError as exc:
        unavailable(f"the local backend needs redis-server: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


def _docker_cluster() -> Iterator[ClusterBackend[Any]]:
    require_docker()
    from clusterinval.testing.container import RedisClusterContainer

    with RedisClusterContainer(primaries=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster(request: pytest.FixtureRequest) -> Iterator[ClusterBackend[Any]]:
    """A running Redis Cluster (3 primaries, 1 replica each) of the chosen backend."""
    if _backend(request.config) == "docker":
        yield from _docker_cluster()
    else:
        yield from _local_cluster()
