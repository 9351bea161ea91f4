"""scripts/predict.py on folders mixing good and broken files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.checkpoints import save_tiny_checkpoint
from fixtures.waiting import HANG_S
from PIL import Image

from audience.model.catalog import find_default_checkpoint, save_default_choice

data = pytest.importorskip("skimage.data")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = PROJECT_ROOT / "scripts" / "predict.py"


def save_tiny(folder: Path, task: str = "age+gender", synthetic: bool = True) -> Path:
    return save_tiny_checkpoint(folder, f"tiny-{task.replace('+', '-')}",
                                {"dataset": {"name": "demo", "synthetic": synthetic}}, task)


def load_cli():
    from audience.cli import predict

    return predict


@pytest.fixture(scope="module")
def cli():
    return load_cli()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture()
def mixed_folder(tmp_path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    astronaut = data.astronaut()
    Image.fromarray(astronaut).save(folder / "astronaut.jpg", quality=90)
    Image.fromarray(astronaut[40:260, 140:320]).save(folder / "sub" / "crop.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image\n")
    Image.new("RGB", (200, 150), (90, 140, 200)).save(folder / "sky.jpg")
    (folder / "readme.txt").write_text("ignored: not an image extension\n")
    return folder


def test_json_lines_for_a_mixed_folder(cli, checkpoint, mixed_folder, tmp_path, capsys):
    out = tmp_path / "annotated"
    code = cli.main([str(mixed_folder), "--checkpoint", str(checkpoint), "--json", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1  # two inputs are not images: the others are answered, the exit status says some failed
    assert captured.err.rstrip().splitlines()[-1] == ("error: 2 of 5 images could not be read (see the lines above); "
                                                      "the others were predicted.")
    records = [json.loads(line) for line in captured.out.splitlines()]
    by_name = {Path(r["image"]).name: r for r in records}
    assert sorted(by_name) == ["astronaut.jpg", "crop.png", "empty.jpg", "notes.jpg", "sky.jpg"]
    assert "empty" in by_name["empty.jpg"]["error"] and "notes.jpg" in by_name["notes.jpg"]["error"]
    faces = by_name["astronaut.jpg"]["faces"]
    assert len(faces) == 1
    assert set(faces[0]) >= {"box", "score", "age", "gender"} and len(faces[0]["age"]["probs"]) == 8
    assert by_name["sky.jpg"]["faces"] == []
    assert "sky.jpg" in captured.err and "whole-image" in captured.err  # the no-face hint goes to stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == ["astronaut.jpg", "crop.jpg", "sky.jpg"]
    assert Image.open(out / "astronaut.jpg").size == (512, 512)


def test_human_output_and_whole_image(cli, checkpoint, mixed_folder, capsys):
    code = cli.main([str(mixed_folder / "sub" / "crop.png"), "--checkpoint", str(checkpoint), "--whole-image", "--tta"])
    out = capsys.readouterr().out
    assert code == 0
    assert "crop.png: 1 face" in out and "age " in out and "gender " in out


def test_the_face_cap_is_reported_and_can_be_raised(cli, checkpoint, group_photo, tmp_path, capsys):
    photo = tmp_path / "group.png"  # made from ../shared at test time, deleted with tmp_path
    Image.fromarray(group_photo).save(photo)
    assert cli.main([str(photo), "--checkpoint", str(checkpoint), "--json"]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert len(record["faces"]) == 20 and record["faces_found"] == 25
    assert record["note"] == "20 of at least 25 faces shown (the largest); raise --max-faces to see the rest."
    assert "20 of at least 25 faces shown" in captured.err  # the JSON's readers and people both hear it
    assert cli.main([str(photo), "--checkpoint", str(checkpoint), "--max-faces", "30"]) == 0
    out = capsys.readouterr().out
    assert "group.png: 25 faces\n" in out and "face 25:" in out and "faces shown" not in out
    for bad in ("0", "abc", "100000"):
        with pytest.raises(SystemExit) as stopped:
            cli.main([str(photo), "--max-faces", bad])
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert "--max-faces" in err and "Traceback" not in err


def test_all_broken_exits_1_and_missing_path_exits_2(cli, checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert cli.main([str(broken), "--checkpoint", str(checkpoint), "--json"]) == 1
    assert "error" in json.loads(capsys.readouterr().out)
    assert cli.main([str(tmp_path / "nope.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.jpg" in err and "Traceback" not in err
    bad_checkpoint = tmp_path / "bad.json"
    bad_checkpoint.write_text("{not json")
    assert cli.main([str(broken), "--checkpoint", str(bad_checkpoint)]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_default_checkpoint_is_the_chosen_or_a_real_shipped_one(cli, tmp_path, monkeypatch, mixed_folder, capsys):
    """The default is the user's stored choice, else a real-data model of the shipped folder (the one marked
    `shipped` first), never a synthetic model nobody chose however new it is; without one: detection only."""
    monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(tmp_path / "none-here"))
    monkeypatch.setenv("AUDIENCE_MODELS", str(tmp_path / "models"))
    assert find_default_checkpoint() is None
    assert cli.main([str(mixed_folder / "astronaut.jpg"), "--json", "--detector", "haar"]) == 0
    captured = capsys.readouterr()
    assert "No trained model" in captured.err
    face = json.loads(captured.out)["faces"][0]
    assert face["age"] is None and face["score"] is not None
    folder = tmp_path / "ckpts"
    folder.mkdir()
    (folder / "notes.json").write_text('{"not": "a checkpoint"}')
    real = save_tiny(folder, task="age", synthetic=False)
    monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(folder))
    assert find_default_checkpoint() == real
    synthetic = save_tiny(tmp_path / "models", synthetic=True)  # newer, in the user's folder: not the default
    save_tiny(folder, task="gender", synthetic=True)  # newer, in the shipped folder: not the default either
    assert find_default_checkpoint() == real
    save_default_choice(synthetic.name)  # the user chose it: now it is, and the script says it is synthetic
    assert find_default_checkpoint() == synthetic
    assert cli.main([str(mixed_folder / "astronaut.jpg"), "--json", "--detector", "haar"]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint: {synthetic}" in err
    assert "synthetic demo data" in err and "it is the default model because you chose it" in err
    (tmp_path / "models" / ".default-model.json").write_text("{" * 10_000)  # a damaged choice: ignored
    assert find_default_checkpoint() == real
    save_default_choice("gone.json")  # a chosen model that was deleted: the rule applies again
    assert find_default_checkpoint() == real


@pytest.mark.slow
def test_script_runs_from_the_project_root(checkpoint, mixed_folder):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(mixed_folder / "astronaut.jpg"), "--checkpoint", str(checkpoint), "--json"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=HANG_S,
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["faces"]) == 1


@pytest.mark.slow
def test_predict_benchmark_times_models_and_peer_on_the_same_images(tmp_path):
    from audience.bench.predict_latency import run_predict_benchmark

    folder = tmp_path / "bench"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "astronaut.jpg")
    lines = []
    result = run_predict_benchmark(folder, repeat=2, archs=("tiny",), log=lines.append)
    assert result["tiny"]["calls"] == 2 and result["tiny"]["faces"] == 2
    assert 0 < result["tiny"]["p50_ms"] <= result["tiny"]["p95_ms"]
    assert result["tiny"]["detect_p50_ms"] > 0 and result["tiny"]["classify_p50_ms"] > 0
    assert result["peer"]["calls"] == 2 and result["peer"]["p50_ms"] > 0
    assert result["images"] == 1 and result["threads"] >= 1 and "random-init" in lines[0]
    json.dumps(result)


def test_json_probabilities_carry_their_class_names(cli, checkpoint, mixed_folder, capsys):
    from audience.labels import AGE_CLASSES, GENDER_CLASSES

    assert cli.main([str(mixed_folder / "astronaut.jpg"), "--checkpoint", str(checkpoint), "--json"]) == 0
    face = json.loads(capsys.readouterr().out.splitlines()[0])["faces"][0]
    assert list(face["age"]["probs"]) == list(AGE_CLASSES) and list(face["gender"]["probs"]) == list(GENDER_CLASSES)
    assert all(isinstance(value, float) for value in face["age"]["probs"].values())
