#!/usr/bin/env bash
# Proves the checkout needs nothing beside it: copies the repository's files
# (tracked, plus new ones not ignored: what a commit of the working tree
# would hold) into a fresh temporary folder with no sibling `shared`, and
# runs the wire-compatibility and golden-record tests there.
#
# The copy builds into this checkout's target folder (CARGO_TARGET_DIR), so
# nothing but the two test binaries is rebuilt: file and folder times are
# kept, and the two test files are touched so their binaries are recompiled
# for the copy (env! CARGO_MANIFEST_DIR then points into it, not back at this
# checkout). Set CHECK_SELF_CONTAINED_CARGO_FLAGS=-v to see what cargo does.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac

tmp="$(mktemp -d "${TMPDIR:-/tmp}/vtorc-bare.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
copy="$tmp/vtorc-rs"
mkdir "$copy"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  xargs -0 cp -p --parents -t "$copy"
if [ -e "$tmp/shared" ] || [ -e "$copy/target" ]; then
  echo "check-self-contained: the copy is not bare" >&2
  exit 1
fi
# Folders get their original times too (build.rs watches the proto/ folder).
(cd "$copy" && find . -type d -print0) |
  while IFS= read -r -d '' d; do touch -r "$root/$d" "$copy/$d"; done
touch "$copy/tests/wire_compat.rs" "$copy/tests/topo_fixtures.rs"
echo "check-self-contained: $(find "$copy" -type f | wc -l) files in $copy"
cd "$copy"
CARGO_TARGET_DIR="$target" cargo test ${CHECK_SELF_CONTAINED_CARGO_FLAGS:-} --locked --test wire_compat --test topo_fixtures
