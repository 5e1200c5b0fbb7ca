"""Fetching a JSON document from a URL someone else chose (a client's ``jwks_uri``, a directory's JWKS).

The URL comes from a registration request, so the fetch is made safe here, once:

* ``https`` only, verified against the system's trust store (``SSL_CERT_FILE`` names a private CA);
* the host is resolved once and every address must be public (no loopback, private, link-local,
  multicast or reserved address: no request into the provider's own network) unless the provider
  runs in development mode; the connection goes to the address that was checked, so a second DNS
  answer cannot send it elsewhere (DNS rebinding);
* a redirect is followed only to the same scheme, host and port, at most :data:`MAX_REDIRECTS` times;
* connect and read timeouts, an overall deadline and a size limit (:data:`MAX_BYTES`).

Callers cache what they fetch (:mod:`oidc.oauth2.client_keys`): nothing here is on a request's
path more than once per cache period.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import time
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

from oidc.urls import split_url

#: Seconds to connect, to wait for each read, and for the whole fetch.
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
TOTAL_TIMEOUT = 10.0
#: Largest document read (a JWK Set of a few keys is a few KiB).
MAX_BYTES = 64 * 1024
MAX_REDIRECTS = 2
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """The document could not be fetched safely; the message says why (never the body)."""


def check_url(url: str) -> SplitResult:
    """The parts of an https URL with a host and no credentials or fragment; FetchError otherwise."""
    parts = split_url(url)
    if parts is None:
        raise FetchError(f"{url!r} is not a URL (its host or port cannot be read)")
    if parts.scheme != "https" or not parts.hostname or parts.username is not None or parts.fragment:
        raise FetchError(f"{url!r} is not an https URL without credentials or fragment")
    return parts


def fetch_json(url: str, *, development: bool) -> Any:
    """The JSON document at ``url``, fetched as the module's docstring says."""
    deadline = time.monotonic() + TOTAL_TIMEOUT
    origin = check_url(url)
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body = _get(check_url(url), development, deadline)
        if status in _REDIRECTS and location:
            target = urljoin(url, location)
            moved = urlsplit(target)
            if (moved.scheme, moved.hostname, moved.port) != (origin.scheme, origin.hostname, origin.port):
                raise FetchError("redirected to another host")
            url = target
            continue
        if status != 200:
            raise FetchError(f"answered HTTP {status}")
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise FetchError("did not answer JSON") from None
    raise FetchError("too many redirects")


def allowed_address(address: str, *, development: bool) -> bool:
    """Whether the provider may connect to ``address``: a public one (any in development mode)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return development or (ip.is_global and not ip.is_multicast)


def _address(parts: SplitResult, development: bool) -> tuple[Any, ...]:
    """The socket address to connect to: every address the host resolves to must be allowed."""
    host, port = parts.hostname or "", parts.port or 443
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise FetchError(f"cannot resolve {host!r}") from None
    if not found:
        raise FetchError(f"cannot resolve {host!r}")
    for *_, sockaddr in found:
        if not allowed_address(str(sockaddr[0]), development=development):
            raise FetchError(f"{host!r} is a loopback, private or reserved address")
    family, _, _, _, sockaddr = found[0]
    return family, sockaddr


def _get(parts: SplitResult, development: bool, deadline: float) -> tuple[int, str | None, bytes]:
    family, sockaddr = _address(parts, development)
    host = parts.hostname or ""
    raw = socket.socket(family, socket.SOCK_STREAM)
    raw.settimeout(CONNECT_TIMEOUT)
    try:
        raw.connect(sockaddr)
        raw.settimeout(READ_TIMEOUT)
        sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
    except (OSError, ssl.SSLError) as exc:
        raw.close()
        raise FetchError(f"cannot connect to {host!r}: {type(exc).__name__}") from None
    connection = http.client.HTTPSConnection(host, parts.port or 443, timeout=READ_TIMEOUT)
    connection.sock = sock
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", path, headers={"Accept": "application/json, application/jwk-set+json",
                                                 "User-Agent": "oidc-hsm"})
        response = connection.getresponse()
        body = b""
        while len(body) <= MAX_BYTES:
            if time.monotonic() > deadline:
                raise FetchError("took too long")
            chunk = response.read1(16 * 1024)
            if not chunk:
                break
            body += chunk
        if len(body) > MAX_BYTES:
            raise FetchError(f"answered more than {MAX_BYTES} bytes")
        return response.status, response.getheader("Location"), body
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"failed reading from {host!r}: {type(exc).__name__}") from None
    finally:
        connection.close()
