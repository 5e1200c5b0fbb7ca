"""Interoperability with libraries we did not write, against the app served by gunicorn.

* pyoidc (``oic``) as the relying party: discovery, code flow with PKCE S256,
  ID token validation (signature from the JWKS, nonce, at_hash), userinfo,
  refresh, RP-Initiated Logout.
* PyJWT's ``PyJWKClient`` as a resource server: access tokens validated against
  ``/.well-known/jwks.json``, ``typ: at+jwt`` included.

The browser part (login form, consent) is played by ``requests``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest

from oidc_fixtures import PASSWORD, serve_with_gunicorn

pytestmark = pytest.mark.e2e

RP_CALLBACK = "http://127.0.0.1:9/callback"  # never contacted: the redirect is read, not followed
RP_LOGGED_OUT = "http://127.0.0.1:9/logged-out"


@pytest.fixture
def served(make_app: Any, base_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    with serve_with_gunicorn(make_app, base_env, tmp_path, redirect_uris=[RP_CALLBACK],
                             post_logout_redirect_uris=[RP_LOGGED_OUT]) as served:
        yield served


def _hidden(page: str) -> list[tuple[str, str]]:
    fields = []
    for tag in re.findall(r"<input[^>]*type=\"hidden\"[^>]*>", page):
        attrs = dict(re.findall(r'(name|value)="([^"]*)"', tag))
        fields.append((attrs["name"], html.unescape(attrs.get("value", ""))))
    return fields


def _browse_to_callback(session: Any, url: str) -> str:
    """Follow the provider's pages like a person would; return the URL it sends us back to."""
    response = session.get(url, allow_redirects=False, timeout=10)
    for _ in range(8):
        if response.status_code in (302, 303):
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith(RP_CALLBACK) or location.startswith(RP_LOGGED_OUT):
                return location
            response = session.get(location, allow_redirects=False, timeout=10)
        elif 'action="/login"' in response.text:
            login_form = dict(_hidden(response.text)) | {"username": "alice", "password": PASSWORD}
            response = session.post(urljoin(response.url, "/login"), data=login_form, allow_redirects=False, timeout=10)
        elif 'action="/authorize/consent"' in response.text:
            consent_form = _hidden(response.text) + [("decision", "approve")]
            response = session.post(urljoin(response.url, "/authorize/consent"), data=consent_form, allow_redirects=False,
                                    timeout=10)
        else:
            raise AssertionError(f"unexpected page {response.status_code}: {response.text[:300]}")
    raise AssertionError("too many steps")


def test_pyoidc_code_flow_pkce_refresh_userinfo_logout_and_pyjwt_resource_server(served):
    import jwt
    import requests
    from oic import rndstr
    from oic.oic import Client
    from oic.oic.message import AuthorizationResponse, OpenIDSchema, RegistrationResponse
    from oic.utils.authn.client import CLIENT_AUTHN_METHOD
    from oic.utils.settings import OicClientSettings

    issuer = served["issuer"]
    rp = Client(client_authn_method=CLIENT_AUTHN_METHOD, settings=OicClientSettings(verify_ssl=False, timeout=10))
    rp.provider_config(issuer)
    assert rp.provider_info["issuer"] == issuer
    rp.store_registration_info(RegistrationResponse(
        client_id=served["client_id"], client_secret=served["client_secret"], redirect_uris=[RP_CALLBACK]))
    rp.redirect_uris = [RP_CALLBACK]

    state, nonce = rndstr(), rndstr()
    pkce_args, verifier = rp.add_code_challenge()
    assert pkce_args["code_challenge_method"] == "S256"
    request = rp.construct_AuthorizationRequest(request_args={
        "client_id": served["client_id"], "response_type": "code", "scope": ["openid", "email", "offline_access"],
        "nonce": nonce, "redirect_uri": RP_CALLBACK, "state": state, **pkce_args})
    browser = requests.Session()
    callback = _browse_to_callback(browser, request.request(rp.authorization_endpoint))

    response = rp.parse_response(AuthorizationResponse, info=urlsplit(callback).query, sformat="urlencoded")
    assert response["state"] == state
    tokens = rp.do_access_token_request(state=state, request_args={"code": response["code"],
                                                                    "redirect_uri": RP_CALLBACK,
                                                                    "code_verifier": verifier},
                                        authn_method="client_secret_basic")
    id_token = tokens["id_token"]  # pyoidc verified signature, iss, aud, nonce and at_hash
    assert id_token["nonce"] == nonce and id_token["iss"] == issuer
    assert "refresh_token" in tokens

    userinfo = rp.do_user_info_request(state=state)
    assert isinstance(userinfo, OpenIDSchema)
    assert userinfo["sub"] == id_token["sub"] and userinfo["email"] == "alice@example.test"

    # A resource server validates the JWT access token from the published JWKS (PyJWT).
    jwks_client = jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json")
    for access_token in [tokens["access_token"]]:
        header = jwt.get_unverified_header(access_token)
        assert header["typ"] == "at+jwt"
        key = jwks_client.get_signing_key_from_jwt(access_token)
        claims = jwt.decode(access_token, key.key, algorithms=[header["alg"]], audience="https://api.example.test",
                            issuer=issuer, options={"require": ["exp", "iat", "sub", "jti", "client_id"]})
        assert claims["sub"] == id_token["sub"] and claims["client_id"] == served["client_id"]
    # ...and refuses an ID token offered as an access token (typ is not at+jwt).
    assert jwt.get_unverified_header(tokens["id_token"].jwt)["typ"] != "at+jwt"

    refreshed = rp.do_access_token_refresh(state=state, authn_method="client_secret_basic")
    assert refreshed["access_token"] != tokens["access_token"]
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    new_header = jwt.get_unverified_header(refreshed["access_token"])
    jwt.decode(refreshed["access_token"], jwks_client.get_signing_key_from_jwt(refreshed["access_token"]).key,
               algorithms=[new_header["alg"]], audience="https://api.example.test", issuer=issuer)

    logout = rp.construct_EndSessionRequest(state=state, request_args={
        "post_logout_redirect_uri": RP_LOGGED_OUT, "state": "after-logout"})
    back = _browse_to_callback(browser, logout.request(rp.provider_info["end_session_endpoint"]))
    assert back.startswith(RP_LOGGED_OUT) and parse_qs(urlsplit(back).query)["state"] == ["after-logout"]
    # The browser session is over: a silent authorization now needs a login.
    silent = rp.construct_AuthorizationRequest(request_args={
        "client_id": served["client_id"], "response_type": "code", "scope": ["openid"], "nonce": rndstr(),
        "redirect_uri": RP_CALLBACK, "state": "s2", "prompt": "none", **rp.add_code_challenge()[0]})
    silent_back = _browse_to_callback(browser, silent.request(rp.authorization_endpoint))
    assert parse_qs(urlsplit(silent_back).query)["error"] == ["login_required"]
