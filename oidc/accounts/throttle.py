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

Each attempt increments the counters, the address's first, in one atomic
operation per counter (an ``INCR`` on Redis), and is refused at the first one
past its limit; a refused attempt, and a login that succeeds, give their
increments back.  So
at most the limit's number of failures are ever let through, however many
arrive at once (while a refused attempt's increment is being given back a
concurrent one may be refused too: contention errs on the side of refusing).  Flask-Limiter's
``deduct_when`` does the reverse (check, then count after the response), so
parallel attempts all pass the check before any of them is counted.

An attempt the address's limit refuses touches no account's counter, so a
spray of usernames from one address leaves counters for the attempts its
limit lets through, not one per username tried; every counter is dropped when
its window ends (a Redis key expires with it).

A client address is counted by its network (:func:`address_network`): an IPv6
address by its /64, which one subscriber commonly holds whole.

The counters live in ``RATELIMIT_STORAGE_URI``: ``memory://`` counts per worker
process (limits multiply by the workers and reset on restart) in
:class:`ProcessCounters`; production deployments point every worker of every
instance at one Redis (``redis://host:6379/0``).
"""

from __future__ import annotations

import heapq
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from oidc.accounts.users import MAX_USERNAME_LENGTH, normalize_username
from oidc.settings import Settings


class ProcessCounters(Storage):
    """Fixed-window counters in this process: what ``memory://`` means here.

    limits' own ``MemoryStorage`` starts a timer thread whenever its last one
    has ended (10 ms after it started), and that thread scans every key: a
    login paid for a new thread and, with the keys of many addresses alive
    (after a wave of guessing from many places), for a scan of all of them.
    Here a key's ended window is dropped
    when any counter is next incremented, from a heap of window ends: no
    thread, and O(log n) per increment for the memory to stay bounded.
    """

    STORAGE_SCHEME = None  # (not registered: storage_from_string keeps limits' own for "memory://")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, float]] = {}  # key -> (count, end of its window)
        self._ends: list[tuple[float, str]] = []  # (end, key), a heap

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = self._clock()
        with self._lock:
            self._drop_ended(now)
            count, end = self._windows.get(key, (0, now))
            if end <= now:
                if amount <= 0:
                    return 0  # giving back to a window that has ended: there is nothing to give back
                count, end = 0, now + expiry
                heapq.heappush(self._ends, (end, key))
            count = max(count + amount, 0)
            self._windows[key] = (count, end)
            return count

    def get(self, key: str) -> int:
        count, end = self._windows.get(key, (0, 0.0))
        return count if end > self._clock() else 0

    def get_expiry(self, key: str) -> float:
        now = self._clock()
        _, end = self._windows.get(key, (0, now))
        return max(end, now)

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        with self._lock:
            count = len(self._windows)
            self._windows.clear()
            self._ends.clear()
            return count

    def clear(self, key: str) -> None:
        with self._lock:
            self._windows.pop(key, None)

    def windows(self) -> int:
        """How many keys have a window in memory (ended ones not yet dropped included)."""
        return len(self._windows)

    def _drop_ended(self, now: float) -> None:
        ends = self._ends
        while ends and ends[0][0] <= now:
            _, key = heapq.heappop(ends)
            window = self._windows.get(key)
            if window is not None and window[1] <= now:  # (a later window of the key has an entry of its own)
                del self._windows[key]


@dataclass
class Attempt:
    """The counters one login attempt incremented; :meth:`cancel` gives them back."""

    storage: Storage
    hits: list[tuple[RateLimitItem, tuple[str, ...]]] = field(default_factory=list)

    def cancel(self) -> None:
        for item, identifiers in self.hits:
            self.storage.incr(item.key_for(*identifiers), item.get_expiry(), amount=-1)
        self.hits.clear()


def address_network(address: str) -> str:
    """What the per-address limits count a client address as.

    IPv4 as it is; an IPv4-mapped IPv6 address as its IPv4 address (RFC 4291
    §2.5.5.2); any other IPv6 address as its /64, since a subscriber is
    commonly given a whole /64 (RFC 6177 §3) and could otherwise try from a new
    address each time.  Anything else (no address) is counted as it is.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def counters(settings: Settings) -> Storage:
    """The counters' storage ``RATELIMIT_STORAGE_URI`` names (this process's for ``memory://``)."""
    uri = settings.ratelimit_storage_uri
    storage = ProcessCounters() if uri == "memory://" else storage_from_string(uri)
    assert isinstance(storage, Storage), "RATELIMIT_STORAGE_URI must name a synchronous storage"
    return storage


class LoginThrottle:
    def __init__(self, settings: Settings) -> None:
        self.storage: Storage = counters(settings)
        self.strategy = FixedWindowRateLimiter(self.storage)
        # In the order they are counted: the address's first (see the module's docstring).
        self.limits = {
            "login-address": parse_many(settings.login_rate_limit_per_address),
            "login-address-account": parse_many(settings.login_rate_limit_per_address_and_account),
            "login-account": parse_many(settings.login_rate_limit_per_account)
            if settings.login_rate_limit_per_account else [],
        }

    def attempt(self, address: str, username: str) -> Attempt | None:
        """Count one attempt; the :class:`Attempt` when it is within every limit, else None."""
        network = address_network(address)
        account = normalize_username(username)[:MAX_USERNAME_LENGTH]
        identifiers = {"login-address": (network,), "login-address-account": (network, account),
                       "login-account": (account,)}
        attempt = Attempt(self.storage)
        for scope, items in self.limits.items():
            for item in items:
                keys = (scope, *identifiers[scope])
                attempt.hits.append((item, keys))
                if not self.strategy.hit(item, *keys):  # atomic: increment, then compare
                    attempt.cancel()  # a refused attempt checks no password: it is not a failure either
                    return None
        return attempt


class UserCodeThrottle:
    """Wrong user codes entered at the device page (RFC 8628 §5.1), per client address.

    Counted as failed logins are: each attempt is counted atomically before the
    code is looked up, and given back when the code was right (or the form had
    expired), so parallel guesses cannot pass a check that has not counted them.
    ``DEVICE_USER_CODE_RATE_LIMIT`` (``10/minute;50/hour``) with 20^8 codes and
    a code that lives ``DEVICE_CODE_LIFETIME`` makes a guess from one address
    a matter of luck no one should count on; the counters live where the
    login's do (``RATELIMIT_STORAGE_URI``).
    """

    def __init__(self, settings: Settings) -> None:
        self.storage: Storage = counters(settings)
        self.strategy = FixedWindowRateLimiter(self.storage)
        self.limits = parse_many(settings.device_user_code_rate_limit)

    def attempt(self, address: str) -> Attempt | None:
        """Count one attempt from ``address``; the :class:`Attempt` when it is within the limits, else None."""
        keys = ("device-user-code", address_network(address))
        attempt = Attempt(self.storage)
        for item in self.limits:
            attempt.hits.append((item, keys))
            if not self.strategy.hit(item, *keys):
                attempt.cancel()
                return None
        return attempt
