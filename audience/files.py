"""The one atomic writer: every artefact (run files, checkpoints, caches, reports, ONNX) goes through it.

A file is written to a temporary file in the target's folder (so that the rename cannot cross a
file system), flushed and fsynced, given FILE_MODE, and renamed over the target (os.replace); the
folder is then fsynced so that the rename itself survives a crash. A reader therefore sees the
old file or the new one, never a part; a failed write leaves the old file as it was and no
temporary behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from audience.errors import AudienceError, shorten

# Readable by everyone, writable by the owner: artefacts (runs, checkpoints, reports, ONNX) are
# meant to be read by other users and processes (a served model, a shared report). mkstemp's
# private 0600 is not kept, and the mode is set explicitly rather than through the umask because
# reading the umask means changing it, which is not safe while other threads create files.
FILE_MODE = 0o644

# Every JSON file the package reads (checkpoint metadata, run files, caches' indexes) goes through read_json:
# a file the app itself wrote is a few KB to a few MB; one of 100,000 nested brackets or a 5,000-digit
# number once stopped the app from starting.
JSON_MAX_BYTES = 16 * 1024 * 1024
JSON_MAX_DEPTH = 64


class JsonFileError(ValueError):
    """A JSON file that cannot be used; `reason` says why in a few words (no path)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _depth_over(value, limit: int) -> bool:
    """Whether `value` nests lists/dicts more than `limit` levels deep (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in item if isinstance(child, dict | list))
    return False


def read_json(path: str | Path, max_bytes: int = JSON_MAX_BYTES, max_depth: int = JSON_MAX_DEPTH):
    """The JSON value of the regular file `path`, read within bounds: at most `max_bytes` bytes and
    `max_depth` levels of nesting, numbers of at most 4,300 digits (Python's own limit).

    Any problem raises JsonFileError (a ValueError) whose `reason` names it for "cannot be read (REASON)":
    "not valid JSON: ..., line 3, column 5", "larger than 16,777,216 bytes", "nested deeper than 64 levels",
    "a number with too many digits", "not a regular file", ...; a missing file raises
    FileNotFoundError as before. A FIFO or device is refused without being opened for a blocking read.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as error:
        raise JsonFileError(str(error.strerror or type(error).__name__)) from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise JsonFileError("not a regular file")
        try:
            data = file.read(max_bytes + 1)
        except OSError as error:
            raise JsonFileError(str(error.strerror or type(error).__name__)) from None
    if len(data) > max_bytes:
        raise JsonFileError(f"larger than {max_bytes:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonFileError("not UTF-8 text") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise JsonFileError(f"not valid JSON: {error.msg}, line {error.lineno}, column {error.colno}") from None
    except RecursionError:
        raise JsonFileError(f"nested deeper than {max_depth} levels") from None
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise JsonFileError("a number with too many digits") from None
    if _depth_over(value, max_depth):
        raise JsonFileError(f"nested deeper than {max_depth} levels")
    return value


def read_json_object(path: str | Path, label: str, max_bytes: int = JSON_MAX_BYTES) -> dict:
    """The JSON object of the file `path`, read within read_json's bounds; any problem is an AudienceError of one
    sentence that starts with `label` (say "Checkpoint metadata x.json"): "... does not exist.", "... cannot be
    read (REASON).", "... is not a JSON object."."""
    try:
        value = read_json(path, max_bytes=max_bytes)
    except FileNotFoundError:
        raise AudienceError(f"{label} does not exist.") from None
    except JsonFileError as error:
        raise AudienceError(f"{label} cannot be read ({error.reason}).") from None
    if not isinstance(value, dict):
        raise AudienceError(f"{label} is not a JSON object.")
    return value


def fsync_folder(folder: str | Path) -> None:
    """Make a rename inside `folder` durable (a no-op where a folder cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the data itself is already synced
        pass
    finally:
        os.close(fd)


def check_replaceable(target: str | Path) -> Path:
    """`target` as a Path when a write may replace it: it does not exist yet or is a regular file.

    A rename over a device node (`/dev/full`), a pipe, a socket or a folder would replace that thing
    with a file (as root even /dev/full), so those are refused with a sentence. A symbolic link is
    refused too: the rename would replace the link itself, not the file it points to.
    """
    target = Path(target)
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return target
    except OSError as error:  # ENAMETOOLONG, a part of the path is a file, permission denied ...
        raise AudienceError(f"Cannot write {shorten(target)} ({(error.strerror or str(error)).lower()}).") from None
    if stat.S_ISREG(mode):
        return target
    kind = ("a folder" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a pipe" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    raise AudienceError(f"Cannot write {shorten(target)}: it is {kind}, and only a new or regular file is "
                        "replaced (nothing was written).")


def _new_temp(target: Path, suffix: str) -> Path:
    check_replaceable(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    return Path(name)


def _seal(temp: Path) -> None:
    with open(temp, "rb+") as file:
        os.fsync(file.fileno())
    os.chmod(temp, FILE_MODE)


def write_temp_beside(target: str | Path, write: Callable[[Path], None], suffix: str = ".tmp") -> Path:
    """Run write(temp) on a new temp file beside `target`, fsync it and give it FILE_MODE.

    Returns the temp path for the caller to `replace_into` the target (one or several files at a
    time, see save_checkpoint); it is removed when `write` fails.
    """
    temp = _new_temp(Path(target), suffix)
    try:
        write(temp)
        _seal(temp)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def replace_into(temp: str | Path, target: str | Path) -> Path:
    """Rename a temp file from write_temp_beside over `target` and make the rename durable."""
    target = check_replaceable(target)
    os.replace(temp, target)
    fsync_folder(target.parent)
    return target


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp path beside `target` to write to; on a normal exit it replaces `target` atomically.

    For writers that want a path of their own (torch.save, DataFrame.to_csv, a memory map, an
    exporter). On an exception the temp file is removed and `target` is left as it was.
    """
    target = Path(target)
    temp = _new_temp(target, suffix)
    try:
        yield temp
        _seal(temp)
        replace_into(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    replace_into(write_temp_beside(path, lambda temp: temp.write_bytes(data)), path)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    replace_into(write_temp_beside(path, lambda temp: temp.write_text(text, encoding="utf-8")), path)
    return path


def write_json_atomic(path: str | Path, payload) -> Path:
    """Write `payload` as indented JSON (NaN refused) atomically, creating the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
