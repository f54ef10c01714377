"""A real Prometheus server (Debian's binary), scraping the library's exporter every second."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from prom_server import (
    PrometheusServer,
    Pushgateway,
    find_binary,
    missing,
    stop_process,
    wait_for,
    wait_ready,
    write_config,
)
from prometheus_client import CollectorRegistry

from clusterinval.exposition import start_metrics_server
from clusterinval.testing._ports import pick_ports

SCRAPE_JOB = "clusterinval"


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Debian's prometheus binary (skip, or fail in CI, when it is missing)."""
    found = find_binary("prometheus")
    if found is None:
        missing("prometheus")
    return found


@pytest.fixture(scope="session")
def prometheus_server(
    prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """Prometheus on 127.0.0.1:<free port>, temp data dir, scraping a fresh registry's exporter."""
    workdir = tmp_path_factory.mktemp("prometheus")
    registry = CollectorRegistry()
    exporter = start_metrics_server(0, addr="127.0.0.1", registry=registry)
    config = workdir / "prometheus.yml"
    write_config(config, exporter.port, SCRAPE_JOB)
    (port,) = pick_ports(1, cluster_bus=False)
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                prometheus_binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(
        url=f"http://127.0.0.1:{port}", registry=registry, exporter=exporter,
        process=process, log_path=log_path, config_path=config,
    )
    try:
        wait_ready(server.url, process, log_path, "prometheus")
        wait_for(lambda: server.scalar(f'up{{job="{SCRAPE_JOB}"}}') == 1.0, 30,
                 "prometheus to scrape the exporter")
        yield server
    finally:
        stop_process(process)
        exporter.close()


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    """Debian's Pushgateway on 127.0.0.1:<free port> (skip, or fail in CI, when missing)."""
    binary = find_binary("prometheus-pushgateway")
    if binary is None:
        missing("prometheus-pushgateway", "prometheus-pushgateway")
    log_path = tmp_path_factory.mktemp("pushgateway") / "pushgateway.log"
    (port,) = pick_ports(1, cluster_bus=False)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        )
    gateway = Pushgateway(url=f"http://127.0.0.1:{port}", process=process)
    try:
        wait_ready(gateway.url, process, log_path, "pushgateway")
        yield gateway
    finally:
        stop_process(process)
