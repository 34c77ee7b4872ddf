#!/usr/bin/env bash
# The real Claude Code for the tests (offline, free): prepares a build
# context around the Claude Code CLI that PyPI's claude-agent-sdk wheel
# bundles, and with a TAG argument builds the test image from it.
#
#   .ci/claude-fixture.sh          fill the cache (download the wheel if it
#                                  is missing, extract the binary, stage the
#                                  image context); prints the context dir
#   .ci/claude-fixture.sh TAG      the same, then `docker build -t TAG`
#
# Cache: ${CLDPD_CACHE_DIR:-$HOME/.cache/cldpd}. A present wheel is reused;
# a missing one is fetched with `pip download --no-deps` (≈ 178 MB, once).
#
# The image is FROM scratch: the host's glibc files (`ldd` of the binary and
# of /bin/bash), /bin/bash (Claude Code's Bash tool needs a real shell),
# Debian's static busybox (sh, ls, cat, …) and /usr/local/bin/claude, run as
# the non-root user `agent` (1000:1000, HOME=/home/agent, writable): as root
# `--dangerously-skip-permissions` exits 1.
#
# The tests (tests/support/claude.rs) call this with a tag of their own and
# remove that tag when they finish; see README "Tests".
set -euo pipefail

SDK_VERSION=0.2.189
WHEEL=claude_agent_sdk-${SDK_VERSION}-py3-none-manylinux_2_17_x86_64.whl
BUSYBOX=/bin/busybox

cache="${CLDPD_CACHE_DIR:-$HOME/.cache/cldpd}"
mkdir -p "$cache/wheels"

wheel="$cache/wheels/$WHEEL"
if [ ! -s "$wheel" ]; then
  echo "claude-fixture: downloading claude-agent-sdk==$SDK_VERSION into $cache/wheels" >&2
  tmp="$(mktemp -d "$cache/wheels/.download.XXXXXX")"
  if command -v pip >/dev/null 2>&1; then pip=(pip); else pip=(python3 -m pip); fi
  "${pip[@]}" download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_17_x86_64 --python-version 3.12 \
    -d "$tmp" "claude-agent-sdk==$SDK_VERSION" >&2
  mv "$tmp/$WHEEL" "$wheel"
  rm -rf "$tmp"
fi

# The binary, extracted once per wheel.
bin_dir="$cache/claude-$SDK_VERSION"
if [ ! -x "$bin_dir/claude" ]; then
  echo "claude-fixture: extracting claude from $WHEEL" >&2
  tmp="$(mktemp -d "$cache/.extract.XXXXXX")"
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$wheel" 'claude_agent_sdk/_bundled/claude' -d "$tmp"
  else
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("claude_agent_sdk/_bundled/claude", sys.argv[2])' "$wheel" "$tmp"
  fi
  mkdir -p "$bin_dir"
  mv "$tmp/claude_agent_sdk/_bundled/claude" "$bin_dir/claude.tmp"
  chmod 755 "$bin_dir/claude.tmp"
  mv "$bin_dir/claude.tmp" "$bin_dir/claude"
  rm -rf "$tmp"
fi

if [ ! -x "$BUSYBOX" ]; then
  echo "claude-fixture: $BUSYBOX is missing: apt-get install busybox-static" >&2
  exit 1
fi

# The build context, staged afresh (cheap: the binary is hard-linked).
ctx="$cache/claude-image-$SDK_VERSION"
rm -rf "$ctx"
mkdir -p "$ctx/root/bin" "$ctx/root/usr/local/bin" "$ctx/root/etc" "$ctx/root/tmp" "$ctx/home/agent"
chmod 1777 "$ctx/root/tmp"
ln "$bin_dir/claude" "$ctx/claude" 2>/dev/null || cp "$bin_dir/claude" "$ctx/claude"
cp /bin/bash "$ctx/root/bin/bash"
cp "$BUSYBOX" "$ctx/root/bin/busybox"
# busybox applets as symlinks (no RUN step: nothing runs during the build);
# bash keeps its own name.
for applet in $("$BUSYBOX" --list); do
  case "$applet" in bash | busybox) continue ;; esac
  ln -sf busybox "$ctx/root/bin/$applet"
done
# The shared libraries both programs load, at the paths ldd names (copied
# through symlinks).
for lib in $( { ldd "$bin_dir/claude"; ldd /bin/bash; } | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$ctx/root$(dirname "$lib")"
  cp -L "$lib" "$ctx/root$lib"
done
printf 'root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/home/agent:/bin/bash\n' >"$ctx/root/etc/passwd"
printf 'root:x:0:\nagent:x:1000:\n' >"$ctx/root/etc/group"
cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY root/ /
COPY --chown=1000:1000 home/ /home/
COPY claude /usr/local/bin/claude
ENV HOME=/home/agent PATH=/usr/local/bin:/usr/bin:/bin SHELL=/bin/bash
USER 1000:1000
WORKDIR /home/agent
EOF

if [ $# -ge 1 ]; then
  "${CLDPD_DOCKER:-docker}" build -q --force-rm -t "$1" "$ctx" >/dev/null
  echo "$1"
else
  echo "$ctx"
fi
