"""Mutual-TLS client authentication and certificate-bound tokens (RFC 8705), through the app.

The proxy's part is played by the test client: requests come from 127.0.0.2 (the trusted proxy)
with the certificate in ``X-Client-Cert`` as nginx's ``$ssl_client_escaped_cert`` puts it.
tests/test_mtls_proxy.py runs the same through nginx with real TLS client certificates.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from client_certificates import Issued, client_certificate, new_ca
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oidc_fixtures import ISSUER, REDIRECT_URI, Provider, jwt_parts

PROXY = "127.0.0.2"
HEADER = "X-Client-Cert"
ADMIN = f"{ISSUER}/admin"


@pytest.fixture
def ca() -> Issued:
    return new_ca()


def mtls_env(tmp_path: Path, ca: Issued) -> dict[str, str]:
    """The settings of a provider behind a proxy that forwards client certificates, trusting ``ca``."""
    ca_file = tmp_path / "client-ca.pem"
    ca_file.write_text(ca.pem)
    return {"TRUSTED_PROXY_HOPS": "1", "FORWARDED_ALLOW_IPS": PROXY, "CLIENT_CERT_HEADER": HEADER,
            "MTLS_CA_FILE": str(ca_file)}


@pytest.fixture
def mtls_op(make_app: Any, provisioned_database_url: str, system_secret: str, admin_key: str, tmp_path: Path,
            ca: Issued) -> Provider:
    """A provider behind a (simulated) proxy that forwards client certificates, trusting ``ca``."""
    from conftest import software_env

    return Provider(make_app({**software_env(provisioned_database_url, system_secret, admin_key),
                              **mtls_env(tmp_path, ca)}))


def _headers(certificate: Issued | None, **more: str) -> dict[str, str]:
    return {HEADER: certificate.header, **more} if certificate is not None else dict(more)


def _token(op: Provider, client_id: str, certificate: Issued | None, *, peer: str = PROXY, **data: str) -> Any:
    return op.post("/token", data={"grant_type": "client_credentials", "client_id": client_id, **data},
                   headers=_headers(certificate), environ_base={"REMOTE_ADDR": peer})


def _self_signed_client(op: Provider, certificate: Issued, **kwargs: Any) -> str:
    client_id, secret = op.add_client(grant_types=["client_credentials"], scope="api admin",
                                      auth_method="self_signed_tls_client_auth", jwks=certificate.jwks, **kwargs)
    assert secret is None
    return client_id


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json.get("error")


# -- client authentication (RFC 8705 §2) --------------------------------------------------------------


def test_self_signed_tls_client_auth_takes_a_certificate_of_a_registered_key(mtls_op):
    mine, other = client_certificate("app"), client_certificate("app")
    client_id = _self_signed_client(mtls_op, mine)
    response = _token(mtls_op, client_id, mine)
    assert response.status_code == 200, response.json
    assert "cnf" not in jwt_parts(response.json["access_token"])[1]  # not registered as bound
    assert _error(_token(mtls_op, client_id, other)) == (400, "invalid_client")  # same name, another key
    assert _error(_token(mtls_op, client_id, None)) == (400, "invalid_client")


def test_tls_client_auth_takes_a_certificate_of_the_trusted_ca_with_the_registered_subject(mtls_op, ca):
    client_id, _ = mtls_op.add_client(grant_types=["client_credentials"], scope="api", auth_method="tls_client_auth",
                                      tls_client_auth_subject_dn="CN=billing,O=Example")
    good = client_certificate("billing", issuer=ca)
    assert _token(mtls_op, client_id, good).status_code == 200
    refused = {
        "another subject": client_certificate("payroll", issuer=ca),
        "the subject, self-signed": client_certificate("billing"),
        "the subject, another CA": client_certificate("billing", issuer=new_ca()),
        "expired": client_certificate("billing", issuer=ca,
                                      not_after=datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)),
    }
    for case, certificate in refused.items():
        assert _error(_token(mtls_op, client_id, certificate)) == (400, "invalid_client"), case


@pytest.mark.parametrize("field, value, san", [
    ("tls_client_auth_san_dns", "billing.example.com", {"dns": "billing.example.com"}),
    ("tls_client_auth_san_uri", "spiffe://example.com/billing", {"uri": "spiffe://example.com/billing"}),
    ("tls_client_auth_san_ip", "2001:db8::1", {"ip": "2001:db8:0::1"}),
    ("tls_client_auth_san_email", "billing@example.com", {"email": "billing@example.com"}),
])
def test_tls_client_auth_by_subject_alternative_name(mtls_op, ca, field, value, san):
    """RFC 8705 §2.1.2: one SAN entry of the registered type equals the registered value (exactly)."""
    client_id, _ = mtls_op.add_client(grant_types=["client_credentials"], scope="api", auth_method="tls_client_auth",
                                      **{field: value})
    assert _token(mtls_op, client_id, client_certificate("any", issuer=ca, **san)).status_code == 200
    other: dict[str, Any] = {key: ("Other" + str(val) if key != "ip" else "2001:db8::2") for key, val in san.items()}
    assert _error(_token(mtls_op, client_id, client_certificate("any", issuer=ca, **other))) == (400, "invalid_client")
    # The value under another SAN type is not a match.
    wrong_type: dict[str, Any] = {"uri": value} if "dns" in san else {"dns": "billing.example.com"}
    assert _error(_token(mtls_op, client_id, client_certificate("any", issuer=ca, **wrong_type))) == (
        400, "invalid_client")


def test_the_certificate_header_is_ignored_unless_the_trusted_proxy_sent_it(mtls_op):
    certificate = client_certificate("app")
    client_id = _self_signed_client(mtls_op, certificate)
    assert _error(_token(mtls_op, client_id, certificate, peer="127.0.0.1")) == (400, "invalid_client")
    assert _token(mtls_op, client_id, certificate, peer=PROXY).status_code == 200


@pytest.mark.parametrize("value", ["garbage", "-----BEGIN%20CERTIFICATE-----%0Anope%0A-----END%20CERTIFICATE-----",
                                   "%FF%FE", "x" * 20000, "%0A"])
def test_a_bad_certificate_header_is_invalid_client(mtls_op, value):
    certificate = client_certificate("app")
    client_id = _self_signed_client(mtls_op, certificate)
    response = mtls_op.post("/token", data={"grant_type": "client_credentials", "client_id": client_id},
                            headers={HEADER: value}, environ_base={"REMOTE_ADDR": PROXY})
    assert _error(response) == (400, "invalid_client")


def test_a_secret_client_is_not_taken_for_a_certificate_one(mtls_op):
    """A client registered with a secret authenticates with it; a certificate alone is not enough."""
    client_id, secret = mtls_op.add_client(grant_types=["client_credentials"], scope="api")
    assert _error(_token(mtls_op, client_id, client_certificate("app"))) == (401, "invalid_client")
    response = mtls_op.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret),
                            headers=_headers(client_certificate("app")), environ_base={"REMOTE_ADDR": PROXY})
    assert response.status_code == 200


# -- certificate-bound access tokens (RFC 8705 §3) ----------------------------------------------------


def test_bound_tokens_carry_the_thumbprint_and_are_refused_without_the_certificate(mtls_op):
    certificate, other = client_certificate("app"), client_certificate("app")
    client_id = _self_signed_client(mtls_op, certificate, admin_api=True,
                                    tls_client_certificate_bound_access_tokens=True)
    response = _token(mtls_op, client_id, certificate, scope="admin", resource=ADMIN)
    assert response.status_code == 200, response.json
    token = response.json["access_token"]
    assert response.json["token_type"] == "Bearer"
    assert jwt_parts(token)[1]["cnf"] == {"x5t#S256": certificate.thumbprint}
    introspection = mtls_op.post("/introspect", data={"token": token, "client_id": client_id},
                                 headers=_headers(certificate), environ_base={"REMOTE_ADDR": PROXY}).json
    assert introspection["active"] is True and introspection["cnf"] == {"x5t#S256": certificate.thumbprint}

    def admin(presented: Issued | None, peer: str = PROXY) -> int:
        return mtls_op.get("/admin/users", headers=_headers(presented, Authorization=f"Bearer {token}"),
                           environ_base={"REMOTE_ADDR": peer}).status_code

    assert admin(certificate) == 200
    assert admin(None) == 401
    assert admin(other) == 401
    assert admin(certificate, peer="127.0.0.1") == 401  # the header of someone who is not the proxy


@pytest.mark.both_databases
def test_bound_user_tokens_at_userinfo_and_a_public_clients_bound_refresh_token(mtls_op):
    """RFC 8705 §3 at /userinfo (invalid_token, 401), §4: a public client's refresh token is bound too."""
    mtls_op.add_user("alice")
    certificate, other = client_certificate("phone"), client_certificate("phone")
    client_id, secret = mtls_op.add_client(auth_method="none", tls_client_certificate_bound_access_tokens=True)
    assert secret is None
    flow = mtls_op.code_flow(client_id)
    data = {"grant_type": "authorization_code", "code": flow["code"], "redirect_uri": REDIRECT_URI,
            "code_verifier": flow["verifier"], "client_id": client_id}
    refused = mtls_op.post("/token", data=data, environ_base={"REMOTE_ADDR": PROXY})
    assert _error(refused) == (400, "invalid_request")  # bound tokens need the certificate
    tokens = mtls_op.post("/token", data=data, headers=_headers(certificate), environ_base={"REMOTE_ADDR": PROXY})
    assert tokens.status_code == 200, tokens.json
    access = tokens.json["access_token"]
    assert jwt_parts(access)[1]["cnf"] == {"x5t#S256": certificate.thumbprint}

    def userinfo(presented: Issued | None) -> Any:
        return mtls_op.get("/userinfo", headers=_headers(presented, Authorization=f"Bearer {access}"),
                           environ_base={"REMOTE_ADDR": PROXY})

    assert userinfo(certificate).status_code == 200
    for presented in (None, other):
        response = userinfo(presented)
        assert response.status_code == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]

    def refresh(presented: Issued | None) -> Any:
        return mtls_op.post("/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                            "refresh_token": tokens.json["refresh_token"]},
                            headers=_headers(presented), environ_base={"REMOTE_ADDR": PROXY})

    assert _error(refresh(None)) == (400, "invalid_grant")
    assert _error(refresh(other)) == (400, "invalid_grant")
    renewed = refresh(certificate)
    assert renewed.status_code == 200, renewed.json
    assert jwt_parts(renewed.json["access_token"])[1]["cnf"] == {"x5t#S256": certificate.thumbprint}


