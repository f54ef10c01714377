#!/usr/bin/env bash
# Build the clusterinval Redis Cluster node image with no registry at all.
#
#   docker/build-offline-image.sh            tag: ${CLUSTERINVAL_REDIS_IMAGE:-clusterinval/redis-node:local}
#
# Idempotent: when the image was already built from identical files it is left as it is.
#
# The image is `docker import` of a prepared tree: the host's redis-server and redis-cli (Debian's
# redis package), every library `ldd` lists for them, the dynamic loader, /bin/sh (dash) for the
# entry point, and docker/node-entrypoint.sh as /usr/local/bin/clusterinval-node. The entry point,
# environment and working directory match docker/Dockerfile, so either image can be used anywhere
# CLUSTERINVAL_REDIS_IMAGE is read (compose file, RedisClusterContainer, tests).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
image="${CLUSTERINVAL_REDIS_IMAGE:-clusterinval/redis-node:local}"
redis_server="${REDIS_SERVER_BIN:-$(command -v redis-server || true)}"
redis_cli="${REDIS_CLI_BIN:-$(command -v redis-cli || true)}"
shell_bin="$(readlink -f /bin/sh)"

log() { echo "build-offline-image.sh: $*" >&2; }

[[ -x "$redis_server" ]] || { log "redis-server not found (apt-get install -y redis-server)"; exit 1; }
[[ -x "$redis_cli" ]] || { log "redis-cli not found (apt-get install -y redis-tools)"; exit 1; }
command -v docker >/dev/null || { log "docker CLI not found"; exit 1; }
docker info >/dev/null 2>&1 || { log "no docker daemon answers (docker/dockerd.sh start)"; exit 1; }

# shellcheck source=docker/offline-tree.sh
source "$here/offline-tree.sh"
tree_start image

# Debian's redis-server is a symlink to redis-check-rdb, which picks its mode from argv[0]:
# copying the target under the name redis-server keeps it a server.
add_file "$redis_server" /usr/bin/redis-server
add_file "$redis_cli" /usr/bin/redis-cli
add_file "$shell_bin" /bin/sh
for bin in "$redis_server" "$redis_cli" "$shell_bin"; do
    add_libs "$bin"
done
install -D -m 0755 "$here/node-entrypoint.sh" "$tree/usr/local/bin/clusterinval-node"
mkdir -p "$tree/data"
add_base

version="$("$redis_server" --version | grep -o 'v=[0-9.]*' | cut -d= -f2)"
tree_import "$image" \
    'ENTRYPOINT ["/usr/local/bin/clusterinval-node"]' \
    'CMD []' \
    'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    'ENV REDIS_CLUSTER_NODE_TIMEOUT=5000' \
    'WORKDIR /data' \
    "LABEL org.opencontainers.image.title=\"clusterinval redis cluster node (offline, redis $version)\""
if [[ "$tree_state" == "up to date" ]]; then
    log "$image is up to date (redis $version)"
else
    log "built $image from $redis_server (redis $version)"
fi
