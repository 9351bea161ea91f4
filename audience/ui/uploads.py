"""The files a request may make the app open: only those gradio itself received.

/predict runs with preprocess=False (our decoder reports bad files in the status), and gradio checks
that a payload's file was uploaded only when the payload carries gradio's "meta" field. A payload
without it, or a plain string, names any path on the server; so every path a request names is checked
here: it must resolve (symlinks followed) inside gradio's upload folder and be a regular file. Anything
else gets the same sentence whatever the path is, so the answer tells nothing about the server's files
(whether a path exists, is a folder, a FIFO, empty or not an image).
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from gradio.utils import get_upload_folder

from audience.errors import AudienceError

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # app.py's upload limit, also for an image sent inline as a data: URL
REFUSED = "The image must be uploaded through the app; a file on the server cannot be opened."


def upload_folders() -> list[Path]:
    """Where the files gradio received lie (GRADIO_TEMP_DIR, default <tempdir>/gradio), resolved."""
    return [Path(os.path.realpath(get_upload_folder()))]


def uploaded_file(path: str | os.PathLike) -> Path:
    """`path` resolved, when it is a regular file inside an upload folder; else AudienceError(REFUSED).

    The file's type is checked with stat before anything opens it, so a FIFO or a device is never opened.
    """
    try:
        resolved = Path(os.path.realpath(os.fspath(path)))
        inside = any(resolved.is_relative_to(folder) for folder in upload_folders())
        regular = inside and stat.S_ISREG(os.stat(resolved).st_mode)
    except (OSError, ValueError, TypeError):  # missing, a symlink loop, a NUL byte, not a path
        regular = False
    if not regular:
        raise AudienceError(REFUSED)
    return resolved


def source_of(value):
    """The image inside a request's payload: an uploaded file (FileData dict or path string), a data:
    URL's bytes, or the value as is (bytes or an array, from Python callers only: JSON holds neither)."""
    if isinstance(value, dict):
        if value.get("path"):
            return uploaded_file(value["path"])
        url = value.get("url") or ""
        if url.startswith("data:") and "," in url:
            encoded = url.split(",", 1)[1]
            if len(encoded) > MAX_IMAGE_BYTES * 4 // 3 + 4:  # base64: 4 characters per 3 bytes
                raise AudienceError(f"The image is larger than the limit of {MAX_IMAGE_BYTES // 2**20} MB.")
            try:
                return base64.b64decode(encoded, validate=True)
            except ValueError as error:
                raise AudienceError("The image's data: URL is not valid base64.") from error
        raise AudienceError("The uploaded image arrived without a file; upload it again.")
    if isinstance(value, str) and value.startswith("data:"):
        return source_of({"url": value})
    if isinstance(value, str | os.PathLike):
        return uploaded_file(value)
    return value
