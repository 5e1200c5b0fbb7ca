"""The PKCS#11 connection supervisor: one logged-in session per process, and the failure model.

What SoftHSM2 and python-pkcs11 taught us shapes this module (see DESIGN.md):

* python-pkcs11 initialises the library without ``CKF_OS_LOCKING_OK``, so the
  module may run without internal locks: every PKCS#11 call into a module goes
  through that module's one lock in the process (:func:`module_lock`; a single
  token uses :data:`PKCS11_LOCK`), and there is one logged-in session per token
  per process.  With several tokens (:mod:`keys.tokens`) each module has its own
  lock, and each token's calls run on its own thread, given up after
  ``busy_seconds``: a module that hangs holds its lock and thread, never another
  token's, nor the caller.
* The context must be created in the process that uses it (after ``fork()``), so
  the supervisor notes its pid and re-initialises when it finds itself in a child
  (PKCS#11 v2.40 §6.7.7).
* ``C_Initialize``, token look-up and ``C_Login`` racing in several processes
  fail now and then (``CKR_GENERAL_ERROR``, or a token not found): opening is
  retried with backoff, re-initialising the module between attempts.

:class:`TokenConnection` opens, reopens, loses and recovers the token, and runs
every operation through :meth:`TokenConnection._call`; the key manager on top of
it (:mod:`keys.hsm`) knows the key pairs.

Failure model
-------------

Every PKCS#11 error an operation meets is classified by :func:`classify`
(the return values of PKCS#11 v2.40 §5.1):

``session``: this session or its object handles are stale
    ``CKR_SESSION_HANDLE_INVALID``, ``CKR_SESSION_CLOSED``, ``CKR_OBJECT_HANDLE_INVALID``,
    ``CKR_KEY_HANDLE_INVALID``, ``CKR_USER_NOT_LOGGED_IN``, ``CKR_OPERATION_ACTIVE``,
    ``CKR_OPERATION_NOT_INITIALIZED``, ``CKR_FUNCTION_FAILED`` and a first ``CKR_GENERAL_ERROR``.
    Handles die with their session (§5.6), so: open a new session, log in, find
    the keys again by label and id, retry the operation once.

``module``: the module lost its device
    ``CKR_DEVICE_ERROR``, ``CKR_DEVICE_REMOVED``, ``CKR_DEVICE_MEMORY``, ``CKR_TOKEN_NOT_PRESENT``,
    ``CKR_TOKEN_NOT_RECOGNIZED``, ``CKR_SLOT_ID_INVALID``, ``CKR_CRYPTOKI_NOT_INITIALIZED``, and
    any session-level error (``CKR_GENERAL_ERROR`` among them) again right after a new session.  A network HSM's client library
    answers these once its connection is gone, and only a new ``C_Initialize``
    reconnects it (p11-kit's client module, for one, lists no slot until then).
    The supervisor finalises and initialises the module at once, one time; if the
    token is still gone it becomes *unavailable*: every operation fails at once
    with :class:`HSMUnavailable` (503 upstream) without touching the token, and
    the token is probed again with bounded exponential backoff
    (``retry_initial_seconds`` doubling up to ``retry_max_seconds``), either by
    a background thread (:meth:`start_recovery`, in server workers) or by the
    first operation after the delay.  One WARNING is logged when it is lost,
    one INFO when it is back.

``caller``: our mistake, or a refusal a retry cannot change
    ``CKR_ARGUMENTS_BAD``, ``CKR_MECHANISM_INVALID``, ``CKR_MECHANISM_PARAM_INVALID``,
    ``CKR_KEY_TYPE_INCONSISTENT``, ``CKR_DATA_LEN_RANGE``, ``CKR_TEMPLATE_*``, ``CKR_PIN_*``, …
    and any code not listed above: :class:`HSMOperationError` naming the
    operation, the mechanism and the code; never retried (a wrong PIN retried
    would lock the token).

No raw ``PKCS11Error`` leaves this module: callers see :class:`HSMError` subclasses.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pkcs11
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as ckr
from pkcs11.exceptions import PinIncorrect, PKCS11Error, UserAlreadyLoggedIn

from keys.errors import HSMError, HSMOperationError, HSMUnavailable
from keys.mechanisms import MechanismSupport, mechanism_name

log = logging.getLogger("keys.hsm")  # one logger for the HSM, whichever half speaks

#: The lock of every PKCS#11 call into the first module this process uses (that module may have no
#: locks of its own: python-pkcs11 initialises it without CKF_OS_LOCKING_OK).
PKCS11_LOCK = threading.RLock()
_MODULE_LOCKS: dict[str, threading.RLock] = {}
_MODULE_LOCKS_GUARD = threading.Lock()
#: Held while a module is loaded with its own environment (``HSMConfig.module_env``): the process's
#: environment is shared, so two modules never load at once with theirs (see :func:`_load_module`).
_ENVIRONMENT_LOCK = threading.Lock()
#: Marks a thread while it runs a call on a token (see TokenConnection._call_now).
_RUNNER = threading.local()


def module_lock(library: str) -> threading.RLock:
    """The lock of every call into the PKCS#11 module ``library`` in this process.

    Used by named tokens (``HSM_TOKENS``): one lock per module file (its real path: a symlink
    is the same loaded module), so a module that hangs (a network HSM that stopped answering)
    holds its own lock only, and another token's module keeps signing.  Tokens in slots of one
    module share its lock.  A single unnamed token uses :data:`PKCS11_LOCK`.
    """
    key = os.path.realpath(library)
    with _MODULE_LOCKS_GUARD:
        return _MODULE_LOCKS.setdefault(key, threading.RLock())

SESSION = "session"
MODULE = "module"
CALLER = "caller"

#: CKR_* name of each python-pkcs11 exception class (PKCS#11 v2.40 §5.1).
_CKR_NAMES: dict[type[PKCS11Error], str] = {
    ckr.SessionHandleInvalid: "CKR_SESSION_HANDLE_INVALID",
    ckr.SessionClosed: "CKR_SESSION_CLOSED",
    ckr.ObjectHandleInvalid: "CKR_OBJECT_HANDLE_INVALID",
    ckr.KeyHandleInvalid: "CKR_KEY_HANDLE_INVALID",
    ckr.UserNotLoggedIn: "CKR_USER_NOT_LOGGED_IN",
    ckr.OperationActive: "CKR_OPERATION_ACTIVE",
    ckr.OperationNotInitialized: "CKR_OPERATION_NOT_INITIALIZED",
    ckr.FunctionFailed: "CKR_FUNCTION_FAILED",
    ckr.GeneralError: "CKR_GENERAL_ERROR",
    ckr.DeviceError: "CKR_DEVICE_ERROR",
    ckr.DeviceRemoved: "CKR_DEVICE_REMOVED",
    ckr.DeviceMemory: "CKR_DEVICE_MEMORY",
    ckr.TokenNotPresent: "CKR_TOKEN_NOT_PRESENT",
    ckr.TokenNotRecognised: "CKR_TOKEN_NOT_RECOGNIZED",
    ckr.SlotIDInvalid: "CKR_SLOT_ID_INVALID",
    ckr.ArgumentsBad: "CKR_ARGUMENTS_BAD",
    ckr.MechanismInvalid: "CKR_MECHANISM_INVALID",
    ckr.MechanismParamInvalid: "CKR_MECHANISM_PARAM_INVALID",
    ckr.KeyTypeInconsistent: "CKR_KEY_TYPE_INCONSISTENT",
    ckr.KeySizeRange: "CKR_KEY_SIZE_RANGE",
    ckr.DataInvalid: "CKR_DATA_INVALID",
    ckr.DataLenRange: "CKR_DATA_LEN_RANGE",
    ckr.TemplateIncomplete: "CKR_TEMPLATE_INCOMPLETE",
    ckr.TemplateInconsistent: "CKR_TEMPLATE_INCONSISTENT",
    ckr.AttributeTypeInvalid: "CKR_ATTRIBUTE_TYPE_INVALID",
    ckr.AttributeValueInvalid: "CKR_ATTRIBUTE_VALUE_INVALID",
    ckr.AttributeSensitive: "CKR_ATTRIBUTE_SENSITIVE",
    ckr.AttributeReadOnly: "CKR_ATTRIBUTE_READ_ONLY",
    ckr.DomainParamsInvalid: "CKR_DOMAIN_PARAMS_INVALID",
    ckr.FunctionNotSupported: "CKR_FUNCTION_NOT_SUPPORTED",
    ckr.HostMemory: "CKR_HOST_MEMORY",
    ckr.PinIncorrect: "CKR_PIN_INCORRECT",
    ckr.PinLocked: "CKR_PIN_LOCKED",
    ckr.PinExpired: "CKR_PIN_EXPIRED",
    ckr.UserPinNotInitialized: "CKR_USER_PIN_NOT_INITIALIZED",
    ckr.SessionCount: "CKR_SESSION_COUNT",
    ckr.TokenWriteProtected: "CKR_TOKEN_WRITE_PROTECTED",
    ckr.SignatureLenRange: "CKR_SIGNATURE_LEN_RANGE",
    ckr.SignatureInvalid: "CKR_SIGNATURE_INVALID",
}

_SESSION_CODES = frozenset({
    "CKR_SESSION_HANDLE_INVALID", "CKR_SESSION_CLOSED", "CKR_OBJECT_HANDLE_INVALID", "CKR_KEY_HANDLE_INVALID",
    "CKR_USER_NOT_LOGGED_IN", "CKR_OPERATION_ACTIVE", "CKR_OPERATION_NOT_INITIALIZED", "CKR_FUNCTION_FAILED",
    "CKR_GENERAL_ERROR",
})
_MODULE_CODES = frozenset({
    "CKR_DEVICE_ERROR", "CKR_DEVICE_REMOVED", "CKR_DEVICE_MEMORY", "CKR_TOKEN_NOT_PRESENT",
    "CKR_TOKEN_NOT_RECOGNIZED", "CKR_SLOT_ID_INVALID", "CKR_CRYPTOKI_NOT_INITIALIZED",
})


def ckr_name(exc: PKCS11Error) -> str:
    """The ``CKR_*`` name of a python-pkcs11 exception.

    python-pkcs11 raises a plain ``PKCS11Error`` for the codes it has no class
    for, ``CKR_CRYPTOKI_NOT_INITIALIZED`` among them; only its text tells them apart.
    """
    for cls in type(exc).__mro__:
        if cls in _CKR_NAMES:
            return _CKR_NAMES[cls]
    text = str(exc)
    if "not initialized" in text:
        return "CKR_CRYPTOKI_NOT_INITIALIZED"
    if "Unmapped error code" in text:
        return "CKR " + text.rsplit(" ", 1)[-1]
    return type(exc).__name__


def classify(exc: PKCS11Error, *, after_reopen: bool = False) -> str:
    """``session``, ``module`` or ``caller`` (see the module docstring)."""
    code = ckr_name(exc)
    if code in _MODULE_CODES:
        return MODULE
    if code in _SESSION_CODES:
        # A fresh session that fails the same way: the module itself is broken.
        return MODULE if after_reopen else SESSION
    return CALLER


#: Errors of C_Initialize, C_GetTokenInfo or C_Login that another process using
#: the token at the same moment causes (SoftHSM, reading a token file being
#: rewritten, even reports its user PIN as not initialised), or that a module
#: whose device is gone answers; another attempt may succeed.  A wrong PIN is
#: never retried: real tokens lock after a few.
_TRANSIENT_ERRORS = (ckr.GeneralError, ckr.TokenNotPresent, ckr.TokenNotRecognised, ckr.DeviceError,
                     ckr.DeviceRemoved, ckr.UserPinNotInitialized, ckr.SlotIDInvalid, ckr.FunctionFailed)

T = TypeVar("T")


#: Attempts before "no such token" is believed: a racing initialisation misses a
#: token rarely and briefly, and a wrong label should fail fast.
_NOT_FOUND_ATTEMPTS = 5


class _Transient(Exception):
    """An attempt to open the token failed in a way the next attempt may not."""

    def __init__(self, reason: str, *, attempts: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts  # at most this many attempts for this failure (None: the configured number)


def _load_failure(exc: PKCS11Error) -> str:
    """Why the module could not be loaded: the loader's own words (a path, never a secret)."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if type(exc) is PKCS11Error and detail:
        return detail
    return type(exc).__name__


