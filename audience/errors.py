"""The one exception type that carries a sentence a person can act on.

Inside the package, bad input raises `AudienceError(sentence)`; the CLI and the UI print or show
`str(error)` as it is, never a traceback.
"""


class AudienceError(Exception):
    """A problem with the user's input, described in one sentence that names the file or field."""


QUOTE_LIMIT = 200  # characters of a user's input an error message repeats (a 20 MB line once came back whole)


def shorten(text: object, limit: int = QUOTE_LIMIT) -> str:
    """`text` for an error message: its first `limit` characters, and how long it was when it is longer."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """repr() of a user's input for an error message, cut like `shorten` (the cut is made before repr)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    return shorten(repr(value), limit)
