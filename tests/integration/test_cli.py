"""The ``clusterinval`` command line on a real cluster: JSON output, exit codes, count, cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner, Result

from clusterinval.cli.invalidate_cmd import _invalidate
from clusterinval.cli.main import app
from clusterinval.cli.output import (
    EXIT_BAD_INPUT,
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_UNREACHABLE,
)
from clusterinval.testing.local import LocalCluster

RESULT_FIELDS = {"deleted", "matched", "scanned", "complete", "duration_s", "nodes",
                 "uncovered_slots", "operation", "dry_run", "sample"}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty CLUSTERINVAL_HOME (no `cluster up` state) and no CLUSTERINVAL_URL."""
    monkeypatch.setenv("CLUSTERINVAL_HOME", str(tmp_path))
    monkeypatch.delenv("CLUSTERINVAL_URL", raising=False)
    return tmp_path


def fill(rc: redis.RedisCluster, keys: list[str]) -> None:
    pipe = rc.pipeline()  # type: ignore[no-untyped-call]
    for key in keys:
        pipe.set(key, b"v")
    pipe.execute()


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def one_json(result: Result) -> dict[str, Any]:
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}"


@pytest.mark.usefixtures("home")
class TestInvalidate:
    def test_json_result(self, cluster_url: str, client: redis.RedisCluster) -> None:
        gone = [f"project:p1:{i}" for i in range(300)]
        fill(client, [*gone, "project:p1", "projects:list:1", "project:p2:x"])
        result = run("invalidate", "--url", cluster_url, "--key", "project:p1",
                     "--pattern", "project:p1:*", "--pattern", "projects:list:*",
                     "--operation", "project", "--json")
        assert result.exit_code == EXIT_OK, result.output
        data = one_json(result)
        assert set(data) >= RESULT_FIELDS
        assert data["complete"] is True
        assert data["deleted"] == 302
        assert data["operation"] == "project"
        assert data["per_pattern"] == {"project:p1:*": 300, "projects:list:*": 1}
        assert sum(n["deleted"] for n in data["nodes"]) == 302
        assert len(data["nodes"]) == 3
        assert client.exists("project:p2:x") == 1
        assert sum(int(client.exists(k)) for k in gone) == 0

    def test_human_output(self, cluster_url: str, client: redis.RedisCluster) -> None:
        fill(client, ["a:1", "a:2"])
        result = run("invalidate", "-u", cluster_url, "-p", "a:*", "-o", "demo")
        assert result.exit_code == EXIT_OK, result.output
        assert "demo: deleted 2 keys" in result.stdout
        assert "complete" in result.stdout

    def test_url_from_environment(
        self, cluster_url: str, client: redis.RedisCluster, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fill(client, ["env:1"])
        monkeypatch.setenv("CLUSTERINVAL_URL", cluster_url)
        result = run("invalidate", "--key", "env:1", "--json")
        assert result.exit_code == EXIT_OK, result.output
        assert one_json(result)["deleted"] == 1

    def test_dry_run_flag(self, cluster_url: str, client: redis.RedisCluster) -> None:
        fill(client, ["d:1", "d:2", "d:3"])
        result = run("invalidate", "--url", cluster_url, "-p", "d:*", "--dry-run", "--json")
        assert result.exit_code == EXIT_OK
        data = one_json(result)
        assert data["dry_run"] is True and data["matched"] == 3 and data["deleted"] == 0
        assert client.exists("d:1", "d:2", "d:3") == 3

    def test_match_all_needs_the_flag(self, cluster_url: str, client: redis.RedisCluster) -> None:
        fill(client, ["m:1", "m:2"])
        refused = run("invalidate", "--url", cluster_url, "-p", "*")
        assert refused.exit_code == EXIT_BAD_INPUT
        assert "allow" in refused.stderr
        allowed = run("invalidate", "--url", cluster_url, "-p", "*", "--allow-match-all",
                      "--json")
        assert allowed.exit_code == EXIT_OK
        assert one_json(allowed)["deleted"] == 2


@pytest.mark.usefixtures("home")
class TestExitCodes:
    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["-p", "a[b"], "'['"),
            (["-p", ""], "empty"),
            ([], "nothing to invalidate"),
            (["-p", "a:*", "-o", "not ok!"], "operation_name"),
        ],
    )
    def test_bad_input(self, cluster_url: str, args: list[str], needle: str) -> None:
        result = run("invalidate", "--url", cluster_url, *args)
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert needle in result.stderr
        assert "Traceback" not in result.output
        assert result.stdout == ""

    def test_bad_input_json_is_one_error_object(self, cluster_url: str) -> None:
        result = run("invalidate", "--url", cluster_url, "-p", "a[b", "--json")
        assert result.exit_code == EXIT_BAD_INPUT
        data = one_json(result)
        assert data["exit_code"] == EXIT_BAD_INPUT and "[" in data["error"]

    def test_unreachable(self) -> None:
        result = run("invalidate", "--url", dead_url(), "-p", "a:*")
        assert result.exit_code == EXIT_UNREACHABLE, result.output
        assert "unreachable" in result.stderr
        assert "Traceback" not in result.output

    def test_no_url_anywhere(self) -> None:
        result = run("invalidate", "-p", "a:*")
        assert result.exit_code == EXIT_BAD_INPUT
        assert "CLUSTERINVAL_URL" in result.stderr and "cluster up" in result.stderr

    def test_password_not_echoed(self) -> None:
        url = dead_url().replace("redis://", "redis://me:hunter2@")
        result = run("invalidate", "--url", url, "-p", "a:*")
        assert result.exit_code == EXIT_UNREACHABLE
        assert "hunter2" not in result.output

    def test_incomplete_is_exit_1_with_the_partial_result(self, home: Path) -> None:
        # A dedicated cluster: one primary is frozen so its slots cannot be covered in time.
        with LocalCluster(primaries=3, replicas=0) as cluster:
            frozen = cluster.primaries()[1].port
            cluster.pause(frozen)
            try:
                result = run("invalidate", "--url", f"redis://127.0.0.1:"
                             f"{cluster.primaries()[0].port}", "-p", "x:*", "--timeout", "2",
                             "--json")
            finally:
                cluster.resume(frozen)
        assert result.exit_code == EXIT_INCOMPLETE, result.output
        data = one_json(result)
        assert data["complete"] is False
        assert data["uncovered_slot_count"] > 0
        assert "slots not covered" in result.stderr


