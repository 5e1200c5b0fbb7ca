"""A relying party's back-channel logout endpoint on loopback, for tests and the benchmark.

A ``ThreadingHTTPServer`` in a thread.  It records every POST (the time it
arrived, its path, content type and form), answers with the statuses it was
told to (in order, then ``200``), and can wait before answering.  Logout tokens
are verified with PyJWT, a JOSE library this project does not write, against
the provider's published JWK Set.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


@dataclass
class Delivery:
    at: float
    path: str
    content_type: str
    form: dict[str, list[str]]

    @property
    def token(self) -> str:
        return self.form["logout_token"][0]


@dataclass
class Receiver:
    """``url``: where it listens; ``statuses``: the answers to give first (then 200); ``delay``: seconds to wait;
    ``tls``: (certificate, key) PEM files to serve https with."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    location: str | None = None
    tls: tuple[str, str] | None = None
    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 65536)).decode("ascii", "replace")
                delivery = Delivery(time.monotonic(), self.path, self.headers.get("Content-Type", ""),
                                    parse_qs(body))
                with receiver._changed:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                if receiver.location and 300 <= status < 400:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver._changed:
                    receiver.deliveries.append(delivery)
                    receiver._changed.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}/backchannel-logout"

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Delivery]:
        """The deliveries once there are ``count`` of them (AssertionError after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.deliveries) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.deliveries)} of {count} logout tokens received")
                self._changed.wait(left)
            return list(self.deliveries)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify_logout_token(token: str, jwks: dict[str, Any], *, issuer: str, audience: str) -> dict[str, Any]:
    """The claims of a logout token, verified with PyJWT as a relying party does (Back-Channel Logout 1.0 §2.6)."""
    import jwt

    header = jwt.get_unverified_header(token)
    assert header["typ"] == "logout+jwt", header
    jwk = next(key for key in jwks["keys"] if key["kid"] == header["kid"])
    key = jwt.PyJWK(jwk).key
    claims: dict[str, Any] = jwt.decode(
        token, key=key, algorithms=[jwk["alg"]], audience=audience, issuer=issuer,
        options={"require": ["iss", "aud", "iat", "exp", "jti"]},
    )
    assert claims["events"] == {LOGOUT_EVENT: {}}, claims
    assert "nonce" not in claims, claims
    assert "sub" in claims or "sid" in claims, claims
    return claims
