"""The one exception type that carries a sentence a person can act on.

Inside the package, bad input raises `AudienceError(sentence)`; the CLI and the UI print or show
`str(error)` as it is, never a traceback.
"""


class AudienceError(Exception):
    """A problem with the user's input, described in one sentence that names the file or field."""
