"""The run folder's one owner: an exclusive flock on `<run>/owner.lock`, held while a process trains the run.

The claim was "create owner.lock, then write it", and a stale lock was unlinked after it was checked: two
racing processes both owned a run in 6 of 40 trials, and a lock naming another host (a container restarted) or
a PID now reused blocked a resume forever. An flock is taken in one system call and dropped by the kernel when
its process ends, however it ends, so whether a run is owned never depends on a host name or a PID: those
(and the start time) are written inside only to name the owner in messages.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import threading
import time
from datetime import datetime
from pathlib import Path

from audience.errors import AudienceError

OWNER_FILE = "owner.lock"  # while a process trains the run: flocked by it; {host, pid, since} inside


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def host_and_pid() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


# The run folders this process owns: path -> the open owner.lock whose flock says so (held until release_run).
_held: dict[str, int] = {}
_held_lock = threading.Lock()
CLAIM_RETRY_S = 0.2  # a reader's momentary shared lock (run_owner) can make a claim fail: it tries again this long


def _read_record(fd: int) -> dict:
    """The owner's {host, pid, since} (for messages only: the flock, not the record, says who owns the run)."""
    for _ in range(5):
        try:
            record = json.loads(os.pread(fd, 4096, 0) or b"null")
        except (OSError, ValueError, RecursionError):
            record = None
        if isinstance(record, dict):
            return record
        time.sleep(0.01)  # the owner is between truncating and writing its record
    return {}


def run_owner(run_dir: str | Path) -> dict | None:
    """The live process that owns the run folder ({host, pid, since}; {} when it has not written them yet), or
    None when no process holds the run's lock (no lock file, or one left by a process that has ended)."""
    path = Path(run_dir) / OWNER_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_record(fd)
        except OSError:
            return None
        return None  # nobody holds it: its writer has ended (closing the descriptor released the lock)
    finally:
        os.close(fd)


def describe_owner(run_dir: Path, owner: dict) -> str:
    who = (f"process {owner.get('pid')} on {owner.get('host')} (since {owner.get('since')})"
           if owner.get("pid") is not None else "another process")
    return (f"Run {Path(run_dir).name} is being trained by {who}; stop that run first (its lock is released when "
            "its process ends).")


def _try_lock(path: Path) -> int | None:
    """An open, exclusively flocked descriptor of `path` (made if absent), or None when a live process holds it."""
    deadline = time.monotonic() + CLAIM_RETRY_S
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(0, f"{OWNER_FILE} is not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
            continue
        except BaseException:
            os.close(fd)
            raise
        # Locked; but the owner before us may have unlinked the file while we waited: then a third process can
        # hold a new file at this path. Only the file the path still names counts.
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def claim_run(run_dir: str | Path) -> None:
    """Make this process the run folder's one owner; AudienceError naming the owner when a live process holds it.

    Ownership is an exclusive flock on OWNER_FILE held until release_run or until the process ends (the
    kernel releases it then, however the process ends): the claim is one atomic system call, and a lock left by
    a process that has ended (on this machine, in an earlier container, with a PID now reused, even this
    server's own PID) is taken over at once. The record inside ({host, pid, since}) names the owner in messages.
    """
    path = Path(run_dir) / OWNER_FILE
    key = str(Path(run_dir).resolve())
    with _held_lock:
        if key in _held:
            raise AudienceError(describe_owner(Path(run_dir), {**host_and_pid(), "since": "now"}))
        try:
            fd = _try_lock(path)
        except OSError as error:
            raise AudienceError(f"Run {Path(run_dir).name}: cannot claim the run folder ({error.strerror}).") from None
        if fd is None:
            raise AudienceError(describe_owner(Path(run_dir), run_owner(run_dir) or {}))
        record = json.dumps({**host_and_pid(), "since": now_iso()}).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        except OSError as error:  # a full disk: the lock is ours, but nobody could tell whose
            path.unlink(missing_ok=True)
            os.close(fd)
            raise AudienceError(f"Run {Path(run_dir).name}: cannot claim the run folder ({error.strerror}).") from None
        _held[key] = fd


def release_run(run_dir: str | Path) -> None:
    """Give up the run folder if this process owns it (a lock of another process is left alone)."""
    with _held_lock:
        fd = _held.pop(str(Path(run_dir).resolve()), None)
        if fd is None:
            return
        try:
            # Unlinked while still locked: a claimer that opened this file meanwhile sees it is gone (_try_lock).
            (Path(run_dir) / OWNER_FILE).unlink(missing_ok=True)
        finally:
            os.close(fd)


def release_all_runs() -> list[str]:
    """Release every run folder this process owns (a shutdown); returns their paths."""
    with _held_lock:
        keys = list(_held)
    for key in keys:
        release_run(key)
    return keys


def holds_run(run_dir: str | Path) -> bool:
    """Whether this process owns the run folder (claimed it and has not released it)."""
    with _held_lock:
        return str(Path(run_dir).resolve()) in _held
