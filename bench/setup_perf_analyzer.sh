#!/usr/bin/env bash
# Install Triton's perf_analyzer (the load generator the benches use) into its own venv, idempotently.
#
#   bash bench/setup_perf_analyzer.sh            # venv at bench/.venv-perf (or $PERF_VENV)
#
# The binary that runs on Debian 12 ships inside the tritonclient==2.51.0 wheel; it links against
# libcudart (from the nvidia-cuda-runtime-cu12 wheel: no GPU needed, only the library) and Debian's
# libb64. It lives in a separate venv so the project's own environment stays light.
# Prints the path of a wrapper script that sets LD_LIBRARY_PATH and execs perf_analyzer.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${PERF_VENV:-$here/.venv-perf}"
python="${PYTHON:-python3}"

if ! ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d'; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y -q libb64-0d >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libb64-0d >/dev/null; }
    else
        echo "need Debian's libb64-0d: sudo apt-get install -y libb64-0d" >&2
        exit 1
    fi
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
if ! "$venv/bin/python" -c 'import tritonclient, nvidia.cuda_runtime' 2>/dev/null; then
    "$venv/bin/pip" install -q "tritonclient==2.51.0" "nvidia-cuda-runtime-cu12"
fi
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# The wheel installs the binary as a script into the venv's bin (older builds: tritonclient/bin).
binary="$venv/bin/perf_analyzer"
[ -f "$binary" ] || binary="$site/tritonclient/bin/perf_analyzer"
[ -x "$binary" ] || chmod +x "$binary"
cudart="$site/nvidia/cuda_runtime/lib"
wrapper="$venv/bin/perf-analyzer-run"
cat >"$wrapper" <<WRAP
#!/usr/bin/env bash
export LD_LIBRARY_PATH="$cudart\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$binary" "\$@"
WRAP
chmod +x "$wrapper"
"$wrapper" --version >/dev/null 2>&1 || "$wrapper" --help >/dev/null 2>&1 || { echo "perf_analyzer does not start" >&2; exit 1; }
echo "$wrapper"
