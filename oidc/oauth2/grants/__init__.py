"""Authlib's grant classes, configured and tightened for this provider: one module per grant.

Where Authlib's defaults are weaker than this provider's rules, they are
overridden:

* Authorization codes: stored as keyed hashes, single use, 60 s by default; a
  replayed code is refused *and* revokes every token issued from it.
* Refresh tokens: rotated on every use; presenting a rotated one again is
  refused and revokes the whole family.
* A code or refresh token is claimed (an atomic ``UPDATE ... WHERE used_at IS
  NULL``) *after* the new tokens are built and signed, just before the commit:
  of two requests racing with one code, exactly one claims it, and no write
  lock is held while the HSM signs (SQLite has one writer at a time).
* Every token is built by :mod:`oidc.oauth2.families` and signed through the
  key service (never by Authlib with a private key).
"""
