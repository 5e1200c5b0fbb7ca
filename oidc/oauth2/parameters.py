"""Where a request's protocol parameters come from, and which values are never valid.

* A POST's parameters are its form body, a GET's its query (RFC 6749 §3.1,
  §3.2; OIDC Core §3.1.2.1).  A parameter sent in both the query string and
  the body of a POST cannot be told apart from an attacker's addition and is
  ``invalid_request`` instead of one silently winning.
* RFC 6749 Appendix A builds every parameter from printable characters
  (``VSCHAR`` = %x20-7E, ``NQCHAR``, URI references); a value with a control
  character (a NUL above all: PostgreSQL refuses it in text) is never one of
  ours and is refused before it reaches a look-up.
* A parameter is sent at most once (RFC 6749 §3.1: "Request and response
  parameters MUST NOT be included more than once"); each endpoint names the
  ones it reads, and RFC 8707's ``resource`` may be repeated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property
from itertools import chain
from typing import Any
from urllib.parse import parse_qsl

from flask import Request
from werkzeug.datastructures import ImmutableMultiDict, MultiDict
from werkzeug.exceptions import BadRequest
from werkzeug.utils import cached_property as werkzeug_cached_property

from oidc.oauth2.errors import ErrorPage

FORM = "application/x-www-form-urlencoded"
#: The error description of a parameter with a control character, wherever it is refused.
CONTROL_CHARACTER = "A parameter holds a control character."
#: The control characters refused in a parameter (tab, line feed and carriage return are allowed), as
#: octets: each is one byte in UTF-8, and no byte of a multi-byte character is below 0x80, so a
#: value holds one exactly when its UTF-8 octets do.
_CONTROL_OCTETS = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_CONTROL = re.compile("[" + re.escape(_CONTROL_OCTETS.decode("ascii")) + "]")


class ParameterError(ValueError):
    """A request's parameters are malformed; the message is the error description."""


class Parameters(ImmutableMultiDict[str, str]):
    """A request's query or form (the Flask request's ``parameter_storage_class``), whose ``get`` of an
    absent name returns the default without raising.

    Werkzeug's ``get`` reads through ``__getitem__``, which builds and raises a ``BadRequestKeyError``
    for each absent name; an authorization request asks for a dozen optional parameters it lacks.
    """

    def get(self, key: Any, default: Any = None, type: Any = None) -> Any:  # type: ignore[override]  # werkzeug's overloads, one body
        if type is not None:
            return super().get(key, default, type)
        values = dict.get(self, key)
        return values[0] if values else default

    # An authorization request's parameters are checked for control characters and repeated names
    # when they are read and again when the request is validated; they never change, so each check
    # runs once.  Werkzeug's ``cached_property``, not ``functools``'s, which on Python 3.11 takes a
    # lock on each first read (every request reads each once).

    @werkzeug_cached_property
    def control_character(self) -> bool:
        """Whether a name or a value holds a control character (:func:`holds_control_character`)."""
        return _holds_control_character(self)

    @werkzeug_cached_property
    def repeated_names(self) -> frozenset[str]:
        """The names sent more than once."""
        return _repeated_names(self)


class ProviderRequest(Request):
    """Flask's request, its query and form held as :class:`Parameters` (the app's ``request_class``)."""

    parameter_storage_class = Parameters

    @cached_property
    def mimetype(self) -> str:
        """Werkzeug's, kept after the first read: werkzeug keeps the parsed Content-Type but reads
        it again through two calls for each use, and a token request asks four times (the body
        check, the form parsing, the parameters, Authlib's payload)."""
        mimetype: str = super().mimetype
        return mimetype

    def _load_form_data(self) -> None:
        """An urlencoded body (every form the provider reads) parsed as werkzeug parses it
        (``FormDataParser._parse_urlencoded``), without a form parser built per request.

        Building one reads four limits from the app's config through ``current_app`` (Flask's
        request properties), and an urlencoded body uses none of them: the stream read is already
        limited to ``MAX_CONTENT_LENGTH`` (a larger body is still a 413).  Any other type of body
        goes to werkzeug's parser.  A body that is not UTF-8 is a 400 (:class:`BadRequest`).
        """
        if "form" in self.__dict__ or self.mimetype != FORM:
            super()._load_form_data()
            return
        stream = self._get_stream_for_parsing()
        try:
            text = stream.read().decode("utf-8")
        except UnicodeDecodeError:
            # Form parameters are UTF-8 (RFC 6749 Appendix B); werkzeug's own parsing would raise this
            # error out of the view (a 500).  A 400: the endpoint's invalid_request or error page.
            raise BadRequest("The form body is not UTF-8.") from None
        items = parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote")
        self.__dict__.update(stream=stream, form=self.parameter_storage_class(items),
                             files=self.parameter_storage_class())


# _LISTS: a MultiDict is the dict of each name's list of values, read here with ``dict``'s own
# methods (the MultiDict's ``items`` and ``values`` give first values, its ``lists`` copies each
# list); werkzeug types it as a dict of single values, hence an annotation (typing.cast would be
# a function call on every request).


