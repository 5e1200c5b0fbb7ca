"""Password hashes: scrypt at the production cost by default, earlier hashes still accepted.

RFC 7914 §2 names N=2^14 the interactive-login minimum of 2009; the default
here is N=2^15 (r=8, p=1: 32 MiB).  The rest of the suite runs at a low cost
(``PASSWORD_HASH_COST``), so this module is where the default is proven.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

import pytest

from oidc.app import create_app
from oidc.settings import DEFAULT_PASSWORD_HASH_COST, ConfigError, load_settings
from oidc.state import state_of

from oidc_fixtures import PASSWORD, Provider, registered_user


def test_the_default_cost_is_scrypt_n_2_15(tmp_path):
    settings = load_settings({"SECRETS_SYSTEM": "s" * 40}, instance_path=str(tmp_path))
    assert settings.password_hash_cost == DEFAULT_PASSWORD_HASH_COST == 2**15
    app = create_app({"TESTING": True}, env={"SECRETS_SYSTEM": "s" * 40,
                                             "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"})
    passwords = state_of(app).passwords
    stored = passwords.hash(PASSWORD)
    assert stored.startswith("scrypt:32768:8:1$")
    assert passwords.verify(PASSWORD, stored) and not passwords.verify(PASSWORD + "x", stored)
    assert not passwords.verify(PASSWORD, None)  # an unknown user: one hash is still computed


@pytest.mark.parametrize("value", ["1000", "128", "x"])
def test_a_cost_that_is_not_a_power_of_two_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="PASSWORD_HASH_COST"):
        load_settings({"PASSWORD_HASH_COST": value}, instance_path=str(tmp_path))


def _legacy_hash(password: str) -> str:
    """The format written before werkzeug's (``scrypt$N$r$p$salt$digest``), as earlier releases stored it."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"scrypt$16384$8$1${b64(salt)}${b64(digest)}"


def test_a_hash_of_the_earlier_format_logs_in_and_is_rewritten(make_app, base_env):
    from oidc.db import db

    op = Provider(make_app(base_env))
    op.add_user()
    with op.app.app_context():
        user = registered_user("alice")
        user.password_hash = _legacy_hash(PASSWORD)
        db.session.commit()
    assert op.login(password="wrong password").status_code == 401
    assert op.login().status_code == 200
    with op.app.app_context():
        assert registered_user("alice").password_hash.startswith("scrypt:256:8:1$")  # the configured cost now