@pytest.mark.usefixtures("home")
class TestCount:
    def test_count_json(self, cluster_url: str, client: redis.RedisCluster) -> None:
        fill(client, [f"c:{i}" for i in range(40)] + ["other"])
        result = run("count", "--url", cluster_url, "-p", "c:*", "--json")
        assert result.exit_code == EXIT_OK
        data = one_json(result)
        assert data["dry_run"] is True and data["matched"] == 40
        assert 0 < len(data["sample"]) <= 40
        assert all(k.startswith("c:") for k in data["sample"])
        assert client.exists("c:0") == 1

    def test_count_prints_matched_and_sample(
        self, cluster_url: str, client: redis.RedisCluster
    ) -> None:
        fill(client, ["s:1", "s:2"])
        result = run("count", "--url", cluster_url, "-p", "s:*")
        assert result.exit_code == EXIT_OK
        assert "would delete 2 keys" in result.stdout
        assert "s:1" in result.stdout and "s:2" in result.stdout


class TestClusterCommands:
    def test_status_without_a_cluster(self, home: Path) -> None:
        result = run("cluster", "status")
        assert result.exit_code == 1
        assert "no local cluster" in result.stdout
        assert run("cluster", "down").exit_code == 0

    def test_up_invalidate_down(self, home: Path) -> None:
        try:
            up = run("cluster", "up", "--primaries", "3", "--replicas", "0")
            assert up.exit_code == 0, up.output
            running = LocalCluster.from_state()
            assert running is not None
            assert running.url in up.stdout
            status = run("cluster", "status")
            assert status.exit_code == 0, status.output
            assert "cluster_state: ok" in status.stdout
            again = run("cluster", "up")
            assert again.exit_code != 0 and "already running" in again.stderr
            # without --url the command finds the running cluster
            rc = redis.RedisCluster.from_url(running.url)
            try:
                rc.set("up:1", 1)
            finally:
                rc.close()
            result = run("invalidate", "-p", "up:*", "--json")
            assert result.exit_code == EXIT_OK, result.output
            assert one_json(result)["deleted"] == 1
            down = run("cluster", "down")
            assert down.exit_code == 0 and "stopped" in down.stdout
            assert LocalCluster.from_state() is None
        finally:
            leftover = LocalCluster.from_state()
            if leftover is not None:
                leftover.stop()


