"""Mutual-TLS clients (RFC 8705) through nginx: real TLS client certificates, made here.

gunicorn serves the provider behind nginx (tests/tls_proxy.py with ``ssl_verify_client
optional_no_ca`` and ``proxy_set_header X-Client-Cert $ssl_client_escaped_cert``); ``requests``
presents the certificates.  Sent straight to gunicorn, or by a client as its own header through
nginx, a certificate header counts for nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from client_certificates import client_certificate, new_ca

from oidc_fixtures import jwt_parts, serve_with_gunicorn

TIMEOUT = 10


# End to end as deployed, on each database (bound refresh tokens and certificate metadata are stored).
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_mutual_tls_clients_through_nginx(make_app: Any, base_env: dict[str, str], tmp_path: Path,
                                          admin_key: str) -> None:
    ca = new_ca()
    ca_file = tmp_path / "client-ca.pem"
    ca_file.write_text(ca.pem)
    device = client_certificate("device")
    stranger = client_certificate("device")
    env = {**base_env, "MTLS_CA_FILE": str(ca_file)}
    with serve_with_gunicorn(make_app, env, tmp_path, tls=True, client_certificates=True,
                             auth_method="self_signed_tls_client_auth", jwks=device.jwks,
                             grant_types=["client_credentials"], scope="admin", admin_api=True,
                             tls_client_certificate_bound_access_tokens=True) as served:
        issuer, verify = served["issuer"], served["verify"]
        device_files, stranger_files = device.write(tmp_path, "device"), stranger.write(tmp_path, "stranger")

        def token(client_id: str, cert: Any = None, **kwargs: Any) -> requests.Response:
            return requests.post(issuer + "/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                          "scope": "admin", "resource": issuer + "/admin"},
                                 cert=cert, verify=verify, timeout=TIMEOUT, **kwargs)

        document = requests.get(issuer + "/.well-known/openid-configuration", verify=verify, timeout=TIMEOUT).json()
        assert document["mtls_endpoint_aliases"]["token_endpoint"] == issuer + "/token"
        assert {"tls_client_auth", "self_signed_tls_client_auth"} <= set(
            document["token_endpoint_auth_methods_supported"])

        # self_signed_tls_client_auth, and a token bound to the certificate (RFC 8705 §2.2, §3).
        granted = token(served["client_id"], device_files)
        assert granted.status_code == 200, granted.text
        access = granted.json()["access_token"]
        assert jwt_parts(access)[1]["cnf"] == {"x5t#S256": device.thumbprint}
        assert token(served["client_id"], stranger_files).json()["error"] == "invalid_client"
        # A client's own header is not a certificate: nginx replaces it (with nothing, here).
        forged = token(served["client_id"], headers={"X-Client-Cert": device.header})
        assert forged.status_code == 400 and forged.json()["error"] == "invalid_client"
        # Nor is one sent to gunicorn directly, by someone who is not the proxy.
        direct = requests.post(served["upstream"] + "/token", headers={"X-Client-Cert": device.header},
                               data={"grant_type": "client_credentials", "client_id": served["client_id"]},
                               timeout=TIMEOUT)
        assert direct.status_code == 400 and direct.json()["error"] == "invalid_client"

        def admin(cert: Any) -> int:
            return requests.get(issuer + "/admin/users", headers={"Authorization": f"Bearer {access}"}, cert=cert,
                                verify=verify, timeout=TIMEOUT).status_code

        assert admin(device_files) == 200
        assert admin(None) == 401
        assert admin(stranger_files) == 401

        # tls_client_auth (§2.1): registered through the admin API by the certificate's SAN.
        created = requests.post(issuer + "/admin/clients", headers={"Authorization": f"Bearer {admin_key}"},
                                json={"name": "Billing", "grant_types": ["client_credentials"], "scope": "admin",
                                      "auth_method": "tls_client_auth", "admin_api": True,
                                      "tls_client_auth_san_dns": "billing.example.com"},
                                verify=verify, timeout=TIMEOUT)
        assert created.status_code == 201, created.text
        billing = client_certificate("billing", issuer=ca, dns="billing.example.com").write(tmp_path, "billing")
        impostor = client_certificate("billing", dns="billing.example.com").write(tmp_path, "impostor")
        assert token(created.json()["client_id"], billing).status_code == 200
        assert token(created.json()["client_id"], impostor).json()["error"] == "invalid_client"
