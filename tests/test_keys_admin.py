"""Managing keys: the admin HTTP API and the ``flask keys`` commands."""

from __future__ import annotations

import json
import logging

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from sqlalchemy import func, select

from oidc.db import db, signing_keys

from support import start_key_service


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _rows(app) -> int:
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(signing_keys)).scalar_one()


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/admin/keys"), ("GET", "/admin/keys/openid.id-token"), ("POST", "/admin/keys/openid.id-token"),
     ("POST", "/admin/keys/x/import"), ("DELETE", "/admin/keys/openid.id-token/some-kid")],
)
def test_admin_api_requires_valid_credentials(make_app, base_env, admin_key, method, path):
    app = make_app(base_env)
    client = app.test_client()
    start_key_service(app)
    rows = _rows(app)
    for headers in ({}, _auth("wrong-" + admin_key), {"Authorization": f"Basic {admin_key}"}, _auth("")):
        response = client.open(path, method=method, headers=headers, json={})
        assert response.status_code == 401
        assert response.json["error"] == "invalid_token"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert _rows(app) == rows


def test_admin_api_is_closed_when_no_key_is_configured(make_app, base_env):
    env = {**base_env, "ADMIN_API_KEYS": ""}
    client = make_app(env).test_client()
    assert client.get("/admin/keys", headers=_auth("anything")).status_code == 401
    assert client.get("/admin/keys", headers={"Authorization": "Bearer "}).status_code == 401


def test_admin_api_manages_keys(make_app, base_env, admin_key):
    app = make_app(base_env)
    client = app.test_client()
    headers = _auth(admin_key)

    listing = client.get("/admin/keys", headers=headers)
    assert listing.status_code == 200
    assert {s["set"]: s["backend"] for s in listing.json["sets"]} == {
        "openid.id-token": "software", "jwt.access-token": "software"}

    created = client.post("/admin/keys/jwt.access-token", headers=headers)
    assert created.status_code == 201
    kid = created.json["kid"]
    assert created.json["alg"] == "ES256" and "d" not in created.json["public_jwk"]
    shown = client.get("/admin/keys/jwt.access-token", headers=headers).json["keys"]
    assert {key["kid"]: key["status"] for key in shown}[kid] == "next"

    custom = client.post("/admin/keys/partner", headers=headers, json={"alg": "EdDSA"})
    assert custom.status_code == 201 and custom.json["backend"] == "software"

    private = ECKey.import_key(ec.generate_private_key(ec.SECP256R1())).as_dict(private=True)
    imported = client.post("/admin/keys/partner/import", headers=headers, json={**private, "kid": "imp-1"})
    assert imported.status_code == 201 and imported.json["kid"] == "imp-1"
    assert "d" not in imported.json["public_jwk"] and private["d"] not in imported.get_data(as_text=True)

    jwks = {key["kid"] for key in client.get("/.well-known/jwks.json").json["keys"]}
    assert {kid, custom.json["kid"], "imp-1"} <= jwks

    assert client.delete("/admin/keys/partner/imp-1", headers=headers).status_code == 204
    assert client.delete("/admin/keys/partner/imp-1", headers=headers).status_code == 404
    assert "imp-1" not in {key["kid"] for key in client.get("/.well-known/jwks.json").json["keys"]}


@pytest.mark.both_databases
@pytest.mark.parametrize(
    "path, body, status, fragment",
    [
        ("/admin/keys/partner", {"alg": "HS256"}, 400, "symmetric"),
        ("/admin/keys/partner", {"alg": "none"}, 400, "none"),
        ("/admin/keys/partner", {"alg": 7}, 400, "must be a string"),
        ("/admin/keys/partner", "not json", 400, "JSON object"),
        ("/admin/keys/partner/import", {"kty": "oct", "k": "c2VjcmV0"}, 400, "symmetric"),
        ("/admin/keys/partner/import", [1, 2], 400, "JSON object"),
        ("/admin/keys/partner/import", {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, 400, "private"),
        ("/admin/keys/" + "x" * 201, {}, 400, "printable"),
    ],
)
def test_admin_api_bad_input_is_a_clear_400_and_writes_nothing(make_app, base_env, admin_key, path, body, status, fragment):
    app = make_app(base_env)
    client = app.test_client()
    start_key_service(app)
    rows = _rows(app)
    if isinstance(body, str):
        response = client.post(path, headers={**_auth(admin_key), "Content-Type": "application/json"}, data=body)
    else:
        response = client.post(path, headers=_auth(admin_key), json=body)
    assert response.status_code == status
    assert response.json["error"] == "invalid_request"
    assert fragment in response.json["error_description"]
    assert "Traceback" not in response.get_data(as_text=True)
    assert _rows(app) == rows


def test_admin_api_unknown_set_is_404(make_app, base_env, admin_key):
    client = make_app(base_env).test_client()
    response = client.get("/admin/keys/no.such.set", headers=_auth(admin_key))
    assert response.status_code == 404 and response.json["error"] == "not_found"


def test_cli_manages_keys(make_app, base_env, tmp_path):
    app = make_app(base_env)
    runner = app.test_cli_runner()

    listing = runner.invoke(args=["keys", "list", "--json"])
    assert listing.exit_code == 0, listing.output
    assert {s["set"] for s in json.loads(listing.output)} == {"openid.id-token", "jwt.access-token"}

    generated = runner.invoke(args=["keys", "generate", "openid.id-token", "--json"])
    assert generated.exit_code == 0, generated.output
    kid = json.loads(generated.output)["kid"]
    shown = json.loads(runner.invoke(args=["keys", "show", "openid.id-token", "--json"]).output)
    assert {key["kid"]: key["status"] for key in shown}[kid] == "next"

    jwk_file = tmp_path / "key.json"
    jwk_file.write_text(json.dumps({**ECKey.generate_key("P-256").as_dict(private=True), "kid": "cli-1"}))
    imported = runner.invoke(args=["keys", "import", "partner", str(jwk_file), "--json"])
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.output)["kid"] == "cli-1"

    assert runner.invoke(args=["keys", "delete", "partner", "cli-1"]).exit_code == 0
    missing = runner.invoke(args=["keys", "delete", "partner", "cli-1"])
    assert missing.exit_code != 0 and "no key 'cli-1'" in missing.output

    bad = runner.invoke(args=["keys", "generate", "partner", "--alg", "HS256"])
    assert bad.exit_code != 0 and "symmetric" in bad.output
    not_json = tmp_path / "bad.json"
    not_json.write_text("{nope")
    assert "not valid JSON" in runner.invoke(args=["keys", "import", "partner", str(not_json)]).output


def test_key_events_are_audited_without_key_material(make_app, base_env, admin_key, caplog):
    app = make_app(base_env)
    client = app.test_client()
    caplog.set_level(logging.INFO, logger="oidc.audit")
    private = ECKey.import_key(ec.generate_private_key(ec.SECP256R1())).as_dict(private=True)
    client.post("/admin/keys/partner/import", headers=_auth(admin_key), json={**private, "kid": "audited"})
    client.delete("/admin/keys/partner/audited", headers=_auth(admin_key))
    events = [getattr(record, "event", None) for record in caplog.records]
    assert "key.imported" in events and "key.deleted" in events
    text = caplog.text + " ".join(str(record.__dict__) for record in caplog.records)
    assert private["d"] not in text and admin_key not in text and base_env["SECRETS_SYSTEM"] not in text
