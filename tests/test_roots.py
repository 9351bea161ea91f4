"""The one data-root resolver: the demo keyword, ~, symlinks resolved before the allow-list check."""

from __future__ import annotations

import pytest

from audience.data.roots import is_demo_root, resolve_data_root
from audience.errors import AudienceError


@pytest.fixture()
def tree(tmp_path):
    (tmp_path / "allowed" / "root").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "allowed" / "escape").symlink_to(tmp_path / "outside")
    (tmp_path / "link-to-allowed").symlink_to(tmp_path / "allowed")
    return tmp_path


def test_paths_inside_the_allowed_folders_resolve(tree, monkeypatch):
    allowed = [tree / "allowed"]
    assert resolve_data_root(str(tree / "allowed" / "root"), allowed=allowed) == (tree / "allowed" / "root")
    assert resolve_data_root(f"  {tree / 'allowed'}  ", allowed=allowed) == tree / "allowed"  # the folder itself
    # a symlink *to* an allowed folder, as the root or as the allowed folder, resolves to the same place
    assert resolve_data_root(str(tree / "link-to-allowed" / "root"), allowed=allowed) == tree / "allowed" / "root"
    assert resolve_data_root(str(tree / "allowed" / "root"), allowed=[tree / "link-to-allowed"]) == (
        tree / "allowed" / "root")
    monkeypatch.setenv("HOME", str(tree))
    assert resolve_data_root("~/allowed/root", allowed=["~/allowed"]) == tree / "allowed" / "root"


@pytest.mark.parametrize("text", ["{tree}/outside", "{tree}/allowed/escape", "{tree}/allowed/root/../../outside",
                                  "/etc", "~"])
def test_paths_that_lead_out_are_refused(tree, monkeypatch, text):
    monkeypatch.setenv("HOME", str(tree))
    with pytest.raises(AudienceError, match="not under a folder the app may open"):
        resolve_data_root(text.format(tree=tree), allowed=[tree / "allowed"])
    with pytest.raises(AudienceError, match="not under a folder"):
        resolve_data_root(text.format(tree=tree), allowed=[])


def test_without_an_allow_list_any_existing_folder_is_accepted(tree):
    assert resolve_data_root(str(tree / "allowed" / "escape")) == tree / "outside"
    with pytest.raises(AudienceError, match="data root not found: it does not exist"):
        resolve_data_root(str(tree / "missing"))
    (tree / "file").write_text("x")
    with pytest.raises(AudienceError, match="not a folder"):
        resolve_data_root(str(tree / "file"))
    for empty in ("", "   "):
        with pytest.raises(AudienceError, match="enter a data root"):
            resolve_data_root(empty)


def test_the_demo_keyword_is_the_demo_set_even_with_an_allow_list(demo_root, monkeypatch):
    monkeypatch.setenv("AUDIENCE_HOME", str(demo_root.parent))
    assert [is_demo_root(text) for text in ("demo", " DEMO ", "demo/", "")] == [True, True, False, False]
    assert resolve_data_root("demo", allowed=[]) == demo_root.resolve()
    assert resolve_data_root(" Demo ") == demo_root.resolve()
