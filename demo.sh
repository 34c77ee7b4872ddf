#!/bin/sh
# Run the demo pod (config/pods/hello) end to end: build its image, run the
# stub agent on an issue, stream its output, exit with its exit code.
#
# Needs: Docker (it only builds, nothing is pulled), Rust (cargo), and a
# static busybox (Debian/Ubuntu: apt-get install busybox-static).
# Extra arguments go to `cldpd start`, e.g. ./demo.sh --json
#
# The image cldpd-hello is kept, so a rerun is quick; remove it with
#   docker rmi cldpd-hello
set -eu
cd "$(dirname "$0")"

busybox=${BUSYBOX:-/bin/busybox}
if [ ! -f "$busybox" ]; then
  echo "demo: $busybox is missing: install a static busybox (apt-get install busybox-static)" >&2
  exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
  echo "demo: $busybox is dynamically linked and cannot run in a FROM scratch image: install busybox-static" >&2
  exit 1
fi
if ! cmp -s "$busybox" config/pods/hello/busybox; then
  cp "$busybox" config/pods/hello/busybox
fi

# The dev profile (optimised dependencies) is the one `cargo test` and
# `cargo run --example` use: one build serves all three. The first build
# takes about 6 minutes on 2 cores; cargo shows its progress.
# cargo run replaces itself with cldpd, so Ctrl-C reaches cldpd directly.
exec cargo run -- \
  --pods-dir config/pods \
  start hello --issue https://github.com/cldpd/demo/issues/1 "$@"
