#!/usr/bin/env bash
# Install what the test suite needs and run it: MariaDB server and client (apt, when missing),
# a virtualenv .venv with mysqlgate and its test extras, then pytest.
# Usage: ./scripts/test.sh [pytest arguments...]     (always adds -q -ra)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "scripts/test.sh: needs root or sudo to run: $*" >&2
        exit 1
    fi
}

# System packages: the server the tests start, the client and sysbench some tests and the
# benchmarks use, what building mysqlclient (no wheels on PyPI for Linux) needs, and
# systemd-analyze.
missing=()
if [ -z "${MYSQLGATE_TEST_MARIADBD:-}" ] && ! command -v mariadbd >/dev/null 2>&1 \
        && [ ! -x /usr/sbin/mariadbd ]; then
    missing+=(mariadb-server mariadb-client libmariadb-dev pkg-config sysbench)
else
    command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
    command -v sysbench >/dev/null 2>&1 || missing+=(sysbench)
    if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists libmariadb; then
        missing+=(libmariadb-dev pkg-config)
    fi
fi
# systemd-analyze verifies deploy/mysqlgate.service (tests/unit/test_deploy.py); a machine
# or container without systemd as its init can still run it.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The fresh-Debian install test (tests/integration/test_install.py) makes its root with it.
if [ "${MYSQLGATE_TEST_INSTALL:-}" = 1 ] && ! command -v debootstrap >/dev/null 2>&1 \
        && [ ! -x /usr/sbin/debootstrap ]; then
    missing+=(debootstrap)
fi
if [ ! -x .venv/bin/python ]; then
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
    python3 -c 'import os, sysconfig; assert os.path.exists(
        os.path.join(sysconfig.get_paths()["include"], "Python.h"))' >/dev/null 2>&1 \
        || missing+=(python3-dev)
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/test.sh: installing ${missing[*]}" >&2
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

# The virtualenv; reinstalled only when pyproject.toml, setup.py or the C source changes (the
# install is editable; the C extension, protocol/_scan.c, is built in place by it).
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.mysqlgate-pyproject.sha256
if ! sha256sum --check --status "$stamp" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet -e '.[test]'
    sha256sum pyproject.toml setup.py mysqlgate/protocol/_scan.c > "$stamp"
fi

# Two workers (pytest-xdist), each with its own servers: most of a test's time is spent
# waiting (for a timeout, a restart, a server), so two halve the suite's time even on
# two cores, and run each test beside another, as on a busy machine.
# MYSQLGATE_TEST_WORKERS=0 runs it in this one process.
exec .venv/bin/python -m pytest -q -ra -n "${MYSQLGATE_TEST_WORKERS:-2}" "$@"
