#!/usr/bin/env bash
# Build lambda-os-ferretdb to $1, with the files under patches/ laid over FerretDB's source.
#
# The pinned module (go.mod, go.sum) is copied out of Go's module cache into a scratch
# directory, the patched files replace their originals there, and the build uses it through
# a `replace` in a scratch copy of go.mod (`-modfile`), so nothing else of the module or of
# its dependencies changes. Each patch says at its top what it changes and why:
#   patches/sqlite_collection.go -> internal/backends/sqlite/collection.go
set -euo pipefail
out=$(realpath -m "$1")
go_bin=${GO:-go}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
"$go_bin" mod download github.com/FerretDB/FerretDB
module=$("$go_bin" list -m -f '{{.Dir}}' github.com/FerretDB/FerretDB)
scratch=$(mktemp -d)
trap 'chmod -R u+w "$scratch"; rm -rf "$scratch"' EXIT
cp -r "$module" "$scratch/FerretDB"
chmod -R u+w "$scratch/FerretDB"
cp patches/sqlite_collection.go "$scratch/FerretDB/internal/backends/sqlite/collection.go"
cp go.mod "$scratch/go.mod"
cp go.sum "$scratch/go.sum"
printf '\nreplace github.com/FerretDB/FerretDB => %s/FerretDB\n' "$scratch" >>"$scratch/go.mod"
"$go_bin" build -modfile "$scratch/go.mod" -o "$out" .
