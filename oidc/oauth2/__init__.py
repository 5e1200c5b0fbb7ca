"""OAuth 2.0 / OpenID Connect protocol machinery (Authlib-based).

``server``       the authorization server and its registrations
``grants``       authorization code (+PKCE, +OpenID), refresh token, client credentials
``client_auth``  private_key_jwt
``endpoints``    introspection (RFC 7662) and revocation (RFC 7009)
``issuance``     recording, rotating and revoking tokens in the database
``tokens``       building and verifying JWTs through the key service
"""
