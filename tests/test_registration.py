"""Dynamic client registration (RFC 7591) and its management (RFC 7592), through the app.

Initial access tokens are made by the operator (admin API and CLI), software statements are
signed by ``jwcrypto`` (a JOSE library the provider does not use), client assertions for
``private_key_jwt`` too, and a client's ``jwks_uri`` is served by a real https server on
loopback with a throwaway certificate (tests/tls_proxy.py), trusted through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jwcrypto import jwk, jwt
from jwcrypto.common import base64url_encode

from oidc_fixtures import ISSUER, REDIRECT_URI, Provider

DIRECTORY = "https://directory.example.test"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REGISTRATION_ERRORS = {"invalid_redirect_uri", "invalid_client_metadata", "invalid_software_statement",
                       "unapproved_software_statement"}


def _admin(op: Provider, admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


def _initial_token(op: Provider, admin_key: str, **body: Any) -> str:
    response = op.post("/admin/initial-tokens", json=body, headers=_admin(op, admin_key))
    assert response.status_code == 201, response.json
    return str(response.json["initial_access_token"])


def _register(op: Provider, body: Any, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return op.post("/register", json=body, headers=headers)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


MACHINE = {"client_name": "Billing", "grant_types": ["client_credentials"], "scope": "api",
           "token_endpoint_auth_method": "client_secret_basic"}


# -- open registration, initial access tokens --------------------------------------------------------


def test_registration_is_closed_without_an_initial_access_token(op):
    """RFC 7591 §3: registration needs the operator's initial access token unless REGISTRATION_OPEN."""
    discovery = op.get("/.well-known/openid-configuration").json
    assert discovery["registration_endpoint"] == ISSUER + "/register"
    for headers in ({}, _bearer("made-up"), {"Authorization": "Basic eDp5"}):
        response = op.post("/register", json=MACHINE, headers=headers)
        assert response.status_code == 401, response.json
        assert response.json["error"] == "invalid_token"
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert response.headers["Cache-Control"] == "no-store"
    assert op.count("Client") == 0


@pytest.mark.both_databases
def test_register_read_update_and_delete_with_rotated_registration_tokens(op, admin_key):
    """RFC 7591 §3.2.1 and RFC 7592 §2: the registration response, then read, full replacement
    (its token rotated) and deletion with the registration access token."""
    token = _initial_token(op, admin_key, label="billing team")
    before = op.clock.now()
    response = _register(op, MACHINE, token)
    assert response.status_code == 201, response.json
    assert response.headers["Cache-Control"] == "no-store"
    registered = response.json
    # Issued during the request (a second may turn while it runs).
    assert registered["client_secret_expires_at"] == 0 and before <= registered["client_id_issued_at"] <= op.clock.now()
    assert registered["registration_client_uri"] == f"{ISSUER}/register/{registered['client_id']}"
    assert {registered[name] for name in ("client_name", "scope", "token_endpoint_auth_method")} == {
        "Billing", "api", "client_secret_basic"}
    # The single-use initial access token is used up.
    assert _register(op, MACHINE, token).status_code == 401

    # The secret works at the token endpoint as any client's.
    issued = op.post("/token", data={"grant_type": "client_credentials", "scope": "api"},
                     auth=(registered["client_id"], registered["client_secret"]))
    assert issued.status_code == 200, issued.json

    uri, first = registered["registration_client_uri"], registered["registration_access_token"]
    read = op.get(uri, headers=_bearer(first))
    assert read.status_code == 200 and read.json["client_name"] == "Billing" and "client_secret" not in read.json

    update = {**MACHINE, "client_id": registered["client_id"], "client_name": "Billing v2",
              "client_secret": registered["client_secret"]}
    updated = op.http.put(uri, json=update, headers=_bearer(first), base_url=ISSUER)
    assert updated.status_code == 200, updated.json
    second = updated.json["registration_access_token"]
    assert second != first and updated.json["client_name"] == "Billing v2"
    assert "client_secret" not in updated.json  # the client keeps its secret
    assert op.get(uri, headers=_bearer(first)).status_code == 401  # the old token is gone
    assert op.get(uri, headers=_bearer(second)).json["client_name"] == "Billing v2"
    # Full replacement: what the update leaves out takes its default.
    bare = op.http.put(uri, json={"client_id": registered["client_id"], "grant_types": ["client_credentials"]},
                       headers=_bearer(second), base_url=ISSUER)
    assert bare.status_code == 200 and bare.json["scope"] == "openid profile email offline_access"
    third = bare.json["registration_access_token"]

    assert op.delete(uri, headers=_bearer(second)).status_code == 401
    assert op.http.head(uri, headers=_bearer(third), base_url=ISSUER).status_code == 200  # a read, nothing else
    deleted = op.delete(uri, headers=_bearer(third))
    assert deleted.status_code == 204
    assert op.get(uri, headers=_bearer(third)).status_code == 401
    assert op.post("/token", data={"grant_type": "client_credentials"},
                   auth=(registered["client_id"], registered["client_secret"])).status_code == 401
    assert op.count("Client") == 0


