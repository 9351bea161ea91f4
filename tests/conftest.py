"""Shared fixtures: a synthetic Adience root made once per session, and ../shared when present."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")
# torch's OpenMP threads wait for work by spinning; on a loaded machine the spinning thread takes the core from
# the one that has the work. Waiting asleep, three training tests took 1.9 s of CPU time and 30 s instead of
# 13.8 s and 74 s at load 13 (2 cores). Set before torch is imported; the subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real Adience fold files and 19 real images); tests using it skip where it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present beside the checkout (it holds the real Adience test data)")
    return SHARED


@pytest.fixture(scope="session")
def adience_meta(shared_dir: Path) -> Path:
    path = shared_dir / "adience-meta"
    if not path.is_dir():
        pytest.skip("../shared/adience-meta is not present")
    return path


@pytest.fixture(scope="session")
def adience_sample(shared_dir: Path) -> Path:
    path = shared_dir / "adience-sample"
    if not path.is_dir():
        pytest.skip("../shared/adience-sample is not present")
    return path


@pytest.fixture(scope="session")
def group_photo(shared_dir: Path):
    """25 real UTKFace faces in a grid (tests/fixtures/group_photo.py), an RGB array made in memory."""
    from fixtures.group_photo import utkface_group_photo

    folder = shared_dir / "utkface" / "UTKFace"
    if not folder.is_dir():
        pytest.skip("../shared/utkface/UTKFace is not present")
    return utkface_group_photo(folder)


@pytest.fixture
def unmeasured_framing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training measures its images' framing with the face detector (faces.align.measure_framing) before the
    first fold; tests that train in-process on synthetic faces skip that pass and keep the default framing.
    The framing itself is tested in test_align.py, test_crop_geometry.py and test_utkface.py."""
    import audience.train.cross_validate

    monkeypatch.setattr(audience.train.cross_validate, "measure_framing", lambda paths: {})


@pytest.fixture
def connections(monkeypatch) -> list[tuple]:
    """Every TCP connection the test's own thread tries while it runs, as (address, timeout in s), made as usual.

    "Fails fast without a network" is proved by what is tried (nothing, or one connection bounded by a timeout),
    not by a wall-clock bound, which a loaded machine breaks.
    """
    import socket
    import threading

    tried: list[tuple] = []
    real = socket.socket.connect
    me = threading.get_ident()

    def connect(sock, address):
        if threading.get_ident() == me:
            tried.append((address, sock.gettimeout()))
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return tried


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic demo dataset, made once per test session (read-only for tests: copy to change it)."""
    from audience.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo-data", seed=0)


@pytest.fixture(scope="session", autouse=True)
def _session_models_dir(tmp_path_factory: pytest.TempPathFactory):
    """AUDIENCE_MODELS in a temporary folder for the whole session (servers and scripts started by fixtures
    inherit it): no test writes a model or the default-model choice into the project's models/."""
    previous = os.environ.get("AUDIENCE_MODELS")
    os.environ["AUDIENCE_MODELS"] = str(tmp_path_factory.mktemp("user-models"))
    yield
    if previous is None:
        os.environ.pop("AUDIENCE_MODELS", None)
    else:
        os.environ["AUDIENCE_MODELS"] = previous


@pytest.fixture(scope="session", autouse=True)
def _app_servers_ended():
    """The app servers that modules left ending in the background (AppServer.stop_soon) have ended by the session's
    end."""
    yield
    try:
        from fixtures.app_server import stop_the_ending_servers
    except ImportError:  # this conftest copied elsewhere (tests/test_tiers.py): no app servers there
        return
    stop_the_ending_servers()


@pytest.fixture(autouse=True)
def _own_models_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test its own models folder (not made until used): a model promoted or a default chosen by one test
    is not served to the next."""
    monkeypatch.setenv("AUDIENCE_MODELS", str(tmp_path_factory.getbasetemp() / "models" / str(next(_MODELS_NUMBERS))))


_MODELS_NUMBERS = itertools.count()


@pytest.fixture(scope="session")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-subject demo dataset (the smallest allowed): every fold, class and kind of label noise, few images.

    The training tests and the command lines run on it; it is shared, so a test that changes files copies it first.
    """
    from audience.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("small") / "demo", seed=0, n_subjects=60)


