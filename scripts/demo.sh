#!/usr/bin/env bash
# The README's main job: builds petri, makes a busybox root filesystem from
# Debian's busybox-static, and runs a command in a throwaway petri container.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /bin/busybox ] || { echo "demo: needs /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }
npm run --silent build >/dev/null
rootfs=${DEMO_ROOTFS:-/tmp/demo-busybox-rootfs}
if [ ! -x "$rootfs/bin/busybox" ]; then
  mkdir -p "$rootfs"/{bin,proc,sys,dev,tmp,etc,root}
  cp /bin/busybox "$rootfs/bin/"
  for applet in $("$rootfs/bin/busybox" --list); do ln -sf busybox "$rootfs/bin/$applet"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
fi
set -x
node dist/cli/main.js run --rm --rootfs "$rootfs" --memory 64m --pids 64 --hostname demo -- \
  sh -c 'echo "hello from $(hostname), PID $$ under $(cat /proc/1/comm)"; grep -E "^(CapEff|Seccomp)" /proc/self/status; ls /written 2>&1; touch /written'
