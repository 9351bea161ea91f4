"""The app as a whole: what it keeps and for how long."""

from __future__ import annotations


def test_uploads_are_deleted_after_a_short_time(monkeypatch):
    import app

    monkeypatch.setenv("AUDIENCE_KEEP_FILES_S", "120")
    assert app.build_demo().delete_cache == (60, 120)  # every minute, files older than two minutes
    monkeypatch.setenv("AUDIENCE_KEEP_FILES_S", "forever")
    assert app.build_demo().delete_cache == (60, 600)


def test_pyplot_is_imported_before_any_event_runs():
    """gradio's matplotlib.use() around each event fails while a handler or training thread is half-way
    through importing pyplot (mediapipe's vision package does); the UI imports it first, in one thread."""
    import subprocess
    import sys

    code = ("import sys; import audience.ui.train; "
            "print('matplotlib.pyplot' in sys.modules, 'mediapipe.tasks.python.vision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["True", "False"], done.stderr[-2000:]
