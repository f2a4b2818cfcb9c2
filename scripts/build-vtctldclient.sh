#!/usr/bin/env bash
# Builds Vitess 24's vtctldclient (the real client our vtctld-compatible API is
# tested against) into the tool cache and prints its path; see
# build-vitess-tool.sh.
set -euo pipefail
exec "$(dirname "$0")/build-vitess-tool.sh" vtctldclient
