"""Settings and engine options the outside review found too weak (items 19, 20, 22)."""

from __future__ import annotations

import secrets

import pytest

from oidc.settings import ConfigError, engine_options, flask_config, load_settings

SECRET = secrets.token_urlsafe(32)


def _settings(**env: str):
    return load_settings({"SECRETS_SYSTEM": SECRET, **env}, instance_path="/tmp")


def test_prepublication_must_cover_the_jwks_cache_and_a_stale_key_snapshot():
    """RFC 7517 key rollover / RFC 8725 §3.1: a key signs only once every resource server can have
    it; a worker serves a JWKS up to KEYS_REFRESH_SECONDS old, which a cache then keeps JWKS_MAX_AGE."""
    with pytest.raises(ConfigError, match="KEYS_REFRESH_SECONDS"):
        _settings(JWKS_MAX_AGE="300", KEYS_REFRESH_SECONDS="60", KEY_PREPUBLICATION_SECONDS="310")
    assert _settings(JWKS_MAX_AGE="300", KEYS_REFRESH_SECONDS="60",
                     KEY_PREPUBLICATION_SECONDS="361").key_prepublication_seconds == 361


def test_engine_hides_sql_parameters_from_errors():
    """OWASP ASVS V7.1 / RFC 6749 §10.3 (secrets must not leak): SQL errors and tracebacks never
    carry parameter values (password hashes, emails, token hashes)."""
    for url in ("sqlite:///x.sqlite3", "postgresql+psycopg://u@h/d"):
        assert engine_options(url)["hide_parameters"] is True


def test_statement_errors_do_not_show_parameters(op):
    """The same, end to end: a failing INSERT's message has no parameter value in it."""
    from sqlalchemy.exc import IntegrityError

    from oidc.db import db
    from oidc.models import User

    op.add_user("alice")
    with op.app.app_context():
        db.session.add(User(subject="s", username="alice", password_hash="scrypt-hash-that-must-not-leak",
                            email="secret@example.test", created_at=1, updated_at=1))
        with pytest.raises(IntegrityError) as caught:
            db.session.commit()
        db.session.rollback()
    assert "scrypt-hash-that-must-not-leak" not in str(caught.value)
    assert "secret@example.test" not in str(caught.value)


def test_https_session_cookie_has_the_host_prefix_and_csrf_checks_the_referrer():
    """RFC 6265bis §4.1.3.2: __Host- cookies are Secure, Path=/, without Domain (no subdomain can
    set or shadow them); Flask-WTF's SSL-strict check refuses a form posted from another origin."""
    config = flask_config(_settings(OIDC_ISSUER="https://op.example.test"))
    assert config["SESSION_COOKIE_NAME"] == "__Host-op_session"
    assert config["SESSION_COOKIE_SECURE"] is True and config["SESSION_COOKIE_PATH"] == "/"
    assert config.get("SESSION_COOKIE_DOMAIN") is None
    assert config["WTF_CSRF_SSL_STRICT"] is True
    plain = flask_config(_settings(OIDC_ISSUER="http://localhost:8000"))
    assert plain["SESSION_COOKIE_NAME"] == "op_session"  # a __Host- cookie needs TLS


def test_login_form_posted_from_another_origin_is_refused(op):
    """The CSRF referrer check over HTTPS (Flask-WTF WTF_CSRF_SSL_STRICT), and the cookie it sets."""
    from oidc_fixtures import hidden_fields

    page = op.get("/login")
    assert page.headers["Set-Cookie"].startswith("__Host-op_session=")
    assert "Secure" in page.headers["Set-Cookie"] and "Path=/" in page.headers["Set-Cookie"]
    fields = dict(hidden_fields(page.text))
    data = {"csrf_token": fields["csrf_token"], "username": "alice", "password": "x" * 10}
    response = op.http.post("/login", base_url="https://op.example.test", data=data,
                            headers={"Referer": "https://evil.example/login"})
    assert response.status_code == 400
