#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup, format and lint checks, the
# Vitess wire-compatibility and golden-record checks (also run from a bare
# copy of the checkout, to prove it needs nothing beside it), then every test
# (real etcd and MariaDB included; they are started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== wire compatibility with Vitess 24 (vitess.io/vitess v0.24.4)"
# The facts table and the golden records are data in this repository; these
# two checks regenerate them from the pinned Vitess module (fetched with go
# into its module cache) and fail if the committed copies differ.
scripts/gen-wire-facts.py --check
scripts/gen-topo-fixtures.sh --check
# Our proto/vitess/*.proto against the table, and the records against ours.
cargo test --locked --test wire_compat --test topo_fixtures
# An older external checker, when a sibling ../shared happens to have it, is an
# extra cross-check only: its absence or disagreement does not fail the run.
external="${VTORC_WIREFACTS:-../shared/tools/wirefacts/check-wire-compat}"
if [ -f "$external" ]; then
  echo "== cross-check with $external (informational)"
  /usr/bin/python3 "$external" proto ||
    echo "WARNING: $external reports problems (see above); the in-repo check passed" >&2
fi

echo "== self-contained: wire and fixture tests in a bare copy of the checkout"
scripts/check-self-contained.sh

echo "== Vitess 24 pieces for the interop tests (cached in ~/.cache/vtorc-rs; built once)"
# Built here, one at a time, so that no test waits on a build and a build
# failure stops the run loudly. Cold on 2 cores: see README (VTAdmin).
# The tests take the paths from these variables.
built() { # NAME VAR SCRIPT ARGS...: build, export VAR=path, say how long it took
  local name="$1" var="$2" start=$SECONDS path; shift 2
  path="$("$@")"
  export "$var=$path"
  echo "   $name: $path ($((SECONDS - start)) s)"
}
built vtctldclient VTCTLDCLIENT scripts/build-vitess-tool.sh vtctldclient
built vtgate VTGATE scripts/build-vitess-tool.sh vtgate
built vtadmin VTADMIN scripts/build-vitess-tool.sh vtadmin
built "VTAdmin web UI" VTADMIN_WEB scripts/build-vtadmin-web.sh

echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
