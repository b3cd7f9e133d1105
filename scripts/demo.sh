#!/usr/bin/env bash
# The README's main job, on a fresh machine (as root):
#  1. builds petri;
#  2. runs one throwaway container (hostname, PID 1, capabilities, seccomp);
#  3. builds the fixture images from their Dockerfiles (fixtures/build/busybox,
#     then fixtures/demo's two images) and runs the demo project's ten jobs in
#     parallel with `petri test`, one of them made to fail (DEMO_FAIL=1): its
#     container is committed and saved to fixtures/demo/petri-artifacts/divide.tar,
#     JUnit goes to fixtures/demo/petri-artifacts/junit.xml;
#  4. reopens the failed container with `petri repro --rerun`, which runs the
#     failed command again in it and shows the same exit code.
# Exits 0 when all of that behaved as expected.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ -x /bin/busybox ] || { echo "demo: needs /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }
npm run --silent build >/dev/null
petri() { node "$top/dist/bin/petri.cjs" "$@"; }

echo '== one container'
rootfs=${DEMO_ROOTFS:-/tmp/demo-busybox-rootfs}
if [ ! -x "$rootfs/bin/busybox" ]; then
  mkdir -p "$rootfs"/{bin,proc,sys,dev,tmp,etc,root}
  cp /bin/busybox "$rootfs/bin/"
  for applet in $("$rootfs/bin/busybox" --list); do [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
fi
(set -x
petri run --rm --rootfs "$rootfs" --memory 64m --pids 64 --hostname demo -- \
  sh -c 'echo "hello from $(hostname), PID $$ under $(cat /proc/1/comm)"; grep -E "^(CapEff|Seccomp)" /proc/self/status; ls /written 2>&1; touch /written')

echo '== petri test on fixtures/demo (DEMO_FAIL=1 makes the divide job fail)'
status=0
DEMO_FAIL=1 bash fixtures/demo/demo.sh || status=$?
if [ "$status" -ne 1 ]; then
  echo "demo: petri test exited $status, expected 1 (one failing job)" >&2
  exit 1
fi

echo '== reopening the failed container: petri repro fixtures/demo/petri-artifacts/divide.tar --rerun'
status=0
petri repro fixtures/demo/petri-artifacts/divide.tar --rerun || status=$?
if [ "$status" -eq 0 ]; then
  echo "demo: the failure did not reproduce" >&2
  exit 1
fi
echo "== the failure reproduced (exit $status); open a shell in it with: petri repro fixtures/demo/petri-artifacts/divide.tar"
