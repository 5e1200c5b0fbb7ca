"""Interoperability of PAR and DPoP with a client library we did not write: ``requests-oauth2client``.

Against the app under gunicorn (two workers), with server nonces on: the
library pushes the authorization request (PKCE S256, ``dpop_jkt`` and a DPoP
proof), the browser part (login, consent) is played by ``requests``, the
library validates the callback (``state``, RFC 9207 ``iss``) and the ID token,
redeems the code with a proof of the same key, calls ``/userinfo`` with the
DPoP scheme (a proof with ``ath``), and refreshes with its bound refresh token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from live_flows import UserAgent
from oidc_fixtures import jwt_parts, serve_with_gunicorn

pytestmark = pytest.mark.e2e

CALLBACK = "http://127.0.0.1:9/callback"  # never contacted: the redirect is read, not followed


def test_par_pkce_and_dpop_with_requests_oauth2client(make_app: Any, base_env: dict[str, str], tmp_path: Path):
    from jwskate import JwkSet, SignedJwt
    from requests_oauth2client import DPoPToken, OAuth2Client

    env = {**base_env, "DPOP_NONCE": "true"}
    with serve_with_gunicorn(make_app, env, tmp_path, redirect_uris=[CALLBACK], auth_method="none",
                             require_pushed_authorization_requests=True) as served:
        issuer = served["issuer"]
        session = requests.Session()
        session.trust_env = False
        client = OAuth2Client.from_discovery_endpoint(
            issuer=issuer, client_id=served["client_id"], redirect_uri=CALLBACK, testing=True, session=session,
            dpop_bound_access_tokens=True)
        assert client.pushed_authorization_request_endpoint == issuer + "/par"

        request = client.authorization_request(scope="openid profile offline_access")
        assert request.dpop_key is not None and "dpop_jkt" in request.args
        pushed = client.pushed_authorization_request(request)
        query = dict(parse_qsl(urlsplit(str(pushed.uri)).query))
        assert set(query) == {"client_id", "request_uri"}

        browser = UserAgent(issuer)
        response = browser.authorize(query, callback=CALLBACK)
        assert response.status_code == 302, response.text[:500]
        callback = response.headers["Location"]
        authorization = request.validate_callback(callback)  # state and iss (RFC 9207) checked by the library

        # (validate=False: requests-oauth2client 1.8.0's validate_id_token rebuilds a DPoPToken without
        # its key and fails; the ID token is verified below with jwskate, the library's JOSE toolkit.)
        token = client.authorization_code(authorization, validate=False)
        assert isinstance(token, DPoPToken)
        id_token = SignedJwt(str(token.id_token))
        assert id_token.verify_signature(JwkSet(session.get(issuer + "/.well-known/jwks.json").json()),
                                         alg=id_token.alg)
        assert id_token.claims["nonce"] == request.nonce and id_token.claims["iss"] == issuer
        jkt = request.dpop_key.dpop_jkt
        assert jwt_parts(str(token.access_token))[1]["cnf"] == {"jkt": jkt}

        claims = client.userinfo(token)
        assert claims["preferred_username"] == "alice"
        # The same token as a plain bearer token is refused, with the DPoP challenge.
        refused = session.get(issuer + "/userinfo", headers={"Authorization": f"Bearer {token.access_token}"})
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("DPoP ")

        refreshed = client.refresh_token(token)  # proof of the same key: the refresh token is bound to it
        assert isinstance(refreshed, DPoPToken)
        assert jwt_parts(str(refreshed.access_token))[1]["cnf"] == {"jkt": jkt}
        assert client.userinfo(refreshed)["sub"] == claims["sub"]

        # A request_uri is good once.
        again = browser.get("/authorize?" + urlsplit(str(pushed.uri)).query)
        assert again.status_code == 400 and "invalid_request_uri" in again.text
