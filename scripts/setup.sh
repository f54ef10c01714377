#!/usr/bin/env bash
# Prepare a checkout for `make demo` / `make test`: redis-server on the machine, a .venv with
# clusterinval installed in editable mode. Safe to run again: each step is skipped when done.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-.venv}"
STAMP="$VENV/.clusterinval-setup.stamp"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    log "installing Debian packages: $*"
    # Try with the lists we have first; refresh them only when that fails.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" </dev/null \
        || { as_root apt-get update -q </dev/null \
             && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" </dev/null; }
}

# 1. Redis binaries: the test cluster and the demo run plain redis-server processes.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}" \
        || die "could not install ${missing[*]}; install Redis 6.2+ yourself (macOS: brew install redis)"
fi

# 2. A Python 3.11 or newer.
python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }
find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# 3. The virtual environment, rebuilt when it is missing, broken or too old.
if [ ! -x "$VENV/bin/python" ] || ! python_ok "$VENV/bin/python"; then
    PY="$(find_python)" || { apt_install python3 python3-venv && PY="$(find_python)"; } \
        || die "Python 3.11+ not found; install it or set PYTHON=/path/to/python3.11"
    log "creating $VENV with $PY ($("$PY" --version 2>&1))"
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV"; then
        # Debian splits venv/ensurepip into its own package.
        rm -rf "$VENV"
        version="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        apt_install "python${version}-venv" || apt_install python3-venv \
            || die "python -m venv failed and python3-venv could not be installed"
        "$PY" -m venv "$VENV"
    fi
fi

# 4. The package and its dev tools, reinstalled only when pyproject.toml changed.
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    log "installing clusterinval[dev] into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
    printf '%s\n' "$want" >"$STAMP"
else
    log "$VENV is up to date with pyproject.toml"
fi

log "ready: $("$VENV/bin/python" --version 2>&1), $(redis-server --version | cut -d' ' -f1-3)"
