"""Liveness and readiness."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from support import start_key_service


def test_alive_and_ready_with_software_keys(make_app, base_env):
    client = make_app(base_env).test_client()
    assert client.get("/health/alive").json == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.json
    assert ready.headers["Cache-Control"] == "no-store"
    checks = ready.json["checks"]
    assert checks["database"]["ok"] and checks["keys"]["ok"]
    assert checks["hsm"] == {"ok": True, "configured": False}


def test_ready_with_hsm_and_a_broken_session(make_app, hsm_env):
    app = make_app(hsm_env)
    client = app.test_client()
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.json
    assert ready.json["checks"]["hsm"] == {"ok": True, "configured": True}
    # A session closed under the worker is reopened by the next PKCS#11 call.
    service = start_key_service(app)
    service.hsm._session.close()
    assert client.get("/health/ready").status_code == 200


@pytest.mark.both_databases
def test_not_ready_when_the_database_is_unreachable(make_app, base_env, tmp_path):
    # An SQLite database inside a directory that does not exist cannot be opened.
    app = make_app(base_env)
    client = app.test_client()
    assert client.get("/health/ready").status_code == 200
    from oidc.db import db

    with app.app_context():
        db.engine.dispose()
        original_url = db.engine.url
    app.extensions["sqlalchemy"]._app_engines[app][None] = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 2}
    )
    app.extensions.pop("oidc.engine", None)  # the engine the app kept (oidc.db), looked up again
    try:
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json["status"] == "unavailable"
        assert response.json["checks"]["database"] == {"ok": False, "reason": "database_unreachable"}
        assert "Traceback" not in response.get_data(as_text=True)
    finally:
        app.extensions["sqlalchemy"]._app_engines[app][None] = create_engine(original_url)
        app.extensions.pop("oidc.engine", None)


def test_not_ready_when_an_hsm_only_set_has_no_key(make_app, hsm_env):
    app = make_app({**hsm_env, "HSM_ONLY_KEY_SETS": "jwt.access-token"})
    service = start_key_service(app)
    kid = service.signer("jwt.access-token").kid
    service.hsm.delete("jwt.access-token", kid)
    service.refresh()
    response = app.test_client().get("/health/ready")
    assert response.status_code == 503
    assert response.json["checks"]["keys"]["failed"] == {"jwt.access-token": "no_signing_key"}
