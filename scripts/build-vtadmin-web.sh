#!/usr/bin/env bash
# Builds VTAdmin's web UI (web/vtadmin of the Go module vitess.io/vitess) with
# npm into a cache outside the repository and prints the directory holding
# the built site (index.html and assets/):
#   ${VTORC_TOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vtorc-rs}/vtadmin-web-v0.24.4/dist
# The site is built with an empty VITE_VTADMIN_API_ADDRESS, so it calls the
# API on its own origin (/api/...): whoever serves it must proxy /api to a
# vtadmin API (the integration crate's `vtadmin-web` binary does both).
# npm's cache and node_modules stay in the cache directory. The UI's
# package.json asks for Node >= 22.13, but the build (vite 8) works on Node
# 20.19+; a machine without a usable node gets one from the npm registry's
# `node` package, installed into the cache.
set -euo pipefail
version="${VITESS_VERSION:-v0.24.4}"
. "$(dirname "$0")/tool-cache.sh"
out="$cache/vtadmin-web-$version"
done_if -f "$out/dist/index.html" "$out/dist"
build_lock vtadmin-web -f "$out/dist/index.html" "$out/dist"
command -v go >/dev/null 2>&1 || { echo "build-vtadmin-web: go is not installed (needed to fetch the module)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "build-vtadmin-web: npm is not installed" >&2; exit 1; }
mod="$(GOFLAGS=-mod=mod go env GOMODCACHE)/vitess.io/vitess@$version"
if [ ! -d "$mod/web/vtadmin" ]; then
  (cd "$(mktemp -d)" && go mod download -x "vitess.io/vitess@$version" >&2)
fi
[ -f "$mod/web/vtadmin/package.json" ] || { echo "build-vtadmin-web: $mod/web/vtadmin missing" >&2; exit 1; }

# Node: the machine's if it is new enough for vite 8 (^20.19 or >= 22.12).
node_ok() {
  local v; v="$("$1" --version 2>/dev/null | sed 's/^v//')" || return 1
  local maj="${v%%.*}" rest="${v#*.}"; local min="${rest%%.*}"
  [ "$maj" -ge 23 ] || { [ "$maj" -eq 22 ] && [ "$min" -ge 12 ]; } || { [ "$maj" -eq 20 ] && [ "$min" -ge 19 ]; }
}
if command -v node >/dev/null 2>&1 && node_ok node; then
  :
else
  nodedir="$cache/node22"
  if [ ! -x "$nodedir/node_modules/node/bin/node" ]; then
    echo "build-vtadmin-web: fetching Node 22 from the npm registry's node package" >&2
    mkdir -p "$nodedir"
    npm --prefix "$nodedir" --cache "$cache/npm-cache" install --no-save --no-audit --no-fund node@22 >&2
  fi
  export PATH="$nodedir/node_modules/node/bin:$PATH"
  node_ok node || { echo "build-vtadmin-web: no usable node (have $(node --version))" >&2; exit 1; }
fi
echo "build-vtadmin-web: node $(node --version), npm $(npm --version)" >&2

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cp -r "$mod/web/vtadmin/." "$out.tmp/"
chmod -R u+w "$out.tmp"
cd "$out.tmp"
# The UI's .npmrc sets engine-strict; Node 20.19+ builds it all the same.
npm ci --engine-strict=false --cache "$cache/npm-cache" --no-audit --no-fund --loglevel=error >&2
VITE_VTADMIN_API_ADDRESS="" VITE_ENABLE_EXPERIMENTAL_TABLET_DEBUG_VARS="false" \
  NODE_OPTIONS="--max-old-space-size=3072" npx vite build --outDir dist >&2
[ -f dist/index.html ] || { echo "build-vtadmin-web: vite produced no dist/index.html" >&2; exit 1; }
# Keep only what is served; node_modules is large.
rm -rf "$out"; mkdir -p "$out"; mv dist "$out/dist"; cd /; rm -rf "$out.tmp"
echo "$out/dist"
