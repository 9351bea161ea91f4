"""The one data-root resolver: the `demo` keyword, `~`, symlinks, and the allow-list.

Every place that turns typed text into a data root goes through `resolve_data_root`: training,
evaluation, the benchmark, the UI's job runner, the EDA tab, and Compare's notion of "the demo
set". The allow-list is a security boundary (a root typed into the web UI must lie under a folder
the server was told it may open), so it is decided here only: the path is resolved (`~`
expanded, `..` and symlinks followed) *before* it is compared with the allowed folders, which are
resolved the same way, so that neither a `..` nor a symlink inside an allowed folder leads out.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from audience import settings
from audience.data.contained import is_symlink_loop, missing_reason
from audience.data.demo import ensure_demo_dataset
from audience.errors import AudienceError, shorten
from audience.inputs import check_path

DEMO_DATA = "demo"  # the keyword for the built-in synthetic demo set (made on first use)


def is_demo_root(text) -> bool:
    """Whether `text` is the demo keyword (any case, surrounding spaces ignored)."""
    return str(text).strip().lower() == DEMO_DATA


def resolve_data_root(text: str | Path, allowed: Iterable[str | Path] | None = None) -> Path:
    """The folder `text` names, resolved: 'demo' is the built-in demo set (made on first use).

    With `allowed` (the UI passes settings.data_dirs_for(...): the allow-list on a public deployment),
    any other root must be one of those folders or lie below one, else AudienceError; without it (the
    command lines and a local run of the app, used by the machine's own user) any folder is accepted.
    A root that is not an existing folder is an AudienceError too. Every message quotes `text` as it
    was typed, never the path it resolves to: `~`, `/proc/self/cwd` or a symlink must not tell a
    visitor where the server keeps its files.
    """
    if is_demo_root(text):
        return ensure_demo_dataset()
    raw = check_path(text, "Data root").strip()
    if not raw:
        raise AudienceError("enter a data root: a folder with fold_0_data.txt ... fold_4_data.txt, or 'demo'.")
    typed = shorten(raw)
    try:
        path = Path(os.path.realpath(Path(raw).expanduser()))  # Path.resolve() raises RuntimeError on a symlink loop
    except OSError as error:  # e.g. another process's /proc/<pid>/cwd: permission denied
        raise AudienceError(f"{typed}: data root cannot be opened ({error.strerror or 'not readable'}).") from None
    if allowed is not None:
        folders = [Path(os.path.realpath(Path(folder).expanduser())) for folder in allowed]
        if not any(path.is_relative_to(folder) for folder in folders):
            raise AudienceError(f"Data root {typed} is not under a folder the app may open on this server; its "
                                "operator can allow folders with AUDIENCE_DATA or AUDIENCE_DATA_DIRS. Type 'demo' "
                                "for the built-in demo set.")
    if path == Path(os.path.realpath(settings.demo_root())):  # the demo set's folder typed out (the EDA tab's
        return ensure_demo_dataset()  # default root): made on first use too, not at the app's start
    if not path.is_dir():
        if is_symlink_loop(path):
            raise AudienceError(f"{typed}: data root not found: it is {missing_reason(path)}.")
        raise AudienceError(f"{typed}: data root not found: it does not exist or is not a folder "
                            "(expected an Adience root with fold_0_data.txt ... fold_4_data.txt, or a UTKFace folder).")
    return path


def hide_resolved(message: str, resolved: Path, typed: str) -> str:
    """`message` with the resolved root replaced by what was typed: a reader names files by their real
    path, which on a public server must not show where a typed link or `~` leads."""
    return message.replace(str(resolved), shorten(str(typed).strip())) if str(resolved) != "/" else message
