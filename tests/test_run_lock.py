"""Issue 20 item 6: one owner per run folder, however many processes claim it at the same moment.

The claim was "create owner.lock, then write it" and a stale lock was unlinked after it was checked: two of
two racing processes both owned the run in 6 of 40 trials (9 of 40 with a stale lock). Now the claim is an
exclusive flock on owner.lock (audience.train.runs.claim_run), held until the owner releases it or ends. Here 20
processes race 40 times each way: on a fresh folder, over stale locks of every kind (a process that has ended,
another host, this server's own PID, garbage), and over a lock its owner releases while they claim.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audience.errors import AudienceError
from audience.train.run_lock import OWNER_FILE, claim_run, release_run, run_owner

PROCESSES, TRIALS = 20, 40


def _racer(run_dirs: list[str], barrier, results, handover: bool) -> None:
    """Claim each folder when all processes are ready; hold it until all have tried; report who won."""
    owned = None
    for trial, run_dir in enumerate(run_dirs):
        barrier.wait()
        if handover and owned is not None:
            release_run(owned)  # the last owner lets go while the others claim
            owned = None
        try:
            claim_run(run_dir)
            won = True
        except AudienceError:
            won = False
        results.put((trial, os.getpid(), won))
        barrier.wait()  # everyone has tried while the winner still holds it
        if won and not handover:
            release_run(run_dir)
        elif won:
            owned = run_dir
    if owned is not None:
        release_run(owned)


def race(run_dirs: list[Path], handover: bool = False) -> dict[int, list[int]]:
    """trial -> the pids that owned the folder, from PROCESSES processes racing over `run_dirs` in turn."""
    context = multiprocessing.get_context("fork")  # 20 spawned interpreters would take a minute on 2 cores
    barrier, results = context.Barrier(PROCESSES, timeout=120), context.Queue()
    workers = [context.Process(target=_racer, args=([str(d) for d in run_dirs], barrier, results, handover))
               for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    winners: dict[int, list[int]] = {trial: [] for trial in range(len(run_dirs))}
    for _ in range(PROCESSES * len(run_dirs)):
        trial, pid, won = results.get(timeout=120)
        if won:
            winners[trial].append(pid)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return winners


def ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


STALE = {  # what a lock left behind may say; none of these may block a claim
    "ended process": lambda: {"host": socket.gethostname(), "pid": ended_pid(), "since": "2026-01-01T00:00:00"},
    "another host": lambda: {"host": "container-before-restart", "pid": 1, "since": "2026-01-01T00:00:00"},
    "this server's PID": lambda: {"host": socket.gethostname(), "pid": os.getpid(), "since": "2026-01-01T00:00:00"},
    "garbage": lambda: "[" * 1000,
}


@pytest.mark.parametrize("left", [None, *STALE])
def test_racing_processes_give_exactly_one_owner(tmp_path, left):
    run_dirs = []
    for trial in range(TRIALS):
        run_dir = tmp_path / f"run{trial}"
        run_dir.mkdir()
        if left is not None:
            record = STALE[left]()
            (run_dir / OWNER_FILE).write_text(record if isinstance(record, str) else json.dumps(record))
        run_dirs.append(run_dir)
    winners = race(run_dirs)
    counts = {trial: len(pids) for trial, pids in winners.items()}
    wrong = {trial: count for trial, count in counts.items() if count != 1}
    assert not wrong, f"trials without exactly one owner: {wrong}"
    for run_dir in run_dirs:
        assert not (run_dir / OWNER_FILE).exists()  # each winner released its lock
        assert run_owner(run_dir) is None


def test_a_lock_released_while_others_claim_has_one_owner_at_most(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    winners = race([run_dir] * TRIALS, handover=True)
    counts = [len(pids) for pids in winners.values()]
    assert max(counts) == 1, counts
    assert sum(counts) >= TRIALS // 2, counts  # the handover works: the folder rarely stays without an owner


def test_the_owner_is_named_and_its_lock_released_when_it_ends(tmp_path):
    holder = ("import sys, time; from audience.train.run_lock import claim_run; claim_run(sys.argv[1]); "
              "print('held', flush=True); time.sleep(60)")
    other = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        assert run_owner(tmp_path)["pid"] == other.pid
        with pytest.raises(AudienceError, match=f"being trained by process {other.pid} on {socket.gethostname()}"):
            claim_run(tmp_path)
    finally:
        other.kill()  # no chance to release: the kernel drops its flock
        other.wait()
    assert run_owner(tmp_path) is None
    claim_run(tmp_path)
    try:
        assert run_owner(tmp_path)["pid"] == os.getpid()
        with pytest.raises(AudienceError, match="being trained by"):
            claim_run(tmp_path)  # one owner, even within one process
    finally:
        release_run(tmp_path)
    assert not (tmp_path / OWNER_FILE).exists()


def test_a_symlinked_lock_is_refused_with_a_sentence(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / OWNER_FILE).symlink_to(target)
    started = time.monotonic()
    with pytest.raises(AudienceError, match="cannot claim the run folder"):
        claim_run(run_dir)
    assert target.read_text() == "keep" and time.monotonic() - started < 5
