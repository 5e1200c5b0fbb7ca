"""The TLS-terminating proxy of a deployment: nginx from Debian with a throwaway certificate.

The provider runs under gunicorn on loopback, nginx terminates TLS in front of
it and forwards with ``X-Forwarded-*`` from 127.0.0.2 (the one address gunicorn
trusts them from), and the issuer is ``https://127.0.0.1:PORT``: as the README
deploys it.  Clients trust the certificate as a real client would trust a
private CA's: ``requests``/``ssl`` with it as the CA file, Chromium with its
public key pinned (``--ignore-certificate-errors-spki-list``), never by turning
certificate checks off.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support import CHROMIUM_ARGS, missing

#: The address nginx connects to gunicorn from: gunicorn trusts X-Forwarded-* from it alone.
PROXY_SOURCE = "127.0.0.2"


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    #: base64 SHA-256 of the SubjectPublicKeyInfo: what Chromium pins.
    spki_sha256: str


def chromium_args(*certificates: Certificate | None) -> list[str]:
    """Chromium's usual flags, plus trust in these certificates' keys (and no others) where any is given."""
    pins = ",".join(certificate.spki_sha256 for certificate in certificates if certificate is not None)
    return [*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={pins}"] if pins else list(CHROMIUM_ARGS)


def throwaway_certificate(directory: Path) -> Certificate:
    """A self-signed P-256 certificate for localhost and 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Certificate(cert_path, key_path, base64.b64encode(hashlib.sha256(spki).digest()).decode())


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};{client_certificates}
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_bind {source};
            proxy_set_header Host $host:$server_port;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host:$server_port;{client_certificate_header}
        }}
    }}
}}
"""
#: What asks each client for a certificate (any: the provider checks it, RFC 8705 §2) and forwards it,
#: URL-escaped PEM, in the header CLIENT_CERT_HEADER names; empty without a certificate, so nginx sends
#: no such header then and a client's own never passes.
CLIENT_CERTIFICATES = "\n        ssl_verify_client optional_no_ca;"
CLIENT_CERTIFICATE_HEADER = "\n            proxy_set_header X-Client-Cert $ssl_client_escaped_cert;"
#: The provider's settings for it.
CLIENT_CERT_ENV = {"CLIENT_CERT_HEADER": "X-Client-Cert"}


def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path is None:
        missing("nginx (Debian package nginx-light)")
    return path


def proxy_env(issuer: str) -> dict[str, str]:
    """The provider's settings behind this proxy: the https issuer, one trusted hop, from its address only."""
    return {"OIDC_ISSUER": issuer, "TRUSTED_PROXY_HOPS": "1", "FORWARDED_ALLOW_IPS": PROXY_SOURCE}


@contextlib.contextmanager
def tls_proxy(directory: Path, port: int, upstream: int, certificate: Certificate | None = None,
              *, wait_for: str | None = None, timeout: float = 20,
              client_certificates: bool = False) -> Iterator[Certificate]:
    """nginx terminating TLS on 127.0.0.1:``port`` in front of 127.0.0.1:``upstream``; yields its certificate.

    ``wait_for``: a path to fetch through the proxy (with the certificate as CA) until it answers.
    ``client_certificates``: ask clients for a certificate and forward it in ``X-Client-Cert`` (RFC 8705).
    """
    binary = nginx_binary()
    directory.mkdir(parents=True, exist_ok=True)
    certificate = certificate or throwaway_certificate(directory)
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=directory, port=port, upstream=upstream, cert=certificate.cert,
                                      key=certificate.key, source=PROXY_SOURCE,
                                      client_certificates=CLIENT_CERTIFICATES if client_certificates else "",
                                      client_certificate_header=CLIENT_CERTIFICATE_HEADER if client_certificates else ""))
    process = subprocess.Popen([binary, "-c", str(conf), "-e", str(directory / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if wait_for is not None:
            context = ssl.create_default_context(cafile=str(certificate.cert))
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"https://127.0.0.1:{port}{wait_for}", context=context, timeout=2):
                        break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    if process.poll() is not None or time.monotonic() > deadline:
                        log = directory / "error.log"
                        raise AssertionError("nginx did not answer:\n" + (log.read_text() if log.exists() else "")) from None
                    time.sleep(0.1)
        yield certificate
    finally:
        process.terminate()
        process.wait(timeout=10)
