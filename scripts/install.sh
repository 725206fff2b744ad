#!/usr/bin/env bash
# Installs everything sentinel needs on a fresh Debian machine: the real Prometheus,
# Alertmanager and registry binaries, and a virtualenv with the package and its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=0
for bin in prometheus promtool prometheus-alertmanager amtool docker-registry openssl unshare \
        setpriv; do
    command -v "$bin" >/dev/null 2>&1 || need_apt=1
done
if [ "$need_apt" = 1 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing Debian packages: prometheus prometheus-alertmanager docker-registry" \
         "openssl util-linux" >&2
    $SUDO apt-get update -qq
    # Debian's postinst would start the services; the project starts its own processes.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        prometheus prometheus-alertmanager docker-registry openssl util-linux >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[dev]'
    touch "$stamp"
fi
