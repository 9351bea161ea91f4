"""Keeping every file opened through a data root inside it.

The allow-list (data/roots.py) decides which roots a request may name; this module makes sure that
nothing *within* a root leads out of it: a fold file or image that is a symlink to elsewhere, a
user folder that is a symlink, or a `..` in a name read from a fold file. Paths are resolved
(symlinks followed) before they are compared, the way roots.py compares roots.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def resolves_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether `path`, with every symlink and `..` resolved, lies in `root` (resolved the same way)."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
    except (OSError, ValueError):  # a symlink loop, a NUL byte
        return False


def is_symlink_loop(path: str | os.PathLike) -> bool:
    """Whether `path` is a symlink that leads back to itself (exists() says False, as for a missing file)."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    except ValueError:  # a NUL byte
        return False
    return False


def missing_reason(path: str | os.PathLike, missing: str = "no such file") -> str:
    """Why a path that does not exist cannot be opened: `missing`, or that it is a symlink loop."""
    return "a symlink loop (the link leads back to itself)" if is_symlink_loop(path) else missing


def is_plain_name(name: str) -> bool:
    """Whether `name` (a user_id or file name read from a fold file) names one entry of a folder, not a path."""
    return bool(name) and name not in (".", "..") and not any(sep in name for sep in ("/", "\\", "\0"))


def files_inside(folder: Path, root: Path) -> set[str]:
    """Names of the regular files in `folder` whose real location is inside `root`; empty when `folder`
    itself leads out of `root` or is not a folder."""
    if not resolves_inside(folder, root):
        return set()
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries
                    if entry.is_file() and (not entry.is_symlink() or resolves_inside(entry.path, root))}
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return set()
