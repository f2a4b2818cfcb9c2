# Sourced by the build-*.sh scripts: where the tools they build are cached
# (outside the repository) and how a build waits for another of the same
# tool. Not run on its own.

cache="${VTORC_TOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vtorc-rs}"

# done_if TEST CHECKED PRINTED: when `[ TEST CHECKED ]` holds (the tool is
# built), prints PRINTED and ends the script.
done_if() {
  if [ "$1" "$2" ]; then echo "$3"; exit 0; fi
}

# build_lock NAME TEST CHECKED PRINTED: one build of NAME at a time (tests
# may ask concurrently); a build that waited for another ends as done_if
# when that one built the tool.
build_lock() {
  mkdir -p "$cache"
  exec 9>"$cache/.build-$1.lock"
  flock 9
  done_if "$2" "$3" "$4"
}
