"""The test tiers: the fast tier's CPU-time guard (conftest.py) catches a test that has grown too big for it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from fixtures.waiting import HANG_S

TESTS = Path(__file__).resolve().parent

BURNING = '''
import time

import pytest


def burn():
    end = time.process_time() + 0.8
    while time.process_time() < end:
        pass


def test_unmarked_and_big():
    burn()


@pytest.mark.slow
def test_marked_slow_and_big():
    burn()


def test_small():
    pass
'''


def test_an_unmarked_test_over_the_cpu_budget_fails_and_a_slow_one_may_use_more(tmp_path):
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_burning.py").write_text(BURNING, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n    browser: browser\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--cpu-budget", "0.4"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "3 passed, 1 error" in done.stdout, done.stdout  # the call passed; the teardown reports the budget
    errors = [line for line in done.stdout.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 1 and "test_unmarked_and_big" in errors[0], errors
    assert "more than the fast tier's budget of 0.4 s" in done.stdout and "@pytest.mark.slow" in done.stdout
    assert "most CPU time per test" in done.stdout
    off = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--cpu-budget", "0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=HANG_S)
    assert off.returncode == 0 and "3 passed" in off.stdout, off.stdout
