"""Trusting ``X-Forwarded-*`` only from the reverse proxy.

Werkzeug's ``ProxyFix`` believes the headers of whoever connects.  Behind a
proxy, anybody who can reach the app directly could then choose the scheme,
host and client address the app sees.  This middleware applies ``ProxyFix``
(with the configured number of hops) only to requests whose peer address is a
trusted proxy, and strips the forwarded headers from every other request.

The client certificate header (``CLIENT_CERT_HEADER``, RFC 8705 behind a
TLS-terminating proxy) is a forwarded header too: kept from trusted proxies
only, so nobody else can claim a certificate.

The issuer never comes from these headers: it is configuration.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

from oidc.oauth2.mtls import environ_key
from oidc.settings import parse_networks

_FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
              "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX", "HTTP_FORWARDED")


class TrustedProxyFix:
    """``ProxyFix`` for requests from ``trusted`` peers; forwarded headers dropped otherwise."""

    def __init__(self, app: Callable[..., Any], *, hops: int, trusted: Iterable[str],
                 certificate_header: str | None = None) -> None:
        self.app = app
        self.forwarded = _FORWARDED + ((environ_key(certificate_header),) if certificate_header else ())
        # With no hop to trust, no peer is a proxy: every request is served as it came.
        self.networks = parse_networks(trusted) if hops > 0 else []
        self.proxied = ProxyFix(app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops)
        # Peers are few (the proxy, a load balancer or two): remember each answer.
        self._trusted = functools.lru_cache(maxsize=1024)(self._is_trusted)

    def _is_trusted(self, peer: str | None) -> bool:
        try:
            address = ipaddress.ip_address((peer or "").strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self.networks and self._trusted(environ.get("REMOTE_ADDR")):
            return self.proxied(environ, start_response)
        for name in self.forwarded:
            environ.pop(name, None)
        return self.app(environ, start_response)
