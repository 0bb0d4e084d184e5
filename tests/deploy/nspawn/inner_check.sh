#!/bin/bash
# Runs as root inside the booted container (systemd is PID 1): install with install.sh, query the
# running service, restart it with every sample version served (ONNX Runtime and OpenVINO), re-run
# install.sh (idempotence), uninstall, purge. Writes status ("ok" or "fail N"), logs and
# figures.json to $APPLIANCE_CHECK_OUT. Installs with --tls unless APPLIANCE_CHECK_TLS=0.
# Optional $APPLIANCE_CHECK_DROPIN: a unit drop-in to try
# at the end (e.g. MemoryDenyWriteExecute=yes); its outcome is recorded, not asserted.
set -uo pipefail

OUT="$APPLIANCE_CHECK_OUT"
PORT="$APPLIANCE_CHECK_PORT"
UNIT=model-appliance.service
PY=/opt/model-appliance/venv/bin/python
KEY=/etc/model-appliance/admin.key
QUERY="$APPLIANCE_SRC/tests/deploy/nspawn/query.py"
exec >"$OUT/inner.log" 2>&1
declare -A FIG=()
PASSED=0

finish() {
    local rc=$?
    journalctl -u "$UNIT" --no-pager -o short-monotonic >"$OUT/service.log" 2>&1
    {
        printf '{'
        local sep=""
        for k in "${!FIG[@]}"; do printf '%s"%s": %s' "$sep" "$k" "${FIG[$k]}"; sep=", "; done
        printf '}\n'
    } >"$OUT/figures.json"
    # "ok" only when the last check was reached: a SIGTERM (timeout) also runs this trap.
    if [ "$rc" = 0 ] && [ "$PASSED" = 1 ]; then echo ok >"$OUT/status"; else echo "fail $rc" >"$OUT/status"; fi
}
trap finish EXIT

fail() { echo "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
TLS_FLAG=""
SCHEME=http
if [ "${APPLIANCE_CHECK_TLS:-1}" = 1 ]; then TLS_FLAG=--tls; SCHEME=https; fi
query() { "$PY" "$QUERY" --url "$SCHEME://127.0.0.1:$PORT" --key-file "$KEY" "$@"; }

echo "systemd: $(systemctl --version | head -1); PID 1: $(ps -p 1 -o comm=)"
rm -rf /root/appliance-src
cp -a "$APPLIANCE_SRC" /root/appliance-src
rm -rf /root/appliance-src/.venv /root/appliance-src/state /root/appliance-src/build
cd /root/appliance-src || fail "no source copy"

t=$(now)
./install.sh $TLS_FLAG --port "$PORT" --ready-timeout 240 >"$OUT/install.log" 2>&1 || fail "install.sh (see install.log)"
FIG[install_total_s]=$(since "$t")
FIG[install_ready_s]=$(grep -oE 'ready in [0-9]+ s' "$OUT/install.log" | grep -oE '[0-9]+' || echo null)

systemctl is-active --quiet "$UNIT" || fail "$UNIT is not active"
user=$(ps -o user= -p "$(systemctl show -p MainPID --value "$UNIT")")
FIG[service_user]="\"$user\""
[ "$user" = model-appliance ] || fail "service runs as $user"
stat -c '%a %U %n' /etc/model-appliance/credentials/* "$KEY" 2>/dev/null | tee "$OUT/key-modes.txt"
if awk '$1 != "600" { bad = 1 } END { exit !bad }' "$OUT/key-modes.txt"; then fail "a key file is not 0600"; fi
query >"$OUT/query-first.json" || fail "first prediction (see query-first.json)"
# The operator command: `keys` runs as the service user, the store stays the server's.
appliance keys list --config /etc/model-appliance/appliance.toml >"$OUT/keys-list.txt" || fail "appliance keys list"
grep -q "admin" "$OUT/keys-list.txt" || fail "the admin key is not in the store"
[ "$(stat -c %U /var/lib/model-appliance/api-keys.json)" = model-appliance ] || fail "api-keys.json not owned by the service"

# Start to ready, with the compiled-model cache warm.
systemctl stop "$UNIT"
t=$(now)
systemctl start "$UNIT"
"$PY" "$QUERY" --url "$SCHEME://127.0.0.1:$PORT" --ready-only >/dev/null || fail "not ready after a restart"
FIG[start_to_ready_s]=$(since "$t")

systemd-analyze security "$UNIT" --no-pager >"$OUT/security.txt" 2>&1
FIG[exposure_online]=$(grep -oE 'exposure level for [^:]+: [0-9.]+' "$OUT/security.txt" | grep -oE '[0-9.]+$' || echo null)

# Every built version (FP32 ONNX, INT8 OpenVINO IR, INT8 ONNX): both runtimes under the sandbox.
sed -i 's/^latest = 1$/all = true/' /var/lib/model-appliance/models/digits/model.toml
systemctl restart "$UNIT"
query --timeout 120 >"$OUT/query-all.json" || fail "predictions from every version (see query-all.json)"
grep -q '"runtime": "openvino"' "$OUT/query-all.json" || fail "no version ran on OpenVINO"

# Idempotence: a second run keeps config and keys, restarts, serves.
key_before=$(sha256sum "$KEY")
t=$(now)
./install.sh $TLS_FLAG --port "$PORT" --ready-timeout 240 >"$OUT/install-again.log" 2>&1 || fail "second install.sh run"
FIG[reinstall_total_s]=$(since "$t")
[ "$(sha256sum "$KEY")" = "$key_before" ] || fail "the second run replaced the admin key"
query >"$OUT/query-again.json" || fail "prediction after the second run"

if [ -n "${APPLIANCE_CHECK_DROPIN:-}" ]; then
    mkdir -p "/etc/systemd/system/$UNIT.d"
    cp "$APPLIANCE_CHECK_DROPIN" "/etc/systemd/system/$UNIT.d/zz-check.conf"
    systemctl daemon-reload
    systemctl restart "$UNIT"
    if query --timeout 60 >"$OUT/query-dropin.json"; then FIG[dropin_ok]=true; else FIG[dropin_ok]=false; fi
    journalctl -u "$UNIT" --no-pager -o cat -n 60 >"$OUT/service-dropin.log" 2>&1
    rm -f "/etc/systemd/system/$UNIT.d/zz-check.conf"
    systemctl daemon-reload
fi

./install.sh --uninstall >"$OUT/uninstall.log" 2>&1 || fail "--uninstall"
if [ -e "/etc/systemd/system/$UNIT" ] || [ -e /opt/model-appliance ]; then fail "--uninstall left the unit or program"; fi
if [ ! -s /etc/model-appliance/appliance.toml ] || [ ! -d /var/lib/model-appliance/models/digits ]; then
    fail "--uninstall removed config or models"
fi
systemctl is-active --quiet "$UNIT" && fail "the service still runs after --uninstall"
./install.sh --uninstall --purge >>"$OUT/uninstall.log" 2>&1 || fail "--uninstall --purge"
if [ -e /etc/model-appliance ] || [ -e /var/lib/model-appliance ]; then fail "--purge left config or state"; fi
id model-appliance >/dev/null 2>&1 && fail "--purge left the user"
PASSED=1
echo "all checks passed"