def test_expired_and_revoked_initial_access_tokens_register_nothing(op, admin_key):
    expiring = _initial_token(op, admin_key, expires_in=60, max_uses=None)
    revoked = _initial_token(op, admin_key, max_uses=None)
    assert _register(op, MACHINE, expiring).status_code == 201
    listed = op.get("/admin/initial-tokens", headers=_admin(op, admin_key)).json["initial_tokens"]
    revoked_id = next(row["id"] for row in listed if row["uses"] == 0)
    assert op.delete(f"/admin/initial-tokens/{revoked_id}", headers=_admin(op, admin_key)).status_code == 204
    assert _register(op, MACHINE, revoked).status_code == 401
    op.clock.advance(61)
    assert _register(op, MACHINE, expiring).status_code == 401
    assert op.count("Client") == 1
    bad = op.post("/admin/initial-tokens", json={"policy": {"fixed": {"scope": 5}}}, headers=_admin(op, admin_key))
    assert bad.status_code == 400 and bad.json["error_description"].startswith("fixed")
    # `tokens prune` deletes initial access tokens a day after they expired.
    op.clock.advance(86400)
    pruned = op.app.test_cli_runner().invoke(args=["tokens", "prune"])
    assert "initial_access_tokens: 1" in pruned.output, pruned.output


def test_a_client_the_operator_registered_has_no_configuration_endpoint(op):
    client_id, _ = op.add_client()
    for method in ("GET", "DELETE"):
        response = op.http.open(f"/register/{client_id}", method=method, headers=_bearer("x" * 43), base_url=ISSUER)
        assert response.status_code == 401 and response.json["error"] == "invalid_token"
    assert op.count("Client") == 1


def test_the_policy_of_an_initial_access_token_fixes_and_limits_metadata(op, admin_key):
    token = _initial_token(op, admin_key, max_uses=None, policy={
        "grant_types": ["client_credentials"], "scope": "api reports",
        "token_endpoint_auth_methods": ["client_secret_post"], "fixed": {"dpop_bound_access_tokens": True}})
    refused: list[tuple[dict[str, Any], str]] = [
        ({"grant_types": ["authorization_code"], "redirect_uris": [REDIRECT_URI]}, "grant_types"),
        ({"scope": "api admin"}, "scope"),
        ({"token_endpoint_auth_method": "client_secret_basic"}, "token_endpoint_auth_method"),
    ]
    for body, field in refused:
        response = _register(op, {"client_name": "X", **body}, token)
        assert response.status_code == 400, response.json
        assert response.json["error"] == "invalid_client_metadata" and response.json["error_description"].startswith(field)
    made = _register(op, {"client_name": "X", "dpop_bound_access_tokens": False}, token)
    assert made.status_code == 201, made.json
    # Defaults from the policy; what it fixes wins over the request.
    assert made.json["grant_types"] == ["client_credentials"] and made.json["scope"] == "api reports"
    assert made.json["token_endpoint_auth_method"] == "client_secret_post"
    assert made.json["dpop_bound_access_tokens"] is True
    # An update cannot lift the policy either.
    update = {"client_id": made.json["client_id"], "dpop_bound_access_tokens": False, "scope": "api"}
    updated = op.http.put(made.json["registration_client_uri"], json=update,
                          headers=_bearer(made.json["registration_access_token"]), base_url=ISSUER)
    assert updated.status_code == 200 and updated.json["dpop_bound_access_tokens"] is True
    assert updated.json["scope"] == "api"
    listed = op.get("/admin/initial-tokens", headers=_admin(op, admin_key)).json["initial_tokens"]
    assert [(row["uses"], row["max_uses"]) for row in listed] == [(1, None)]  # refusals took no use


