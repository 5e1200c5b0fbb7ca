"""Settings and engine options the outside review found too weak (items 19, 20, 22)."""

from __future__ import annotations

import secrets

import pytest

from oidc.settings import ConfigError, engine_options, flask_config, load_settings

SECRET = secrets.token_urlsafe(32)


def _settings(**env: str):
    return load_settings({"SECRETS_SYSTEM": SECRET, **env}, instance_path="instance")


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
    names = ("LOGIN_COOKIE_NAME", "BINDING_COOKIE_NAME", "SESSION_COOKIE_NAME")
    assert [config[name] for name in names] == ["__Host-op_session", "__Host-op_session_binding",
                                                "__Host-op_session_state"]
    assert config["SESSION_COOKIE_SECURE"] is True and config["SESSION_COOKIE_PATH"] == "/"
    assert config.get("SESSION_COOKIE_DOMAIN") is None
    assert config["WTF_CSRF_SSL_STRICT"] is True
    plain = flask_config(_settings(OIDC_ISSUER="http://localhost:8000"))
    # A __Host- cookie needs TLS.
    assert [plain[name] for name in names] == ["op_session", "op_session_binding", "op_session_state"]


def test_login_form_posted_from_another_origin_is_refused(op):
    """The CSRF referrer check over HTTPS (Flask-WTF WTF_CSRF_SSL_STRICT), and the cookie it sets."""
    from oidc_fixtures import hidden_fields

    page = op.get("/login")
    assert page.headers["Set-Cookie"].startswith("__Host-op_session_state=")  # the form's CSRF token
    assert "Secure" in page.headers["Set-Cookie"] and "Path=/" in page.headers["Set-Cookie"]
    fields = dict(hidden_fields(page.text))
    data = {"csrf_token": fields["csrf_token"], "username": "alice", "password": "x" * 10}
    response = op.http.post("/login", base_url="https://op.example.test", data=data,
                            headers={"Referer": "https://evil.example/login"})
    assert response.status_code == 400


# -- login throttling (item 16) ------------------------------------------------------------------


def _throttled_provider(make_app, base_env, **limits: str):
    from oidc_fixtures import Provider

    env = {**base_env, "LOGIN_RATE_LIMIT_PER_ACCOUNT": "100/hour", "LOGIN_RATE_LIMIT_PER_ADDRESS": "100/minute",
           "LOGIN_RATE_LIMIT_PER_ADDRESS_AND_ACCOUNT": "3/minute", **limits}
    provider = Provider(make_app(env))
    provider.add_user()
    return provider


def _login_from(provider, address: str, password: str):
    from oidc_fixtures import hidden_fields

    browser = provider.new_browser()
    browser.http.environ_base["REMOTE_ADDR"] = address
    page = browser.get("/login")
    fields = dict(hidden_fields(page.text))
    return lambda: browser.post("/login", data={"csrf_token": fields["csrf_token"],
                                                "username": "alice", "password": password})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_parallel_failed_logins_never_exceed_the_limit(make_app, base_env):
    """RFC 6749 §10.10 / OWASP ASVS V2.2.1 (anti-automation): the limit is counted atomically,
    before the password is checked, so attempts made at the same moment cannot all pass a check
    that none of them has been counted in yet (Flask-Limiter's check-then-deduct)."""
    from concurrent.futures import ThreadPoolExecutor

    provider = _throttled_provider(make_app, base_env, LOGIN_RATE_LIMIT_PER_ACCOUNT="3/minute")
    attempts = [_login_from(provider, "10.0.0.1", "wrong password") for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(response.status_code for response in pool.map(lambda attempt: attempt(), attempts))
    # At most 3 let through (at least one, the first); contention may refuse one more, never allow one.
    assert 1 <= statuses.count(401) <= 3 and statuses.count(401) + statuses.count(429) == 8, statuses


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_attacker_cannot_lock_the_owner_out_from_elsewhere(make_app, base_env):
    """RFC 6749 §10.10 / OWASP ASVS V2.2.1: guessing from one address locks that address out of
    that account, not the account's owner signing in from another address."""
    provider = _throttled_provider(make_app, base_env)
    for _ in range(3):
        assert _login_from(provider, "10.0.0.1", "wrong password")().status_code == 401
    from oidc_fixtures import PASSWORD

    assert _login_from(provider, "10.0.0.1", PASSWORD)().status_code == 429
    assert _login_from(provider, "10.0.0.2", PASSWORD)().status_code == 200


@pytest.mark.parametrize("env, collected", [
    ({}, True),  # gunicorn.conf.py serves them on its default listener
    ({"METRICS_BIND": "127.0.0.1:9464"}, True),
    ({"METRICS_BIND": ""}, False),  # turned off, and nothing else reads them
    ({"METRICS_BIND": "", "PROMETHEUS_MULTIPROC_DIR": "/var/run/metrics"}, True),  # an exporter of its own
])
def test_metrics_are_collected_only_when_something_serves_them(env: dict[str, str], collected: bool) -> None:
    assert _settings(**env).metrics is collected
