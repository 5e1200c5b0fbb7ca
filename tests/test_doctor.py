"""``oidc-hsm doctor`` against real PKCS#11 modules: a healthy SoftHSM token, a wrong PIN, a missing
library, an extractable key, and openCryptoki's soft token (no EC mechanisms at all).

The installed console command is run as an operator runs it (a separate process:
one PKCS#11 library per process).  Every run's output is checked for the PIN and
the system secret, which must never appear.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# The database is not what these tests are about: SQLite only.
pytestmark = [pytest.mark.hsm, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

OIDC_HSM = str(Path(sys.executable).with_name("oidc-hsm"))

#: openCryptoki's soft token as tests/ share it: the machine has one, it is
#: initialised once with this label and these PINs and then used as it is.


def doctor(env: dict[str, str]) -> tuple[int, list[str], str]:
    """Exit status, the check lines and the whole output of ``oidc-hsm doctor``."""
    assert os.path.exists(OIDC_HSM), "the console command is installed with the package (pip install -e .)"
    result = subprocess.run([OIDC_HSM, "doctor"], env={**os.environ, **env, "LOG_FORMAT": "text"},
                            capture_output=True, text=True, timeout=120, cwd="/")
    output = result.stdout + result.stderr
    for secret in (env.get("HSM_PIN"), env.get("SECRETS_SYSTEM"), env.get("ADMIN_API_KEYS")):
        if secret:
            assert secret not in output
    return result.returncode, [line for line in result.stdout.splitlines() if line.startswith("[")], output


def line(lines: list[str], name: str) -> str:
    found = [entry for entry in lines if re.match(rf"\[(ok  |FAIL|skip)\] {re.escape(name)}:", entry)]
    assert len(found) == 1, (name, lines)
    return found[0]


@pytest.fixture
def provisioned(make_app: Any, hsm_env: dict[str, str]) -> dict[str, str]:
    """A SoftHSM deployment whose key sets have been provisioned (as the first start does)."""
    from support import start_key_service

    start_key_service(make_app(hsm_env))
    return hsm_env


def test_healthy_softhsm_deployment_passes_every_check(provisioned: dict[str, str]) -> None:
    status, lines, output = doctor(provisioned)
    assert status == 0, output
    for name in ("settings", "SECRETS_SYSTEM", "database", "schema", "pkcs11 library", "token", "login",
                 "mechanisms openid.id-token", "mechanisms jwt.access-token", "keys openid.id-token",
                 "keys jwt.access-token"):
        assert line(lines, name).startswith("[ok  ]"), output
    assert "RS256: CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_SHA256_RSA_PKCS available" in line(lines, "mechanisms openid.id-token")
    assert "none extractable" in line(lines, "keys jwt.access-token")
    label = provisioned["HSM_TOKEN_LABEL"]
    for key_set in ("openid.id-token", "jwt.access-token"):
        assert line(lines, f"backend {key_set}").startswith(f"[ok  ] backend {key_set}: HSM token {label!r} (1 key(s)")
    assert "FAIL" not in output and "Traceback" not in output


def test_a_misspelt_setting_fails_naming_the_setting_it_resembles(base_env: dict[str, str]) -> None:
    """HSM_ENABLE=true is no setting: the provider would run on software keys, and doctor says so."""
    status, lines, output = doctor({**base_env, "HSM_ENABLE": "true", "DATABASE_URI": "sqlite://", "OIDC_PORT": "80"})
    assert status == 1 and "ready to serve" not in output
    check = line(lines, "variables")
    assert check.startswith("[FAIL]")
    assert ("DATABASE_URI (did you mean DATABASE_URL?), HSM_ENABLE (did you mean HSM_ENABLED?), OIDC_PORT"
            in check), check
    for key_set in ("openid.id-token", "jwt.access-token"):
        assert line(lines, f"backend {key_set}").startswith(f"[ok  ] backend {key_set}: software (")


def test_wrong_pin_fails_the_login_check_without_showing_any_pin(provisioned: dict[str, str]) -> None:
    status, lines, output = doctor({**provisioned, "HSM_PIN": "not-the-pin-4711"})
    assert status == 1
    login = line(lines, "login")
    assert login.startswith("[FAIL]") and "refused the PIN" in login and "fix: set HSM_PIN" in login
    assert line(lines, "token").startswith("[ok  ]")
    assert provisioned["HSM_PIN"] not in output


def test_missing_library_fails_with_the_fix(provisioned: dict[str, str], tmp_path: Path) -> None:
    status, lines, _output = doctor({**provisioned, "HSM_LIBRARY": str(tmp_path / "libvendor-pkcs11.so")})
    assert status == 1
    check = line(lines, "pkcs11 library")
    assert check.startswith("[FAIL]") and "libvendor-pkcs11.so" in check and "fix: install" in check
    assert not any(entry.startswith("[ok  ] token") for entry in lines)


def test_an_extractable_key_on_the_token_fails_its_key_set(provisioned: dict[str, str], softhsm: Any) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType, MechanismFlag

    from keys.hsm import PKCS11_LOCK

    with PKCS11_LOCK:
        token = pkcs11.lib(softhsm.library).get_token(token_label=provisioned["HSM_TOKEN_LABEL"])
        try:
            session = token.open(rw=True, user_pin=softhsm.pin)
        except pkcs11.UserAlreadyLoggedIn:  # the provisioning key service of this process is logged in
            session = token.open(rw=True)
        with session:
            session.generate_keypair(KeyType.RSA, 2048, label="openid.id-token", id=b"exported", store=True,
                                     capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                                     private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False})
    status, lines, _output = doctor(provisioned)
    assert status == 1
    check = line(lines, "keys openid.id-token")
    assert check.startswith("[FAIL]") and "can leave the token" in check and "exported" in check
    assert line(lines, "keys jwt.access-token").startswith("[ok  ]")


def test_schema_behind_and_database_down(base_env: dict[str, str], tmp_path: Path) -> None:
    new = tmp_path / "new.sqlite3"
    status, lines, _ = doctor({**base_env, "DATABASE_URL": f"sqlite:///{new}"})
    check = line(lines, "database")
    assert status == 1 and check.startswith(f"[FAIL] database: SQLite file {new} does not exist yet")
    assert "fix: run oidc-hsm db upgrade" in check
    assert not new.exists()  # doctor changes nothing: connecting would have made the file
    assert line(lines, "hsm").startswith("[skip]")
    new.touch()  # an empty database: no schema yet
    status, lines, _ = doctor({**base_env, "DATABASE_URL": f"sqlite:///{new}"})
    assert line(lines, "database") == f"[ok  ] database: reachable: SQLite file {new}"
    schema = line(lines, "schema")
    assert status == 1 and schema.startswith("[FAIL] schema: none yet (a new database)")
    assert "fix: run oidc-hsm db upgrade" in schema
    status, lines, _ = doctor({**base_env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"})
    assert status == 1 and "fix: check DATABASE_URL" in line(lines, "database")


def test_invalid_settings_are_one_failed_line(base_env: dict[str, str]) -> None:
    status, lines, output = doctor({**base_env, "HSM_ENABLED": "true", "HSM_LIBRARY": "", "HSM_PIN": "1234"})
    assert status == 1 and lines == [line(lines, "settings")] and "HSM_LIBRARY" in lines[0]
    assert "Traceback" not in output


# -- openCryptoki -------------------------------------------------------------------------


def test_the_redis_a_setting_names_must_answer(base_env: dict[str, str]) -> None:
    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    status, lines, output = doctor({**base_env, "RATELIMIT_STORAGE_URI": f"{redis_url}/0",
                                    "DPOP_JTI_STORAGE_URI": "redis://:pw-4711@127.0.0.1:9/0"})
    assert line(lines, "RATELIMIT_STORAGE_URI") == f"[ok  ] RATELIMIT_STORAGE_URI: {redis_url}/0 answers"
    down = line(lines, "DPOP_JTI_STORAGE_URI")
    assert status == 1 and down.startswith("[FAIL] DPOP_JTI_STORAGE_URI: cannot reach redis://:***@127.0.0.1:9/0")
    assert "fix: start that server, or correct DPOP_JTI_STORAGE_URI" in down and "pw-4711" not in output
    status, lines, _ = doctor(base_env)  # memory:// counters: said, not failed
    assert line(lines, "RATELIMIT_STORAGE_URI").startswith("[skip] RATELIMIT_STORAGE_URI: memory://")
