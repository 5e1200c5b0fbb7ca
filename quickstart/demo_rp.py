"""A tiny relying party for the quickstart: one "Log in" button.

It runs the authorization code flow with PKCE (S256) against the provider,
verifies the ID token against the provider's JWKS, and shows the ID token's
claims, the access token's decoded header and claims, and the JWKS key that
signed each.  Authlib's client does the protocol; nothing here is
provider-specific beyond the discovery URL.

    DEMO_CLIENT_ID=... DEMO_CLIENT_SECRET=... OIDC_ISSUER=http://localhost:8000 \
        python quickstart/demo_rp.py            # serves http://localhost:8001
"""

from __future__ import annotations

import base64
import json
import os
import secrets

import requests
from authlib.integrations.flask_client import OAuth
from flask import Flask, redirect, render_template_string, session, url_for

ISSUER = os.environ.get("OIDC_ISSUER", "http://localhost:8000").rstrip("/")
PORT = int(os.environ.get("DEMO_RP_PORT", "8001"))
BASE = os.environ.get("DEMO_RP_URL", f"http://localhost:{PORT}").rstrip("/")

app = Flask(__name__)
app.secret_key = secrets.token_bytes(32)
app.config.update(SESSION_COOKIE_NAME="demo_rp", SESSION_COOKIE_SAMESITE="Lax")
oauth = OAuth(app)
oauth.register(
    "provider",
    client_id=os.environ["DEMO_CLIENT_ID"],
    client_secret=os.environ["DEMO_CLIENT_SECRET"],
    server_metadata_url=f"{ISSUER}/.well-known/openid-configuration",
    client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256"},
)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Demo relying party</title>
<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
pre{background:#f4f4f4;padding:1rem;overflow:auto}button{font-size:1.1rem;padding:.5rem 1.5rem}</style></head>
<body>
<h1>Demo relying party</h1>
<p>Provider: <code>{{ issuer }}</code></p>
{% if not result %}
  <form action="{{ url_for('login') }}" method="get"><button id="login" type="submit">Log in</button></form>
{% else %}
  <p id="welcome">Logged in as <strong>{{ result.id_token_claims.get('name') or result.id_token_claims.sub }}</strong>.
     <a href="{{ url_for('logout') }}">Log out</a></p>
  <h2>ID token claims</h2><pre id="id-token-claims">{{ result.id_token_claims | tojson(indent=2) }}</pre>
  <h2>ID token header</h2><pre id="id-token-header">{{ result.id_token_header | tojson(indent=2) }}</pre>
  <h2>Access token header</h2><pre id="access-token-header">{{ result.access_token_header | tojson(indent=2) }}</pre>
  <h2>Access token claims</h2><pre id="access-token-claims">{{ result.access_token_claims | tojson(indent=2) }}</pre>
  <h2>JWKS keys that signed them</h2><pre id="signing-keys">{{ result.signing_keys | tojson(indent=2) }}</pre>
{% endif %}
</body></html>"""


def _decode_segment(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@app.get("/")
def index():  # type: ignore[no-untyped-def]
    return render_template_string(PAGE, issuer=ISSUER, result=session.get("result"))


@app.get("/login")
def login():  # type: ignore[no-untyped-def]
    return oauth.provider.authorize_redirect(f"{BASE}/callback")


@app.get("/callback")
def callback():  # type: ignore[no-untyped-def]
    # Exchanges the code (with the PKCE verifier) and verifies the ID token
    # (signature against the JWKS, iss, aud, exp, nonce).
    token = oauth.provider.authorize_access_token()
    id_header = _decode_segment(token["id_token"].split(".")[0])
    access_header, access_claims, _ = token["access_token"].split(".")
    access_header = _decode_segment(access_header)
    jwks = requests.get(oauth.provider.load_server_metadata()["jwks_uri"], timeout=10).json()
    kids = {id_header.get("kid"), access_header.get("kid")}
    session["result"] = {
        "id_token_claims": dict(token["userinfo"]),
        "id_token_header": id_header,
        "access_token_header": access_header,
        "access_token_claims": _decode_segment(access_claims),
        "signing_keys": [key for key in jwks["keys"] if key.get("kid") in kids],
    }
    session["id_token"] = token["id_token"]
    return redirect(url_for("index"))


@app.get("/logout")
def logout():  # type: ignore[no-untyped-def]
    id_token = session.pop("id_token", None)
    session.clear()
    metadata = oauth.provider.load_server_metadata()
    end_session = metadata.get("end_session_endpoint")
    if not end_session or not id_token:
        return redirect(url_for("index"))
    return redirect(requests.Request("GET", end_session, params={
        "id_token_hint": id_token, "post_logout_redirect_uri": f"{BASE}/"}).prepare().url)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=PORT)