def test_entry_point_runs_as_a_process(cluster_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "CLUSTERINVAL_HOME": str(tmp_path)}
    env.pop("CLUSTERINVAL_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "clusterinval.cli.main", "count", "--url", cluster_url,
         "-p", "nothing:*", "--json"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    assert json.loads(proc.stdout)["matched"] == 0
    bad = subprocess.run(
        [sys.executable, "-m", "clusterinval.cli.main", "invalidate", "--url", cluster_url],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert bad.returncode == EXIT_BAD_INPUT
    assert "Traceback" not in bad.stderr


class _Gateway(BaseHTTPRequestHandler):
    """A minimal Pushgateway stand-in: records each push's path and body."""

    pushes: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.pushes.append((self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.usefixtures("home")
def test_pushgateway_receives_the_run(cluster_url: str, client: redis.RedisCluster) -> None:
    fill(client, ["push:1", "push:2"])
    server = HTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        gateway = f"http://127.0.0.1:{server.server_address[1]}"
        result = run("invalidate", "--url", cluster_url, "-p", "push:*", "-o", "pushed",
                     "--pushgateway", gateway, "--json")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert result.exit_code == EXIT_OK, result.output
    assert one_json(result)["deleted"] == 2
    [(path, body)] = _Gateway.pushes
    assert path == "/metrics/job/clusterinval"
    assert b'clusterinval_keys_deleted_total{operation="pushed"} 2.0' in body


@pytest.mark.anyio
async def test_progress_display_path(cluster_url: str, client: redis.RedisCluster) -> None:
    fill(client, [f"bar:{i}" for i in range(500)])
    result = await _invalidate(cluster_url, None, ["bar:*"], "bar", False, False, {},
                               CollectorRegistry(), True)
    assert result.complete and result.deleted == 500


@pytest.mark.usefixtures("home")
class TestJsonEveryOutcome:
    """With --json, stdout carries exactly one JSON object, whatever happens."""

    def test_no_url_anywhere(self) -> None:
        result = run("invalidate", "-p", "a:*", "--json")
        assert result.exit_code == EXIT_BAD_INPUT
        data = one_json(result)
        assert data["exit_code"] == EXIT_BAD_INPUT and "--url" in data["error"]
        assert "CLUSTERINVAL_URL" in result.stderr

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["--bogus"], "--bogus"),
            (["--timeout", "soon"], "--timeout"),
            (["-p"], "-p"),
        ],
    )
    def test_usage_errors(self, args: list[str], needle: str) -> None:
        result = run("invalidate", "--json", *args)
        assert result.exit_code == EXIT_BAD_INPUT
        data = one_json(result)
        assert data["exit_code"] == EXIT_BAD_INPUT and needle in data["error"]

    def test_unreachable(self) -> None:
        result = run("count", "--url", dead_url(), "-p", "a:*", "--json")
        assert result.exit_code == EXIT_UNREACHABLE
        assert one_json(result)["exit_code"] == EXIT_UNREACHABLE

    def test_usage_error_without_json_leaves_stdout_empty(self) -> None:
        result = run("invalidate", "--bogus")
        assert result.exit_code == EXIT_BAD_INPUT
        assert result.stdout == ""


@pytest.mark.usefixtures("home")
class TestInputInTheWordsOfTheFlags:
    """Bad input is refused before any connection, in terms of the command line."""

    @pytest.mark.parametrize(
        ("args", "wanted", "unwanted"),
        [
            (["-p", "*"], ["--pattern '*'", "--allow-match-all"], ["allow_match_all=True", "b'*'"]),
            ([], ["--key", "--pattern"], ["keys=[", "patterns=["]),
            (["-p", "user:\\"], ["--pattern 'user:\\'"], ["'user:\\\\'", "b'"]),
            (["-p", "a[b"], ["--pattern 'a[b'", "'['"], ["b'a[b'", "in pattern"]),
            (["-p", "x:*", "-o", "user 42"], ["--operation 'user 42'"], []),
            (["-k", ""], ["--key ''"], []),
        ],
    )
    def test_refused_before_connecting(
        self, args: list[str], wanted: list[str], unwanted: list[str]
    ) -> None:
        # Nothing listens at dead_url(): an attempted connection would exit 3.
        result = run("invalidate", "--url", dead_url(), *args)
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        for text in wanted:
            assert text in result.stderr, result.stderr
        for text in unwanted:
            assert text not in result.stderr, result.stderr
        assert "unreachable" not in result.stderr

    def test_bad_input_beats_a_missing_url(self) -> None:
        result = run("invalidate", "-p", "*")
        assert result.exit_code == EXIT_BAD_INPUT
        assert "--allow-match-all" in result.stderr

    @pytest.mark.parametrize("url", ["http://h:1", "redis://", "redis://h:notaport"])
    def test_bad_url(self, url: str) -> None:
        result = run("invalidate", "--url", url, "-p", "a:*", "--json")
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert "--url" in one_json(result)["error"]

    def test_bad_url_password_masked(self) -> None:
        result = run("invalidate", "--url", "http://me:hunter2@h:1", "-p", "a:*")
        assert result.exit_code == EXIT_BAD_INPUT
        assert "hunter2" not in result.output


class TestHelpAndVersion:
    def test_version(self) -> None:
        from importlib.metadata import version

        result = run("--version")
        assert result.exit_code == EXIT_OK
        assert result.stdout.strip() == f"clusterinval {version('clusterinval')}"

    @pytest.mark.parametrize("command", [[], ["invalidate"], ["count"], ["loadtest"], ["bench"],
                                         ["demo"], ["cluster", "up"]])
    def test_flags_show_no_type(self, command: list[str]) -> None:
        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == EXIT_OK
        assert "--help" in result.stdout
        assert "<bool>" not in result.stdout


@pytest.mark.usefixtures("home")
def test_tables_do_not_wrap_in_a_pipe(cluster_url: str, client: redis.RedisCluster) -> None:
    # A pattern longer than 80 columns stays on one line of the table when stdout is a pipe.
    long_pattern = "catalog:models:search:" + "very-long-query-" * 5 + "*"
    fill(client, [long_pattern[:-1] + "1"])
    env = {**os.environ, "COLUMNS": ""}
    env.pop("COLUMNS")
    proc = subprocess.run(
        [sys.executable, "-m", "clusterinval.cli.main", "invalidate", "--url", cluster_url,
         "-p", long_pattern, "-p", "other:*"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    assert any(long_pattern in line for line in proc.stdout.splitlines()), proc.stdout
    assert all(len(line) > 80 for line in proc.stdout.splitlines() if long_pattern in line)
