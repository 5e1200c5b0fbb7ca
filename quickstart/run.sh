#!/usr/bin/env bash
# From a fresh clone to a running provider on http://localhost:8000.
#
# Creates .venv, installs the project, keeps its generated settings in
# instance/quickstart.env (mode 600), initialises a SoftHSM2 token when
# softhsm2-util is installed (software keys otherwise), creates a demo user and
# a demo client, starts a demo relying party on http://localhost:8001 and the
# provider under gunicorn.
#
# Optional settings (environment):
#   QUICKSTART_PORT=8000      the provider's port (issuer http://localhost:PORT)
#   DEMO_RP_PORT=8001         the demo relying party's port
#   QUICKSTART_DIR=instance   where the generated settings, the SoftHSM2 token,
#                             the SQLite database and the demo RP's log go
#   QUICKSTART_NO_VENV=1      use the Python given by PYTHON (default python3) as
#                             it is, with the project and its `demo` extra already
#                             installed: no virtual environment, no pip
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

PYTHON="${PYTHON:-python3}"
PORT="${QUICKSTART_PORT:-8000}"
export DEMO_RP_PORT="${DEMO_RP_PORT:-8001}"
STATE="${QUICKSTART_DIR:-instance}"
case "$STATE" in /*) ;; *) STATE="$ROOT/$STATE" ;; esac

if [ "${QUICKSTART_NO_VENV:-}" = 1 ]; then
    PY="$PYTHON"
else
    if [ ! -x .venv/bin/python ]; then
        "$PYTHON" -m venv .venv
    fi
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[demo]'
    PY=.venv/bin/python
fi
random() { "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))'; }

mkdir -p "$STATE"
ENV_FILE="$STATE/quickstart.env"
if [ ! -f "$ENV_FILE" ]; then
    (
        umask 077
        {
            echo "OIDC_ISSUER=http://localhost:$PORT"
            echo "SECRETS_SYSTEM=$(random)"
            echo "ADMIN_API_KEYS=$(random)"
            if [ "$STATE" != "$ROOT/instance" ]; then
                echo "DATABASE_URL=sqlite:///$STATE/oidc.sqlite3"
            fi
        } > "$ENV_FILE"
    )
fi

SOFTHSM_LIB=""
for candidate in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*-linux-gnu/softhsm/libsofthsm2.so; do
    [ -f "$candidate" ] && SOFTHSM_LIB="$candidate" && break
done
if command -v softhsm2-util >/dev/null && [ -n "$SOFTHSM_LIB" ]; then
    mkdir -p "$STATE/softhsm/tokens"
    export SOFTHSM2_CONF="$STATE/softhsm/softhsm2.conf"
    if [ ! -f "$SOFTHSM2_CONF" ]; then
        printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
            "$STATE/softhsm/tokens" > "$SOFTHSM2_CONF"
    fi
    if ! grep -q '^HSM_PIN=' "$ENV_FILE"; then
        PIN="$("$PY" -c 'import secrets; print(secrets.token_hex(8))')"
        softhsm2-util --init-token --free --label oidc-quickstart --pin "$PIN" \
            --so-pin "$("$PY" -c 'import secrets; print(secrets.token_hex(8))')" >/dev/null
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
    echo "        (apt-get install softhsm2 opensc, then remove $ENV_FILE, to use an HSM token.)"
fi

set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a
export BIND="${BIND:-127.0.0.1:$PORT}"

FLASK=("$PY" -m flask --app app)
"${FLASK[@]}" db upgrade -d oidc/migrations >/dev/null 2>&1 || "${FLASK[@]}" db upgrade -d oidc/migrations

DEMO_FILE="$STATE/quickstart-demo.env"
if [ ! -f "$DEMO_FILE" ]; then
    DEMO_PASSWORD="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(12))')"
    printf '%s\n' "$DEMO_PASSWORD" | "${FLASK[@]}" users create demo --password-stdin \
        --email demo@example.com --name "Demo User" >/dev/null
    CLIENT_JSON="$("${FLASK[@]}" clients create --name "Demo app" \
        --redirect-uri "http://localhost:$DEMO_RP_PORT/callback" \
        --post-logout-redirect-uri "http://localhost:$DEMO_RP_PORT/" \
        --grant-type authorization_code --grant-type refresh_token \
        --scope "openid profile email offline_access" --auth-method client_secret_basic --json)"
    (
        umask 077
        {
            echo "DEMO_USERNAME=demo"
            echo "DEMO_PASSWORD=$DEMO_PASSWORD"
            echo "DEMO_CLIENT_ID=$(printf '%s' "$CLIENT_JSON" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')"
            echo "DEMO_CLIENT_SECRET=$(printf '%s' "$CLIENT_JSON" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')"
        } > "$DEMO_FILE"
    )
fi
set -a
# shellcheck disable=SC1090
. "$DEMO_FILE"
set +a

"$PY" quickstart/demo_rp.py > "$STATE/demo_rp.log" 2>&1 &
DEMO_PID=$!
trap 'kill "$DEMO_PID" 2>/dev/null || true' EXIT

echo
echo "Provider:  $OIDC_ISSUER  (discovery: $OIDC_ISSUER/.well-known/openid-configuration)"
echo "Open:      http://localhost:$DEMO_RP_PORT  and click \"Log in\""
echo "Demo user: $DEMO_USERNAME / $DEMO_PASSWORD"
echo "Admin API: Authorization: Bearer <ADMIN_API_KEYS from $ENV_FILE>  (OpenAPI: $OIDC_ISSUER/admin/openapi.json)"
OIDC_HSM="$(dirname "$PY")/oidc-hsm"
[ -x "$OIDC_HSM" ] || OIDC_HSM=oidc-hsm
echo "Operator:  $OIDC_HSM --help  (oidc-hsm doctor, oidc-hsm clients list, ...; load the settings first: set -a; . $ENV_FILE; set +a)"
echo
"$PY" -m gunicorn -c gunicorn.conf.py app:app
