#!/bin/sh
# Entry point of the clusterinval Redis Cluster node image (both the Dockerfile and the offline
# image built by build-offline-image.sh use it, so they behave the same).
#
#   clusterinval-node [PORT] [redis-server options...]   run one cluster-enabled node
#   clusterinval-node health [PORT]                      exit 0 when the node answers PONG
#
# PORT comes from the first argument when it is a number, else $REDIS_PORT, else
# $REDIS_PORT_BASE + $REDIS_PORT_OFFSET (how docker-compose.yml numbers its six nodes from one
# configurable base), else 7000.
# $REDIS_CLUSTER_NODE_TIMEOUT (ms, default 5000) sets cluster-node-timeout. The node binds
# 127.0.0.1 only: containers run with host networking, and nothing here is meant for other hosts.
# Persistence is off (no RDB, no AOF): these nodes hold throwaway test and load data, and
# replicas sync at once (diskless, no delay) so a fresh cluster is whole in seconds.
set -eu

if [ -n "${REDIS_PORT:-}" ]; then
    port="$REDIS_PORT"
elif [ -n "${REDIS_PORT_BASE:-}" ]; then
    port=$((REDIS_PORT_BASE + ${REDIS_PORT_OFFSET:-0}))
else
    port=7000
fi

if [ "${1:-}" = "health" ]; then
    [ -n "${2:-}" ] && port="$2"
    [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]
    exit $?
fi

case "${1:-}" in
    ''|*[!0-9]*) ;;
    *) port="$1"; shift ;;
esac

# /data exists in both images (WORKDIR); the entry point uses shell built-ins only.
cd /data
exec redis-server \
    --port "$port" \
    --bind 127.0.0.1 \
    --cluster-enabled yes \
    --cluster-config-file "nodes-$port.conf" \
    --cluster-node-timeout "${REDIS_CLUSTER_NODE_TIMEOUT:-5000}" \
    --save "" \
    --appendonly no \
    --dir /data \
    --repl-diskless-sync yes \
    --repl-diskless-sync-delay 0 \
    --daemonize no \
    "$@"
