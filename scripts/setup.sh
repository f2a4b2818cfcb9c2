#!/usr/bin/env bash
# Installs what building and testing vtorc-rs needs, only when missing:
# protoc (+ well-known types) for etcd-client's build script, etcd and MariaDB
# for the test world, Python protobuf for scripts/gen-wire-facts.py. Idempotent.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
/usr/bin/python3 -c 'import google.protobuf' >/dev/null 2>&1 || need+=(python3-protobuf)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# The VTAdmin browser test drives Debian's Chromium through chromedriver.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo is missing (install Rust with rustup)" >&2; exit 1; }
# Go fetches the pinned Vitess module (its .proto files are the source of the
# wire-facts table and the golden records) and builds vtctldclient, grpcurl,
# vtgate and vtadmin; npm builds VTAdmin's web UI (scripts/build-vtadmin-web.sh).
command -v go >/dev/null 2>&1 || { echo "setup: go is missing (install Go from https://go.dev/dl)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy >/dev/null 2>&1 || true