@pytest.mark.parametrize("body, error", [
    ({"redirect_uris": ["http://rp.example.test/cb"]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["https://rp.example.test/cb#x"]}, "invalid_redirect_uri"),
    ({"redirect_uris": "https://rp.example.test/cb"}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT_URI], "jwks": {"keys": [{"kty": "EC"}]},
      "jwks_uri": "https://rp.example.test/jwks"}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT_URI], "jwks_uri": "http://rp.example.test/jwks"}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT_URI], "response_types": ["token"]}, "invalid_client_metadata"),
    ({"grant_types": ["client_credentials"], "response_types": ["code"]}, "invalid_client_metadata"),
    ({"grant_types": ["password"]}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT_URI], "client_name": 5}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT_URI], "contacts": "ops@example.test"}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT_URI], "software_statement": "a.b"}, "invalid_software_statement"),
    ({"redirect_uris": [REDIRECT_URI], "id_token_signed_response_alg": "none"}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT_URI], "subject_type": "pairwise"}, "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_signing_alg": "HS256"}, "invalid_client_metadata"),
    ([1, 2], "invalid_client_metadata"),
])
def test_bad_metadata_gets_rfc_7591_errors_and_keeps_the_token(op, admin_key, body, error):
    """RFC 7591 §3.2.2: the error, 400; the single-use initial access token is not spent."""
    token = _initial_token(op, admin_key)
    response = _register(op, body, token)
    assert (response.status_code, response.json["error"]) == (400, error), response.json
    assert op.count("Client") == 0
    assert _register(op, MACHINE, token).status_code == 201


def test_unknown_metadata_is_ignored_and_informational_metadata_kept(op, admin_key):
    body = {"redirect_uris": [REDIRECT_URI], "client_uri": "https://rp.example.test/", "contacts": ["ops@rp.test"],
            "software_id": "4NRB1-0XZABZI9E6-5SM3R", "software_version": "2.1", "frobnicate": True,
            "id_token_signed_response_alg": "RS256", "subject_type": "public"}
    made = _register(op, body, _initial_token(op, admin_key))
    assert made.status_code == 201, made.json
    assert "frobnicate" not in made.json
    kept = ("client_uri", "contacts", "software_id", "software_version", "id_token_signed_response_alg", "subject_type")
    assert {name: made.json[name] for name in kept} == {name: body[name] for name in kept}
    assert made.json["client_name"] == "rp.example.test"  # none given: the redirect URI's host
    assert made.json["grant_types"] == ["authorization_code"]  # RFC 7591 §2's default


def test_open_registration_and_a_code_flow_with_the_registered_client(make_app, provisioned_database_url,
                                                                      system_secret, admin_key):
    from conftest import software_env

    op = Provider(make_app({**software_env(provisioned_database_url, system_secret, admin_key),
                            "REGISTRATION_OPEN": "true"}))
    op.add_user()
    made = _register(op, {"redirect_uris": [REDIRECT_URI], "grant_types": ["authorization_code", "refresh_token"],
                          "client_name": "Self-service RP"})
    assert made.status_code == 201, made.json
    tokens = op.tokens(made.json["client_id"], made.json["client_secret"])
    assert tokens["id_token"] and tokens["refresh_token"]


# -- the CLI -------------------------------------------------------------------------------------------------


