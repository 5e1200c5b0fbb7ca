"""Certificates of signing keys through the admin API (``POST /admin/keys/<set>/csr``, ``PUT
/admin/keys/<set>/certificate``), and their expiry in readiness reasons and metrics.

The CA is test_key_certificates.SmallCA (cryptography); the published x5c is read back with
PyJWT's PyJWK and cryptography's x509, which the provider does not use to publish.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import jwt
import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from test_key_certificates import SmallCA, spki

from keys.service import ID_TOKEN_SET

from oidc_fixtures import Provider

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _admin(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


def _published(op: Provider, kid: str) -> dict[str, Any]:
    (jwk,) = [key for key in op.get("/.well-known/jwks.json").get_json()["keys"] if key["kid"] == kid]
    return jwk


def _request(op: Provider, admin_key: str, **body: Any) -> x509.CertificateSigningRequest:
    response = op.post(f"/admin/keys/{ID_TOKEN_SET}/csr", json=body, headers=_admin(admin_key))
    assert response.status_code == 200, response.json
    return x509.load_pem_x509_csr(response.json["csr"].encode())


def _attach(op: Provider, admin_key: str, chain: bytes, **body: Any) -> Any:
    return op.http.put(f"/admin/keys/{ID_TOKEN_SET}/certificate", json={"chain": chain.decode(), **body},
                       headers=_admin(admin_key), base_url="https://op.example.test")


@pytest.mark.hsm
def test_a_request_made_and_a_chain_attached_through_the_admin_api(make_app, hsm_env, admin_key):
    op = Provider(make_app({**hsm_env, "ID_TOKEN_SIGNING_ALG": "ES256", "HSM_ONLY_KEY_SETS": ID_TOKEN_SET}))
    response = op.post(f"/admin/keys/{ID_TOKEN_SET}/csr", json={}, headers=_admin(admin_key))
    assert response.status_code == 200
    kid = response.json["kid"]
    assert response.json["subject"] == "CN=op.example.test"  # the issuer's host by default
    request = x509.load_pem_x509_csr(response.json["csr"].encode())
    assert request.is_signature_valid  # signed on the token by the key itself
    assert spki(request.public_key()) == spki(jwt.PyJWK(_published(op, kid)).key)

    ca = SmallCA()
    leaf = ca.issue(_request(op, admin_key, subject="CN=op.example.test,O=Example", kid=kid))
    attached = _attach(op, admin_key, ca.chain_pem(leaf))
    assert attached.status_code == 200, attached.json
    assert attached.json == {"set": ID_TOKEN_SET, "kid": kid, "not_after": int(leaf.not_valid_after_utc.timestamp())}
    jwk = _published(op, kid)
    assert x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0])) == leaf
    assert spki(leaf.public_key()) == spki(jwt.PyJWK(jwk).key)


def test_the_admin_api_refuses_what_does_not_fit(make_app, base_env, admin_key):
    op = Provider(make_app(base_env))
    kid = op.post(f"/admin/keys/{ID_TOKEN_SET}/csr", json={}, headers=_admin(admin_key)).json["kid"]
    refused = op.post(f"/admin/keys/{ID_TOKEN_SET}/csr", json={"subject": "not a name"}, headers=_admin(admin_key))
    assert (refused.status_code, refused.json["error"]) == (400, "invalid_request")
    unknown = op.post(f"/admin/keys/{ID_TOKEN_SET}/csr", json={"kid": "nope"}, headers=_admin(admin_key))
    assert (unknown.status_code, unknown.json["error"]) == (404, "not_found")
    assert op.post("/admin/keys/no.such.set/csr", json={}, headers=_admin(admin_key)).status_code == 404
    assert op.post(f"/admin/keys/{ID_TOKEN_SET}/csr", json={}).status_code == 401

    ca = SmallCA()
    other = SmallCA()  # a leaf for another key: its public key is not this kid's
    foreign = other._certificate(x509.Name.from_rfc4514_string("CN=x"), ca.intermediate.subject,
                                 other.root_key.public_key(), ca.intermediate_key, ca=False)
    wrong_key = _attach(op, admin_key, ca.chain_pem(foreign), kid=kid)
    assert (wrong_key.status_code, wrong_key.json["error"]) == (400, "invalid_request")
    missing = op.http.put(f"/admin/keys/{ID_TOKEN_SET}/certificate", json={}, headers=_admin(admin_key),
                          base_url="https://op.example.test")
    assert (missing.status_code, missing.json["error"]) == (400, "invalid_request")
    assert "x5c" not in _published(op, kid)
    paths = op.get("/admin/openapi.json", headers=_admin(admin_key)).get_json()["paths"]
    assert "post" in paths["/admin/keys/{key_set}/csr"] and "put" in paths["/admin/keys/{key_set}/certificate"]


# One provider for every example: each is refused, so nothing it holds changes between them.
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chain=st.one_of(st.text(max_size=300),
                       st.builds(lambda body: f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n",
                                 st.text(alphabet="ABCDEFabcdef0123456789+/=\n", max_size=300))),
       kid=st.one_of(st.none(), st.text(max_size=40)))
def test_any_chain_text_gets_a_400_or_404_never_a_500(bad_input_op, admin_key, chain, kid):
    body: dict[str, Any] = {"chain": chain} if kid is None else {"chain": chain, "kid": kid}
    response = bad_input_op.http.put(f"/admin/keys/{ID_TOKEN_SET}/certificate", json=body, headers=_admin(admin_key),
                                     base_url="https://op.example.test")
    assert response.status_code in (400, 404), response.json
    assert response.json["error"] in ("invalid_request", "not_found")


@pytest.fixture
def bad_input_op(make_app, base_env):
    return Provider(make_app(base_env))


def _gauge(key_set: str, kid: str) -> float | None:
    return REGISTRY.get_sample_value("oidc_key_certificate_expiry_seconds", {"key_set": key_set, "kid": kid})


def test_expiry_is_a_readiness_reason_and_a_gauge_and_never_unready(make_app, base_env, admin_key):
    op = Provider(make_app(base_env))
    ready = op.get("/health/ready")
    assert ready.status_code == 200 and ready.json["checks"]["certificates"] == {"ok": True}

    kid = op.post(f"/admin/keys/{ID_TOKEN_SET}/csr", json={}, headers=_admin(admin_key)).json["kid"]
    ca = SmallCA()
    leaf = ca.issue(_request(op, admin_key, kid=kid), days=11)  # valid from yesterday: ten days left
    assert _attach(op, admin_key, ca.chain_pem(leaf)).status_code == 200

    ready = op.get("/health/ready")
    certificates = ready.json["checks"]["certificates"]
    assert ready.status_code == 200 and certificates["ok"] is True
    assert certificates["reason"] == "certificate_expiring"
    left = certificates["seconds_left"][f"{ID_TOKEN_SET}/{kid}"]
    expected = leaf.not_valid_after_utc.timestamp() - dt.datetime.now(dt.UTC).timestamp()
    assert abs(left - expected) < 60
    gauge = _gauge(ID_TOKEN_SET, kid)
    assert gauge is not None and abs(gauge - expected) < 60

    op.clock.advance(12 * 86400)  # past notAfter: still ready, with the reason that says so
    ready = op.get("/health/ready")
    assert ready.status_code == 200 and ready.json["checks"]["certificates"]["reason"] == "certificate_expired"
    gauge = _gauge(ID_TOKEN_SET, kid)
    assert gauge is not None and gauge < 0
