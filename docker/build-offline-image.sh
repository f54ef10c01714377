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

tree="$(mktemp -d "${TMPDIR:-/tmp}/clusterinval-image.XXXXXX")"
trap 'rm -rf "$tree"' EXIT

add_file() {
    # Copy $1 (following symlinks) to the same path inside the tree, or to $2 when given.
    local src="$1" dst="${2:-$1}"
    mkdir -p "$tree$(dirname "$dst")"
    cp -L "$src" "$tree$dst"
}

add_libs() {
    # Every absolute path ldd prints is a library or the loader the binary needs at run time.
    local lib
    for lib in $(ldd "$1" | grep -o '/[^ ]*'); do
        [[ -e "$tree$lib" ]] || add_file "$lib"
    done
}

# Debian's redis-server is a symlink to redis-check-rdb, which picks its mode from argv[0]:
# copying the target under the name redis-server keeps it a server.
add_file "$redis_server" /usr/bin/redis-server
add_file "$redis_cli" /usr/bin/redis-cli
add_file "$shell_bin" /bin/sh
for bin in "$redis_server" "$redis_cli" "$shell_bin"; do
    add_libs "$bin"
done
install -D -m 0755 "$here/node-entrypoint.sh" "$tree/usr/local/bin/clusterinval-node"
mkdir -p "$tree/data" "$tree/tmp" "$tree/etc"
chmod 1777 "$tree/tmp"
echo 'root:x:0:0:root:/root:/bin/sh' >"$tree/etc/passwd"
echo 'root:x:0:' >"$tree/etc/group"

version="$("$redis_server" --version | grep -o 'v=[0-9.]*' | cut -d= -f2)"
# A reproducible tar (sorted, fixed times and owners) hashes the same for the same inputs, so an
# image already built from identical files is kept instead of being replaced by a twin.
tar -C "$tree" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$tree.tar" .
trap 'rm -rf "$tree" "$tree.tar"' EXIT
digest="$(sha256sum "$tree.tar" | cut -d' ' -f1)"
label=org.clusterinval.tree-sha256
if [[ "$(docker image inspect -f "{{index .Config.Labels \"$label\"}}" "$image" 2>/dev/null)" \
        == "$digest" ]]; then
    log "$image is up to date (redis $version)"
    exit 0
fi
old_id="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/clusterinval-node"]' \
    --change 'CMD []' \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'ENV REDIS_CLUSTER_NODE_TIMEOUT=5000' \
    --change 'WORKDIR /data' \
    --change "LABEL org.opencontainers.image.title=\"clusterinval redis cluster node (offline, redis $version)\"" \
    --change "LABEL $label=$digest" \
    "$tree.tar" "$image" >/dev/null
if [[ -n "$old_id" ]]; then
    # The previous build lost its tag; drop it unless a container still uses it.
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi
log "built $image from $redis_server (redis $version)"