def test_the_cli_makes_lists_and_revokes_initial_access_tokens(op):
    runner = op.app.test_cli_runner()
    made = runner.invoke(args=["clients", "initial-token", "create", "--label", "partner", "--uses", "2",
                               "--grant-type", "client_credentials", "--scope", "api",
                               "--fix", "dpop_bound_access_tokens=true", "--json"])
    assert made.exit_code == 0, made.output
    created = json.loads(made.output)
    assert created["policy"] == {"grant_types": ["client_credentials"], "scope": "api",
                                 "fixed": {"dpop_bound_access_tokens": True}} and created["max_uses"] == 2
    registered = _register(op, {"client_name": "Partner"}, created["initial_access_token"])
    assert registered.status_code == 201 and registered.json["dpop_bound_access_tokens"] is True
    listed = runner.invoke(args=["clients", "initial-token", "list"])
    assert "partner" in listed.output and "1/2" in listed.output
    assert created["initial_access_token"] not in listed.output
    assert runner.invoke(args=["clients", "initial-token", "revoke", str(created["id"])]).exit_code == 0
    assert _register(op, {"client_name": "Partner"}, created["initial_access_token"]).status_code == 401
    bad = runner.invoke(args=["clients", "initial-token", "create", "--fix", "first_party=true"])
    assert bad.exit_code != 0 and "fixed" in bad.output


# -- software statements (RFC 7591 §2.3) ---------------------------------------------------------------------


@pytest.fixture
def directory(tmp_path: Path) -> dict[str, Any]:
    """A directory's signing key (jwcrypto) and its public JWK Set in a file."""
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="dir-1")
    path = tmp_path / "directory-jwks.json"
    path.write_text(json.dumps({"keys": [key.export_public(as_dict=True)]}))
    return {"key": key, "jwks_file": str(path)}


def _statement(key: Any, claims: dict[str, Any], alg: str = "ES256") -> str:
    token = jwt.JWT(header={"alg": alg, "kid": key.key_id, "typ": "JWT"}, claims=claims)
    token.make_signed_token(key)
    return str(token.serialize())


@pytest.fixture
def statement_op(make_app, provisioned_database_url, system_secret, admin_key, directory) -> Provider:
    from conftest import software_env

    return Provider(make_app({**software_env(provisioned_database_url, system_secret, admin_key),
                              "REGISTRATION_OPEN": "true", "REGISTRATION_REQUIRE_SOFTWARE_STATEMENT": "true",
                              "REGISTRATION_SOFTWARE_STATEMENT_ISSUERS": f"{DIRECTORY} {directory['jwks_file']}",
                              "REGISTRATION_SOFTWARE_STATEMENT_ALGS": "ES256,PS256"}))


def test_a_software_statement_from_a_trusted_issuer_wins_over_the_request(statement_op, directory):
    now = int(time.time())
    claims = {"iss": DIRECTORY, "iat": now, "exp": now + 300, "software_id": "tpp-42", "client_name": "Acme Bank App",
              "redirect_uris": [REDIRECT_URI], "grant_types": ["authorization_code"]}
    statement = _statement(directory["key"], claims)
    made = _register(statement_op, {"software_statement": statement, "client_name": "Evil",
                                    "redirect_uris": ["https://evil.example.test/cb"]})
    assert made.status_code == 201, made.json
    assert made.json["client_name"] == "Acme Bank App" and made.json["redirect_uris"] == [REDIRECT_URI]
    assert made.json["software_id"] == "tpp-42" and made.json["software_statement"] == statement
    # What the statement says stays fixed on update.
    updated = statement_op.http.put(made.json["registration_client_uri"], base_url=ISSUER,
                                    json={"client_id": made.json["client_id"], "client_name": "Evil"},
                                    headers=_bearer(made.json["registration_access_token"]))
    assert updated.status_code == 200 and updated.json["client_name"] == "Acme Bank App"


