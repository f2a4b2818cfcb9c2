#!/usr/bin/env bash
# Builds grpcurl (the gRPC command-line client operators reach for first) into
# a cache outside the repository, and prints its path. The grpcurl test in
# integration/tests/grpcurl_reflection.rs runs it against vtorc's gRPC port.
set -euo pipefail
version="${GRPCURL_VERSION:-latest}"
. "$(dirname "$0")/tool-cache.sh"
bin="$cache/bin/grpcurl"
done_if -x "$bin" "$bin"
command -v go >/dev/null 2>&1 || { echo "build-grpcurl: go is not installed" >&2; exit 1; }
mkdir -p "$cache/bin"
GOBIN="$cache/bin" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$version" >&2
echo "$bin"
