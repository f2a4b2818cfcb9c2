#!/usr/bin/env bash
# Builds a Vitess 24 command (vitess.io/vitess/go/cmd/NAME, e.g. vtctldclient
# or vtorc) into a cache outside the repository, and prints its path:
#   ${VTORC_TOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vtorc-rs}/bin/NAME-v0.24.4
# Nothing of Vitess is committed: a throw-away wrapper module requires
# vitess.io/vitess and repeats its exclude directive (which is why a plain
# `go install vitess.io/vitess/go/cmd/NAME@v0.24.4` is refused).
set -euo pipefail
name="${1:?usage: build-vitess-tool.sh NAME (a directory of vitess.io/vitess/go/cmd)}"
case "$name" in
  *[!a-z0-9_-]*) echo "build-vitess-tool: bad command name $name" >&2; exit 2 ;;
esac
version="${VITESS_VERSION:-v0.24.4}"
. "$(dirname "$0")/tool-cache.sh"
bin="$cache/bin/$name-$version"
done_if -x "$bin" "$bin"
build_lock "$name" -x "$bin" "$bin"
command -v go >/dev/null 2>&1 || { echo "build-vitess-tool: go is not installed" >&2; exit 1; }
src="$cache/$name-src"
mkdir -p "$src" "$cache/bin"
cd "$src"
cat > go.mod <<MOD
module vtorc-rs.local/$name

go 1.26

require vitess.io/vitess $version

exclude github.com/DataDog/opentelemetry-mapping-go/pkg/otlp/attributes v0.33.0
MOD
cat > tools.go <<GO
//go:build tools

package tools

import _ "vitess.io/vitess/go/cmd/$name"
GO
GOFLAGS=-mod=mod go mod tidy >&2
GOFLAGS=-mod=mod go build -o "$bin.tmp" "vitess.io/vitess/go/cmd/$name" >&2
mv "$bin.tmp" "$bin"
echo "$bin"
