#!/usr/bin/env bash
# Install NVIDIA Triton 2.51 (the tritonserver binary the nvidia-pytriton wheel carries, with its
# Python backend) into its own venv, idempotently, for bench/vs_triton.py.
#
#   bash bench/setup_triton.sh            # venv at bench/.venv-triton (or $TRITON_VENV)
#
# No containers: the wheel ships bin/tritonserver, libtriton_python.so, triton_python_backend_utils.py
# and one triton_python_backend_stub per Python version, plus the libraries they link against
# (nvidia_pytriton.libs). It has no ONNX Runtime backend, so the bench serves its ONNX files through
# the Python backend (bench/triton_model.py runs onnxruntime, installed in the same venv).
#
# Lays out <venv>/triton/backends/python/ from the wheel, writes <venv>/triton/triton.env (shell
# variables: TRITONSERVER, TRITON_BACKENDS, TRITON_LD_LIBRARY_PATH, TRITON_PATH_PREFIX) and a wrapper
# <venv>/bin/tritonserver-run that sets the libraries and PATH (the stub's Python) and execs tritonserver with
# --backend-directory; prints the wrapper's path on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${TRITON_VENV:-$here/.venv-triton}"
python="${PYTHON:-python3.11}"

command -v "$python" >/dev/null || { echo "need $python (the wheel's Python backend stub here is built for 3.11)" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# Keep the venv out of git status (bench/.gitignore does not list it).
[ -f "$venv/.gitignore" ] || printf '*\n' >"$venv/.gitignore"
pyver="$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if ! "$venv/bin/python" -c 'import pytriton, onnxruntime, numpy' 2>/dev/null; then
    "$venv/bin/pip" install -q --disable-pip-version-check nvidia-pytriton onnxruntime numpy 2>&1 \
        | grep -v "^WARNING: Location" >&2 || true
    "$venv/bin/python" -c 'import pytriton, onnxruntime, numpy' || { echo "pip install nvidia-pytriton onnxruntime numpy failed" >&2; exit 1; }
fi
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
wheel="$site/pytriton/tritonserver"
binary="$wheel/bin/tritonserver"
libs="$site/nvidia_pytriton.libs"
stub="$wheel/python_backend_stubs/$pyver/triton_python_backend_stub"
for f in "$binary" "$wheel/backends/python/libtriton_python.so" "$wheel/backends/python/triton_python_backend_utils.py" "$stub"; do
    [ -f "$f" ] || { echo "the nvidia-pytriton wheel lacks $f" >&2; exit 1; }
done
[ -x "$binary" ] || chmod +x "$binary"

backends="$venv/triton/backends"
mkdir -p "$backends/python"
cp -u "$wheel/backends/python/libtriton_python.so" "$wheel/backends/python/triton_python_backend_utils.py" "$stub" \
    "$backends/python/"
chmod +x "$backends/python/triton_python_backend_stub"

# The stub embeds libpython$pyver: prefer the one of the interpreter this venv was made from (so the
# model runs on the same Python as the packages were installed for), else the system's.
pylibdir="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')"
ld="$libs"
if [ -n "$pylibdir" ] && [ -e "$pylibdir/libpython$pyver.so.1.0" ]; then
    ld="$libs:$pylibdir"
fi

env_file="$venv/triton/triton.env"
cat >"$env_file" <<ENV
TRITONSERVER=$binary
TRITON_BACKENDS=$backends
TRITON_LD_LIBRARY_PATH=$ld
TRITON_PATH_PREFIX=$venv/bin
ENV

wrapper="$venv/bin/tritonserver-run"
cat >"$wrapper" <<WRAP
#!/usr/bin/env bash
# tritonserver 2.51 from nvidia-pytriton, with the Python backend laid out by setup_triton.sh.
export LD_LIBRARY_PATH="$ld\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
# The stub's embedded Python ignores PYTHONPATH; it finds its interpreter (and so this venv's
# pyvenv.cfg and site-packages, numpy and onnxruntime) by looking up "python3" on PATH.
export PATH="$venv/bin:\$PATH"
exec "$binary" --backend-directory="$backends" "\$@"
WRAP
chmod +x "$wrapper"

# (--help exits 1 by design: look for its usage text instead)
usage="$("$wrapper" --help 2>&1 || true)"
[[ "$usage" == *"Usage: tritonserver"* ]] || { echo "tritonserver does not start (see: $wrapper --help)" >&2; exit 1; }
missing="$(LD_LIBRARY_PATH="$ld" ldd "$backends/python/triton_python_backend_stub" 2>&1 | grep "not found" || true)"
[ -z "$missing" ] || { echo "the Python backend stub misses libraries: LD_LIBRARY_PATH=$ld ldd $backends/python/triton_python_backend_stub" >&2; exit 1; }
echo "env: $env_file" >&2
echo "$wrapper"
