# Shared by the build-offline-*.sh scripts (sourced, not run): an image as `docker import` of a
# tree prepared from this machine's own files.
#
#   tree_start NAME            a fresh tree in $tree (removed on exit, with its tar)
#   add_file SRC [DST]         copy SRC (following symlinks) into the tree, at DST or its own path
#   add_libs BINARY            every library and loader `ldd` lists for BINARY
#   add_base                   /tmp, and /etc/passwd and /etc/group with root
#   tree_import IMAGE CHANGE...
#                              import the tree as IMAGE with the `docker import --change`s given;
#                              tree_state says "built" or "up to date" (same files: kept as is)
# The caller defines log() and has `set -euo pipefail`.

tree_start() {
    tree="$(mktemp -d "${TMPDIR:-/tmp}/clusterinval-$1.XXXXXX")"
    trap 'rm -rf "$tree" "$tree.tar"' EXIT
}

add_file() {
    local src="$1" dst="${2:-$1}"
    mkdir -p "$tree$(dirname "$dst")"
    cp -L "$src" "$tree$dst"
}

add_libs() {
    # Every absolute path ldd prints is a library or the loader the binary needs at run time.
    local lib
    for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*'); do
        [[ -e "$tree$lib" ]] || add_file "$lib"
    done
}

add_base() {
    mkdir -p "$tree/tmp" "$tree/etc"
    chmod 1777 "$tree/tmp"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$tree/etc/passwd"
    echo 'root:x:0:' >"$tree/etc/group"
}

tree_import() {
    local image="$1" label=org.clusterinval.tree-sha256 digest old_id change
    shift
    # A reproducible tar (sorted, fixed times and owners) hashes the same for the same inputs, so
    # an image already built from identical files is kept instead of being replaced by a twin.
    tar -C "$tree" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$tree.tar" .
    digest="$(sha256sum "$tree.tar" | cut -d' ' -f1)"
    if [[ "$(docker image inspect -f "{{index .Config.Labels \"$label\"}}" "$image" 2>/dev/null)" \
            == "$digest" ]]; then
        tree_state="up to date"
        return 0
    fi
    old_id="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
    local args=()
    for change in "$@" "LABEL $label=$digest"; do
        args+=(--change "$change")
    done
    docker import "${args[@]}" "$tree.tar" "$image" >/dev/null
    if [[ -n "$old_id" ]]; then
        # The previous build lost its tag; drop it unless a container still uses it.
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
    tree_state="built"
}