@dataclass(frozen=True)
class HSMConfig:
    """Where the token is and how to log in.  ``pin`` is never logged or shown."""

    library: str
    pin: str
    token_label: str | None = None
    slot: int | None = None
    key_set_prefix: str = ""
    login_attempts: int = 10
    #: Backoff between probes of a token that is gone: from this, doubling...
    retry_initial_seconds: float = 0.5
    #: ...up to this (so a dead HSM is probed at most this often, never per request).
    retry_max_seconds: float = 5.0
    #: How long a readiness probe's answer is reused (the token is touched at most this often).
    probe_interval_seconds: float = 5.0
    #: Adopt private keys that are extractable or not sensitive (with a WARNING) instead of refusing them.
    allow_extractable_keys: bool = False
    #: The token's name among several (``HSM_TOKENS``); "" for the one token of the plain ``HSM_*`` settings.
    name: str = ""
    #: Environment variables the module reads when it is loaded and initialised (a network HSM's
    #: client configuration, p11-kit's ``P11_KIT_SERVER_ADDRESS``), set for that moment only.
    module_env: tuple[tuple[str, str], ...] = ()
    #: A call that has not returned after this long marks the token hung: signing goes to another
    #: token meanwhile; a named token's caller, or one waiting for the module's lock, gives up
    #: after this long (HSM_TOKEN_TIMEOUT_SECONDS).
    busy_seconds: float = 2.0
    #: A named token's calls on its own thread, given up after ``busy_seconds`` (False: in the caller's
    #: thread, ~0.3 ms faster per call on a loaded machine; a hung module then holds the caller).
    bounded_calls: bool = True

    def __repr__(self) -> str:  # keep the PIN out of tracebacks and logs
        return f"HSMConfig(library={self.library!r}, {self.describe_token()}, prefix={self.key_set_prefix!r})"

    def describe_token(self) -> str:
        where = f"token label {self.token_label!r}" if self.token_label else f"slot {self.slot}"
        return f"token {self.name!r} ({where})" if self.name else where