def test_fapi2_takes_mutual_tls_instead_of_dpop(make_app, base_env, tmp_path, ca):
    """FAPI 2.0 §5.3.2.1: a client authenticating with its certificate gets certificate-bound tokens
    without a DPoP proof; with a proof, DPoP-bound ones; the discovery document offers both methods."""
    from test_fapi2 import FAPI_ENV

    from dpop_proofs import new_key, proof, public_jwk, thumbprint

    op = Provider(make_app({**base_env, **FAPI_ENV, **mtls_env(tmp_path, ca)}))
    certificate = client_certificate("fapi")
    client_id = _self_signed_client(op, certificate)
    response = _token(op, client_id, certificate)
    assert response.status_code == 200, response.json
    assert jwt_parts(response.json["access_token"])[1]["cnf"] == {"x5t#S256": certificate.thumbprint}
    key = new_key()
    with_proof = op.post("/token", data={"grant_type": "client_credentials", "client_id": client_id},
                         headers=_headers(certificate, DPoP=proof(key, htu=ISSUER + "/token", iat=op.clock.now())),
                         environ_base={"REMOTE_ADDR": PROXY})
    assert with_proof.status_code == 200, with_proof.json
    assert jwt_parts(with_proof.json["access_token"])[1]["cnf"] == {"jkt": thumbprint(public_jwk(key))}
    methods = op.get("/.well-known/openid-configuration").json["token_endpoint_auth_methods_supported"]
    assert set(methods) == {"private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"}


