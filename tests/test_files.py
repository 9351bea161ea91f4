"""The one atomic writer: whole files or none, fsynced, one file mode for every artefact."""

from __future__ import annotations

import stat

import pytest

from audience import files


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_each_writer_replaces_the_file_whole_with_one_mode(tmp_path):
    files.write_json_atomic(tmp_path / "new" / "a.json", {"a": 1})  # makes the folder
    files.write_text_atomic(tmp_path / "b.txt", "text")
    files.write_bytes_atomic(tmp_path / "c.bin", b"\x00\x01")
    with files.atomic_path(tmp_path / "d.csv") as temp:
        temp.write_text("x\n1\n")
    written = [tmp_path / "new" / "a.json", tmp_path / "b.txt", tmp_path / "c.bin", tmp_path / "d.csv"]
    assert [_mode(path) for path in written] == [files.FILE_MODE] * 4 == [0o644] * 4
    assert (tmp_path / "new" / "a.json").read_text() == '{\n  "a": 1\n}\n'
    assert (tmp_path / "d.csv").read_text() == "x\n1\n"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    files.write_json_atomic(target, {"a": 1})
    with pytest.raises(ValueError):
        files.write_json_atomic(target, {"a": float("nan")})
    with pytest.raises(RuntimeError), files.atomic_path(target) as temp:
        temp.write_text("half")
        raise RuntimeError("writer failed")
    with pytest.raises(OSError):
        files.write_temp_beside(target, lambda temp: (_ for _ in ()).throw(OSError("disk full")))
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_checkpoints_and_run_files_come_out_with_the_same_mode(tmp_path):
    from audience.model.checkpoint import save_checkpoint
    from audience.model.network import build_model
    from audience.train.runs import write_epochs

    weights = save_checkpoint(tmp_path / "best", build_model("tiny", pretrained=False), {"fold": 0})
    csv = write_epochs(tmp_path / "metrics.csv", [{"epoch": 1, "train_loss": 1.0}])
    assert {_mode(path) for path in (weights, weights.with_suffix(".json"), csv)} == {0o644}
