"""Security test kit: a throwaway CA and certificates, a Redis Cluster over TLS, ACL users."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from clusterinval._core.slots import SLOT_COUNT
from clusterinval.testing._ports import pick_ports

HOST = "127.0.0.1"

APP_USER = "app"
APP_PASSWORD = "Zq7-app-S3cret-pw"  # distinctive, so a leak is easy to spot
NOSCRIPT_USER = "noscript"
NOSCRIPT_PASSWORD = "Zq7-noscript-S3cret-pw"


@dataclass(frozen=True)
class Certs:
    """Paths of the PEM files a TLS test needs."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(folder: Path) -> Certs:
    """A CA and two leaf certificates it signed: one for 127.0.0.1 (server), one client."""
    if shutil.which("openssl") is None:
        raise FileNotFoundError("openssl is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=clusterinval test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt",
                 cwd=folder)
    return Certs(folder / "ca.crt", folder / "server.crt", folder / "server.key",
                 folder / "client.crt", folder / "client.key")


class TLSCluster:
    """N primaries (no replicas) speaking only TLS, on clients and on the cluster bus."""

    def __init__(self, certs: Certs, workdir: Path, primaries: int = 3) -> None:
        self.certs = certs
        self.workdir = workdir
        self.ports = pick_ports(primaries, HOST)
        self._procs: list[subprocess.Popen[bytes]] = []

    def client(self, port: int) -> redis.Redis:
        """A TLS client (with the client certificate) to one node."""
        return redis.Redis(
            host=HOST, port=port, ssl=True, ssl_ca_certs=str(self.certs.ca),
            ssl_certfile=str(self.certs.client_cert), ssl_keyfile=str(self.certs.client_key),
            socket_timeout=5)

    def _call(self, port: int, *args: Any) -> Any:
        with self.client(port) as c:
            return c.execute_command(*args)

    @property
    def url(self) -> str:
        """A ``rediss://`` URL of the first node."""
        return f"rediss://{HOST}:{self.ports[0]}"

    def start(self, timeout: float = 30.0) -> TLSCluster:
        """Start the servers, join them, assign the slots, wait for cluster_state:ok."""
        c = self.certs
        for port in self.ports:
            d = self.workdir / str(port)
            d.mkdir(parents=True, exist_ok=True)
            argv = [
                "redis-server", "--bind", HOST, "--port", "0", "--tls-port", str(port),
                "--tls-cert-file", str(c.server_cert), "--tls-key-file", str(c.server_key),
                "--tls-ca-cert-file", str(c.ca), "--tls-cluster", "yes",
                "--tls-replication", "yes", "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                "--dir", str(d), "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", str(d / "redis.log"),
            ]
            self._procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._until(deadline, lambda p=port: self._call(p, "PING"), f"node {port} to answer")
        n = len(self.ports)
        for i, port in enumerate(self.ports):
            lo, hi = i * SLOT_COUNT // n, (i + 1) * SLOT_COUNT // n - 1
            self._call(port, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
            if i:
                self._call(port, "CLUSTER", "MEET", HOST, self.ports[0])
        for port in self.ports:
            self._until(deadline, lambda p=port: b"cluster_state:ok" in self._call(
                p, "CLUSTER", "INFO"), f"node {port} to see cluster_state:ok")
            self._until(deadline, lambda p=port: len(self._call(p, "CLUSTER", "SLOTS")) == n,
                        f"node {port} to know every primary")
        return self

    @staticmethod
    def _until(deadline: float, probe: Any, what: str) -> None:
        while True:
            try:
                if probe():
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"TLS cluster: timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate every server this object started (by PID) and wait for it."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs = []
