#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup, format and lint checks, the
# Vitess wire-compatibility check, then every test (real etcd and MariaDB
# included; they are started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== wire compatibility with Vitess 24"
wirefacts="${VTORC_WIREFACTS:-../shared/tools/wirefacts/check-wire-compat}"
if [ ! -f "$wirefacts" ]; then
  echo "wire check tool not found at $wirefacts (set VTORC_WIREFACTS)" >&2
  exit 1
fi
/usr/bin/python3 "$wirefacts" proto

echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
