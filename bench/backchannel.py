"""Back-channel logout: deliveries per second, and the time from a logout to its delivery, with 1 and 10 clients.

    python bench/backchannel.py [--sessions 100] [--rounds 15] [--clients 1,10]

One process, as one server worker runs it: the app (software RS256 ID-token
key, a throw-away SQLite file, or BENCH_DATABASE_URL), its back-channel sender
(the polling thread and its four sending threads), and one relying party
endpoint per client on loopback (a ``ThreadingHTTPServer`` answering 200 at
once, tests/logout_receiver.py).  Login sessions and the codes their clients
redeemed are written directly (what the login and token endpoints would
leave); ending them goes through the provider's own paths.

* **deliveries per second**: ``--sessions`` sessions of one user, each with
  every client, ended at once (the user disabled: one transaction owes
  sessions x clients logout tokens); the clock runs from the commit to the
  last token received.  Bound: the signatures, measured alone (signing the
  same number of logout tokens in one thread).
* **logout to delivery**: ``--rounds`` times, a browser's RP-initiated logout
  (``GET /logout`` with an ID token hint of the session, through the WSGI app);
  the clock runs from the request to the last client's token received.  The
  logout page's own time is printed beside it: it waits for none of them.

Figures, not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from logout_receiver import Receiver  # noqa: E402


def make_app(workdir: Path) -> Any:
    env = {"DATABASE_URL": os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{workdir / 'bench.sqlite3'}",
           "SECRETS_SYSTEM": secrets.token_urlsafe(32), "OIDC_ISSUER": "http://127.0.0.1:8000",
           "DEVELOPMENT_MODE": "true", "PASSWORD_HASH_COST": "256", "LOG_LEVEL": "WARNING", "METRICS_BIND": "",
           "BACKCHANNEL_LOGOUT_POLL_SECONDS": "1"}
    from oidc.app import create_app
    from oidc.schema import upgrade_schema
    from oidc.state import state_of

    app = create_app(env=env)
    upgrade_schema(app)
    state_of(app).key_service()
    return app


def seed_sessions(app: Any, user_pk: int, client_pks: list[int], count: int) -> list[str]:
    """``count`` open login sessions of the user, in each of which every client redeemed a code."""
    from oidc import queries
    from oidc.db import db
    from oidc.models import AuthorizationCode, LoginSession
    from oidc.state import state_of

    moment = state_of(app).clock.now()
    sids = [secrets.token_urlsafe(24) for _ in range(count)]
    with app.app_context():
        for sid in sids:
            queries.add(LoginSession(sid=sid, user_pk=user_pk, auth_time=moment, expires_at=moment + 3600))
            for client_pk in client_pks:
                queries.add(AuthorizationCode(
                    code_hash=secrets.token_hex(32), grant_id=secrets.token_hex(16), client_pk=client_pk,
                    user_pk=user_pk, redirect_uri="http://127.0.0.1:1/cb", scope="openid", auth_time=moment,
                    sid=sid, created_at=moment, expires_at=moment + 60, used_at=moment))
        db.session.commit()
    return sids


def signing_rate(app: Any, count: int) -> float:
    """Logout tokens signed per second in one thread, nothing sent: the bound of the deliveries."""
    from types import SimpleNamespace

    from oidc.oauth2.backchannel import logout_token
    from oidc.state import state_of

    state = state_of(app)
    row = SimpleNamespace(client_id="c", subject="s", jti="j", sid="x", backchannel_logout_session_required=True)
    with app.app_context():
        started = time.perf_counter()
        for _ in range(count):
            logout_token(row, state.settings, state.clock.now())
        return count / (time.perf_counter() - started)


def wait_all(receivers: list[Receiver], count: int, timeout: float = 120) -> float:
    """When (perf_counter) each receiver had ``count`` deliveries."""
    for receiver in receivers:
        receiver.wait_for(count, timeout)
    return max(receiver.deliveries[count - 1].at for receiver in receivers)


def run(app: Any, clients: int, sessions: int, rounds: int) -> dict[str, Any]:
    from oidc.accounts.clients import create_client
    from oidc.accounts.users import create_user, set_disabled
    from oidc.oauth2.backchannel import start_sender, stop_sender
    from oidc.oauth2.jwt import issue_id_token
    from oidc.state import state_of

    receivers = [Receiver() for _ in range(clients)]
    name = secrets.token_hex(4)
    with app.app_context():
        user = create_user(f"u{name}", "a long enough password")
        user_pk, subject = user.id, user.subject
        registered = [create_client(name=f"rp{index}", redirect_uris=["http://127.0.0.1:1/cb"],
                                    backchannel_logout_uri=receiver.url)[0] for index, receiver in enumerate(receivers)]
        client_pks = [client.id for client in registered]
        client_ids = [client.client_id for client in registered]
    start_sender(app)
    try:
        # Deliveries per second: every session ended in one transaction.
        seed_sessions(app, user_pk, client_pks, sessions)
        with app.app_context():
            from oidc.queries import user_by_pk

            started = time.monotonic()
            set_disabled(user_by_pk(user_pk), True)  # type: ignore[arg-type]
            finished = wait_all(receivers, sessions)
            set_disabled(user_by_pk(user_pk), False)  # type: ignore[arg-type]
        rate = sessions * clients / (finished - started)

        # Logout to delivery: one browser's RP-initiated logout at a time.
        latencies, pages = [], []
        http = app.test_client()
        state = state_of(app)
        for round_ in range(rounds):
            [sid] = seed_sessions(app, user_pk, client_pks, 1)
            with app.app_context():
                now = state.clock.now()
                hint = issue_id_token({"iss": state.settings.issuer, "sub": subject, "aud": client_ids[0], "iat": now,
                                       "exp": now + 300, "sid": sid}, None).token
            with http.session_transaction() as session:
                session["sid"] = sid
            started = time.monotonic()
            response = http.get("/logout", query_string={"id_token_hint": hint})
            pages.append(time.monotonic() - started)
            assert response.status_code == 200, response.status_code
            finished = wait_all(receivers, sessions + round_ + 1)
            latencies.append(finished - started)
    finally:
        stop_sender(app)
        for receiver in receivers:
            receiver.close()
    return {"rate": rate, "latencies": latencies, "pages": pages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--clients", default="1,10")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backchannel-") as workdir:
        app = make_app(Path(workdir))
        bound = signing_rate(app, 300)
        print(f"bound: logout tokens signed per second, one thread, nothing sent: {bound:,.0f}/s")
        for clients in (int(part) for part in args.clients.split(",")):
            figures = run(app, clients, args.sessions, args.rounds)
            latencies = sorted(figures["latencies"])
            p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)]
            print(f"{clients:>2} client(s): {figures['rate']:,.0f} deliveries/s "
                  f"({args.sessions} sessions x {clients} = {args.sessions * clients} tokens; bound {bound:,.0f}/s)")
            print(f"{'':>12} logout to last delivery: median {statistics.median(latencies) * 1000:.0f} ms, "
                  f"p95 {p95 * 1000:.0f} ms ({args.rounds} logouts); the logout page itself: median "
                  f"{statistics.median(figures['pages']) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
