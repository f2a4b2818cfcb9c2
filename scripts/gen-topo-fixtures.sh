#!/usr/bin/env bash
# Regenerates the golden records tests/fixtures/topo/*.bin from their text
# form (*.txtpb, written by us) with the upstream Vitess schema: the .proto
# files of the Go module vitess.io/vitess at the pinned version, fetched with
# `go mod download` into Go's module cache (nothing of Vitess is committed).
# So the bytes come from protoc and Vitess's schema, independently of our own
# .proto files and of prost; tests/topo_fixtures.rs decodes them with ours.
#
# Each .txtpb starts with two header comments naming its schema:
#   # proto-file: topodata.proto
#   # proto-message: topodata.Tablet
# protoc writes map entries in text order, so the .txtpb files list map
# entries sorted by key (the order prost's BTreeMap re-encodes them in).
#
# Usage: scripts/gen-topo-fixtures.sh           # (re)write every .bin
#        scripts/gen-topo-fixtures.sh --check   # exit 1 if a .bin differs
# Env:   VITESS_VERSION (default v0.24.4), VITESS_DIR (a module folder; skips go)
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
version="${VITESS_VERSION:-v0.24.4}"
dir="tests/fixtures/topo"

command -v protoc >/dev/null 2>&1 || {
  echo "gen-topo-fixtures: protoc is not installed (scripts/setup.sh, or apt-get install -y protobuf-compiler)" >&2
  exit 2
}
vitess="${VITESS_DIR:-}"
if [ -z "$vitess" ]; then
  command -v go >/dev/null 2>&1 || {
    echo "gen-topo-fixtures: go is not installed; it fetches vitess.io/vitess@$version (or set VITESS_DIR)" >&2
    exit 2
  }
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  json="$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "vitess.io/vitess@$version")" || {
    echo "gen-topo-fixtures: go mod download vitess.io/vitess@$version failed:" >&2
    echo "$json" >&2
    exit 2
  }
  vitess="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
fi
[ -d "$vitess/proto" ] || { echo "gen-topo-fixtures: no proto/ folder in '$vitess'" >&2; exit 2; }

status=0
count=0
for txt in "$dir"/*.txtpb; do
  bin="${txt%.txtpb}.bin"
  file="$(sed -n 's/^# proto-file: *//p' "$txt" | head -n1)"
  msg="$(sed -n 's/^# proto-message: *//p' "$txt" | head -n1)"
  if [ -z "$file" ] || [ -z "$msg" ]; then
    echo "gen-topo-fixtures: $txt lacks the '# proto-file:' / '# proto-message:' header" >&2
    exit 2
  fi
  out="$(mktemp)"
  if ! protoc --encode="$msg" -I "$vitess/proto" "$file" <"$txt" >"$out"; then
    rm -f "$out"
    echo "gen-topo-fixtures: protoc could not encode $txt as $msg" >&2
    exit 2
  fi
  count=$((count + 1))
  if $check; then
    if ! cmp -s "$out" "$bin"; then
      echo "gen-topo-fixtures: $bin is stale (or missing) for $txt" >&2
      status=1
    fi
    rm -f "$out"
  else
    mv "$out" "$bin"
    chmod 644 "$bin"
    printf '%-58s %4d bytes  %s\n' "$bin" "$(wc -c <"$bin")" "$msg"
  fi
done
if $check && [ $status -eq 0 ]; then
  echo "gen-topo-fixtures: $count records match their text form (vitess.io/vitess $version)"
fi
exit $status