def test_software_statements_that_are_unsigned_expired_unknown_or_of_a_disallowed_alg_are_refused(
        statement_op, directory):
    now = int(time.time())
    good = {"iss": DIRECTORY, "iat": now, "exp": now + 300, "redirect_uris": [REDIRECT_URI]}
    other_key = jwk.JWK.generate(kty="EC", crv="P-256", kid="dir-1")
    hmac_key = jwk.JWK.generate(kty="oct", size=256, kid="dir-1")
    unsigned = ".".join((base64url_encode(json.dumps({"alg": "none"})), base64url_encode(json.dumps(good)), ""))
    cases = {
        "unsigned": (unsigned, "invalid_software_statement"),
        "expired": (_statement(directory["key"], {**good, "iat": now - 900, "exp": now - 600}),
                    "invalid_software_statement"),
        "not yet valid": (_statement(directory["key"], {**good, "nbf": now + 600}), "invalid_software_statement"),
        "another key": (_statement(other_key, good), "invalid_software_statement"),
        "HS256": (_statement(hmac_key, good, alg="HS256"), "invalid_software_statement"),
        "ES384 not allowed": (_statement(jwk.JWK.generate(kty="EC", crv="P-384", kid="dir-1"), good, alg="ES384"),
                              "invalid_software_statement"),
        "unknown issuer": (_statement(directory["key"], {**good, "iss": "https://elsewhere.example.test"}),
                           "unapproved_software_statement"),
        "no issuer": (_statement(directory["key"], {"redirect_uris": [REDIRECT_URI]}),
                      "unapproved_software_statement"),
        "missing": (None, "invalid_software_statement"),
    }
    for name, (statement, error) in cases.items():
        body = {"redirect_uris": [REDIRECT_URI], **({"software_statement": statement} if statement else {})}
        response = _register(statement_op, body)
        assert (response.status_code, response.json["error"]) == (400, error), (name, response.json)
    assert statement_op.count("Client") == 0


# -- two instances, one single-use initial access token --------------------------------------------------------


