"""Rules the provider applies in several places, each written once and read by every place that needs it."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.datastructures import MultiDict

from oidc.oauth2.parameters import holds_control_character, repeated_parameter
from oidc.text import bounded_text, column_text


def test_a_repeated_parameter_is_named_only_among_those_asked_about() -> None:
    """RFC 6749 §3.1: each endpoint names the parameters it reads once (``resource`` may repeat)."""
    params = MultiDict([("resource", "https://a"), ("resource", "https://b"), ("scope", "x"), ("state", "1"),
                        ("state", "2")])
    assert repeated_parameter(params, ("scope", "resource")) is not None
    assert str(repeated_parameter(params, ("client_id", "state"))) == "The state parameter is repeated."
    assert repeated_parameter(params, ("client_id", "scope")) is None


def test_a_control_character_in_a_name_or_a_value_is_found() -> None:
    """RFC 6749 Appendix A: parameters are printable; tab, CR and LF are not refused here."""
    assert holds_control_character(MultiDict([("state", "a\x00b")]))
    assert holds_control_character(MultiDict([("st\x7fate", "ab")]))
    assert not holds_control_character(MultiDict([("state", "a\tb\r\n"), ("nonce", "é")]))


@pytest.mark.parametrize("value", [None, 7, b"abc", "", "x" * 11])
def test_bounded_text_refuses_what_is_not_1_to_limit_characters(value: object) -> None:
    assert bounded_text(value, 10) is None
    assert column_text(value, 10) is None


def test_column_text_also_refuses_a_nul() -> None:
    """PostgreSQL refuses a NUL in a text parameter; a value compared with a column never holds one."""
    assert bounded_text("a\x00b", 10) == "a\x00b"
    assert column_text("a\x00b", 10) is None
    assert column_text("x" * 10, 10) == bounded_text("x" * 10, 10) == "x" * 10


@pytest.mark.both_databases
def test_a_client_name_with_a_nul_is_refused_on_either_database(make_app: Any, database_url: str,
                                                                system_secret: str, admin_key: str) -> None:
    """The name is stored as it is: SQLite kept a NUL that PostgreSQL refused with an error of its own."""
    from conftest import software_env

    from oidc.accounts.clients import ClientError, create_client

    app = make_app(software_env(database_url, system_secret, admin_key))
    with app.app_context(), pytest.raises(ClientError, match="name"):
        create_client(name="Example\x00RP", grant_types=["client_credentials"])


@pytest.mark.parametrize(("uri", "loopback"), [
    ("http://127.0.0.1:8080/cb", True), ("http://[::1]:8080/cb", True), ("http://localhost/cb", True),
    ("http://LOCALHOST:9/cb", True), ("https://127.0.0.1/cb", False), ("http://127.0.0.2/cb", False),
    ("http://localhost.example.test/cb", False), ("http://example.test/cb", False), ("http://[::2]/cb", False),
])
def test_one_loopback_rule_for_registration_and_the_fapi2_profile(uri: str, loopback: bool) -> None:
    """RFC 8252 §7.3: the IP literals (and ``localhost``, allowed though not recommended by §8.3).

    Registration listed ``[::1]`` too, which no parsed host name ever is: both rules always agreed.
    """
    from oidc.urls import is_loopback_http

    assert is_loopback_http(uri) is loopback


def test_registration_accepts_an_ipv6_loopback_redirect(make_app: Any, database_url: str, system_secret: str,
                                                        admin_key: str) -> None:
    from conftest import software_env

    from oidc.accounts.clients import ClientError, create_client

    app = make_app(software_env(database_url, system_secret, admin_key))
    with app.app_context():
        client, _ = create_client(name="Native app", redirect_uris=["http://[::1]:8080/cb"])
        assert client.redirect_uris
        with pytest.raises(ClientError, match="loopback"):
            create_client(name="Native app", redirect_uris=["http://[::2]:8080/cb"])


def test_one_jws_builder_for_tokens_and_the_key_service_self_test() -> None:
    """RFC 7515 §7.1: the compact JWS the provider's tokens and the self-test both come from verifies."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from joserfc import jws
    from joserfc.jwk import ECKey

    from keys.algorithms import get_algorithm
    from keys.jws import compact_jws
    from keys.signer import BoundSigner, KeyRecord
    from keys.software import signing_function

    private_key = ec.generate_private_key(ec.SECP256R1())
    record = KeyRecord("openid.id-token", "k1", "ES256", "sig", "software", public_jwk={})
    signer = BoundSigner(record, signing_function(private_key, get_algorithm("ES256")))
    token = compact_jws(signer, {"sub": "é"}, "JWT")
    verified = jws.deserialize_compact(token, ECKey.import_key(private_key.public_key()), algorithms=["ES256"])
    assert verified.headers() == {"alg": "ES256", "kid": "k1", "typ": "JWT"}
    assert verified.payload.decode() == '{"sub":"é"}'


def test_doctor_checks_a_token_against_the_mechanisms_the_manager_signs_with() -> None:
    """A token with CKM_ECDSA_SHA256 but not the raw CKM_ECDSA signs ES256 (keys.mechanisms.choose);
    doctor's own table named only CKM_ECDSA and called such a token unfit."""
    from pkcs11 import Mechanism

    from oidc.cli import pkcs11_probe as probe

    available = {Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA_SHA256}
    assert probe.missing_mechanisms(available, "ES256") == []
    assert probe.usable_mechanisms(available, "ES256") == ["CKM_EC_KEY_PAIR_GEN", "CKM_ECDSA_SHA256"]
    assert probe.missing_mechanisms({Mechanism.EC_KEY_PAIR_GEN}, "ES256") == ["CKM_ECDSA_SHA256 or CKM_ECDSA"]
    # RFC 9864's Ed25519 is signed as EdDSA is; doctor used to check nothing for it.
    assert probe.missing_mechanisms(set(), "Ed25519") == ["CKM_EC_EDWARDS_KEY_PAIR_GEN", "CKM_EDDSA"]


@pytest.mark.parametrize("value", [None, "", "10.0.0.0/8, ::1"])
def test_gunicorn_trusts_the_forwarding_addresses_the_app_trusts(monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
                                                                 system_secret: str, value: str | None) -> None:
    """One default, and "empty means the default" as for every setting: FORWARDED_ALLOW_IPS= left
    gunicorn trusting no proxy while the app trusted the loopback one."""
    import runpy
    from pathlib import Path

    from oidc.settings import load_settings

    monkeypatch.setenv("METRICS_BIND", "")  # no metrics directory made by reading the file
    if value is None:
        monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    else:
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", value)
    config = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
    served = tuple(part.strip() for part in config["forwarded_allow_ips"].split(","))
    env = {"OIDC_ISSUER": "https://op.example.test", "SECRETS_SYSTEM": system_secret}
    if value is not None:
        env["FORWARDED_ALLOW_IPS"] = value
    assert served == load_settings(env, instance_path=str(tmp_path)).forwarded_allow_ips
