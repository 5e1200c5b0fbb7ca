#!/usr/bin/env bash
# From a fresh clone to a running provider on http://localhost:8000.
#
# Creates .venv, installs the project, keeps its generated settings in
# instance/quickstart.env (mode 600), initialises a SoftHSM2 token when
# softhsm2-util is installed (software keys otherwise), and starts gunicorn.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .

mkdir -p instance
ENV_FILE="instance/quickstart.env"
if [ ! -f "$ENV_FILE" ]; then
    umask 077
    random() { .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))'; }
    {
        echo "OIDC_ISSUER=http://localhost:8000"
        echo "SECRETS_SYSTEM=$(random)"
        echo "ADMIN_API_KEYS=$(random)"
    } > "$ENV_FILE"
fi

SOFTHSM_LIB=""
for candidate in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*-linux-gnu/softhsm/libsofthsm2.so; do
    [ -f "$candidate" ] && SOFTHSM_LIB="$candidate" && break
done
if command -v softhsm2-util >/dev/null && [ -n "$SOFTHSM_LIB" ]; then
    mkdir -p instance/softhsm/tokens
    export SOFTHSM2_CONF="$ROOT/instance/softhsm/softhsm2.conf"
    if [ ! -f "$SOFTHSM2_CONF" ]; then
        printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
            "$ROOT/instance/softhsm/tokens" > "$SOFTHSM2_CONF"
    fi
    if ! grep -q '^HSM_PIN=' "$ENV_FILE"; then
        PIN="$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(8))')"
        softhsm2-util --init-token --free --label oidc-quickstart --pin "$PIN" \
            --so-pin "$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(8))')" >/dev/null
        {
            echo "HSM_ENABLED=true"
            echo "HSM_LIBRARY=$SOFTHSM_LIB"
            echo "HSM_TOKEN_LABEL=oidc-quickstart"
            echo "HSM_PIN=$PIN"
            echo "SOFTHSM2_CONF=$SOFTHSM2_CONF"
        } >> "$ENV_FILE"
    fi
    echo "Signing keys: SoftHSM2 token 'oidc-quickstart' ($SOFTHSM_LIB)"
else
    echo "NOTICE: softhsm2 is not installed; signing keys are software keys sealed in the database."
    echo "        (apt-get install softhsm2 opensc, then remove instance/quickstart.env, to use an HSM token.)"
fi

set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a

echo "Provider: $OIDC_ISSUER  (discovery: $OIDC_ISSUER/.well-known/openid-configuration)"
echo "Admin API key: in $ENV_FILE (ADMIN_API_KEYS)"
exec .venv/bin/gunicorn -c gunicorn.conf.py app:app
