"""Data roots typed into a public deployment (GRADIO_SERVER_NAME=0.0.0.0), over raw HTTP: only the allowed
folders open, and no refusal tells a visitor where a typed path leads (issue 20 item 8, issue 21 item 1).

A local run opens any folder (tests/test_roots.py, tests/test_eda.py); this server is started the way a
public deployment is, with training allowed so that /train_start reaches its data-root check.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest
from fixtures.app_server import PROJECT_ROOT, settle_job, shared_app_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def public_server(request, tmp_path_factory, demo_root):
    """The session's public deployment (0.0.0.0, training allowed), shared with test_budgets.py."""
    return shared_app_server(request, tmp_path_factory, demo_root, public=True)


def call(server, api_name: str, **values) -> list:
    """A raw call naming the parameters it sets; the rest take the defaults the API states (/gradio_api/info)."""
    info = httpx.get(server.url + "gradio_api/info", timeout=30).json()["named_endpoints"]["/" + api_name]
    data = [values.pop(p["parameter_name"]) if p["parameter_name"] in values else p.get("parameter_default")
            for p in info["parameters"]]
    assert not values, f"/{api_name} has no parameter {sorted(values)}"
    started = httpx.post(server.url + f"gradio_api/call/{api_name}", json={"data": data}, timeout=30)
    started.raise_for_status()
    stream = httpx.get(server.url + f"gradio_api/call/{api_name}/{started.json()['event_id']}", timeout=120).text
    lines = [line for line in stream.splitlines() if line.startswith("data:")]
    assert stream.startswith("event: complete") and lines, stream
    return json.loads(lines[-1][len("data:"):])


def server_paths(server) -> set[str]:
    """Paths a visitor must not learn: the log (/proc/self/fd/1), the working folder, the Python, the home,
    the server's own folders, where the test's links lead."""
    return {str(server.log), str(PROJECT_ROOT), sys.executable, os.path.realpath(sys.executable),
            str(Path.home()), str(server.home), str(server.outside), str(server.data_dirs), "/etc"}


def test_a_public_server_opens_only_allowed_roots_and_echoes_what_was_typed(public_server, demo_root):
    server = public_server
    outside_root = server.outside / "adience"
    outside_root.mkdir(exist_ok=True)
    for fold_file in demo_root.glob("fold_*_data.txt"):
        (outside_root / fold_file.name).write_bytes(fold_file.read_bytes())
    for name, target in {"link-out": outside_root, "link-etc": Path("/etc")}.items():
        if not (server.data_dirs / name).is_symlink():
            (server.data_dirs / name).symlink_to(target, target_is_directory=True)
    typed_roots = ["/proc/self/fd/1", "/proc/self/cwd", "/proc/self/exe", "~", "~/", "/proc/1/cwd",
                   f"/proc/{server.process.pid}/cwd", "/etc", "../..", str(outside_root),
                   str(server.data_dirs / "link-out"), str(server.data_dirs / "link-etc"),
                   str(server.data_dirs / ".." / "outside" / "adience")]
    for typed in typed_roots:
        summary, *charts, noise, grid = call(server, "eda", root=typed, policy="bins", images="none")
        summary = summary.replace("\\", "")
        assert summary.startswith("**Could not load the data:**") and typed in summary, (typed, summary)
        assert "rows (faces)" not in summary and not noise["data"] and grid is None
        # what the typed text resolves to, and the server's own folders, appear nowhere in the answer
        rest = summary.replace(typed, "")
        assert not [path for path in server_paths(server) if path in rest], (typed, summary)
        assert all(chart is None or chart.get("value") is None for chart in charts), typed
        message = call(server, "train_start", data=typed, arch="tiny", folds="0", epochs=1)[0]
        assert message.startswith("**Not started:**") and typed in message, (typed, message)
        rest = message.replace(typed, "")
        assert not [path for path in server_paths(server) if path in rest], (typed, message)
    # a run id that leads out of the runs folder is refused without naming where the runs folder is
    for run_id in ("../../etc", "/proc/self/cwd", "~"):
        message = call(server, "train_resume", run_id=run_id)[0]
        assert message.startswith("**Not started:**") and str(server.runs) not in message, message
    # an allowed root opens, and its summary names it as typed, not where it resolves to
    inside = server.data_dirs / "demo-copy"
    if not inside.exists():
        inside.symlink_to(server.home / "demo-data", target_is_directory=True)
    summary = call(server, "eda", root=str(inside), policy="bins", images="none")[0]
    assert "rows (faces)" in summary and str(server.home) not in summary
    settle_job(server)
    assert server.alive()
