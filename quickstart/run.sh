#!/usr/bin/env bash
# From a fresh clone to a running provider on http://localhost:8000.
#
# Creates .venv, installs the project, keeps its generated settings in
# instance/quickstart.env (mode 600), initialises a SoftHSM2 token when
# softhsm2-util is installed (software keys otherwise), creates a demo user and
# a demo client, starts a demo relying party on http://localhost:8001 and the
# provider under gunicorn.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[demo]'

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

FLASK=(.venv/bin/flask --app app)
"${FLASK[@]}" db upgrade -d oidc/migrations >/dev/null 2>&1 || "${FLASK[@]}" db upgrade -d oidc/migrations

DEMO_FILE="instance/quickstart-demo.env"
if [ ! -f "$DEMO_FILE" ]; then
    umask 077
    DEMO_PASSWORD="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')"
    printf '%s\n' "$DEMO_PASSWORD" | "${FLASK[@]}" users create demo --password-stdin \
        --email demo@example.com --name "Demo User" >/dev/null
    CLIENT_JSON="$("${FLASK[@]}" clients create --name "Demo app" \
        --redirect-uri http://localhost:8001/callback --post-logout-redirect-uri http://localhost:8001/ \
        --grant-type authorization_code --grant-type refresh_token \
        --scope "openid profile email offline_access" --auth-method client_secret_basic --json)"
    {
        echo "DEMO_USERNAME=demo"
        echo "DEMO_PASSWORD=$DEMO_PASSWORD"
        echo "DEMO_CLIENT_ID=$(printf '%s' "$CLIENT_JSON" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')"
        echo "DEMO_CLIENT_SECRET=$(printf '%s' "$CLIENT_JSON" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')"
    } > "$DEMO_FILE"
fi
set -a
# shellcheck disable=SC1090
. "$DEMO_FILE"
set +a

.venv/bin/python quickstart/demo_rp.py > instance/demo_rp.log 2>&1 &
DEMO_PID=$!
trap 'kill "$DEMO_PID" 2>/dev/null || true' EXIT

echo
echo "Provider:  $OIDC_ISSUER  (discovery: $OIDC_ISSUER/.well-known/openid-configuration)"
echo "Open:      http://localhost:8001  and click \"Log in\""
echo "Demo user: $DEMO_USERNAME / $DEMO_PASSWORD"
echo "Admin API: Authorization: Bearer <ADMIN_API_KEYS from $ENV_FILE>"
echo
.venv/bin/gunicorn -c gunicorn.conf.py app:app