def _at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` at the same moment, one thread each (released together by a barrier)."""
    barrier = threading.Barrier(len(calls), timeout=20)
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(result is not None for result in results), results
    return results


@pytest.mark.both_databases
def test_one_single_use_initial_token_used_on_two_instances_at_once_registers_one_client(
        make_app, provisioned_database_url, system_secret, admin_key):
    """Two apps (two connection pools, as two instances) on one database race with one token: one wins."""
    from conftest import software_env

    env = software_env(provisioned_database_url, system_secret, admin_key)
    a, b = Provider(make_app(env)), Provider(make_app(env))
    for _ in range(3):
        token = _initial_token(a, admin_key)
        results = _at_once(*(lambda provider=provider, token=token: _register(provider, MACHINE, token)
                             for provider in (a, b)))
        assert sorted(result.status_code for result in results) == [201, 401], [result.json for result in results]
    assert a.count("Client") == 3


@pytest.mark.both_databases
def test_one_registration_token_used_for_two_updates_at_once_rotates_once(make_app, provisioned_database_url,
                                                                          system_secret, admin_key):
    from conftest import software_env

    env = {**software_env(provisioned_database_url, system_secret, admin_key), "REGISTRATION_OPEN": "true"}
    a, b = Provider(make_app(env)), Provider(make_app(env))
    made = _register(a, MACHINE).json
    update = {**MACHINE, "client_id": made["client_id"]}
    results = _at_once(*(lambda provider=provider: provider.http.put(
        made["registration_client_uri"], base_url=ISSUER, json=update,
        headers=_bearer(made["registration_access_token"])) for provider in (a, b)))
    assert sorted(result.status_code for result in results) == [200, 401]
    winner = next(result for result in results if result.status_code == 200)
    assert a.get(made["registration_client_uri"],
                 headers=_bearer(winner.json["registration_access_token"])).status_code == 200


# -- jwks_uri: keys fetched safely, cached, refreshed on an unknown kid ----------------------------------------


class _KeyServer:
    """An https server on loopback serving a JWK Set (with a throwaway certificate); counts its fetches."""

    def __init__(self, directory: Path) -> None:
        from tls_proxy import throwaway_certificate

        self.certificate = throwaway_certificate(directory)
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                body = json.dumps(server.document).encode()
                if self.path == "/elsewhere":
                    self.send_response(302)
                    self.send_header("Location", "https://localhost.example.test/jwks")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.certificate.cert), str(self.certificate.key))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def key_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_KeyServer]:
    server = _KeyServer(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(server.certificate.cert))  # the provider trusts it as a private CA
    try:
        yield server
    finally:
        server.close()


def _assertion(key: Any, client_id: str, now: int) -> str:
    token = jwt.JWT(header={"alg": "ES256", "kid": key.key_id},
                    claims={"iss": client_id, "sub": client_id, "aud": ISSUER, "jti": uuid.uuid4().hex,
                            # iat by the real clock (joserfc checks it so), exp by the provider's (advanced) one
                            "iat": int(time.time()), "exp": now + 60})
    token.make_signed_token(key)
    return str(token.serialize())


def _client_credentials(op: Provider, client_id: str, key: Any) -> Any:
    return op.post("/token", data={"grant_type": "client_credentials", "scope": "api",
                                   "client_assertion_type": ASSERTION_TYPE,
                                   "client_assertion": _assertion(key, client_id, op.clock.now())})


def _jwks_uri_op(make_app: Any, database_url: str, secret: str, admin_key: str, **env: str) -> Provider:
    from conftest import software_env

    return Provider(make_app({**software_env(database_url, secret, admin_key), "REGISTRATION_OPEN": "true", **env}))


def _register_key_client(op: Provider, jwks_uri: str) -> str:
    made = _register(op, {"client_name": "Signer", "grant_types": ["client_credentials"], "scope": "api",
                          "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": jwks_uri})
    assert made.status_code == 201, made.json
    assert "client_secret" not in made.json and made.json["jwks_uri"] == jwks_uri
    return str(made.json["client_id"])


def test_a_loopback_jwks_uri_is_refused_outside_development_mode(key_server, make_app, provisioned_database_url,
                                                                 system_secret, admin_key):
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="k1")
    key_server.document = {"keys": [key.export_public(as_dict=True)]}
    op = _jwks_uri_op(make_app, provisioned_database_url, system_secret, admin_key)
    client_id = _register_key_client(op, key_server.url)
    response = _client_credentials(op, client_id, key)
    assert (response.status_code, response.json["error"]) == (400, "invalid_client"), response.json
    assert key_server.fetches == 0  # refused before connecting


def test_private_key_jwt_with_jwks_uri_keys_cached_and_refreshed_on_a_new_kid(
        key_server, make_app, provisioned_database_url, system_secret, admin_key):
    first = jwk.JWK.generate(kty="EC", crv="P-256", kid="k1")
    key_server.document = {"keys": [first.export_public(as_dict=True)]}
    op = _jwks_uri_op(make_app, provisioned_database_url, system_secret, admin_key, DEVELOPMENT_MODE="true",
                      CLIENT_JWKS_MIN_REFRESH_SECONDS="30")
    client_id = _register_key_client(op, key_server.url)
    assert key_server.fetches == 0  # registration does not fetch
    for _ in range(3):
        response = _client_credentials(op, client_id, first)
        assert response.status_code == 200, response.json
    assert key_server.fetches == 1  # cached: never fetched per request

    # The client rotates its key: the unknown kid refreshes the cached set at once (once the
    # CLIENT_JWKS_MIN_REFRESH_SECONDS since the last fetch have passed, as jose's remote key sets do).
    second = jwk.JWK.generate(kty="EC", crv="P-256", kid="k2")
    key_server.document = {"keys": [second.export_public(as_dict=True)]}
    op.clock.advance(31)
    assert _client_credentials(op, client_id, second).status_code == 200
    assert key_server.fetches == 2
    # Made-up kids do not make it fetch again within CLIENT_JWKS_MIN_REFRESH_SECONDS.
    stranger = jwk.JWK.generate(kty="EC", crv="P-256", kid="k3")
    for _ in range(3):
        assert _client_credentials(op, client_id, stranger).status_code in (400, 401)
    assert key_server.fetches == 2
    op.clock.advance(31)
    key_server.document = {"keys": [second.export_public(as_dict=True), stranger.export_public(as_dict=True)]}
    response = _client_credentials(op, client_id, stranger)
    assert response.status_code == 200, response.json
    assert key_server.fetches == 3


def test_the_fetch_refuses_redirects_to_another_host_and_oversized_documents(key_server, make_app,
                                                                           provisioned_database_url, system_secret,
                                                                           admin_key):
    from oidc.oauth2 import outbound

    _jwks_uri_op(make_app, provisioned_database_url, system_secret, admin_key)  # an app, for nothing but imports
    redirect = key_server.url.replace("/jwks", "/elsewhere")
    with pytest.raises(outbound.FetchError, match="another host"):
        outbound.fetch_json(redirect, development=True)
    key_server.document = {"keys": [], "padding": "x" * (outbound.MAX_BYTES + 1)}
    with pytest.raises(outbound.FetchError, match="more than"):
        outbound.fetch_json(key_server.url, development=True)
    for url in ("http://127.0.0.1/jwks", "https://user@example.test/jwks", "https://[::1]/jwks", "file:///etc/passwd"):
        with pytest.raises(outbound.FetchError):
            outbound.fetch_json(url, development=False)
    for address in ("10.1.2.3", "169.254.169.254", "::1", "::ffff:127.0.0.1", "fd00::1", "224.0.0.1", "0.0.0.0"):
        assert not outbound.allowed_address(address, development=False), address
    assert outbound.allowed_address("93.184.216.34", development=False)


def test_a_software_statement_issuer_s_keys_at_an_https_url_are_fetched_and_cached(
        key_server, make_app, provisioned_database_url, system_secret, admin_key):
    from conftest import software_env

    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="dir-url")
    key_server.document = {"keys": [key.export_public(as_dict=True)]}
    op = Provider(make_app({**software_env(provisioned_database_url, system_secret, admin_key),
                            "REGISTRATION_OPEN": "true", "DEVELOPMENT_MODE": "true",
                            "REGISTRATION_SOFTWARE_STATEMENT_ISSUERS": f"{DIRECTORY} {key_server.url}"}))
    now = int(time.time())
    for name in ("first", "second"):
        statement = _statement(key, {"iss": DIRECTORY, "iat": now, "software_id": name,
                                     "redirect_uris": [REDIRECT_URI]})
        made = _register(op, {"software_statement": statement})
        assert made.status_code == 201 and made.json["software_id"] == name, made.json
    assert key_server.fetches == 1


def test_the_metadata_of_back_channel_logout_and_signed_responses_registers_through_the_same_checks(op, admin_key):
    """The metadata other specifications add plugs into the one table: registered, returned, checked."""
    token = _initial_token(op, admin_key, max_uses=None)
    body = {"redirect_uris": [REDIRECT_URI], "backchannel_logout_uri": "https://rp.example.test/logout",
            "backchannel_logout_session_required": True, "authorization_signed_response_alg": "RS256",
            "userinfo_signed_response_alg": "RS256"}
    made = _register(op, body, token)
    assert made.status_code == 201, made.json
    assert {name: made.json[name] for name in body} == body
    bad = _register(op, {**body, "backchannel_logout_uri": "http://rp.example.test/logout"}, token)
    assert (bad.status_code, bad.json["error"]) == (400, "invalid_client_metadata")
    assert bad.json["error_description"].startswith("backchannel_logout_uri")
    bad = _register(op, {**body, "authorization_signed_response_alg": "HS256"}, token)
    assert (bad.status_code, bad.json["error"]) == (400, "invalid_client_metadata")
    # A full replacement leaves out what it does not repeat.
    updated = op.http.put(made.json["registration_client_uri"], base_url=ISSUER,
                          json={"client_id": made.json["client_id"], "redirect_uris": [REDIRECT_URI]},
                          headers=_bearer(made.json["registration_access_token"]))
    assert updated.status_code == 200
    assert not {"backchannel_logout_uri", "authorization_signed_response_alg"} & set(updated.json)
    assert updated.json["backchannel_logout_session_required"] is False
