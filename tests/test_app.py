"""The app as a whole: what it keeps and for how long."""

from __future__ import annotations

from fixtures.waiting import HANG_S


def test_uploads_are_deleted_after_a_short_time(monkeypatch):
    import app

    monkeypatch.setenv("AUDIENCE_KEEP_FILES_S", "120")
    assert app.build_demo().delete_cache == (60, 120)  # every minute, files older than two minutes
    monkeypatch.setenv("AUDIENCE_KEEP_FILES_S", "forever")
    assert app.build_demo().delete_cache == (60, 600)


def test_a_foreign_demo_folder_stops_the_app_with_one_sentence(tmp_path):
    """A non-empty demo folder that holds something else is never overwritten: the app says so and exits."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    home = tmp_path / "home"
    (home / "demo-data").mkdir(parents=True)
    (home / "demo-data" / "notes.txt").write_text("mine")
    env = {**os.environ, "AUDIENCE_HOME": str(home), "GRADIO_SERVER_PORT": "1"}
    env.pop("AUDIENCE_DATA", None)
    app_py = Path(__file__).resolve().parents[1] / "app.py"
    done = subprocess.run([sys.executable, str(app_py)], env=env, capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("Audience cannot start:") and "demo-data" in done.stderr
    assert (home / "demo-data" / "notes.txt").read_text() == "mine"


def test_pyplot_is_imported_before_any_event_runs():
    """gradio's matplotlib.use() around each event fails while a handler or training thread is half-way
    through importing pyplot (mediapipe's vision package does); the UI imports it first, in one thread."""
    import subprocess
    import sys

    code = ("import sys; import audience.ui.train; "
            "print('matplotlib.pyplot' in sys.modules, 'mediapipe.tasks.python.vision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["True", "False"], done.stderr[-2000:]