#: States of the manager's connection to the token.
UNOPENED = "unopened"
AVAILABLE = "available"
UNAVAILABLE = "unavailable"


class TokenConnection:
    """One PKCS#11 token, used through a single logged-in session, with the failure model of the module docstring."""

    def __init__(self, config: HSMConfig, *, on_event: Callable[[str, str | None], None] | None = None) -> None:
        self.config = config
        #: Told of trouble (metrics): ("reconnect", None) when the session is reopened,
        #: ("error", CKR name or class) when an operation fails, ("lost", reason) when
        #: the token becomes unavailable, ("attempt", "failed"|"succeeded") per probe of a
        #: lost token, ("available", None) when it is back.
        self.on_event = on_event
        #: Called (without arguments, outside the PKCS#11 lock) each time a lost token is back.
        self.on_available: list[Callable[[], None]] = []
        self._pid: int | None = None
        self._token: Any = None
        self._slot: Any = None
        self._session: Any = None
        self._mechanisms: dict[Any, MechanismSupport] | None = None
        self.reconnects = 0
        #: Probes of a lost token (each one a C_Finalize/C_Initialize and login attempt).
        self.reconnect_attempts = 0
        self.state = UNOPENED
        self._lost_at: float | None = None
        self._next_probe = 0.0
        self._failures = 0
        self._refused_login = False
        self._probe_cache: tuple[float, bool] | None = None
        self._recovery: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        #: The lock of this token's module (see :func:`module_lock`).
        self.lock = module_lock(config.library) if config.name else PKCS11_LOCK
        #: When the call in progress on this token started (monotonic), while one is.
        self._busy_since: float | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_pid: int | None = None
        self._runner_guard = threading.Lock()
        _quiet_pkcs11_finalisers()


    def _forget_handles(self) -> None:
        """Object handles die with their session (PKCS#11 v2.40 §5.6): the key manager drops those it keeps."""

    @property
    def available(self) -> bool:
        """Whether operations go to the token now (False while it is lost or not yet opened)."""
        return self.state == AVAILABLE and self._pid == os.getpid()

    @property
    def hung(self) -> bool:
        """Whether a call has been in the module for more than ``busy_seconds`` (a token that stopped
        answering); only for a named token, one of several (a single token has nowhere else to sign)."""
        started = self._busy_since
        return bool(self.config.name) and started is not None and time.monotonic() - started > self.config.busy_seconds

    @property
    def healthy(self) -> bool:
        """Available and not hung: a signature sent there now is expected back."""
        return self.available and not self.hung

    def open(self) -> None:
        """Load the module, find the token and log in (in this process).

        Raises :class:`HSMUnavailable` when the token may appear later (not
        found, device error) and plain :class:`HSMError` when it cannot (no such
        library, wrong PIN); both name the library and the token, never the PIN.
        """
        with self.lock:
            try:
                self._open()
            except _Transient as exc:
                if self._lost_at is None:
                    self._lost_at = time.monotonic()
                self._schedule_probe()
                raise HSMUnavailable(
                    f"PKCS#11 module {self.config.library}, {self.config.describe_token()}: {exc.reason}",
                    retry_after=max(1.0, self._next_probe - time.monotonic()),
                ) from None
            self.state = AVAILABLE
            self._lost_at = None
            self._failures = 0

    def _error(self, reason: str) -> HSMError:
        return HSMError(f"PKCS#11 module {self.config.library}, {self.config.describe_token()}: {reason}")

    def _open(self, *, attempts: int | None = None) -> None:
        """Initialise, find the token and log in, retrying what racing processes break.

        On SoftHSM, another process logging in rewrites the token's file, and a
        process initialising or logging in at that moment fails with
        ``CKR_GENERAL_ERROR`` or does not see the token at all; the token is only
        enumerated again by a new ``C_Initialize``.  Measured with four processes
        opening one token at once: 17 to 20 of 48 failed with a single attempt
        (or with retried logins alone), none of 320 with this loop.  So a failed
        attempt re-initialises the module before the next one.  A wrong PIN,
        or a file that is not a PKCS#11 module, fails at once.
        """
        if not os.path.exists(self.config.library):
            raise self._error("the library file does not exist")
        limit = attempts or self.config.login_attempts
        delay = 0.01
        for attempt in range(1, limit + 1):
            try:
                self._open_once(reinitialize=attempt > 1)
                return
            except _Transient as exc:
                if attempt >= min(limit, exc.attempts or limit):
                    raise _Transient(f"{exc.reason} (tried {attempt} times)") from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.2)

    def _open_once(self, *, reinitialize: bool) -> None:
        previous = self._busy_since  # a reopen within a call keeps the call's start
        self._busy_since = previous or time.monotonic()
        try:
            self._open_module(reinitialize=reinitialize)
        finally:
            self._busy_since = previous

    def _load(self, reinitialize: bool) -> Any:
        """The module loaded (and re-initialised when asked), with its own environment if it has one."""
        try:
            lib = _load_module(self.config.library, self.config.module_env, self.config.busy_seconds)
        except PKCS11Error as exc:
            raise self._opening_error(exc, "initialise the module", _load_failure(exc)) from None
        except TimeoutError:
            raise _Transient("another module is being loaded with its own environment") from None
        try:
            if reinitialize or (self._pid is not None and self._pid != os.getpid()):
                # A context inherited through fork() is not usable by the child
                # (PKCS#11 v2.40 §6.7.7), SoftHSM only enumerates its tokens in
                # C_Initialize, and a network module only reconnects there.
                _reinitialise(lib)
        except PKCS11Error as exc:
            raise self._opening_error(exc, "initialise the module", ckr_name(exc)) from None
        return lib

    def _open_module(self, *, reinitialize: bool) -> None:
        lib = self._load(reinitialize)
        try:
            token = self._find_token(lib)
        except PKCS11Error as exc:
            raise self._opening_error(exc, "initialise the module or read the token", ckr_name(exc)) from None
        self._token = token
        self._session = self._login()
        self._pid = os.getpid()
        self._forget_handles()
        if self._mechanisms is None:
            try:
                self._mechanisms = self._read_mechanisms()
            except PKCS11Error as exc:
                raise _Transient(f"cannot read the mechanism list ({ckr_name(exc)})") from None

    def _opening_error(self, exc: PKCS11Error, what: str, failure: str) -> Exception:
        """A failure to open: transient (the module or device, retried with backoff) or final."""
        if isinstance(exc, _TRANSIENT_ERRORS) or classify(exc) == MODULE:
            return _Transient(f"cannot {what} ({ckr_name(exc)})")
        return self._error(f"cannot load or initialise the module ({failure})")

    def _find_token(self, lib: Any) -> Any:
        slots = lib.get_slots(token_present=True)
        if self.config.token_label:
            for slot in slots:
                token = slot.get_token()
                if token.label == self.config.token_label:
                    self._slot = slot
                    return token
            # Possibly a token this initialisation could not read (see _open).
            raise _Transient("no slot holds a token with this label", attempts=_NOT_FOUND_ATTEMPTS)
        if self.config.slot is None:
            raise self._error("neither HSM_TOKEN_LABEL nor HSM_SLOT is set")
        for slot in slots:
            if slot.slot_id == self.config.slot:
                self._slot = slot
                return slot.get_token()
        raise _Transient("no token is present in this slot", attempts=_NOT_FOUND_ATTEMPTS)

    def _login(self) -> Any:
        try:
            return self._token.open(rw=True, user_pin=self.config.pin)
        except UserAlreadyLoggedIn:
            # Another session of this process is logged in: login state is
            # per token per process, so a plain session shares it.
            return self._token.open(rw=True)
        except PinIncorrect:
            self._refused_login = True
            raise self._error("login failed: the PIN is incorrect") from None
        except _TRANSIENT_ERRORS as exc:
            # C_Login racing in other processes fails intermittently on SoftHSM.
            raise _Transient(f"login failed ({ckr_name(exc)})") from None
        except PKCS11Error as exc:
            if classify(exc) == MODULE:
                raise _Transient(f"login failed ({ckr_name(exc)})") from None
            raise self._error(f"login failed ({ckr_name(exc)})") from None

    def _read_mechanisms(self) -> dict[Any, MechanismSupport]:
        """The slot's mechanisms with their flags and key sizes (C_GetMechanismList/Info, §5.5)."""
        offered: dict[Any, MechanismSupport] = {}
        for mechanism in self._slot.get_mechanisms():
            try:
                info = self._slot.get_mechanism_info(mechanism)
            except PKCS11Error:
                continue  # listed but not describable: treat as absent
            offered[mechanism] = MechanismSupport(
                int(info.flags), int(info.min_key_length or 0), int(info.max_key_length or 0)
            )
        return offered

    def _event(self, event: str, error: str | None = None) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event, error)
            except Exception:  # reporting must never break signing
                log.warning("the HSM event hook failed", exc_info=True)

    def _reopen(self) -> None:
        """A new session on the same module (handles are looked up again)."""
        self.reconnects += 1
        self._event("reconnect")
        log.info("reopening the PKCS#11 session on %s", self.config.describe_token())
        try:
            if self._session is not None:
                self._session.close()
        except PKCS11Error:
            pass
        self._session = None
        self._open()

    # -- losing the token and getting it back ---------------------------------

    def unavailable_error(self) -> HSMUnavailable:
        retry = max(1.0, self._next_probe - time.monotonic())
        reason = "hsm_login_refused" if self._refused_login else "hsm_unavailable"
        return HSMUnavailable(
            f"PKCS#11 module {self.config.library}, {self.config.describe_token()}: the token is unavailable",
            retry_after=retry, reason=reason,
        )

    def _schedule_probe(self) -> None:
        delay = min(self.config.retry_max_seconds, self.config.retry_initial_seconds * 2 ** self._failures)
        self._failures += 1
        # A little jitter so that the workers of a deployment do not probe in step.
        self._next_probe = time.monotonic() + delay * (0.8 + 0.2 * random.random())

    def _lose(self, why: str) -> None:
        """Mark the token unavailable (caller holds the lock); log once per outage."""
        if self.state != UNAVAILABLE:
            self._lost_at = time.monotonic()
            self._failures = 0
            log.warning(
                "HSM unavailable: %s on %s; requests that need its keys get 503 until it is back "
                "(probed with backoff up to every %g s)",
                why, self.config.describe_token(), self.config.retry_max_seconds,
            )
            self._event("lost", why)
        self.state = UNAVAILABLE
        self._session = None
        self._forget_handles()
        self._probe_cache = None
        self._schedule_probe()
        self._wake.set()

    def recover(self) -> bool:
        """One probe of a lost (or never opened) token: re-initialise, log in; True when back.

        Bounded by the backoff: callers decide when; this makes one attempt.
        A refused PIN is never tried again (real tokens lock after a few).
        """
        if self._refused_login:
            return False
        back = False
        with self.lock:
            if self.available:
                return True
            was = self.state
            self.reconnect_attempts += 1
            try:
                # Always a fresh C_Initialize: a network module only reconnects there,
                # and SoftHSM only enumerates its tokens there.
                self._open_once(reinitialize=True)
            except (_Transient, HSMError) as exc:
                self._recovery_failed(was, exc)
                return False
            self._event("attempt", "succeeded")
            self.state = AVAILABLE
            self._failures = 0
            self._probe_cache = None
            outage = time.monotonic() - self._lost_at if self._lost_at is not None else 0.0
            self._lost_at = None
            back = True
        if was == UNAVAILABLE:
            log.info("HSM available again on %s after %.1f s", self.config.describe_token(), outage)
        elif was == UNOPENED and outage:
            log.info("HSM reached on %s after %.1f s", self.config.describe_token(), outage)
        self._event("available")
        for callback in list(self.on_available):
            try:
                callback()
            except Exception as exc:  # the next request or refresh tries again
                log.warning("after the HSM came back: %s: %s", type(exc).__name__, exc)
        return back

    def _recovery_failed(self, was: str, exc: Exception) -> None:
        """After a failed probe of :meth:`recover` (under the lock): the state it leaves, the next probe."""
        self._event("attempt", "failed")
        if was == UNOPENED:
            self._lost_at = self._lost_at or time.monotonic()
            if self._failures == 0:
                log.warning("HSM not reachable yet on %s (%s); waiting for it with backoff",
                            self.config.describe_token(), exc)
                self._event("lost", "not reachable at start-up")
        self.state = UNAVAILABLE if was != UNOPENED else UNOPENED
        self._schedule_probe()
        if self._refused_login:
            log.error("HSM login refused on %s: not retrying", self.config.describe_token())

    def start_recovery(self) -> None:
        """Probe a lost token from a background thread (server workers), so no request waits on it.

        While the token is unavailable, requests fail at once without taking the
        PKCS#11 lock; a probe that hangs (a stopped appliance) hangs this thread only.
        """
        if self._recovery is not None and self._recovery.is_alive():
            return
        self._stop.clear()
        self._recovery = threading.Thread(target=self._recovery_loop, name="hsm-recovery", daemon=True)
        self._recovery.start()

    def _recovery_loop(self) -> None:
        while not self._stop.is_set():
            if self.available or self._refused_login:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            delay = self._next_probe - time.monotonic()
            if delay > 0:
                self._stop.wait(min(delay, 1.0))
                continue
            try:
                self.recover()
            except Exception:  # never let the thread die; the next probe tries again
                log.warning("HSM probe failed unexpectedly", exc_info=True)
                with self.lock:
                    self._schedule_probe()

    def stop_recovery(self) -> None:
        self._stop.set()
        self._wake.set()

    # -- running operations ---------------------------------------------------

    def _operation_error(self, what: str, mechanism: Any, exc: PKCS11Error) -> HSMOperationError:
        code = ckr_name(exc)
        using = f" with {mechanism_name(mechanism)}" if mechanism is not None else ""
        return HSMOperationError(
            f"PKCS#11 {what}{using} refused on {self.config.describe_token()}: {code}", code=code
        )

    def _call(self, operation: Callable[[], T], what: str = "operation", mechanism: Any = None, *,
              bounded: bool = True) -> T:
        """Run ``operation`` under the module's lock, applying the failure model (module docstring).

        A named token (one of several) runs it on its own thread and waits ``busy_seconds`` at
        most (``bounded``; a key generation is not): a module that stopped answering keeps that
        thread, never the caller, who gets :class:`HSMUnavailable` and signs on another token.
        """
        if not (self.config.name and self.config.bounded_calls and bounded) or getattr(_RUNNER, "active", False):
            return self._call_now(operation, what, mechanism)
        recovering = self._recovery is not None and self._recovery.is_alive()
        if self.hung or (recovering and not self.available and self._pid == os.getpid()):
            raise self.unavailable_error()  # at once: never queued behind a hung call, nor a probe's work
        future = self._runner().submit(self._call_now, operation, what, mechanism)
        try:
            return future.result(timeout=self.config.busy_seconds)
        except concurrent.futures.TimeoutError:
            future.cancel()  # not started yet (behind the hung call): never run
            self._event("error", "timeout")
            raise self.unavailable_error() from None

    def _runner(self) -> concurrent.futures.ThreadPoolExecutor:
        """This token's thread for bounded calls (one per process: threads do not survive fork())."""
        with self._runner_guard:
            if self._executor is None or self._executor_pid != os.getpid():
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"pkcs11-{self.config.name}")
                self._executor_pid = os.getpid()
            return self._executor

    def _call_now(self, operation: Callable[[], T], what: str, mechanism: Any) -> T:
        # An operation that calls _call again (a generation finding its new pair) runs that call
        # here, in this thread that holds the lock, not queued behind itself.
        outer = getattr(_RUNNER, "active", False)
        _RUNNER.active = True
        try:
            return self._call_in_lock(operation, what, mechanism)
        finally:
            _RUNNER.active = outer

    def _call_in_lock(self, operation: Callable[[], T], what: str, mechanism: Any) -> T:
        if self._pid is not None and self._pid != os.getpid():
            self.state, self._session = UNOPENED, None  # inherited through fork(): start afresh here
        if not self.available:
            background = self._recovery is not None and self._recovery.is_alive()
            if self.state == UNOPENED and self._lost_at is None and not background:
                self.open()  # first use in this process (or after close())
            elif background or time.monotonic() < self._next_probe or not self.recover():
                raise self.unavailable_error()
        # Never wait on a module that stopped answering: the caller goes to another token (a single
        # token waits, as it always has: there is no other).
        if not self.lock.acquire(timeout=self.config.busy_seconds if self.config.name else -1):
            raise self.unavailable_error()
        try:
            if not self.available:
                raise self.unavailable_error()
            self._busy_since = time.monotonic()
            try:
                return self._attempt(operation, what, mechanism)
            except HSMError as exc:
                self._event("error", getattr(exc, "code", None) or type(exc).__name__)
                raise
            finally:
                self._busy_since = None
        finally:
            self.lock.release()

    def _attempt(self, operation: Callable[[], T], what: str, mechanism: Any) -> T:
        try:
            return operation()
        except PKCS11Error as exc:
            kind = classify(exc)
            if kind == CALLER:
                raise self._operation_error(what, mechanism, exc) from None
            first = ckr_name(exc)
        if kind == SESSION:
            try:
                self._reopen()
                return operation()
            except PKCS11Error as exc:
                if classify(exc, after_reopen=True) == CALLER:
                    raise self._operation_error(what, mechanism, exc) from None
                first = ckr_name(exc)
            except (_Transient, HSMError):
                first = f"{first}, then the session could not be reopened"
        return self._attempt_reinitialised(operation, what, mechanism, first)

    def _attempt_reinitialised(self, operation: Callable[[], T], what: str, mechanism: Any, first: str) -> T:
        """The module lost its device (``first``: the error that said so): one immediate
        re-initialisation, then the operation again; the token is lost when that fails too."""
        self.reconnect_attempts += 1
        try:
            self._open_once(reinitialize=True)
        except (_Transient, HSMError):
            self._event("attempt", "failed")
        else:
            self._event("attempt", "succeeded")
            try:
                return operation()
            except PKCS11Error as exc:
                if classify(exc, after_reopen=True) != MODULE or ckr_name(exc) == "CKR_GENERAL_ERROR":
                    # A fresh module and login answer, and still refuse this one
                    # operation (SoftHSM says CKR_GENERAL_ERROR for a mechanism the
                    # key cannot do): the operation is at fault, not the token.
                    raise self._operation_error(what, mechanism, exc) from None
                first = ckr_name(exc)
        using = f" with {mechanism_name(mechanism)}" if mechanism is not None else ""
        self._lose(f"{first} during {what}{using}")
        raise self.unavailable_error()

    def close(self) -> None:
        self.stop_recovery()
        if self._executor is not None and self._executor_pid == os.getpid():
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        # A module hung in a call keeps its lock: leave its session to the process's end.
        if not self.lock.acquire(timeout=self.config.busy_seconds if self.config.name else -1):
            return
        try:
            if self._session is not None and self._pid == os.getpid():
                try:
                    self._session.close()
                except PKCS11Error:
                    pass
            self._session = None
            self._forget_handles()
            if self.state == AVAILABLE:
                self.state = UNOPENED
        finally:
            self.lock.release()

    def is_usable(self) -> bool:
        """Whether the token answers, for readiness checks; heals a lost login.

        The answer is reused for ``probe_interval_seconds``, so the token is
        touched at most that often whatever the probe rate, and never while it
        is known to be lost (the backoff probes it then).
        """
        if not self.healthy:
            return False
        cached = self._probe_cache
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.config.probe_interval_seconds:
            return cached[1]

        def probe() -> None:
            self._confirm_logged_in()
            try:
                self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="\x00probe")
            except pkcs11.NoSuchKey:
                pass

        try:
            self._call(probe, "readiness probe")
            usable = True
        except HSMError:
            usable = False
        self._probe_cache = (time.monotonic(), usable)
        return usable

    def _confirm_logged_in(self) -> None:
        """Raise ``UserNotLoggedIn`` (so ``_call`` reopens) when the session lost its login.

        A search needs no login and, without one, silently leaves private
        objects out: "no key pair for this set" would then lead to a fallback
        to software keys or to a duplicate generation.  The login is per token
        per process, and python-pkcs11's ``Session.close`` calls ``C_Logout``,
        so any other logged-in session of this process that closes logs this
        one out behind our back, with every handle still valid.

        python-pkcs11 does not expose ``C_GetSessionInfo``; instead a private
        session object is created and destroyed, which PKCS#11 allows only
        while the user is logged in.  A token that refuses the probe for any
        other reason proves nothing either way, and the search is trusted.
        """
        try:
            probe = self._session.create_object({
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: False,
                Attribute.PRIVATE: True,
                Attribute.LABEL: "login probe",
            })
        except PKCS11Error as exc:
            if classify(exc) != CALLER:
                raise
            return
        try:
            probe.destroy()
        except PKCS11Error:
            pass  # a session object dies with its session anyway


