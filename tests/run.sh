#!/usr/bin/env bash
# Run the test suite on a fresh machine: installs what it needs, then pytest.
#
#   bash tests/run.sh [pytest arguments]
#
# As root it installs Debian's softhsm2, opensc, p11-kit, p11-kit-modules,
# opencryptoki, chromium, nginx, postgresql, redis-server, apache2 and
# libapache2-mod-auth-openidc when missing
# (elsewhere the tests that need them are skipped, except with CI=true where
# they fail).  Python packages go to .venv.  PostgreSQL and Redis: those at
# TEST_POSTGRES_URL and TEST_REDIS_URL when given, else the defaults
# (postgresql://postgres@127.0.0.1:5432/test, redis://127.0.0.1:6379) when they
# answer, else servers of the run's own on free ports, stopped at the end
# (tests/services.py; TEST_SERVICES=private starts them even where the defaults answer).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

missing=()
command -v softhsm2-util >/dev/null || missing+=(softhsm2)
command -v pkcs11-tool >/dev/null || missing+=(opensc)
command -v p11-kit >/dev/null || missing+=(p11-kit)
# Where the tests look for p11-kit's client module (tests/remote_token.py, standard library only).
"$PYTHON" -c 'import sys; sys.path.insert(0, "tests"); from remote_token import p11kit_client_module
sys.exit(p11kit_client_module() is None)' || missing+=(p11-kit-modules)
command -v pkcsslotd >/dev/null || [ -x /usr/sbin/pkcsslotd ] || missing+=(opencryptoki)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
# An RP we did not write, for the browser sign-in through the TLS proxy (tests/test_relying_party.py).
[ -x /usr/sbin/apache2 ] || missing+=(apache2)
[ -f /usr/lib/apache2/modules/mod_auth_openidc.so ] || missing+=(libapache2-mod-auth-openidc)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "not installed: ${missing[*]} (tests that need them will be skipped)"
    fi
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

# Lint, import order and types first: they take seconds and fail fast.
.venv/bin/ruff check .
.venv/bin/mypy

# PostgreSQL and Redis; what is started here is stopped however the run ends.
services="$(mktemp -d)"
trap '.venv/bin/python tests/services.py stop "$services"' EXIT
if ! exports="$(.venv/bin/python tests/services.py start "$services")"; then
    echo "tests/run.sh: PostgreSQL or Redis could not be started (see above)" >&2
    exit 1
fi
eval "$exports"

# One worker per core (TEST_WORKERS=0 runs in this process), a test file per worker at a
# time: a module's fixtures (one gunicorn, one browser) are built once, and the files that
# share a machine-wide resource (openCryptoki's one soft token) are one file.
status=0
.venv/bin/python -m pytest -n "${TEST_WORKERS:-$(nproc)}" --dist loadfile "$@" || status=$?
exit "$status"
