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
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from gradio.utils import get_upload_folder

from audience.errors import AudienceError

log = logging.getLogger(__name__)
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


# ---------------------------------------------------------------- the folder's size and its cleaner
# gradio deletes the files its own process received once they are KEEP_FILES_S old; files left by a process
# that ended (a restart, a crash) are nobody's. The sweeper deletes every file of the upload folder older than
# that, at start and then every SWEEP_EVERY_S, so the folder never keeps a file longer than the app would.


def folder_bytes(folder: str | os.PathLike) -> int:
    """The bytes of the regular files under `folder` (symlinks not followed); 0 when it does not exist."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def sweep_uploads(older_than_s: float, keep: Iterable[str] = (), folder: str | os.PathLike | None = None) -> int:
    """Delete the files of the upload folder modified more than `older_than_s` seconds ago (except `keep`), and
    the folders that leaves empty; return how many files went. Age is by modification time: an upload is
    written when it arrives, and a client cannot set it."""
    folder = Path(folder or get_upload_folder())
    keep = {os.path.realpath(path) for path in keep}
    cutoff = time.time() - older_than_s
    removed = 0
    for root, _, files in os.walk(folder, topdown=False):
        emptied = False
        for name in files:
            path = os.path.join(root, name)
            try:
                if os.lstat(path).st_mtime < cutoff and os.path.realpath(path) not in keep:
                    os.unlink(path)
                    removed += 1
                    emptied = True
            except OSError:
                continue
        if emptied and Path(root) != folder:  # an upload's own folder; gradio's other folders stay
            try:
                os.rmdir(root)  # only when empty
            except OSError:
                pass
    return removed


SWEEP_EVERY_S = 60.0


def start_upload_sweeper(age_s: float, keep: Callable[[], Iterable[str]] = tuple,
                         every_s: float = SWEEP_EVERY_S) -> threading.Thread:
    """Sweep the upload folder now (files left from before a restart) and then every `every_s` seconds."""
    removed = sweep_uploads(age_s, keep())
    if removed:
        log.info("removed %d upload(s) older than %d s left from before this start", removed, age_s)

    def loop() -> None:
        while True:
            time.sleep(min(every_s, age_s))
            try:
                sweep_uploads(age_s, keep())
            except Exception:  # noqa: BLE001 - the cleaner must outlive one bad pass
                log.exception("sweeping the upload folder failed")

    thread = threading.Thread(target=loop, name="audience-upload-sweeper", daemon=True)
    thread.start()
    return thread


def delete_own_uploads(demo) -> None:
    """Delete every file gradio received or made in this process (what gradio's own cleaner tracks), as gradio
    does when its server shuts down cleanly; for a shutdown that does not reach that point."""
    from gradio.route_utils import delete_files_created_by_app

    delete_files_created_by_app(demo, age=None)
