#!/usr/bin/env bash
# Build the queue worker image (`clusterinval worker`) with no registry at all.
#
#   docker/build-offline-worker-image.sh     tag: ${CLUSTERINVAL_WORKER_IMAGE:-clusterinval/worker:local}
#
# Like build-offline-image.sh, the image is `docker import` of a prepared tree: this machine's
# Python (the interpreter of .venv, at the same path, its standard library without tests and GUI
# modules, every library `ldd` lists for it and its extension modules), and this checkout
# installed with its `cli` extra by pip into /opt/clusterinval (PyPI reachable), and
# /usr/local/bin/clusterinval, a two-line launcher (the entry point, and what the compose file's
# health check runs), so `command: [worker, ...]` runs the worker as in the image that
# docker/worker.Dockerfile builds where a Python base image can be pulled.
# Idempotent: an image built from identical files is left as it is.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
image="${CLUSTERINVAL_WORKER_IMAGE:-clusterinval/worker:local}"
python="${PYTHON_BIN:-$repo/.venv/bin/python}"

log() { echo "build-offline-worker-image.sh: $*" >&2; }

[[ -x "$python" ]] || { log "no Python at $python (run make setup, or set PYTHON_BIN)"; exit 1; }
command -v docker >/dev/null || { log "docker CLI not found"; exit 1; }
docker info >/dev/null 2>&1 || { log "no docker daemon answers (docker/dockerd.sh start)"; exit 1; }

prefix="$("$python" -c 'import sys; print(sys.base_prefix)')"
version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
interpreter="$prefix/bin/python$version"
[[ -x "$interpreter" ]] || { log "no interpreter at $interpreter"; exit 1; }

# shellcheck source=docker/offline-tree.sh
source "$here/offline-tree.sh"
tree_start worker

# The interpreter at its own path, so it finds its standard library without configuration, and a
# shell for the launcher.
add_file "$interpreter"
add_libs "$interpreter"
shell_bin="$(readlink -f /bin/sh)"
add_file "$shell_bin" /bin/sh
add_libs "$shell_bin"
mkdir -p "$tree/usr/local/bin"
printf '#!/bin/sh\nexec %s -m clusterinval.cli.main "$@"\n' "$interpreter" \
    >"$tree/usr/local/bin/clusterinval"
chmod 0755 "$tree/usr/local/bin/clusterinval"
stdlib="$prefix/lib/python$version"
mkdir -p "$tree$stdlib"
tar -C "$stdlib" \
    --exclude=./site-packages --exclude=./test --exclude=./idlelib --exclude=./tkinter \
    --exclude=./turtledemo --exclude=./ensurepip --exclude=./lib2to3 --exclude='__pycache__' \
    -cf - . | tar -C "$tree$stdlib" -xf -
for module in "$tree$stdlib"/lib-dynload/*.so; do
    add_libs "$module"
done

# The package and its command-line dependencies, from this checkout.
"$python" -m pip install --quiet --disable-pip-version-check --no-compile \
    --target "$tree/opt/clusterinval" "$repo[cli]"
while IFS= read -r -d '' module; do
    add_libs "$module"  # compiled dependencies (hiredis, pydantic-core...) need their libraries
done < <(find "$tree/opt/clusterinval" -name '*.so' -print0)
add_base

tree_import "$image" \
    'ENTRYPOINT ["/usr/local/bin/clusterinval"]' \
    'CMD ["worker", "--help"]' \
    'ENV PYTHONPATH=/opt/clusterinval' \
    'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    'ENV PYTHONDONTWRITEBYTECODE=1' \
    'LABEL org.opencontainers.image.title="clusterinval queue worker (offline)"'
if [[ "$tree_state" == "up to date" ]]; then
    log "$image is up to date"
else
    log "built $image (Python $version from $prefix)"
fi
