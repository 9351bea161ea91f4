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
