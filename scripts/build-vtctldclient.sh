#!/usr/bin/env bash
# Builds Vitess 24's vtctldclient (the real client our vtctld-compatible API is
# tested against) into a cache outside the repository, and prints its path.
# Nothing of Vitess is committed: a throw-away wrapper module requires
# vitess.io/vitess and repeats its exclude directive (which is why a plain
# `go install vitess.io/vitess/go/cmd/vtctldclient@v0.24.4` is refused).
set -euo pipefail
version="${VITESS_VERSION:-v0.24.4}"
cache="${VTORC_TOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vtorc-rs}"
bin="$cache/bin/vtctldclient-$version"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
command -v go >/dev/null 2>&1 || { echo "build-vtctldclient: go is not installed" >&2; exit 1; }
src="$cache/vtctldclient-src"
mkdir -p "$src" "$cache/bin"
cd "$src"
cat > go.mod <<MOD
module vtorc-rs.local/vtctldclient

go 1.26

require vitess.io/vitess $version

exclude github.com/DataDog/opentelemetry-mapping-go/pkg/otlp/attributes v0.33.0
MOD
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "vitess.io/vitess/go/cmd/vtctldclient"
GO
GOFLAGS=-mod=mod go mod tidy >&2
GOFLAGS=-mod=mod go build -o "$bin.tmp" vitess.io/vitess/go/cmd/vtctldclient >&2
mv "$bin.tmp" "$bin"
echo "$bin"
