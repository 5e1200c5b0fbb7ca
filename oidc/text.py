"""Guards on text from outside (a request, a cookie, an operator's input), written once.

Every value the provider looks up or stores has a longest length its owner
names (``MAX_…_LENGTH`` beside the code that reads it): a longer one is never
ours and is refused before it costs a hash or a query.  A value compared as it
is with a text column must also hold no NUL: PostgreSQL refuses a NUL in a
text parameter (an error, not "no row"), where SQLite would just find nothing,
and no value this provider issues holds one.
"""

from __future__ import annotations


def bounded_text(value: object, limit: int) -> str | None:
    """``value`` when it is a string of 1 to ``limit`` characters, else None."""
    if isinstance(value, str) and 0 < len(value) <= limit:
        return value
    return None


def column_text(value: object, limit: int) -> str | None:
    """:func:`bounded_text` that also holds no NUL: a value compared as it is with a text column."""
    if isinstance(value, str) and 0 < len(value) <= limit and "\x00" not in value:
        return value
    return None
