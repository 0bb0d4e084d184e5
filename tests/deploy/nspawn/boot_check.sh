#!/usr/bin/env bash
# Boot systemd in a throw-away container and run inner_check.sh in it as root.
#
#   boot_check.sh SRC OUT
#
# SRC  a copy of the repository (bound read-only at /nsp-src; the check copies it again)
# OUT  a folder on the host: the container writes status, logs and figures there
#
# The container's root is an overlay of this machine's root (read-only lower layer) with a tmpfs
# upper layer, so nothing it does reaches the host (`-D /` and `--volatile=state` do not work
# here). It shares the host's network (pip needs the package index), so it boots only
# nsp-check.target (basic.target plus the check), not the services the image enables, and the
# check serves on $APPLIANCE_CHECK_PORT rather than 8080. Everything is torn down on exit,
# including after a timeout ($APPLIANCE_NSPAWN_TIMEOUT seconds, default 900).
set -euo pipefail

SRC="$(cd "${1:?usage: boot_check.sh SRC OUT}" && pwd)"
OUT="$(cd "${2:?usage: boot_check.sh SRC OUT}" && pwd)"
TIMEOUT="${APPLIANCE_NSPAWN_TIMEOUT:-900}"
PORT="${APPLIANCE_CHECK_PORT:-18080}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

WORK="$(mktemp -d /tmp/appliance-nspawn.XXXXXX)"
ROOT="$WORK/root"
LAYER="$WORK/layer"
NSPAWN_PID=""

alive() { [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; }

wait_gone() {  # wait_gone SECONDS → 0 once systemd-nspawn has exited
    local i
    for ((i = 0; i < $1 * 10; i++)); do alive || return 0; sleep 0.1; done
    return 1
}

stop_container() {
    # systemd-nspawn: the first SIGTERM asks the container to halt, a second one terminates it at
    # once (it kills the container's processes itself; a SIGKILL to nspawn would orphan them).
    alive || return 0
    kill -TERM "$NSPAWN_PID" 2>/dev/null; wait_gone 20 && return 0
    kill -TERM "$NSPAWN_PID" 2>/dev/null; wait_gone 10 && return 0
    kill -KILL "$NSPAWN_PID" 2>/dev/null || true
}

cleanup() {
    stop_container
    # The container's mounts live in its own namespace; only ours remain here.
    for mnt in "$ROOT" "$LAYER"; do
        if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" 2>/dev/null || umount -l "$mnt" || true; fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

mkdir -p "$ROOT" "$LAYER"
mount -t tmpfs -o size=8G,mode=0755 tmpfs "$LAYER"
mkdir -p "$LAYER/upper" "$LAYER/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$LAYER/upper,workdir=$LAYER/work" "$ROOT"

# A machine id of its own, a clean /etc/model-appliance etc. (the host may have had an install).
tr -d '-' </proc/sys/kernel/random/uuid >"$ROOT/etc/machine-id"
rm -rf "$ROOT/etc/model-appliance" "$ROOT/var/lib/model-appliance" "$ROOT/opt/model-appliance" \
    "$ROOT/etc/systemd/system/model-appliance.service" "$ROOT/etc/systemd/system/model-appliance.service.d"
DROPIN=""
if [ -n "${APPLIANCE_CHECK_DROPIN:-}" ]; then
    DROPIN=/etc/appliance-check-dropin.conf
    install -m 0644 "$APPLIANCE_CHECK_DROPIN" "$ROOT$DROPIN"
fi
install -m 0755 "$HERE/inner_check.sh" "$ROOT/usr/local/sbin/appliance-inner-check"
cat >"$ROOT/etc/systemd/system/nsp-check.target" <<'EOF'
[Unit]
Description=model-appliance container check
Requires=basic.target nsp-check.service
After=basic.target nsp-check.service
AllowIsolate=yes
EOF
cat >"$ROOT/etc/systemd/system/nsp-check.service" <<EOF
[Unit]
Description=install model-appliance with install.sh and query the service
After=basic.target
[Service]
Type=oneshot
Environment=APPLIANCE_SRC=/nsp-src APPLIANCE_CHECK_PORT=$PORT APPLIANCE_CHECK_OUT=/nsp-out
Environment=APPLIANCE_CHECK_DROPIN=$DROPIN APPLIANCE_CHECK_TLS=${APPLIANCE_CHECK_TLS:-1}
ExecStart=/usr/local/sbin/appliance-inner-check
ExecStopPost=/bin/systemctl poweroff --no-block
TimeoutStartSec=$((TIMEOUT - 30))
EOF

systemd-nspawn -D "$ROOT" --register=no --keep-unit --link-journal=no --console=pipe \
    --machine="appliance-check-$$" --bind="$OUT:/nsp-out" --bind-ro="$SRC:/nsp-src" \
    -b -- systemd.unit=nsp-check.target >"$OUT/console.log" 2>&1 &
NSPAWN_PID=$!
rc=0
if wait_gone "$TIMEOUT"; then
    wait "$NSPAWN_PID" || rc=$?
else
    echo "timed out after $TIMEOUT s" >>"$OUT/console.log"
    stop_container
    rc=124
fi
NSPAWN_PID=""
echo "systemd-nspawn exited with $rc" >>"$OUT/console.log"
[ "$rc" = 0 ] && [ "$(cat "$OUT/status" 2>/dev/null)" = ok ]