# -- discovery and registration -------------------------------------------------------------------------


def test_discovery_lists_the_methods_and_the_mtls_aliases(mtls_op, op):
    document = mtls_op.get("/.well-known/openid-configuration").json
    assert {"tls_client_auth", "self_signed_tls_client_auth"} <= set(document["token_endpoint_auth_methods_supported"])
    assert document["tls_client_certificate_bound_access_tokens"] is True
    assert document["mtls_endpoint_aliases"]["token_endpoint"] == document["token_endpoint"]
    assert document["mtls_endpoint_aliases"]["userinfo_endpoint"] == document["userinfo_endpoint"]
    # Without CLIENT_CERT_HEADER nothing of it is offered.
    plain = op.get("/.well-known/openid-configuration").json
    assert not {"tls_client_auth", "self_signed_tls_client_auth"} & set(plain["token_endpoint_auth_methods_supported"])
    assert plain["tls_client_certificate_bound_access_tokens"] is False and "mtls_endpoint_aliases" not in plain


@pytest.mark.parametrize("kwargs, message", [
    ({"auth_method": "tls_client_auth"}, "exactly one"),
    ({"auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "CN=a",
      "tls_client_auth_san_dns": "a.example"}, "exactly one"),
    ({"auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "not a dn"}, "distinguished name"),
    ({"auth_method": "tls_client_auth", "tls_client_auth_san_ip": "300.1.1.1"}, "IP"),
    ({"auth_method": "tls_client_auth", "tls_client_auth_san_email": "nobody"}, "email"),
    ({"auth_method": "tls_client_auth", "tls_client_auth_subject_dn": 7}, "printable"),
    ({"auth_method": "client_secret_basic", "tls_client_auth_subject_dn": "CN=a"}, "only for"),
    ({"auth_method": "self_signed_tls_client_auth"}, "jwks"),
])
def test_registration_refuses_what_rfc_8705_does_not_allow(mtls_op, kwargs, message):
    from oidc.accounts.clients import ClientError

    with pytest.raises(ClientError, match=message):
        mtls_op.add_client(grant_types=["client_credentials"], **kwargs)


def test_the_admin_api_registers_a_mutual_tls_client(mtls_op, admin_key, ca):
    body = {"name": "Billing", "grant_types": ["client_credentials"], "scope": "api",
            "auth_method": "tls_client_auth", "tls_client_auth_san_dns": "billing.example.com",
            "tls_client_certificate_bound_access_tokens": True}
    auth = {"Authorization": f"Bearer {admin_key}"}
    created = mtls_op.post("/admin/clients", json=body, headers=auth)
    assert created.status_code == 201, created.json
    assert created.json["tls_client_auth_san_dns"] == "billing.example.com" and "client_secret" not in created.json
    assert created.json["tls_client_certificate_bound_access_tokens"] is True
    certificate = client_certificate("billing", issuer=ca, dns="billing.example.com")
    response = _token(mtls_op, created.json["client_id"], certificate)
    assert jwt_parts(response.json["access_token"])[1]["cnf"] == {"x5t#S256": certificate.thumbprint}
    bad = mtls_op.post("/admin/clients", json={**body, "tls_client_auth_san_dns": None,
                                               "tls_client_auth_subject_dn": "=,="}, headers=auth)
    assert bad.status_code == 400
    schema = mtls_op.get("/admin/openapi.json", headers=auth).json
    registration = schema["components"]["schemas"]["ClientRegistration"]["properties"]
    assert "tls_client_auth" in registration["auth_method"]["enum"] and "tls_client_auth_subject_dn" in registration


# -- the header parser, property-based ---------------------------------------------------------------

_VALID = client_certificate("sweep", dns="sweep.example")


def _mutations() -> st.SearchStrategy[str]:
    """Header values near a real one (cut, spliced, re-escaped) and far from it (any text, any escapes)."""
    header = _VALID.header
    cut = st.tuples(st.integers(0, len(header)), st.integers(0, len(header))).map(
        lambda ends: header[:min(ends)] + header[max(ends):])
    spliced = st.tuples(st.integers(0, len(header)), st.text(max_size=8)).map(
        lambda part: header[:part[0]] + part[1] + header[part[0]:])
    escapes = st.lists(st.integers(0, 255).map(lambda byte: f"%{byte:02X}"), max_size=40).map("".join)
    return st.one_of(cut, spliced, escapes, st.text(max_size=300), st.just(_VALID.pem), st.just(header * 2),
                     st.just("-----BEGIN CERTIFICATE-----" + "A" * 17000))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(value=_mutations())
def test_the_header_parser_reads_one_certificate_or_says_why_not(value):
    from oidc.oauth2.mtls import ClientCertificate, InvalidClientCertificate, parse_certificate_header

    try:
        parsed = parse_certificate_header(value)
    except InvalidClientCertificate as exc:
        assert str(exc).startswith("the client certificate")
    else:
        assert isinstance(parsed, ClientCertificate) and parsed.thumbprint == _VALID.thumbprint


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_mutations().map(lambda value: value.replace("\r", "").replace("\n", "")))  # no line breaks in HTTP
def test_mangled_certificate_headers_get_rfc_errors_at_the_token_endpoint_and_userinfo(mtls_op, value):
    """invalid_client (400) at /token, invalid_token (401) at /userinfo for a bound token: never a 5xx."""
    client_id = _self_signed_client(mtls_op, _VALID, tls_client_certificate_bound_access_tokens=True)
    response = mtls_op.post("/token", data={"grant_type": "client_credentials", "client_id": client_id},
                            headers={HEADER: value}, environ_base={"REMOTE_ADDR": PROXY})
    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 400:
        assert response.json["error"] == "invalid_client"
        return
    token = response.json["access_token"]
    assert jwt_parts(token)[1]["cnf"] == {"x5t#S256": _VALID.thumbprint}
    bearer = {"Authorization": f"Bearer {token}"}
    # The token is a client's own (no user): /userinfo refuses it as invalid_token either way, never a 5xx.
    assert mtls_op.get("/userinfo", headers={**bearer, HEADER: value + "x"},
                       environ_base={"REMOTE_ADDR": PROXY}).status_code == 401


@pytest.mark.parametrize("env, message", [
    ({"CLIENT_CERT_HEADER": "X Client Cert"}, "CLIENT_CERT_HEADER must be a header name"),
    ({"CLIENT_CERT_HEADER": "Authorization"}, "CLIENT_CERT_HEADER cannot be"),
    ({"CLIENT_CERT_HEADER": "X-Client-Cert", "MTLS_CA_FILE": "/nonexistent/ca.pem"}, "MTLS_CA_FILE .* cannot be read"),
    ({"CLIENT_CERT_HEADER": "X-Client-Cert", "MTLS_CA_FILE": __file__}, "MTLS_CA_FILE .* holds no PEM certificate"),
    ({"CLIENT_CERT_HEADER": "X-Client-Cert", "MTLS_BASE_URL": "http://mtls.example"}, "MTLS_BASE_URL must be"),
    ({"MTLS_BASE_URL": "https://mtls.example"}, "need CLIENT_CERT_HEADER"),
])
def test_mutual_tls_settings_are_checked_at_start_up(base_env, tmp_path, env, message):
    from oidc.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match=message):
        load_settings({**base_env, **env}, instance_path=str(tmp_path))


