"""Client certificates for the mutual-TLS tests, made with ``cryptography``: a CA, certificates it
issues, self-signed ones, and the header value nginx sends for them (``$ssl_client_escaped_cert``)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc.jwk import ECKey

NOW = datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def header(self) -> str:
        """What nginx's ``$ssl_client_escaped_cert`` holds: the PEM, URL-escaped."""
        return quote(self.pem, safe="")

    @property
    def thumbprint(self) -> str:
        """``x5t#S256`` (RFC 8705 §3.1), computed here from the DER, not by the provider."""
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()

    @property
    def jwks(self) -> dict[str, object]:
        """A JWK Set with this certificate's public key (for ``self_signed_tls_client_auth``)."""
        return {"keys": [ECKey.import_key(self.key.public_key()).as_dict(private=False)]}

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """The certificate and its key as PEM files (what ``requests``' ``cert=`` takes)."""
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        cert.write_text(self.pem)
        key.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert, key


def _name(common_name: str, organization: str = "Example") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_ca(common_name: str = "Example Client CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1)).not_valid_after(NOW + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def client_certificate(common_name: str, *, issuer: Issued | None = None, dns: str | None = None,
                       uri: str | None = None, ip: str | None = None, email: str | None = None,
                       not_after: datetime.datetime | None = None) -> Issued:
    """A TLS client certificate: issued by ``issuer``, or self-signed without one."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    builder = (
        x509.CertificateBuilder().subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    names: list[x509.GeneralName] = []
    if dns:
        names.append(x509.DNSName(dns))
    if uri:
        names.append(x509.UniformResourceIdentifier(uri))
    if ip:
        names.append(x509.IPAddress(ipaddress.ip_address(ip)))
    if email:
        names.append(x509.RFC822Name(email))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)
