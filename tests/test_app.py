"""The app as a whole: what it keeps and for how long."""

from __future__ import annotations


def test_uploads_are_deleted_after_a_short_time(monkeypatch):
    import app

    monkeypatch.setenv("AUDIENCE_KEEP_FILES_S", "120")
    assert app.build_demo().delete_cache == (60, 120)  # every minute, files older than two minutes
    monkeypatch.setenv("AUDIENCE_KEEP_FILES_S", "forever")
    assert app.build_demo().delete_cache == (60, 600)