def test_an_mtls_base_url_names_the_aliases(make_app, base_env, tmp_path, ca):
    op = Provider(make_app({**base_env, **mtls_env(tmp_path, ca), "MTLS_BASE_URL": "https://mtls.op.example.test/"}))
    aliases = op.get("/.well-known/openid-configuration").json["mtls_endpoint_aliases"]
    assert aliases == {"token_endpoint": "https://mtls.op.example.test/token",
                       "revocation_endpoint": "https://mtls.op.example.test/revoke",
                       "introspection_endpoint": "https://mtls.op.example.test/introspect",
                       "userinfo_endpoint": "https://mtls.op.example.test/userinfo",
                       "pushed_authorization_request_endpoint": "https://mtls.op.example.test/par"}


def test_the_cli_registers_a_mutual_tls_client_and_changes_its_certificate(mtls_op, ca):
    import json

    runner = mtls_op.app.test_cli_runner()
    created = runner.invoke(args=["clients", "create", "--name", "Billing", "--grant-type", "client_credentials",
                                  "--scope", "api", "--auth-method", "tls_client_auth",
                                  "--tls-client-auth-subject-dn", "CN=billing,O=Example", "--tls-certificate-bound",
                                  "--json"])
    assert created.exit_code == 0, created.output
    client = json.loads(created.output)
    assert client["tls_client_auth_subject_dn"] == "CN=billing,O=Example" and "client_secret" not in client
    assert client["tls_client_certificate_bound_access_tokens"] is True
    renewed = client_certificate("billing-2026", issuer=ca)
    assert _error(_token(mtls_op, client["client_id"], renewed)) == (400, "invalid_client")
    changed = runner.invoke(args=["clients", "set-certificate", client["client_id"],
                                  "--tls-client-auth-subject-dn", "CN=billing-2026,O=Example", "--not-bound"])
    assert changed.exit_code == 0, changed.output
    response = _token(mtls_op, client["client_id"], renewed)
    assert response.status_code == 200 and "cnf" not in jwt_parts(response.json["access_token"])[1]
    refused = runner.invoke(args=["clients", "create", "--name", "X", "--grant-type", "client_credentials",
                                  "--auth-method", "tls_client_auth"])
    assert refused.exit_code != 0 and "exactly one" in refused.output


