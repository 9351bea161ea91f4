"""The rules for text a person types that becomes a path or a file name: one definition for the command
lines, the UI and the API.

A data root, a run id or a model name may arrive through the raw HTTP API with anything in it: a NUL
byte (Python's path functions raise ValueError on it), thousands of characters (the system refuses a
file name over 255 bytes with OSError 36), control characters. `check_path` refuses those with one
sentence before any path function sees them. A name the app makes a file or folder name from (a run
name, a checkpoint name) goes through `name_slug`: letters and digits of any script are kept as typed.
"""

from __future__ import annotations

import os
import unicodedata

from audience.errors import AudienceError, quoted

PATH_LIMIT = 4096  # characters of a typed path (Linux's PATH_MAX)
NAME_BYTES_LIMIT = 255  # bytes of one file or folder name in UTF-8 (Linux's NAME_MAX)
# bytes of a path made absolute: PATH_MAX less one file name, so that a file opened inside it still fits
ABSOLUTE_LIMIT = PATH_LIMIT - NAME_BYTES_LIMIT - 1
NAME_LIMIT = 50  # characters of a run or checkpoint name: with the parts the app adds it stays under NAME_MAX
NAME_PUNCTUATION = "_.+-"  # kept in a name besides letters, marks and digits; any other run of characters is '-'


def check_text(value, what: str, limit: int) -> str:
    """`value` as text, or AudienceError when it holds a control character (a NUL byte, a line break) or
    is longer than `limit` characters. `what` names the field at the start of the sentence."""
    text = "" if value is None else str(value)
    if len(text) > limit:
        raise AudienceError(f"{what} is too long: at most {limit:,} characters, got {len(text):,}.")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise AudienceError(f"{what} must not contain a control character such as a NUL byte or a line break; "
                            f"got {quoted(text)}.")
    return text


def check_path(value, what: str, base: str | os.PathLike | None = None) -> str:
    """`value` as text that the path functions accept: no control character, at most PATH_LIMIT characters,
    no part longer than NAME_BYTES_LIMIT bytes, and at most ABSOLUTE_LIMIT bytes once made absolute (`~` expanded,
    relative to `base`, default the working folder: the system refuses a longer path with OSError 36 in
    whatever function meets it first). AudienceError says which rule it breaks."""
    text = check_text(value, what, PATH_LIMIT)
    for part in text.replace("\\", "/").split("/"):
        size = len(part.encode("utf-8", "surrogatepass"))
        if size > NAME_BYTES_LIMIT:
            raise AudienceError(f"{what} is too long: a file or folder name may have at most {NAME_BYTES_LIMIT} "
                                f"bytes, one has {size:,} ({quoted(part, 40)}).")
    full = os.path.join(os.fspath(base) if base is not None else os.getcwd(), os.path.expanduser(text))
    size = len(os.fsencode(os.path.normpath(full)))
    if size > ABSOLUTE_LIMIT:
        raise AudienceError(f"{what} is too long: a path may have at most {ABSOLUTE_LIMIT:,} bytes with the folders "
                            f"above it (room for the files the app opens in it), this one has {size:,}.")
    return text


def _kept(ch: str) -> bool:
    return ch in NAME_PUNCTUATION or unicodedata.category(ch)[0] in "LMN"


def name_slug(value, what: str) -> str:
    """The file-name form of a name a person gave (a run name, a checkpoint name): letters, marks and digits
    of any script and `_ . + -` are kept as typed (NFC-normalised), every other run of characters (spaces,
    slashes) becomes one '-'. AudienceError when the name is too long, holds a control character or has
    nothing left to name a file with."""
    text = unicodedata.normalize("NFC", check_text(value, what, NAME_LIMIT))
    slug, gap = [], False
    for ch in text:
        if _kept(ch):
            if gap and slug:
                slug.append("-")
            slug.append(ch)
            gap = False
        else:
            gap = True
    result = "".join(slug).strip("-.")
    if not result:
        raise AudienceError(f"{what} {quoted(text)} has no letter or digit to make a file name from.")
    return result


# Letters of other scripts (and digits) drawn like a Latin letter, after case folding: a subset of Unicode's
# confusables (TR39) for the scripts a name is most often faked with. With NFKC and case folding (which
# cover full-width and mathematical letters, ligatures and case) two names with the same skeleton read alike.
CONFUSABLE_LETTERS = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "з": "3", "і": "i", "ј": "j", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h",
    "ӏ": "l", "ү": "y", "ɡ": "g",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ζ": "z", "ϲ": "c", "ϳ": "j",
    # digits and Latin letters drawn alike
    "0": "o", "1": "l", "ı": "i",
})


def name_skeleton(text: str) -> str:
    """What a name looks like: NFKC, case-folded, look-alike letters of other scripts replaced by their Latin
    twin ('Ｍodel', 'MODEL' and 'mоdel' with a Cyrillic о all give 'model'). Two different names with one
    skeleton are homoglyphs: one imitates the other."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", str(text)).casefold())
    return folded.translate(CONFUSABLE_LETTERS).replace("rn", "m")
