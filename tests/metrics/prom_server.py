"""Helpers for the real-Prometheus tests: the server handle, condition waits, config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from prometheus_client import CollectorRegistry

from clusterinval.exposition import MetricsServer
from clusterinval.testing.pytest_plugin import in_ci


def find_binary(name: str) -> str | None:
    """The path of Debian's ``name`` binary, or one on PATH."""
    candidate = f"/usr/bin/{name}"
    if os.access(candidate, os.X_OK):
        return candidate
    return shutil.which(name)


def missing(what: str, package: str = "prometheus") -> NoReturn:
    """Skip on a developer's machine; in CI a missing Prometheus is a failure."""
    reason = f"{what} is not installed (apt-get install -y --no-install-recommends {package})"
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``check`` until it is true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval)  # polling interval of a condition wait, not a synchronisation


@dataclass
class PrometheusServer:
    """A running Prometheus and the exporter it scrapes."""

    url: str
    registry: CollectorRegistry
    exporter: MetricsServer
    process: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET an HTTP API path; the decoded JSON body (errors come back as their JSON too)."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body: dict[str, Any] = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422 carry {"status":"error",...}
            body = json.load(exc)
            exc.close()
        return body

    def query(self, expr: str) -> dict[str, Any]:
        """Evaluate an instant PromQL query now; the ``data`` part of a successful answer."""
        body = self.api("/api/v1/query", query=expr)
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body.get('error')}")
        data: dict[str, Any] = body["data"]
        return data

    def scalar(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it returned no series."""
        result = self.query(expr)["result"]
        if not result:
            return None
        return float(result[0]["value"][1])

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def write_config(path: Path, exporter_port: int, job: str) -> None:
    """A Prometheus config scraping the exporter at 127.0.0.1:exporter_port every second."""
    path.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 1s\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter_port}']\n"
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop exactly this process (by its PID): SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path, what: str) -> None:
    """Wait until ``url``/-/ready answers 200; fail at once with the log if the process died."""

    def check() -> bool:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
            pytest.fail(f"{what} exited with {process.returncode}:\n{log}", pytrace=False)
        return ready(url)

    wait_for(check, 30, f"{what} /-/ready")


@dataclass
class Pushgateway:
    """A running Pushgateway."""

    url: str
    process: subprocess.Popen[bytes]

    def metrics_text(self) -> str:
        """What the gateway exposes to Prometheus right now."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as resp:
            return bytes(resp.read()).decode()
