#!/usr/bin/env bash
# The quick start: builds vtorc, the tablet agent and the quickstart binary,
# then brings up a local cluster (etcd, keyspace commerce with semi_sync,
# shard 0, three MariaDB-backed tablets in cell zone1) with vtorc managing
# it. Prints how to watch it and how to kill the primary; Ctrl-C stops and
# removes everything. Extra arguments go to the quickstart binary, e.g.
#   scripts/quickstart.sh --no-bootstrap     # let vtorc elect the first primary
#   scripts/quickstart.sh --workload         # run the writer, check for lost writes on exit
#   scripts/quickstart.sh --vtadmin          # also vtgate + VTAdmin API and web UI (prints the URL)
# Installs the Debian packages it needs (etcd-server, mariadb-server, protoc) via scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
target="${CARGO_TARGET_DIR:-target}"
cargo build --bin vtorc
cargo build -p integration --bin quickstart --bin tablet-agent
exec "$target/debug/quickstart" --vtorc-bin "$target/debug/vtorc" \
  --tablet-agent-bin "$target/debug/tablet-agent" "$@"
