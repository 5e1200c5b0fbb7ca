"""Request bodies as JSON documents: one reading of JSON for every view.

``json`` raises RecursionError, not ValueError, for arrays or objects nested
too deeply; Werkzeug's ``get_json(silent=True)`` then lets it through as a 500.
The app's JSON provider turns it into the ValueError of any other text that is
not a document, so every view (admin API, /register, ...) answers it as bad input.
"""

from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider


class DocumentJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, with nesting too deep for ``json`` read as invalid JSON."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
