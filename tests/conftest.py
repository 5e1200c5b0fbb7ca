"""Shared fixtures: real SoftHSM2 tokens, real SQLite and PostgreSQL databases.

* SoftHSM2 tokens live in a temporary directory named by ``SOFTHSM2_CONF``,
  set before the PKCS#11 library is first loaded in this process.
* A test that uses ``database_url`` runs on an SQLite file; one marked
  ``both_databases`` (it tests the database's own behaviour: transactions,
  locks, claims, constraints, query plans, migrations, several processes)
  runs twice, on SQLite and on a fresh PostgreSQL database
  (``TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``).
  Where SoftHSM2 or PostgreSQL is missing the tests are skipped, except in CI
  (``CI=true``), where a missing dependency is a failure.
* Databases are copies of a template migrated once per session; the ``op``
  fixtures start from a template whose software keys were provisioned once
  per session too (tests of key generation build their apps on an empty one).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services import POSTGRES_URL as DEFAULT_POSTGRES_URL
from support import missing as _missing

#: The OpenID Connect fixtures (``op``, ``hsm_op``) and their user agent.
pytest_plugins = ["oidc_fixtures"]

USER_PIN = "4cb7-user-pin-0192"
SO_PIN = "so-pin-88ab1f"

SOFTHSM_LIBRARY_CANDIDATES = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
]

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)



# -- SoftHSM2 -----------------------------------------------------------------

_TOKEN_DIR = Path(tempfile.mkdtemp(prefix="softhsm-tests-"))
_CONF = _TOKEN_DIR / "softhsm2.conf"
(_TOKEN_DIR / "tokens").mkdir()
_CONF.write_text(f"directories.tokendir = {_TOKEN_DIR / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
# Before anything loads libsofthsm2: it reads its configuration at C_Initialize.
os.environ["SOFTHSM2_CONF"] = str(_CONF)
# p11-kit's client module reads the server's address at C_Initialize: one socket
# path for the session, served in turn by each test's ``p11-kit server``.
_P11KIT_SOCKET = _TOKEN_DIR / "p11-kit.sock"
os.environ["P11_KIT_SERVER_ADDRESS"] = f"unix:path={_P11KIT_SOCKET}"


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    shutil.rmtree(_TOKEN_DIR, ignore_errors=True)


def softhsm_library() -> str | None:
    return next((path for path in SOFTHSM_LIBRARY_CANDIDATES if os.path.exists(path)), None)


class SoftHSM:
    """The SoftHSM2 installation the tests use; ``new_token`` makes an empty token."""

    def __init__(self, library: str) -> None:
        self.library = library
        self.conf = str(_CONF)
        self.pin = USER_PIN

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": self.conf}

    def new_token(self, label: str | None = None) -> str:
        label = label or f"t-{uuid.uuid4().hex[:12]}"
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", USER_PIN, "--so-pin", SO_PIN],
            check=True, capture_output=True, env=self.env(), timeout=60,
        )
        # SoftHSM enumerates tokens at C_Initialize: make this process see the new one.
        import pkcs11

        from keys.hsm import PKCS11_LOCK

        with PKCS11_LOCK:
            pkcs11.lib(self.library).reinitialize()
        return label

    def pkcs11_tool(self, *args: str, label: str) -> str:
        result = subprocess.run(
            ["pkcs11-tool", "--module", self.library, "--token-label", label, "--login", "--pin", USER_PIN, *args],
            check=True, capture_output=True, text=True, env=self.env(), timeout=120,
        )
        return result.stdout + result.stderr

    def list_objects(self, label: str) -> list[dict[str, str]]:
        """Objects on the token as ``pkcs11-tool --list-objects`` reports them."""
        output = self.pkcs11_tool("--list-objects", label=label)
        objects: list[dict[str, str]] = []
        for line in output.splitlines():
            if line and not line.startswith(" "):
                kind = line.split(";")[0].strip()
                objects.append({"kind": kind})
            elif ":" in line and objects:
                name, _, value = line.strip().partition(":")
                objects[-1][name.strip()] = value.strip()
        return objects

    def key_objects(self, label: str, key_label: str) -> dict[str, int]:
        """How many private and public key objects labelled ``key_label`` the token holds."""
        counts = {"private": 0, "public": 0}
        for obj in self.list_objects(label):
            if obj.get("label") == key_label:
                if obj["kind"] == "Private Key Object":
                    counts["private"] += 1
                elif obj["kind"] == "Public Key Object":
                    counts["public"] += 1
        return counts

    def keypairgen(self, label: str, key_type: str, key_label: str, key_id_hex: str) -> None:
        """Provision a signing key pair by hand, as an operator does with ``pkcs11-tool``."""
        self.pkcs11_tool(
            "--keypairgen", "--key-type", key_type, "--usage-sign", "--label", key_label, "--id", key_id_hex,
            label=label,
        )

    def slot_id(self, label: str) -> int:
        """The id of the slot holding the token labelled ``label``, as python-pkcs11 reports it."""
        import pkcs11

        from keys.hsm import PKCS11_LOCK

        with PKCS11_LOCK:
            for slot in pkcs11.lib(self.library).get_slots(token_present=True):
                if slot.get_token().label == label:
                    return int(slot.slot_id)
        raise LookupError(f"no slot holds token {label!r}")


@pytest.fixture(scope="session")
def softhsm() -> SoftHSM:
    library = softhsm_library()
    if library is None or shutil.which("softhsm2-util") is None:
        _missing("SoftHSM2 (Debian package softhsm2)")
    assert library is not None
    return SoftHSM(library)


@pytest.fixture
def token(softhsm: SoftHSM) -> str:
    """The label of a new, empty SoftHSM2 token."""
    return softhsm.new_token()


@pytest.fixture
def manager(softhsm: SoftHSM, token: str) -> Iterator[Any]:
    """An HSM manager on a new token, with no database or service around it."""
    from keys.hsm import HSMConfig, HSMManager

    hsm = HSMManager(HSMConfig(library=softhsm.library, pin=softhsm.pin, token_label=token, key_set_prefix="acme."))
    hsm.open()
    yield hsm
    hsm.close()


@pytest.fixture(scope="session")
def p11kit_client() -> str:
    """Path of p11-kit's client module (Debian packages p11-kit and p11-kit-modules)."""
    from remote_token import p11kit_client_library

    library = p11kit_client_library()
    if library is None:
        _missing("p11-kit's server and client module (Debian packages p11-kit, p11-kit-modules)")
    assert library is not None
    return library


