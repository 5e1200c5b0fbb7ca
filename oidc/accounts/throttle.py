"""Failed-login limits, counted atomically (the ``limits`` library's storages).

Three limits, each in the ``limits`` notation (``5/minute;20/hour``):

* per client address and account (``LOGIN_RATE_LIMIT_PER_ADDRESS_AND_ACCOUNT``):
  the tight one, against guessing one account's password from one place; it
  locks out only that address for that account, so an attacker cannot lock
  the account's owner out;
* per client address (``LOGIN_RATE_LIMIT_PER_ADDRESS``): against trying many
  accounts from one place;
* per account (``LOGIN_RATE_LIMIT_PER_ACCOUNT``): a loose backstop against
  guessing one account from many addresses (empty turns it off; whoever
  reaches it locks the account for everyone, so it is set high).

Each attempt increments every counter first, in one atomic operation per
counter (an ``INCR`` on Redis), and is refused if any is past its limit; a
refused attempt, and a login that succeeds, give their increments back.  So
at most the limit's number of failures are ever let through, however many
arrive at once (while a refused attempt's increment is being given back a
concurrent one may be refused too: contention errs on the side of refusing).  Flask-Limiter's
``deduct_when`` does the reverse (check, then count after the response), so
parallel attempts all pass the check before any of them is counted.

The counters live in ``RATELIMIT_STORAGE_URI``: ``memory://`` counts per worker
process (limits multiply by the workers and reset on restart); production
deployments point every worker of every instance at one Redis
(``redis://host:6379/0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from oidc.accounts.users import MAX_USERNAME_LENGTH, normalize_username
from oidc.settings import Settings


@dataclass
class Attempt:
    """The counters one login attempt incremented; :meth:`cancel` gives them back."""

    storage: Storage
    hits: list[tuple[RateLimitItem, tuple[str, ...]]] = field(default_factory=list)

    def cancel(self) -> None:
        for item, identifiers in self.hits:
            self.storage.incr(item.key_for(*identifiers), item.get_expiry(), amount=-1)
        self.hits.clear()


class LoginThrottle:
    def __init__(self, settings: Settings) -> None:
        storage = storage_from_string(settings.ratelimit_storage_uri)
        assert isinstance(storage, Storage), "RATELIMIT_STORAGE_URI must name a synchronous storage"
        self.storage: Storage = storage
        self.strategy = FixedWindowRateLimiter(self.storage)
        self.limits = {
            "login-address-account": parse_many(settings.login_rate_limit_per_address_and_account),
            "login-address": parse_many(settings.login_rate_limit_per_address),
            "login-account": parse_many(settings.login_rate_limit_per_account)
            if settings.login_rate_limit_per_account else [],
        }

    def attempt(self, address: str, username: str) -> Attempt | None:
        """Count one attempt; the :class:`Attempt` when it is within every limit, else None."""
        account = normalize_username(username)[:MAX_USERNAME_LENGTH]
        identifiers = {"login-address-account": (address, account), "login-address": (address,),
                       "login-account": (account,)}
        attempt = Attempt(self.storage)
        allowed = True
        for scope, items in self.limits.items():
            for item in items:
                keys = (scope, *identifiers[scope])
                allowed &= self.strategy.hit(item, *keys)  # atomic: increment, then compare
                attempt.hits.append((item, keys))
        if not allowed:
            attempt.cancel()  # a refused attempt checks no password: it is not a failure either
            return None
        return attempt
