"""The failed-login counters of ``RATELIMIT_STORAGE_URI=memory://`` (oidc.accounts.throttle.ProcessCounters).

The login tests (test_oidc_login_and_management, test_hardening_settings) count
through them in the app; these check the windows themselves, on a clock the
test moves.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from limits import parse
from limits.strategies import FixedWindowRateLimiter

from oidc.accounts.throttle import LoginThrottle, ProcessCounters, address_network
from oidc.settings import load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_window_counts_until_it_ends_then_starts_again():
    clock = Clock()
    counters = ProcessCounters(clock)
    assert [counters.incr("k", 60) for _ in range(3)] == [1, 2, 3]
    assert counters.get("k") == 3 and counters.get_expiry("k") == clock.now + 60
    clock.now += 59
    assert counters.incr("k", 60) == 4  # the same window
    clock.now += 1
    assert counters.get("k") == 0
    assert counters.incr("k", 60) == 1 and counters.get_expiry("k") == clock.now + 60


def test_giving_back_never_goes_below_zero_nor_to_a_window_that_has_ended():
    clock = Clock()
    counters = ProcessCounters(clock)
    counters.incr("k", 60)
    assert counters.incr("k", 60, amount=-1) == 0
    assert counters.incr("k", 60, amount=-1) == 0
    counters.incr("k", 60)
    clock.now += 61
    # The attempt's window ended before it was given back: the next window starts full, not at -1
    # (which would let one more failure through than the limit).
    assert counters.incr("k", 60, amount=-1) == 0
    assert counters.incr("k", 60) == 1


def test_ended_windows_are_dropped_so_memory_stays_bounded():
    clock = Clock()
    counters = ProcessCounters(clock)
    for i in range(1000):
        counters.incr(f"login-address/10.0.{i // 256}.{i % 256}", 60)
    counters.incr("long", 3600)
    assert counters.windows() == 1001
    clock.now += 60
    counters.incr("another", 60)
    assert counters.windows() == 2  # "long" and "another"; a thousand ended windows are gone
    counters.clear("long")
    assert counters.windows() == 1 and counters.get("long") == 0
    assert counters.reset() == 1 and counters.windows() == 0


def test_no_thread_is_started():
    before = threading.active_count()
    counters = ProcessCounters()
    for i in range(200):
        counters.incr(f"k{i}", 1)
    assert threading.active_count() == before


def test_increments_from_many_threads_are_all_counted():
    counters = ProcessCounters()
    limiter = FixedWindowRateLimiter(counters)
    item = parse("5/minute")
    with ThreadPoolExecutor(8) as pool:
        allowed = list(pool.map(lambda _: limiter.hit(item, "login-account", "alice"), range(4000)))
    assert counters.get(item.key_for("login-account", "alice")) == 4000
    assert allowed.count(True) == 5


def test_memory_uri_uses_the_process_counters_and_redis_does_not(base_env, tmp_path):
    settings = load_settings({**base_env, "RATELIMIT_STORAGE_URI": "memory://"}, instance_path=str(tmp_path))
    assert isinstance(LoginThrottle(settings).storage, ProcessCounters)
    settings = load_settings({**base_env, "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0"},
                             instance_path=str(tmp_path))
    assert type(LoginThrottle(settings).storage).__name__ == "RedisStorage"


def _memory_throttle(base_env, tmp_path) -> LoginThrottle:
    """The app's throttle with its defaults: 20/minute;100/hour per address, 5/minute;20/hour per
    address and account, 100/hour per account."""
    return LoginThrottle(load_settings({**base_env, "RATELIMIT_STORAGE_URI": "memory://"}, instance_path=str(tmp_path)))


def test_usernames_sprayed_from_one_address_leave_bounded_state(base_env, tmp_path):
    """Only the attempts the per-address limit lets through create counters: one it refuses creates
    none, so trying 1,100 unknown usernames from one address leaves the counters of 20 attempts
    (3 per account each, 2 of the address), as trying 100 does."""
    throttle = _memory_throttle(base_env, tmp_path)
    counters = throttle.storage
    assert isinstance(counters, ProcessCounters)
    allowed = [throttle.attempt("192.0.2.7", f"nobody-{i}") is not None for i in range(100)]
    assert allowed.count(True) == 20
    assert counters.windows() == 20 * 3 + 2
    assert not any(throttle.attempt("192.0.2.7", f"somebody-{i}") for i in range(1000))
    assert counters.windows() == 20 * 3 + 2


def test_a_refused_attempt_still_gives_back_what_it_counted(base_env, tmp_path):
    """Refused on its account's limit, an attempt gives back its address's increments (it checked no
    password): the address can go on with other accounts."""
    throttle = _memory_throttle(base_env, tmp_path)
    assert all(throttle.attempt("192.0.2.7", "alice") for _ in range(5))
    assert not any(throttle.attempt("192.0.2.7", "alice") for _ in range(30))
    assert sum(throttle.attempt("192.0.2.7", f"user-{i}") is not None for i in range(30)) == 15


def test_addresses_are_counted_by_network():
    """IPv4 addresses as they are, IPv4-mapped IPv6 addresses as IPv4 (RFC 4291 §2.5.5.2), other IPv6
    addresses by their /64: a single subscriber commonly holds a whole /64 (RFC 6177 §3)."""
    assert address_network("192.0.2.7") == "192.0.2.7"
    assert address_network("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_network("2001:db8:1:2:3:4:5:6") == address_network("2001:DB8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert address_network("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_network("fe80::1%eth0") == "fe80::/64"
    assert address_network("") == "" and address_network("unix socket") == "unix socket"


def test_the_addresses_of_one_ipv6_64_share_their_limits(base_env, tmp_path):
    throttle = _memory_throttle(base_env, tmp_path)
    assert all(throttle.attempt(f"2001:db8:1:2::{i:x}", f"user-{i}") for i in range(20))
    assert throttle.attempt("2001:db8:1:2:ffff:ffff:ffff:ffff", "another") is None
    assert throttle.attempt("2001:db8:1:3::1", "another") is not None
    assert all(throttle.attempt("192.0.2.7", f"user-{i}") for i in range(20))
    assert throttle.attempt("::ffff:192.0.2.7", "another") is None