@pytest.fixture
def remote_token(softhsm: SoftHSM, token: str, p11kit_client: str) -> Iterator[Any]:
    """The test's SoftHSM2 token served by a running ``p11-kit server`` (a network HSM's shape)."""
    from remote_token import P11KitServer

    server = P11KitServer(provider=softhsm.library, token_label=token, socket_path=_P11KIT_SOCKET,
                          env=softhsm.env())
    server.start()
    server.client_library = p11kit_client  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def remote_tokens(softhsm: SoftHSM, p11kit_client: str) -> Iterator[Any]:
    """Two new SoftHSM2 tokens, A and B, each behind its own ``p11-kit server`` (see remote_token.RemoteTokens)."""
    from remote_token import RemoteTokens

    directory = Path(tempfile.mkdtemp(dir=_TOKEN_DIR, prefix="r-"))  # short: a socket path has 108 bytes
    tokens = RemoteTokens(softhsm=softhsm, labels={"A": softhsm.new_token(), "B": softhsm.new_token()},
                          client_module=p11kit_client, directory=directory)
    tokens.start()
    try:
        yield tokens
    finally:
        tokens.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def remote_hsm_env(hsm_env: dict[str, str], remote_token: Any) -> dict[str, str]:
    """Environment of an HSM deployment whose token is reached through p11-kit's client module."""
    return {**hsm_env, "HSM_LIBRARY": remote_token.client_library, "P11_KIT_SERVER_ADDRESS": remote_token.address}


@pytest.fixture(scope="session")
def opencryptoki() -> Iterator[Any]:
    """openCryptoki's soft token, initialised for these tests (Debian package opencryptoki).

    Skipped (failed in CI) where the machine's soft token belongs to someone else;
    the pkcsslotd started for the session is stopped after it.
    """
    from remote_token import OpenCryptoki, TokenUnavailable, opencryptoki_library

    library = opencryptoki_library()
    if library is None or os.geteuid() != 0:
        _missing("openCryptoki (Debian package opencryptoki) and root to run pkcsslotd")
    assert library is not None
    ock = OpenCryptoki(library)
    try:
        try:
            ock.prepare()
        except TokenUnavailable as exc:
            _missing(f"openCryptoki's soft token ({exc})")
        yield ock
    finally:
        ock.stop_daemon()


# -- databases ----------------------------------------------------------------


def _postgres_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def postgres_server() -> str:
    if not _postgres_available():
        _missing(f"PostgreSQL at {POSTGRES_URL}")
    return POSTGRES_URL


def _migrate(url: str) -> None:
    from oidc.app import create_app
    from oidc.schema import upgrade_schema

    upgrade_schema(create_app({"TESTING": True}, env={"DATABASE_URL": url}))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file with the schema migrated once, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    _migrate(f"sqlite:///{path}")
    return path


@contextlib.contextmanager
def _new_postgres_database(server: str, prefix: str, template: str | None = None) -> Iterator[tuple[str, str]]:
    """A new database on ``server`` (a copy of ``template``): its name and URL, dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    base, _, _ = server.rpartition("/")
    try:
        yield name, f"{base}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_template(postgres_server: str) -> Iterator[str]:
    """A PostgreSQL database with the schema migrated once, the template of each test's database."""
    with _new_postgres_database(postgres_server, "oidc_template") as (name, url):
        _migrate(url)
        yield name


