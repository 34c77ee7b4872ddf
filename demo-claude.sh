#!/bin/sh
# The real Claude Code working offline, in one command, without a key:
# builds the Claude Code image from PyPI's claude-agent-sdk wheel (cached in
# ~/.cache/cldpd; the first run downloads ≈ 178 MB), starts cldpd's scripted
# model server on 127.0.0.1, and runs the pod config/pods/claude-demo
# against it: the agent runs real Bash tool calls in its container.
#
#   ./demo-claude.sh                  offline, scripted model (free)
#   ./demo-claude.sh --real 'PROMPT'  the real API: needs ANTHROPIC_API_KEY
#                                     or CLAUDE_CODE_OAUTH_TOKEN (costs money)
#
# Needs: Docker (it only builds, nothing is pulled), Rust (cargo), python3
# with pip (first run only), busybox-static, x86-64 Linux.
# Other arguments go to `cldpd start` (e.g. --json).
#
# Environment: DEMO_BASE_IMAGE (default cldpd-claude-base:0.2.189; built
# when missing), DEMO_POD (default claude-demo: the pod's name, so its
# image is cldpd-$DEMO_POD), CLDPD_STATE_DIR (where the session logs go).
# The images are kept so that a rerun is quick; remove them with
#   docker rmi cldpd-claude-demo cldpd-claude-base:0.2.189
set -eu
cd "$(dirname "$0")"

base=${DEMO_BASE_IMAGE:-cldpd-claude-base:0.2.189}
pod=${DEMO_POD:-claude-demo}
docker=${CLDPD_DOCKER:-docker}

real=false
if [ "${1:-}" = "--real" ]; then
  real=true
  shift
  if [ -z "${ANTHROPIC_API_KEY:-}${CLAUDE_CODE_OAUTH_TOKEN:-}" ]; then
    echo "demo-claude: --real needs ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN in the environment" >&2
    exit 2
  fi
  if [ $# -eq 0 ]; then
    echo "demo-claude: --real needs a prompt: ./demo-claude.sh --real 'what to do'" >&2
    exit 2
  fi
  prompt=$1
  shift
else
  prompt="Write a greeting into hello.txt and show it."
fi

if ! "$docker" image inspect "$base" >/dev/null 2>&1; then
  echo "demo-claude: building $base from the claude-agent-sdk wheel (.ci/claude-fixture.sh)…" >&2
  .ci/claude-fixture.sh "$base" >/dev/null
fi

# The dev profile: the build ./demo.sh, cargo test and the examples share
# (CLDPD_BIN: a cldpd binary to use instead, as the tests do).
if [ -n "${CLDPD_BIN:-}" ]; then
  cldpd=$CLDPD_BIN
else
  cargo build
  cldpd=${CARGO_TARGET_DIR:-target}/debug/cldpd
fi

# The pod, staged with the base image named above.
work=$(mktemp -d "${TMPDIR:-/tmp}/cldpd-demo-claude.XXXXXX")
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$work/pods/$pod"
cp config/pods/claude-demo/Dockerfile config/pods/claude-demo/pod.json \
  config/pods/claude-demo/template.md "$work/pods/$pod/"
sed -i "s|^FROM .*|FROM $base|" "$work/pods/$pod/Dockerfile"

if $real; then
  unset ANTHROPIC_BASE_URL
  # Forward whichever credentials are set (an unset one would be warned of).
  names=
  for name in ANTHROPIC_API_KEY CLAUDE_CODE_OAUTH_TOKEN; do
    if eval "[ -n \"\${$name:-}\" ]"; then names="$names${names:+, }\"$name\""; fi
  done
  sed -i "s|\"inheritEnv\": \[.*\]|\"inheritEnv\": [$names]|" "$work/pods/$pod/pod.json"
else
  # The scripted model on a free loopback port; it prints its URL first.
  "$cldpd" model-server --script config/pods/claude-demo/model.json \
    >"$work/server.out" 2>"$work/server.log" &
  server=$!
  i=0
  until grep -q '^ANTHROPIC_BASE_URL=' "$work/server.out" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$server" 2>/dev/null; then
      echo "demo-claude: the model server did not start:" >&2
      cat "$work/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  ANTHROPIC_BASE_URL=$(sed -n 's/^ANTHROPIC_BASE_URL=//p' "$work/server.out")
  # Any key will do for the scripted model; a real one is never sent to it.
  ANTHROPIC_API_KEY=offline-demo-not-a-key
  unset CLAUDE_CODE_OAUTH_TOKEN
  export ANTHROPIC_BASE_URL ANTHROPIC_API_KEY
  echo "demo-claude: scripted model server on $ANTHROPIC_BASE_URL (config/pods/claude-demo/model.json)" >&2
fi

status=0
"$cldpd" --pods-dir "$work/pods" start "$pod" --prompt "$prompt" "$@" || status=$?
exit $status