def has_control_character(value: str) -> bool:
    """Whether ``value`` holds a C0 control character other than tab, CR and LF (or DEL)."""
    return _CONTROL.search(value) is not None


def _holds_control_character(params: MultiDict[str, str]) -> bool:
    # One pass over every name and value, joined by a tab (not a control character here):
    # a search per string costs a call each, on every authorization and token request.  The
    # octets are searched by deleting the control ones (a byte loop in C), not by the regular
    # expression, which steps through its character class for each character of a long token.
    # The strings are gathered from the dict itself (its names, then each name's list of values)
    # by iterators written in C, not by the MultiDict's ``items`` generator.
    lists: dict[str, list[str]] = params  # type: ignore[assignment]  # (see _LISTS)
    values: Iterable[list[str]] = dict.values(lists)
    octets = "\t".join(chain(dict.keys(lists), chain.from_iterable(values))).encode("utf-8", "surrogatepass")
    return len(octets.translate(None, _CONTROL_OCTETS)) != len(octets)


def holds_control_character(params: MultiDict[str, str]) -> bool:
    """Whether a name or a value of ``params`` holds a control character (:func:`has_control_character`)."""
    if isinstance(params, Parameters):
        return params.control_character
    return _holds_control_character(params)


def _repeated_names(params: MultiDict[str, str]) -> frozenset[str]:
    # One pass over the parameters sent: ``getlist`` of each name an endpoint reads raises
    # and catches a KeyError for each one absent.
    lists: dict[str, list[str]] = params  # type: ignore[assignment]  # (see _LISTS)
    return frozenset(name for name, values in dict.items(lists) if len(values) > 1)


def longest_value(params: MultiDict[str, str]) -> int:
    """The length of the longest value sent (0 for no parameter)."""
    # A loop over the dict's own lists, as in :func:`sizes`: for the few parameters of a token or
    # introspection request, half the instructions (callgrind) of ``max`` over ``map`` and ``chain``.
    lists: dict[str, list[str]] = params  # type: ignore[assignment]  # (see _LISTS)
    longest = 0
    for values in dict.values(lists):
        for value in values:
            if len(value) > longest:
                longest = len(value)
    return longest


class ValueLists:
    """Each name's values in ``params``, read without copying every list (Authlib's ``payload.datalist``).

    Authlib builds a dict of every parameter's list for each request; its readers only ask for
    one name's list at a time (``datalist.get(name, [])``), and only to read it: a tuple of the
    values is what each gets.
    """

    __slots__ = ("_lists",)

    def __init__(self, params: MultiDict[str, str]) -> None:
        self._lists: dict[str, list[str]] = params  # type: ignore[assignment]  # (see _LISTS)

    def get(self, name: str, default: Any = ()) -> Any:
        values = dict.get(self._lists, name)
        return tuple(values) if values is not None else default


def sizes(params: MultiDict[str, str]) -> tuple[int, int]:
    """The length of every name and value sent, added up (a name once per value), and of the longest value."""
    # One loop over the dict's own lists: for the ten or so parameters of a request, half the
    # instructions (callgrind) of the ``map``, ``mul`` and ``chain`` iterators it replaced.
    lists: dict[str, list[str]] = params  # type: ignore[assignment]  # (see _LISTS)
    total = longest = 0
    for name, values in dict.items(lists):
        for value in values:
            length = len(value)
            total += len(name) + length
            if length > longest:
                longest = length
    return total, longest


def repeated_parameter(params: MultiDict[str, str], names: Iterable[str]) -> ParameterError | None:
    """The error for the first of ``names`` sent more than once in ``params`` (RFC 6749 §3.1), or None."""
    repeated = params.repeated_names if isinstance(params, Parameters) else _repeated_names(params)
    if repeated:
        for name in names:
            if name in repeated:
                return ParameterError(f"The {name} parameter is repeated.")
    return None


def sent_client_id(params: MultiDict[str, str], beside: str, required_by: str = "") -> str:
    """The ``client_id`` of an authorization request, sent once, as ``beside`` is; else an
    :class:`~oidc.oauth2.errors.ErrorPage` (``required_by``: the section that requires it, for the message)."""
    repeated = repeated_parameter(params, ("client_id", beside))
    if repeated is not None:
        raise ErrorPage("invalid_request", str(repeated))
    client_id = params.get("client_id")
    if not client_id:
        raise ErrorPage("invalid_request", f"The client_id parameter is missing{required_by}.")
    return client_id


def request_parameters(request: Any) -> MultiDict[str, str]:
    """The protocol parameters of ``request`` (a Flask request), or :class:`ParameterError`."""
    if request.method == "POST":
        form = request.form if request.mimetype == FORM else MultiDict()
        if request.query_string:
            both = sorted(set(form) & set(request.args))
            if both:
                raise ParameterError(f"The {both[0]} parameter is sent both in the URL and in the body.")
        params = form
    else:
        params = request.args
    if holds_control_character(params):
        raise ParameterError(CONTROL_CHARACTER)
    return params