#: URLs of the databases made from a migrated template: ``make_app`` need not migrate them again.
MIGRATED: set[str] = set()


def _postgres_database(request: pytest.FixtureRequest, template: str | None) -> Iterator[str]:
    with _new_postgres_database(request.getfixturevalue("postgres_server"), "oidc_test", template) as (_, url):
        if template is not None:
            MIGRATED.add(url)
        yield url


DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``database_url`` (or ``provisioned_database_url`` alone): SQLite, and PostgreSQL too
    for tests marked ``both_databases``."""
    name = next((name for name in ("database_url", "provisioned_database_url") if name in metafunc.fixturenames),
                None)
    if name is None:
        return
    if any(mark.args and "database_url" in str(mark.args[0]).split(",")
           for mark in metafunc.definition.iter_markers("parametrize")):
        return  # the test chose its databases itself
    both = metafunc.definition.get_closest_marker("both_databases") is not None
    metafunc.parametrize(name, DATABASES if both else DATABASES[:1], indirect=True)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database with the current schema: an SQLite file, or a new PostgreSQL database.

    Both are copies of a database migrated once per session (the migrations
    themselves are tested from empty databases with ``empty_database_url``).
    """
    if request.param == "sqlite":
        path = tmp_path / "oidc.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        MIGRATED.add(f"sqlite:///{path}")
        yield f"sqlite:///{path}"
        return
    yield from _postgres_database(request, request.getfixturevalue("postgres_template"))


@pytest.fixture
def provisioned_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Like ``database_url``, with the software keys of ``SESSION_SECRET`` already provisioned."""
    kind = getattr(request, "param", None) or request.node.callspec.params["database_url"]
    if kind == "sqlite":
        path = tmp_path / "provisioned.sqlite3"
        shutil.copyfile(request.getfixturevalue("provisioned_sqlite_template"), path)
        MIGRATED.add(f"sqlite:///{path}")
        yield f"sqlite:///{path}"
        return
    yield from _postgres_database(request, request.getfixturevalue("provisioned_postgres_template"))


def _provision(url: str) -> None:
    """Generate the required key sets' software keys into ``url`` once."""
    from oidc.app import create_app
    from oidc.state import state_of

    app = create_app({"TESTING": True}, env={"DATABASE_URL": url, "SECRETS_SYSTEM": SESSION_SECRET})
    state_of(app).key_service()
    state_of(app).close()


@pytest.fixture(scope="session")
def provisioned_sqlite_template(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("provisioned") / "provisioned.sqlite3"
    shutil.copyfile(sqlite_template, path)
    _provision(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def provisioned_postgres_template(postgres_server: str, postgres_template: str) -> Iterator[str]:
    with _new_postgres_database(postgres_server, "oidc_provisioned", postgres_template) as (name, url):
        _provision(url)
        yield name


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    yield from _postgres_database(request, None)


# -- the app --------------------------------------------------------------------


#: One system secret for the session: the provisioned templates' keys are sealed under it.
SESSION_SECRET = secrets.token_urlsafe(32)
#: scrypt's N for the tests' password hashes: the production cost is proven by one test
#: (tests/test_passwords.py); every other login should not spend 50-100 ms on it.
TEST_PASSWORD_HASH_COST = "256"


@pytest.fixture
def system_secret() -> str:
    return SESSION_SECRET


@pytest.fixture
def admin_key() -> str:
    return secrets.token_urlsafe(32)


def software_env(database_url: str, system_secret: str, admin_key: str) -> dict[str, str]:
    """Environment of a software-keys deployment on ``database_url``."""
    return {
        "DATABASE_URL": database_url,
        "SECRETS_SYSTEM": system_secret,
        "ADMIN_API_KEYS": admin_key,
        "OIDC_ISSUER": "https://op.example.test",
        "PASSWORD_HASH_COST": TEST_PASSWORD_HASH_COST,
    }


@pytest.fixture
def base_env(database_url: str, system_secret: str, admin_key: str) -> dict[str, str]:
    """Environment of a software-keys deployment on the test database."""
    return software_env(database_url, system_secret, admin_key)


@pytest.fixture
def hsm_env(base_env: dict[str, str], softhsm: SoftHSM, token: str) -> dict[str, str]:
    """Environment of an HSM deployment on a new token."""
    return {
        **base_env,
        "HSM_ENABLED": "true",
        "HSM_LIBRARY": softhsm.library,
        "HSM_TOKEN_LABEL": token,
        "HSM_PIN": softhsm.pin,
        "SOFTHSM2_CONF": softhsm.conf,
    }


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Build an app from an environment dict, with its schema migrated."""
    from oidc.app import create_app
    from oidc.schema import upgrade_schema
    from oidc.state import state_of

    apps = []

    def make(env: dict[str, str], **config: Any) -> Any:
        app = create_app({"TESTING": True, **config}, env=env)
        if env.get("DATABASE_URL") not in MIGRATED:  # a copy of a migrated template is at head already
            upgrade_schema(app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        state_of(app).close()
