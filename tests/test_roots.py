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


@pytest.mark.parametrize("text", ["/proc/self/fd/1", "/proc/self/cwd", "/proc/self/exe", "~", "~/", "/proc/1/cwd",
                                  "/proc/self/root", "{tree}/allowed/escape", "{tree}/allowed/../outside"])
def test_refusals_quote_the_typed_text_never_where_it_leads(tree, text):
    """A public server's refusal must not tell a visitor the log's path, the working folder, the Python
    executable, the home folder or where a link leads (issue 20 item 8)."""
    import os
    import sys

    typed = text.format(tree=tree)
    with pytest.raises(AudienceError) as refused:
        resolve_data_root(typed, allowed=[tree / "allowed"])
    message = str(refused.value)
    assert message.startswith(f"Data root {typed} is not under a folder the app may open") or (
        message.startswith(f"{typed}: data root cannot be opened"))  # /proc/1/cwd: permission denied
    try:
        target = os.path.realpath(os.path.expanduser(typed))
    except OSError:
        target = "/"
    leaks = {target, os.getcwd(), sys.executable, os.path.expanduser("~"), str(tree / "allowed"),
             str(tree / "outside")} - {"/"}
    rest = message.replace(typed, "")
    assert not [leak for leak in leaks if leak in rest], message


def test_a_missing_root_is_named_as_typed(tree):
    (tree / "allowed" / "gone").symlink_to(tree / "allowed" / "nowhere")
    for typed in (f"{tree}/allowed/gone", f"{tree}/allowed/root/../gone"):
        with pytest.raises(AudienceError, match="data root not found") as refused:
            resolve_data_root(typed, allowed=[tree / "allowed"])
        assert str(refused.value).startswith(f"{typed}: ") and "nowhere" not in str(refused.value)


@pytest.mark.parametrize(("env", "server_name", "share", "public"), [
    ({}, "127.0.0.1", False, False), ({}, "localhost", False, False), ({}, "::1", False, False),
    ({}, None, False, False), ({"GRADIO_SERVER_NAME": "0.0.0.0"}, None, False, True),
    ({}, "0.0.0.0", False, True), ({}, "192.168.1.5", False, True), ({}, "127.0.0.1", True, True),
    ({"SPACE_ID": "someone/audience"}, "127.0.0.1", False, True),
    # allowing training on a public server does not open its folders
    ({"AUDIENCE_ALLOW_TRAINING": "1"}, "0.0.0.0", False, True),
])
def test_local_runs_open_any_folder_public_ones_keep_the_allow_list(monkeypatch, tree, env, server_name, share,
                                                                     public):
    from audience import settings

    for name in ("GRADIO_SERVER_NAME", "SPACE_ID", "AUDIENCE_ALLOW_TRAINING"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert (settings.public_deployment(server_name, share) is not None) is public
    allowed = settings.data_dirs_for(server_name, share)
    assert (allowed is not None) is public
    outside = str(tree / "outside")
    if public:
        with pytest.raises(AudienceError, match="not under a folder the app may open"):
            resolve_data_root(outside, allowed=allowed)
    else:
        assert resolve_data_root(outside, allowed=allowed) == tree / "outside"