_finaliser_hook_installed = False


def _quiet_pkcs11_finalisers() -> None:
    """Keep python-pkcs11's finaliser errors out of stderr (once per process).

    A search whose ``C_FindObjectsInit`` failed (the device gone) is left
    "active", and python-pkcs11 finishes it in ``__del__`` with
    ``C_FindObjectsFinal``, which fails again; Python then prints "Exception
    ignored in ... __del__" with a traceback to stderr, past every log handler.
    The operation itself already failed and was handled by the failure model,
    so those are logged at DEBUG; any other unraisable exception goes to the
    previous hook.
    """
    global _finaliser_hook_installed
    if _finaliser_hook_installed:
        return
    previous_unraisable, previous_excepthook = sys.unraisablehook, sys.excepthook

    def unraisable_hook(unraisable: Any) -> None:
        where = f"{unraisable.err_msg or ''} {unraisable.object!r}"
        if isinstance(unraisable.exc_value, PKCS11Error) and "pkcs11" in where:
            log.debug("PKCS#11 finaliser failed too (%s), after the operation had", ckr_name(unraisable.exc_value))
            return
        previous_unraisable(unraisable)

    def excepthook(exc_type: Any, exc: BaseException, tb: Any) -> None:
        # Cython prints an unraisable exception's traceback through sys.excepthook
        # (PyErr_PrintEx) before the unraisable hook; only a finaliser's is kept quiet.
        outermost = tb.tb_frame.f_code.co_name if tb is not None else ""
        # Cython names its frames in full: "pkcs11._pkcs11.SearchIter._finalize".
        if isinstance(exc, PKCS11Error) and outermost.startswith("pkcs11.") and outermost.endswith("._finalize"):
            log.debug("PKCS#11 finaliser failed too (%s), after the operation had", ckr_name(exc))
            return
        previous_excepthook(exc_type, exc, tb)

    sys.unraisablehook = unraisable_hook
    sys.excepthook = excepthook
    _finaliser_hook_installed = True


