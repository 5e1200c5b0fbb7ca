"""Mutual-TLS client authentication and certificate-bound tokens (RFC 8705).

TLS ends at the proxy in front (README, "Mutual-TLS clients"): it asks the
client for a certificate and forwards it, URL-escaped PEM (nginx's
``$ssl_client_escaped_cert``), in the header named by ``CLIENT_CERT_HEADER``.
:class:`oidc.web.proxy.TrustedProxyFix` drops that header from every request
that does not come from a trusted proxy, as it drops ``X-Forwarded-*``; what
arrives here is what the proxy saw.

:func:`certificate_of` parses it (bounded, with ``cryptography``) once per
request and keeps the result in the request's WSGI environ, where every later
reader of the same request finds it.  A header that is not one certificate is
:class:`InvalidClientCertificate`: each endpoint answers it with its own error
(``invalid_client`` at the token endpoint, ``invalid_token`` at a resource).

- ``tls_client_auth`` (§2.1): the certificate chains to a CA of
  ``MTLS_CA_FILE`` (:func:`chain_verifies`; the proxy asks with
  ``optional_no_ca`` and verifies nothing) and its subject DN or one
  subjectAltName entry is exactly the registered one (:func:`matches_registration`).
- ``self_signed_tls_client_auth`` (§2.2): the certificate's public key is one of
  the client's registered JWK Set (:func:`key_registered`); no PKI.
- Certificate-bound access tokens (§3): ``cnf`` {``x5t#S256``: :attr:`ClientCertificate.thumbprint`}.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from oidc.models import Client

#: Longest header value accepted: a URL-escaped PEM certificate with a 4096-bit RSA key and a few
#: extensions is about 3 KiB; this leaves room for large names without reading whatever is sent.
MAX_CERTIFICATE_HEADER_LENGTH = 16 * 1024
#: Where the parsed certificate (or the reason it is refused) is kept for the rest of the request.
ENVIRON_KEY = "oidc.client_certificate"
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"


class InvalidClientCertificate(ValueError):
    """The client certificate header is not one readable certificate; the message says why."""


@dataclass(frozen=True)
class ClientCertificate:
    """The certificate the client presented to the proxy."""

    certificate: x509.Certificate
    #: ``x5t#S256`` (RFC 8705 §3.1): base64url SHA-256 of the DER encoding, without padding.
    thumbprint: str


def environ_key(header: str) -> str:
    """The WSGI environ key of request header ``header`` (``X-Client-Cert``: ``HTTP_X_CLIENT_CERT``)."""
    return "HTTP_" + header.upper().replace("-", "_")


def parse_certificate_header(value: object) -> ClientCertificate:
    """One certificate from a header value: URL-escaped (or plain) PEM; :class:`InvalidClientCertificate` else."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidClientCertificate("the client certificate header is empty")
    if len(value) > MAX_CERTIFICATE_HEADER_LENGTH:
        raise InvalidClientCertificate("the client certificate header is too long")
    try:
        pem = unquote(value.strip(), errors="strict")
    except UnicodeDecodeError:
        raise InvalidClientCertificate("the client certificate header is not URL-escaped UTF-8") from None
    if not pem.startswith(_PEM_BEGIN) or pem.count(_PEM_BEGIN) != 1 or not pem.rstrip().endswith(_PEM_END):
        raise InvalidClientCertificate("the client certificate header is not one PEM certificate")
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
        # Read now what later checks read, so that a malformed extension or key is refused here.
        certificate.extensions  # noqa: B018
        certificate.public_key()
        der = certificate.public_bytes(serialization.Encoding.DER)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidClientCertificate("the client certificate could not be read") from None
    digest = hashlib.sha256(der).digest()
    return ClientCertificate(certificate, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"))


def certificate_of(request: Any, header: str | None) -> ClientCertificate | None:
    """The client certificate of ``request`` (anything with a WSGI ``environ``) in ``header``; None if none.

    Parsed once per request; :class:`InvalidClientCertificate` (each time asked) if the header is bad.
    """
    if header is None:
        return None
    environ = request.environ
    if ENVIRON_KEY not in environ:
        value = environ.get(environ_key(header))
        try:
            environ[ENVIRON_KEY] = None if value is None else parse_certificate_header(value)
        except InvalidClientCertificate as exc:
            environ[ENVIRON_KEY] = exc
    found = environ[ENVIRON_KEY]
    if isinstance(found, InvalidClientCertificate):
        raise InvalidClientCertificate(str(found))
    return found  # type: ignore[no-any-return]


# -- tls_client_auth (RFC 8705 §2.1) -----------------------------------------------------------------


def check_subject_dn(value: str) -> x509.Name:
    """A registered ``tls_client_auth_subject_dn`` read as RFC 4514 says; ValueError if it is not one."""
    name = x509.Name.from_rfc4514_string(value)
    if not len(name):
        raise ValueError("an empty distinguished name")
    return name


def _san_values(certificate: x509.Certificate, kind: Any) -> list[Any]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(extension.value.get_values_for_type(kind))


def matches_registration(client: Client, certificate: x509.Certificate) -> bool:
    """Whether ``certificate`` is the one ``client`` registered (§2.1.2): the subject DN, or a SAN entry of the
    registered type equal to the registered value (an IP address compared as an address)."""
    if client.tls_client_auth_subject_dn:
        try:
            return check_subject_dn(client.tls_client_auth_subject_dn) == certificate.subject
        except ValueError:
            return False
    for registered, kind in ((client.tls_client_auth_san_dns, x509.DNSName),
                             (client.tls_client_auth_san_uri, x509.UniformResourceIdentifier),
                             (client.tls_client_auth_san_email, x509.RFC822Name)):
        if registered:
            return registered in _san_values(certificate, kind)
    if client.tls_client_auth_san_ip:
        try:
            address = ipaddress.ip_address(client.tls_client_auth_san_ip)
        except ValueError:
            return False
        return address in _san_values(certificate, x509.IPAddress)
    return False


@functools.lru_cache(maxsize=4)
def _trust_store(ca_file: str) -> Store:
    """The CAs of ``MTLS_CA_FILE`` (read once per process: a change takes a restart)."""
    with open(ca_file, "rb") as file:
        return Store(x509.load_pem_x509_certificates(file.read()))


def chain_verifies(presented: ClientCertificate, ca_file: str, now: datetime.datetime) -> bool:
    """Whether the certificate chains to a CA of ``ca_file`` and is valid ``now`` for TLS client auth.

    The proxy forwards the leaf only, so it is issued by one of those CAs directly.  A certificate
    without subjectAltName is allowed: a client may be registered by its subject DN.
    """
    end_entity = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    verifier = (PolicyBuilder().store(_trust_store(ca_file)).time(now)
                .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=end_entity)
                .build_client_verifier())
    try:
        verifier.verify(presented.certificate, [])
    except (VerificationError, ValueError):
        return False
    return True


# -- self_signed_tls_client_auth (RFC 8705 §2.2) --------------------------------------------------------


def key_registered(client: Client, certificate: x509.Certificate) -> bool:
    """Whether the certificate's public key is a key of the client's registered JWK Set."""
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    if not client.jwks:
        return False
    try:
        keys = KeySet.import_key_set(json.loads(client.jwks)).keys
    except (ValueError, JoseError):
        return False
    presented = _spki(certificate.public_key())
    return any(_spki(key.public_key) == presented for key in keys)


def _spki(public_key: Any) -> bytes:
    result: bytes = public_key.public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return result