# ---------------------------------------------------------------- the fast tier's CPU budget
#
# `make test-fast` (-m "not slow and not browser") is the inner loop: each of its tests must stay small. A test
# without the slow or browser mark that uses more CPU time than the budget (setup, call and teardown together,
# this process and the subprocesses it waited for) fails at teardown with a sentence saying so, so a training
# run or a server start that creeps into the fast tier is noticed. CPU time, not wall time: the machine's load
# stretches wall time, hardly CPU time. `--cpu-budget 0` switches the check off; the summary lists the tests
# that used the most CPU time either way.

import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

# The biggest fast tests (an app.py subprocess) took 8 s at load 16; the 15-epoch demo run they once shared, 218 s
# (docs/measurements.md, "Test tiers").
CPU_BUDGET_S = 15.0
_cpu_used: dict[str, tuple[float, float]] = {}  # nodeid -> (CPU seconds, wall seconds)
_started: dict[str, tuple[float, float]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cpu-budget", type=float, default=None,
                     help=f"CPU seconds a test without the slow or browser mark may use (default {CPU_BUDGET_S}; "
                          "0: no check)")


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _children_cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


# A subprocess's CPU time is counted when it is reaped. A module's server (a module-scoped fixture) is reaped in
# the teardown of the module's last test, which would be charged the server's whole life: the subprocesses that
# end during a test's teardown are left out of its figure (its own CPU there still counts).
_teardown_children: dict[str, float] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _teardown_children[item.nodeid] = _children_cpu_seconds()


def _budget(config: pytest.Config) -> float:
    value = config.getoption("--cpu-budget")
    return CPU_BUDGET_S if value is None else value


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _started[item.nodeid] = (_cpu_seconds(), time.perf_counter())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if call.when != "teardown" or item.nodeid not in _started:
        return
    cpu0, wall0 = _started.pop(item.nodeid)
    cpu, wall = _cpu_seconds() - cpu0, time.perf_counter() - wall0
    if item.nodeid in _teardown_children:
        cpu -= _children_cpu_seconds() - _teardown_children.pop(item.nodeid)
    _cpu_used[item.nodeid] = (cpu, wall)
    budget = _budget(item.config)
    marked = item.get_closest_marker("slow") or item.get_closest_marker("browser")
    if budget > 0 and not marked and cpu > budget and report.passed:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} used {cpu:.1f} s of CPU time ({wall:.1f} s wall), more than the fast "
                           f"tier's budget of {budget:g} s: make it smaller (a few batches, a shared fixture) or "
                           "mark it @pytest.mark.slow (--cpu-budget 0 switches this check off).")


# gradio_client (2.x, Endpoint._download_file) downloads each result file into <tempdir>/<40 hex digits>/ and
# moves it on, leaving that folder behind empty: about a hundred folders a run, none ever removed. The session
# removes the empty ones made while it ran (rmdir leaves alone a folder that holds anything).
_SESSION_STARTED = time.time()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import re
    import tempfile

    for folder in Path(tempfile.gettempdir()).iterdir():
        try:
            if re.fullmatch("[0-9a-f]{40}", folder.name) and folder.stat().st_mtime >= _SESSION_STARTED:
                folder.rmdir()
        except OSError:  # not empty, not a folder, or gone
            pass


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    if not _cpu_used:
        return
    top = sorted(_cpu_used.items(), key=lambda entry: -entry[1][0])[:15]
    terminalreporter.section("most CPU time per test (setup + call + teardown; subprocesses not reaped at teardown)")
    for nodeid, (cpu, wall) in top:
        terminalreporter.write_line(f"{cpu:8.2f}s CPU {wall:8.2f}s wall  {nodeid}")
    total = sum(cpu for cpu, _ in _cpu_used.values())
    try:  # every test's figures, for whoever sizes the tiers
        from fixtures.app_server import artifacts_dir

        out = artifacts_dir() / "test-cpu.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"load_average_at_end": os.getloadavg(), "tests": {
            nodeid: {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3)} for nodeid, (cpu, wall) in _cpu_used.items()}},
            indent=1), encoding="utf-8")
    except (OSError, ImportError):  # no artifacts folder, or this conftest copied elsewhere (tests/test_tiers.py)
        pass
    terminalreporter.write_line(f"{total:8.2f}s CPU in all over {len(_cpu_used)} tests; load average "
                                f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} at the end")