@contextlib.contextmanager
def module_environment(variables: tuple[tuple[str, str], ...]) -> Iterator[None]:
    """``variables`` (HSM_<NAME>_MODULE_ENV) set in the environment while a module is loaded, then
    restored: a module such as p11-kit's client reads its settings once, when it is loaded."""
    saved = {name: os.environ.get(name) for name, _ in variables}
    os.environ.update(dict(variables))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _load_module(library: str, variables: tuple[tuple[str, str], ...], wait: float) -> Any:
    """python-pkcs11's ``lib`` for ``library``, loaded once per process; the first time with ``variables``
    (``HSM_<NAME>_MODULE_ENV``) in the environment while the module hands out its function list.

    That is where p11-kit's client module reads ``P11_KIT_SERVER_ADDRESS``: each loaded module
    file keeps the address it read.  ``C_Initialize`` runs after the environment is restored and
    its lock released, so a module that hangs there (its server stopped) blocks no other module.
    """
    if not variables or library in pkcs11._loaded:
        return pkcs11.lib(library)
    from pkcs11 import _pkcs11

    lib_type: Any = _pkcs11.lib
    if not _ENVIRONMENT_LOCK.acquire(timeout=wait):
        raise TimeoutError(library)
    try:
        with module_environment(variables):
            # __cinit__ alone: dlopen and C_GetFunctionList, no C_Initialize yet.
            module: Any = lib_type.__new__(lib_type, library)
    finally:
        _ENVIRONMENT_LOCK.release()
    module.__init__(library)  # C_Initialize and C_GetInfo
    pkcs11._loaded[library] = module
    return module


def _reinitialise(lib: Any) -> None:
    """``C_Finalize`` then ``C_Initialize`` (§5.4); a finalisation the lost module refuses is ignored."""
    try:
        lib.finalize()
    except PKCS11Error:
        pass  # python-pkcs11 marks the library uninitialised either way
    lib.initialize()
