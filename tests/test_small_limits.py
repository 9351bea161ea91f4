"""The smaller holes of the hostile round (issue 20, item 10): over raw HTTP and the command line.

A path too long once made absolute, a 2 MB number echoed back whole, a pipe given as a photo, a report
written over a device node, a full disk met by safetensors rather than Python's own files, and command-line
numbers that make no sense (a batch of 0, a NaN tolerance, opset 0): each gets one sentence and changes
nothing on disk.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from fixtures.app_server import PROJECT_ROOT
from test_api_inputs import call_named, server  # noqa: F401 - the shared public-shaped server fixture
from test_bad_inputs import call_raw, sse_data
from test_train import tiny_config

from audience.errors import QUOTE_LIMIT, AudienceError
from audience.files import check_replaceable, write_text_atomic
from audience.inputs import ABSOLUTE_LIMIT, check_path

SCRIPTS = PROJECT_ROOT / "scripts"
# 16 folder names of 254 characters: every part is a legal name and the text is under PATH_MAX, but the
# path made absolute is not (it once met ENAMETOOLONG inside the reader: "internal error")
LONG_PARTS = "/".join(["a" * 254] * 16)
DEEP_RUN_ID = "x/" * 2039 + "y"  # 4,079 characters, no part too long


def run_script(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("text", [LONG_PARTS, DEEP_RUN_ID])
def test_a_path_too_long_once_absolute_gets_a_sentence(text):
    with pytest.raises(AudienceError, match=f"Data root is too long: a path may have at most {ABSOLUTE_LIMIT:,} bytes"):
        check_path(text, "Data root")
    with pytest.raises(AudienceError, match="Run id is too long"):
        check_path(text, "Run id", base="/" + "b" * 200)
    assert check_path("~/photos", "Data root") == "~/photos"


def test_long_paths_and_huge_numbers_over_raw_http(server):  # noqa: F811 - the fixture imported above
    for data in (LONG_PARTS, DEEP_RUN_ID):
        message = call_named(server, "train_start", arch="tiny", folds="0", data=data)[0]
        assert message.startswith("**Not started:** data is too long: a path may have at most"), message[:300]
    message = sse_data(call_raw(server, "train_resume", [DEEP_RUN_ID, "one GPU"]))[0]
    assert message.startswith("**Not started:** Run id is too long"), message[:300]
    summary = call_named(server, "eda", root=LONG_PARTS, images="none")[0]
    assert "Data root is too long" in summary.replace("\\", ""), summary[:300]
    huge = "1" * 2_000_000  # a 2 MB number: the answer quotes at most QUOTE_LIMIT characters of it
    message = call_named(server, "train_start", arch="tiny", folds="0", data="demo", epochs=huge)[0]
    assert message.startswith("**Not started:** epochs must be"), message[:300]
    assert len(message) < QUOTE_LIMIT + 200, len(message)
    # a value outside a choice list is refused by gradio before the app runs: its sentence is bounded too
    answer = call_raw(server, "train_resume", ["x" * 2_000_000, "y" * 2_000_000])
    assert "event: error" in answer and "a value outside the choices" in answer, answer[:300]
    assert len(answer) < 2 * QUOTE_LIMIT + 400, len(answer)
    assert server.alive()


@pytest.mark.slow
def test_predict_cli_does_not_wait_on_a_pipe(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    result = run_script("predict.py", str(fifo), "--json", timeout=120)  # it used to block on open() for ever
    assert result.returncode != 0
    assert "is not a regular file (a pipe, a device or a socket)" in result.stdout + result.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_the_atomic_writer_replaces_only_regular_files(tmp_path):
    fifo, folder, target, link = tmp_path / "pipe", tmp_path / "folder", tmp_path / "target.txt", tmp_path / "link"
    os.mkfifo(fifo)
    folder.mkdir()
    target.write_text("old")
    link.symlink_to(target)
    for path, kind in ((fifo, "a pipe"), (folder, "a folder"), (link, "a symbolic link")):
        with pytest.raises(AudienceError, match=f"it is {kind}, and only a new or regular file is replaced"):
            write_text_atomic(path, "report")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and folder.is_dir() and link.is_symlink()
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["pipe", "folder", "target.txt", "link"])  # no temp file left behind
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert check_replaceable(tmp_path / "new.txt") == tmp_path / "new.txt"


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/full"), reason="replacing a device node needs root")
def test_eda_report_over_a_device_node_is_refused():
    """As root, a rename over /dev/full replaced the device with the report; now it is refused and kept."""
    before = os.stat("/dev/full")
    assert stat.S_ISCHR(before.st_mode)
    result = run_script("eda.py", "--data", "demo", "--out", "/dev/full", "--images", "none")
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev, "/dev/full was replaced"
    assert result.returncode == 2, result.stderr[-500:]
    assert "Cannot write /dev/full: it is a device" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("script", "args", "sentence"), [
    ("evaluate.py", ["checkpoints/utkface-mobilenetv3.json", "--data", "demo", "--batch-size", "0"],
     "argument --batch-size: must be from 1 to 1024, not 0"),
    ("export_onnx.py", ["checkpoints/utkface-mobilenetv3.json", "--tolerance", "nan"],
     "argument --tolerance: must be a positive finite number, not 'nan'"),
    ("export_onnx.py", ["checkpoints/utkface-mobilenetv3.json", "--tolerance", "inf"],
     "argument --tolerance: must be a positive finite number, not 'inf'"),
])
def test_senseless_command_line_numbers_get_a_sentence(script, args, sentence):
    result = run_script(script, *args)
    assert result.returncode == 2 and sentence in result.stderr, result.stderr[-500:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_onnx_opset_the_exporter_cannot_write_is_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    result = run_script("export_onnx.py", "checkpoints/utkface-mobilenetv3.json", "--opset", "0", "--out", str(out))
    assert result.returncode == 2, result.stderr[-500:]
    assert "--opset must be a whole number from 18 to 23 for the dynamo exporter, not 0." in result.stderr
    assert not out.exists()


def test_a_full_disk_met_by_safetensors_fails_the_run_with_a_sentence(small_root, tmp_path, monkeypatch):
    """safetensors says "No space left on device (os error 28)" in a SafetensorError, not an OSError: the run
    ended in "internal error" instead of the disk-full sentence and its resume hint."""
    import json

    from audience.train import cross_validate as cv_module
    from audience.train import fold as fold_module
    from audience.train.cross_validate import cross_validate

    real, calls = fold_module.save_checkpoint, []

    def full_on_the_second_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(*args, **kwargs)

    monkeypatch.setattr(fold_module, "save_checkpoint", full_on_the_second_save)
    with pytest.raises(AudienceError, match="The disk is full: a file of the run could not be written.*--resume"):
        cross_validate(tiny_config(small_root, tmp_path, epochs=3))
    run_dir = next((tmp_path / "runs").iterdir())
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "disk is full" in status["message"]
    assert cv_module.is_disk_full(RuntimeError("boom"), tmp_path) is False  # a bug stays a bug
