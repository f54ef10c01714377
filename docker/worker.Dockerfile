# The invalidation queue worker (`clusterinval worker`) for the compose file's "worker" profile.
#
#   docker compose -f docker/docker-compose.yml --profile worker up -d --wait
#
# Built from this checkout (context: the repository root); only the package and its metadata
# are copied. Needs a Python base image and PyPI for redis, anyio, prometheus-client, typer, rich.
ARG PYTHON_BASE=python:3.12-slim
FROM ${PYTHON_BASE}

WORKDIR /src
COPY pyproject.toml README.md ./
COPY clusterinval ./clusterinval
RUN pip install --no-cache-dir '.[cli]'

LABEL org.opencontainers.image.title="clusterinval queue worker" \
      org.opencontainers.image.description="applies queued cache invalidations (docs/queue.md)"
# SIGTERM finishes the current batch, then exits 0 (compose waits stop_grace_period for it).
STOPSIGNAL SIGTERM
ENTRYPOINT ["clusterinval"]
CMD ["worker", "--help"]
