#!/usr/bin/env bash
# Run the test suite on a fresh machine: installs what it needs, then pytest.
#
#   bash tests/run.sh [pytest arguments]
#
# As root it installs Debian's softhsm2, opensc, opencryptoki, chromium and nginx when missing
# (elsewhere the tests that need them are skipped, except with CI=true where
# they fail).  Python packages go to .venv.  PostgreSQL is expected at
# TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v softhsm2-util >/dev/null || missing+=(softhsm2)
command -v pkcs11-tool >/dev/null || missing+=(opensc)
command -v pkcsslotd >/dev/null || [ -x /usr/sbin/pkcsslotd ] || missing+=(opencryptoki)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "not installed: ${missing[*]} (tests that need them will be skipped)"
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

# Lint, import order and types first: they take seconds and fail fast.
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
