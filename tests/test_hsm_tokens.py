"""Several tokens (HSM_TOKENS): each holds its own pairs, every public key is published, and a set
signs on any healthy token, so losing one token costs only the signatures in flight on it.

Two SoftHSM2 tokens, each behind its own ``p11-kit server`` and reached through its own copy of
p11-kit's client module (tests/remote_token.RemoteTokens): killed, stopped (SIGSTOP) and restarted
one at a time, or both.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import hypothesis
import jwt
import pytest
from hypothesis import strategies as st

from keys.errors import HSMUnavailable
from keys.service import ACCESS_TOKEN_SET, ID_TOKEN_SET, KeyService

from support import start_key_service

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
FAST = {"HSM_RETRY_INITIAL_SECONDS": "0.1", "HSM_RETRY_MAX_SECONDS": "0.5", "HSM_READINESS_CACHE_SECONDS": "0"}
#: How long a lost token may take to sign again once it is back (its recovery probes every 0.5 s at most).
REJOIN_BOUND = 10.0


def _tokens_env(base_env: dict[str, str], remote_tokens: Any, **extra: str) -> dict[str, str]:
    return {**base_env, **remote_tokens.env(), **FAST, "HSM_ONLY_KEY_SETS": "*", **extra}


def _sign(service: KeyService, key_set: str = ACCESS_TOKEN_SET) -> tuple[str | None, str]:
    """Sign once; (the token that signed, the JWT) — the JWT built by PyJWT around our signature."""
    from keys import compact_jws

    signer = service.signer(key_set)
    token = compact_jws(signer, {"sub": "s", "iat": int(time.time())}, "JWT")
    return signer.record.token, token


def _verify(service: KeyService, token: str) -> None:
    """Verified with PyJWT against the published JWK Set, as a resource server does."""
    header = jwt.get_unverified_header(token)
    keys = {key["kid"]: key for key in json.loads(service.jwks_document()[0])["keys"]}
    key = jwt.PyJWK(keys[header["kid"]])
    jwt.decode(token, key.key, algorithms=[header["alg"]], options={"verify_aud": False})


def _metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _signers_until(service: KeyService, wanted: set[str | None], bound: float) -> set[str | None]:
    """Sign until every token of ``wanted`` has signed (or ``bound`` passes); the tokens that signed."""
    seen: set[str | None] = set()
    deadline = time.monotonic() + bound
    while not wanted <= seen and time.monotonic() < deadline:
        try:
            seen.add(_sign(service)[0])
        except HSMUnavailable:
            pass
        time.sleep(0.02)
    return seen


@SQLITE
def test_each_token_holds_its_own_pairs_and_both_sign_in_turns(make_app, base_env, remote_tokens, softhsm):
    app = make_app(_tokens_env(base_env, remote_tokens))
    service = start_key_service(app)
    for label in remote_tokens.labels.values():
        for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET):
            assert softhsm.key_objects(label, key_set) == {"private": 1, "public": 1}
    published = json.loads(service.jwks_document()[0])["keys"]
    assert len(published) == 4 and len({key["kid"] for key in published}) == 4
    statuses = {status.record.token: status.status for status in service.keys(ACCESS_TOKEN_SET)}
    assert statuses == {"A": "active", "B": "active"}  # each token's first key signs at once

    before = {name: _metric("oidc_hsm_token_signatures_total", token=name, result="ok") for name in ("A", "B")}
    signed = [_sign(service) for _ in range(6)]
    assert [token for token, _ in signed].count("A") == 3  # in turns over the healthy tokens
    for name in ("A", "B"):  # metrics per token
        assert _metric("oidc_hsm_token_signatures_total", token=name, result="ok") == before[name] + 3
        assert _metric("oidc_hsm_token_signing_duration_seconds_count", token=name) >= 3
        assert _metric("oidc_hsm_token_available", token=name) == 1
    for _, token in signed:
        _verify(service, token)

    evidence = {item.kid: item for item in service.evidence(ACCESS_TOKEN_SET)}
    assert {item.location["token"]: item.location["token_label"] for item in evidence.values()} == remote_tokens.labels
    assert all(not item.hsm_only_shortfalls() for item in evidence.values())
    health = service.health()
    assert health.ok and health.tokens == {"A": None, "B": None}


@SQLITE
def test_a_lost_token_costs_no_signature_and_rejoins_by_itself(make_app, base_env, remote_tokens):
    app = make_app(_tokens_env(base_env, remote_tokens))
    service = start_key_service(app)
    service.start_recovery()
    client = app.test_client()
    assert _signers_until(service, {"A", "B"}, 5) == {"A", "B"}

    remote_tokens.servers["A"].kill()
    failures = 0
    signed_by = []
    for _ in range(20):
        try:
            token_name, token = _sign(service)
        except HSMUnavailable:
            failures += 1  # only the one in flight on A when it went
            continue
        signed_by.append(token_name)
        _verify(service, token)
    assert failures <= 1, failures
    assert set(signed_by) == {"B"}
    assert _metric("oidc_hsm_token_available", token="A") == 0
    assert _metric("oidc_hsm_token_available", token="B") == 1
    assert _metric("oidc_hsm_available") == 1  # the process can sign: B
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    tokens = ready.get_json()["checks"]["hsm"]["tokens"]
    assert tokens == {"A": {"ok": False, "reason": "hsm_unavailable"}, "B": {"ok": True}}
    assert remote_tokens.libraries["A"] not in ready.get_data(as_text=True)
    # Evidence per key: B's read from B now, A's listed as unreachable (not the whole list failing).
    text = app.test_cli_runner().invoke(args=["keys", "list", "--evidence"]).output
    assert text.count("token A: cannot be asked now (hsm_unavailable)") == 2, text
    assert text.count(f"token B: {remote_tokens.labels['B']!r}") == 2, text
    # The JWKS keeps A's keys: tokens it signed before it went still verify.
    assert len(json.loads(service.jwks_document()[0])["keys"]) == 4

    remote_tokens.servers["A"].start()
    assert _signers_until(service, {"A", "B"}, REJOIN_BOUND) == {"A", "B"}  # A is back in the turns, unasked

    # Both gone: 503 (HSM-only: never software), then one back is enough.
    remote_tokens.servers["A"].kill()
    remote_tokens.servers["B"].kill()
    for _ in range(3):
        try:
            _sign(service)
        except HSMUnavailable:
            pass
    with pytest.raises(HSMUnavailable):
        _sign(service)
    assert client.get("/health/ready").status_code == 503
    remote_tokens.servers["B"].start()
    assert "B" in _signers_until(service, {"B"}, REJOIN_BOUND)
    assert client.get("/health/ready").status_code == 200


@SQLITE
def test_a_hung_token_is_passed_over_while_it_hangs(make_app, base_env, remote_tokens):
    """SIGSTOP: a signature sent to A is given up after HSM_TOKEN_TIMEOUT_SECONDS (the call stays on A's own
    thread); meanwhile and afterwards the others go to B at once, and A rejoins on SIGCONT."""
    app = make_app(_tokens_env(base_env, remote_tokens, HSM_TOKEN_TIMEOUT_SECONDS="1"))
    service = start_key_service(app)
    service.start_recovery()
    assert _signers_until(service, {"A", "B"}, 5) == {"A", "B"}

    server = remote_tokens.servers["A"]
    server.pause()
    outcome: list[tuple[str, float]] = []

    def sign_until_a_is_asked() -> None:
        while True:
            started = time.monotonic()
            try:
                name, _ = _sign(service)
            except HSMUnavailable:
                outcome.append(("unavailable", time.monotonic() - started))
                return
            if name == "A":  # A answered: it was not stopped yet
                continue

    asking = threading.Thread(target=sign_until_a_is_asked, daemon=True)
    asking.start()
    try:
        asking.join(timeout=5)
        assert not asking.is_alive()  # never stuck in the module
        ((what, seconds),) = outcome
        assert what == "unavailable" and 0.9 <= seconds < 3, outcome
        started = time.monotonic()
        signed_by = []
        while time.monotonic() - started < 2:
            signed_by.append(_sign(service)[0])  # not one failure: A is passed over while its call hangs
        assert set(signed_by) == {"B"} and len(signed_by) > 50
        assert service.health().tokens["A"] == "hsm_token_hung"
        assert client_ready(app) == 200
    finally:
        server.resume()
    assert _signers_until(service, {"A", "B"}, REJOIN_BOUND) == {"A", "B"}
    assert service.health().tokens == {"A": None, "B": None}


def client_ready(app: Any) -> int:
    return int(app.test_client().get("/health/ready").status_code)


@SQLITE
def test_a_first_start_with_one_token_stopped_starts_on_the_other(make_app, base_env, remote_tokens):
    """SIGSTOP before the first start: opening A hangs on its own thread; the service starts on B within
    HSM_TOKEN_TIMEOUT_SECONDS, and A joins once it answers (its pairs then pre-published)."""
    env = _tokens_env(base_env, remote_tokens, HSM_TOKEN_TIMEOUT_SECONDS="1")
    remote_tokens.servers["A"].pause()
    try:
        started = time.monotonic()
        service = start_key_service(make_app(env))
        assert time.monotonic() - started < 10
        service.start_recovery()
        assert {_sign(service)[0] for _ in range(6)} == {"B"}
        assert service.health().tokens["A"] is not None
    finally:
        remote_tokens.servers["A"].resume()
    deadline = time.monotonic() + REJOIN_BOUND
    while time.monotonic() < deadline and service.health().tokens["A"] is not None:
        time.sleep(0.1)
    assert service.health().tokens == {"A": None, "B": None}
    # A's pair is made by the recovery that follows its return, just after A counts as available again.
    statuses: set[tuple[str | None, str]] = set()
    while time.monotonic() < deadline:
        service.refresh()
        statuses = {(status.record.token, status.status) for status in service.keys(ACCESS_TOKEN_SET)}
        if ("A", "next") in statuses:
            break
        time.sleep(0.1)
    assert statuses == {("A", "next"), ("B", "active")}  # A joined a set B already signs for


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_instances_starting_together_make_one_pair_per_set_on_each_token(make_app, base_env, remote_tokens, softhsm):
    """Two instances on one PostgreSQL database start at once: the advisory lock makes each token's pair
    of each set once, and both publish the same four keys."""
    env = _tokens_env(base_env, remote_tokens)
    apps = [make_app(env) for _ in range(2)]
    services: list[Any] = [None, None]
    errors: list[BaseException] = []

    def start(index: int) -> None:
        try:
            services[index] = start_key_service(apps[index])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for label in remote_tokens.labels.values():
        for key_set in (ID_TOKEN_SET, ACCESS_TOKEN_SET):
            assert softhsm.key_objects(label, key_set) == {"private": 1, "public": 1}
    services[0].refresh()
    services[1].refresh()
    kids = [{key["kid"] for key in json.loads(service.jwks_document()[0])["keys"]} for service in services]
    assert kids[0] == kids[1] and len(kids[0]) == 4


@SQLITE
def test_rotation_gives_every_token_its_own_prepublished_successor(make_app, base_env, remote_tokens, softhsm):
    app = make_app(_tokens_env(base_env, remote_tokens, KEY_PREPUBLICATION_SECONDS="86400"))
    service = start_key_service(app)
    service.generate(ACCESS_TOKEN_SET)
    statuses = sorted((status.record.token or "", status.status) for status in service.keys(ACCESS_TOKEN_SET))
    assert statuses == [("A", "active"), ("A", "next"), ("B", "active"), ("B", "next")]
    for label in remote_tokens.labels.values():
        assert softhsm.key_objects(label, ACCESS_TOKEN_SET) == {"private": 2, "public": 2}

    remote_tokens.servers["B"].kill()
    with pytest.raises(HSMUnavailable, match="every token"):
        service.generate(ACCESS_TOKEN_SET)  # all or none: B would miss its successor
    for label in remote_tokens.labels.values():
        assert softhsm.key_objects(label, ACCESS_TOKEN_SET)["private"] == 2


@SQLITE
def test_a_replaced_token_gets_its_own_pairs_published_before_they_sign(make_app, base_env, remote_tokens, softhsm):
    env = _tokens_env(base_env, remote_tokens, KEY_PREPUBLICATION_SECONDS="86400")
    first = start_key_service(make_app(env))
    old_kids = {status.record.kid for status in first.keys(ACCESS_TOKEN_SET)}
    first.close()

    # Token B failed for good: a new, empty token takes its name.
    remote_tokens.servers["B"].stop()
    from remote_token import P11KitServer

    fresh = softhsm.new_token()
    old = remote_tokens.servers["B"]
    remote_tokens.servers["B"] = P11KitServer(provider=softhsm.library, token_label=fresh,
                                              socket_path=old.socket_path, env=softhsm.env())
    remote_tokens.servers["B"].start()
    env["HSM_B_TOKEN_LABEL"] = fresh
    service = start_key_service(make_app(env))
    statuses = {(status.record.token, status.status) for status in service.keys(ACCESS_TOKEN_SET)
                if status.record.kid not in old_kids}
    assert statuses == {("B", "next")}  # published now, signs after the pre-publication period
    assert softhsm.key_objects(fresh, ACCESS_TOKEN_SET) == {"private": 1, "public": 1}
    assert {_sign(service)[0] for _ in range(4)} == {"A"}  # A signs alone meanwhile

    # The failed token's keys stay published (tokens they signed still verify) until deleted.
    (gone,) = [status.record.kid for status in service.keys(ACCESS_TOKEN_SET) if status.record.token is None]
    assert gone in old_kids and service.public_key(gone) is not None
    assert service.delete(ACCESS_TOKEN_SET, gone)
    assert service.public_key(gone) is None


# -- settings ---------------------------------------------------------------------------------------


def _settings(env: dict[str, str], tmp_path: Any) -> Any:
    from oidc.settings import load_settings

    return load_settings({"SECRETS_SYSTEM": "x" * 40, **env}, instance_path=str(tmp_path))


def test_token_settings_are_read_per_name_and_the_pin_is_never_shown(tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text("s3cret-pin\n")
    settings = _settings({
        "HSM_TOKENS": "east,West2", "HSM_LIBRARY": "/lib/vendor.so",
        "HSM_EAST_TOKEN_LABEL": "oidc-east", "HSM_EAST_PIN": "1234",
        "HSM_WEST2_LIBRARY": "/lib/other.so", "HSM_WEST2_SLOT": "7", "HSM_WEST2_PIN_FILE": str(pin_file),
        "HSM_WEST2_MODULE_ENV": "P11_KIT_SERVER_ADDRESS=unix:path=/run/w.sock; VENDOR_CONF=/etc/v.conf",
        "HSM_ONLY_KEY_SETS": "*",
    }, tmp_path)
    assert settings.hsm_enabled
    east, west = settings.hsm_tokens
    assert (east.name, east.library, east.token_label, east.slot, east.pin) == ("east", "/lib/vendor.so", "oidc-east",
                                                                               None, "1234")
    assert (west.library, west.slot, west.pin) == ("/lib/other.so", 7, "s3cret-pin")
    assert west.module_env == (("P11_KIT_SERVER_ADDRESS", "unix:path=/run/w.sock"), ("VENDOR_CONF", "/etc/v.conf"))
    assert "s3cret" not in repr(settings.hsm_tokens) and "1234" not in repr(settings.hsm_tokens)

    from oidc.settings import unknown_names

    env = {"HSM_TOKENS": "east", "HSM_EAST_PIN": "1", "HSM_EAST_PINN": "1"}
    assert set(unknown_names(env)) == {"HSM_EAST_PINN"}


@pytest.mark.parametrize(("env", "message"), [
    ({"HSM_TOKENS": "a_b"}, "not a token name"),
    ({"HSM_TOKENS": "a,A"}, "names a token twice"),
    ({"HSM_TOKENS": "a", "HSM_A_PIN": "1", "HSM_A_SLOT": "0"}, "HSM_A_LIBRARY is not set"),
    ({"HSM_TOKENS": "a", "HSM_A_LIBRARY": "/l.so", "HSM_A_PIN": "1"}, "neither HSM_A_TOKEN_LABEL nor HSM_A_SLOT"),
    ({"HSM_TOKENS": "a", "HSM_A_LIBRARY": "/l.so", "HSM_A_SLOT": "x", "HSM_A_PIN": "1"}, "HSM_A_SLOT must be"),
    ({"HSM_TOKENS": "a", "HSM_A_LIBRARY": "/l.so", "HSM_A_SLOT": "0"}, "HSM_A_PIN (or HSM_A_PIN_FILE) is not set"),
    ({"HSM_TOKENS": "a", "HSM_A_LIBRARY": "/l.so", "HSM_A_SLOT": "0", "HSM_A_PIN": "1", "HSM_A_PIN_FILE": "/p"},
     "both set"),
    ({"HSM_TOKENS": "a", "HSM_A_LIBRARY": "/l.so", "HSM_A_SLOT": "0", "HSM_A_PIN_FILE": "/nonexistent/pin"},
     "HSM_A_PIN_FILE cannot be read"),
    ({"HSM_TOKENS": "a", "HSM_A_LIBRARY": "/l.so", "HSM_A_SLOT": "0", "HSM_A_PIN": "1", "HSM_PIN": "2"},
     "not HSM_TOKEN_LABEL, HSM_SLOT or HSM_PIN"),
    ({"HSM_TOKENS": "a", "HSM_ENABLED": "false", "HSM_A_LIBRARY": "/l.so", "HSM_A_SLOT": "0", "HSM_A_PIN": "1"},
     "HSM_ENABLED is false"),
])
def test_bad_token_settings_name_the_variable(tmp_path, env, message):
    from oidc.settings import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        _settings(env, tmp_path)


@hypothesis.settings(max_examples=200, deadline=None, derandomize=True, database=None)
@hypothesis.given(names=st.text(max_size=40), module_env=st.text(max_size=80))
def test_any_hsm_tokens_or_module_env_value_is_read_or_refused_naming_its_variable(names, module_env):
    """Whatever HSM_TOKENS and HSM_<NAME>_MODULE_ENV hold: settings, or a ConfigError naming the variable."""
    from oidc.settings import ConfigError, load_settings, parse_module_env

    try:
        pairs = parse_module_env(module_env, "HSM_X_MODULE_ENV")
    except ConfigError as exc:
        assert "HSM_X_MODULE_ENV" in str(exc)
    else:
        assert all(name and "=" not in name for name, _ in pairs)
    env = {"SECRETS_SYSTEM": "x" * 40, "HSM_TOKENS": names, "HSM_LIBRARY": "/lib/m.so"}
    for name in names.split(","):
        env[f"HSM_{name.strip().upper()}_SLOT"] = "0"
        env[f"HSM_{name.strip().upper()}_PIN"] = "1"
    try:
        settings = load_settings(env, instance_path="/nonexistent")
    except ConfigError as exc:
        assert "HSM_" in str(exc)
    else:
        assert [token.name for token in settings.hsm_tokens] == [part.strip() for part in names.split(",")
                                                                 if part.strip()]


# -- doctor -----------------------------------------------------------------------------------------


@SQLITE
def test_doctor_checks_every_token_and_its_keys(make_app, base_env, remote_tokens):
    from test_doctor import doctor, line

    env = _tokens_env(base_env, remote_tokens)
    start_key_service(make_app(env)).close()
    status, lines, output = doctor(env)
    assert status == 0, output
    for name in ("A", "B"):
        for check in ("pkcs11 library", "token", "login", "keys openid.id-token", "keys jwt.access-token"):
            assert line(lines, f"token {name} {check}").startswith("[ok  ]"), output
    assert "HSM tokens A, B (2 key(s)" in line(lines, "backend jwt.access-token")
    assert remote_tokens.softhsm.pin not in output

    remote_tokens.servers["B"].kill()
    status, lines, output = doctor(env)
    assert status != 0
    assert line(lines, "token A keys jwt.access-token").startswith("[ok  ]")
    assert line(lines, "token B token").startswith("[FAIL]") or line(lines, "token B pkcs11 library").startswith("[FAIL]")
