"""Dynamic client registration with a client library we did not write: pyoidc (``oic``).

Against the app under gunicorn (two workers), on SQLite and PostgreSQL: pyoidc reads the
discovery document, registers a client at ``registration_endpoint`` (RFC 7591, open
registration) and reads its registration back (RFC 7592) with the registration access token;
the client then signs a user in with the code flow (the browser part played by ``requests``)
and pyoidc redeems the code with the registered secret and verifies the ID token with the
provider's published keys.  An operator's initial access token is presented as RFC 6750 says,
by plain ``requests``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from live_flows import TIMEOUT, UserAgent
from oidc_fixtures import serve_with_gunicorn

pytestmark = [pytest.mark.e2e, pytest.mark.both_databases]

CALLBACK = "http://127.0.0.1:9/callback"  # never contacted: the redirect is read, not followed


def test_pyoidc_registers_reads_its_registration_and_signs_a_user_in(make_app: Any, base_env: dict[str, str],
                                                                     tmp_path: Path, admin_key: str):
    from oic import rndstr
    from oic.oic import Client
    from oic.oic.message import AccessTokenResponse, AuthorizationResponse, RegistrationResponse
    from oic.utils.authn.client import CLIENT_AUTHN_METHOD

    env = {**base_env, "REGISTRATION_OPEN": "true"}
    with serve_with_gunicorn(make_app, env, tmp_path, redirect_uris=[CALLBACK]) as served:
        issuer = served["issuer"]
        client = Client(client_authn_method=CLIENT_AUTHN_METHOD)
        client.provider_config(issuer)
        endpoint = client.provider_info["registration_endpoint"]
        assert endpoint == issuer + "/register"

        registered = client.register(endpoint, redirect_uris=[CALLBACK], client_name="Registered by pyoidc",
                                     grant_types=["authorization_code"], response_types=["code"],
                                     token_endpoint_auth_method="client_secret_basic")
        assert isinstance(registered, RegistrationResponse)
        assert client.client_id == registered["client_id"] and client.client_secret
        read = client.registration_read()
        assert read["client_name"] == "Registered by pyoidc" and read["redirect_uris"] == [CALLBACK]

        # The code flow: pyoidc makes the request and reads the response; requests plays the browser.
        pkce, verifier = client.add_code_challenge()
        state, nonce = rndstr(16), rndstr(16)
        request = client.construct_AuthorizationRequest(request_args={
            "response_type": "code", "scope": "openid profile", "state": state, "nonce": nonce,
            "redirect_uri": CALLBACK, **pkce})
        query = dict(parse_qsl(urlsplit(request.request(client.authorization_endpoint)).query))
        response = UserAgent(issuer).authorize(query, callback=CALLBACK)
        assert response.status_code == 302, response.text[:500]
        answer = client.parse_response(AuthorizationResponse, info=urlsplit(response.headers["Location"]).query,
                                       sformat="urlencoded")
        assert answer["state"] == state
        tokens = client.do_access_token_request(
            state=state, request_args={"code": answer["code"], "redirect_uri": CALLBACK, "code_verifier": verifier},
            authn_method="client_secret_basic", skew=5)
        assert isinstance(tokens, AccessTokenResponse)
        id_token = tokens["id_token"]  # verified by pyoidc against the provider's JWKS
        assert id_token["iss"] == issuer and id_token["aud"] == [client.client_id]

        # An initial access token from the admin API, presented as RFC 6750 bearer token.
        session = requests.Session()
        session.trust_env = False
        made = session.post(issuer + "/admin/initial-tokens", json={"policy": {"grant_types": ["client_credentials"]}},
                            headers={"Authorization": f"Bearer {admin_key}"}, timeout=TIMEOUT)
        assert made.status_code == 201, made.text
        token = made.json()["initial_access_token"]
        body = {"client_name": "Machine", "scope": "openid"}
        first = session.post(endpoint, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
        assert first.status_code == 201 and first.json()["grant_types"] == ["client_credentials"], first.text
        again = session.post(endpoint, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
        assert again.status_code == 401 and again.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        deleted = session.delete(first.json()["registration_client_uri"], timeout=TIMEOUT,
                                 headers={"Authorization": f"Bearer {first.json()['registration_access_token']}"})
        assert deleted.status_code == 204
