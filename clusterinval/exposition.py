"""Getting clusterinval's metrics to Prometheus: a /metrics HTTP server, or a Pushgateway push."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import TracebackType
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, pushadd_to_gateway, start_http_server

from clusterinval.errors import InvalidInputError

__all__ = ["MetricsServer", "push_metrics", "start_metrics_server"]


class MetricsServer:
    """A running /metrics endpoint; ``close()`` stops it and frees the port."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._closed = False

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when 0 was asked for)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The URL of the metrics page."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_metrics_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (default: the global one) at ``http://addr:port/metrics`` in a thread.

    ``port=0`` picks a free port; read it back from ``.port``. The default address is loopback:
    exposing the endpoint beyond the host is a deliberate choice (``addr="0.0.0.0"``).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidInputError(f"port must be an integer in 0..65535, got {port!r}")
    server, thread = start_http_server(port, addr=addr,
                                       registry=REGISTRY if registry is None else registry)
    return MetricsServer(server, thread)


def push_metrics(
    gateway_url: str,
    job: str,
    registry: CollectorRegistry | None,
    grouping_key: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 10.0,
) -> None:
    """Push ``registry`` to a Pushgateway under ``job`` (POST: replaces only these metric names).

    Raises ``OSError`` (``urllib.error.URLError``/``HTTPError``) when the gateway does not accept
    the push; a batch job usually logs that and carries on.
    """
    if not isinstance(gateway_url, str) or not gateway_url:
        raise InvalidInputError("gateway_url must be a URL such as http://127.0.0.1:9091")
    if not isinstance(job, str) or not job:
        raise InvalidInputError("job must be a non-empty string")
    pushadd_to_gateway(
        gateway_url,
        job=job,
        registry=REGISTRY if registry is None else registry,
        grouping_key=dict(grouping_key) if grouping_key else None,
        timeout=timeout_s,
    )