def test_the_admin_api_changes_a_clients_certificate_or_nothing(mtls_op, admin_key, ca):
    client_id, _ = mtls_op.add_client(grant_types=["client_credentials"], scope="api", auth_method="tls_client_auth",
                                      tls_client_auth_san_dns="old.example.com")
    auth = {"Authorization": f"Bearer {admin_key}"}
    refused = mtls_op.http.patch(f"/admin/clients/{client_id}", base_url=ISSUER, headers=auth,
                                 json={"tls_client_auth_san_ip": "not an address", "logo_uri": "https://x.example/l.png"})
    assert refused.status_code == 400
    shown = mtls_op.get(f"/admin/clients/{client_id}", headers=auth).json
    assert shown["tls_client_auth_san_dns"] == "old.example.com" and shown["logo_uri"] is None
    changed = mtls_op.http.patch(f"/admin/clients/{client_id}", base_url=ISSUER, headers=auth,
                                 json={"tls_client_auth_san_dns": "new.example.com"})
    assert changed.status_code == 200 and changed.json["tls_client_auth_san_dns"] == "new.example.com"
    assert _token(mtls_op, client_id, client_certificate("x", issuer=ca, dns="new.example.com")).status_code == 200
    assert _error(_token(mtls_op, client_id, client_certificate("x", issuer=ca, dns="old.example.com"))) == (
        400, "invalid_client")
