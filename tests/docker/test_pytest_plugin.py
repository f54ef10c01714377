"""The pytest plugin: redis_cluster on both backends, and the rule for a missing Docker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clusterinval.testing.pytest_plugin import BACKEND_ENV, docker_problem, require_docker

USER_TEST = """
import redis

def test_user_code(redis_cluster):
    client = redis.RedisCluster.from_url(redis_cluster.url)
    try:
        client.set("user:1", "x")
        assert client.get("user:1") == b"x"
    finally:
        client.close()
    assert len(redis_cluster.startup_nodes) == 6
    print("BACKEND=" + type(redis_cluster).__name__)
"""


def run_user_suite(
    tmp_path: Path, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run pytest on a user's test file in its own directory: only the installed plugin helps it."""
    (tmp_path / "test_user.py").write_text(USER_TEST)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (BACKEND_ENV, "PYTEST_ADDOPTS")}
    return {**env, **extra}


def test_local_backend_is_the_default(tmp_path: Path) -> None:
    done = run_user_suite(tmp_path, env=clean_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BACKEND=LocalCluster" in done.stdout


def test_unknown_backend_is_a_usage_error(tmp_path: Path) -> None:
    done = run_user_suite(tmp_path, env=clean_env(**{BACKEND_ENV: "kubernetes"}))
    assert done.returncode != 0
    assert "choose one of local, docker" in done.stdout + done.stderr


@pytest.mark.docker
def test_docker_backend_by_option(tmp_path: Path, docker_ok: None) -> None:
    env = clean_env(**{BACKEND_ENV: "local", "TESTCONTAINERS_RYUK_DISABLED": "true"})
    done = run_user_suite(tmp_path, "--clusterinval-backend=docker", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BACKEND=RedisClusterContainer" in done.stdout  # the option beats the variable


class TestDockerAvailability:
    def test_no_engine_is_explained(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        problem = docker_problem()
        assert problem is not None and "unix:///nonexistent/docker.sock" in problem

    def test_skips_with_the_reason_off_ci(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        monkeypatch.delenv("CI", raising=False)
        with pytest.raises(pytest.skip.Exception, match="Docker tests cannot run"):
            require_docker()

    def test_fails_in_ci(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        monkeypatch.setenv("CI", "true")
        with pytest.raises(pytest.fail.Exception, match="CI=true"):
            require_docker()

    @pytest.mark.docker
    def test_missing_image_says_how_to_build_it(self, docker_ok: None) -> None:
        problem = docker_problem("clusterinval/no-such-image:0")
        assert problem is not None and "build-offline-image.sh" in problem
