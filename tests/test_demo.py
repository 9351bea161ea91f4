"""The synthetic demo dataset: Adience layout, fold rules, label noise, determinism, safety, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from audience import settings
from audience.cli import make_demo_data
from audience.data.adience import DEMO_MARKER, FOLD_COLUMNS, N_FOLDS, fold_file, read_adience
from audience.data.demo import DEFAULT_SUBJECTS, DEMO_VERSION, GENERATOR, ensure_demo_dataset, make_demo_dataset
from audience.errors import AudienceError
from audience.labels import AGE_CLASSES, CANONICAL_AGES, NO_CLASS

NOISE_STRINGS = ("None", "(27, 32)", "(25, 23)", "(38, 42)", "(38, 48)", "(8, 23)", "2", "23", "35")


@pytest.fixture(scope="module")
def demo(demo_root: Path):
    return read_adience(demo_root)


def _image_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "aligned").rglob("*.jpg"))}


def test_reads_as_a_synthetic_adience_root(demo):
    assert demo.synthetic is True
    assert demo.name == "audience-demo"
    assert demo.images == "aligned"
    assert demo.missing_images == 0
    assert sorted(demo.faces["fold"].unique()) == list(range(N_FOLDS))


def test_size_is_about_a_thousand_images_of_250_subjects(demo):
    faces = demo.faces
    assert 800 <= len(faces) <= 1200
    assert faces["subject"].nunique() == DEFAULT_SUBJECTS == 250
    per_subject = faces.groupby("subject").size()
    assert per_subject.min() >= 2 and per_subject.max() <= 6
    per_album = faces.groupby("user_id")["face_id"].nunique()
    assert per_album.min() >= 1 and per_album.max() <= 4
    assert faces["user_id"].str.fullmatch(r"demo\d{4}@N0\d").all()


def test_folds_are_subject_exclusive_and_each_holds_every_class(demo):
    faces = demo.faces
    assert (faces.groupby("user_id")["fold"].nunique() == 1).all()
    sizes = faces.groupby("fold").size()
    assert sizes.max() <= 1.5 * sizes.min()
    for fold, rows in faces.groupby("fold"):
        assert set(range(len(AGE_CLASSES))) <= set(rows["age_class"]), f"fold {fold} lacks an age class"
        assert {0, 1} <= set(rows["gender_class"]), f"fold {fold} lacks f or m"


def test_fold_files_have_the_adience_header_and_plausible_numbers(demo_root: Path):
    for fold in range(N_FOLDS):
        lines = fold_file(demo_root, fold).read_text(encoding="utf-8").splitlines()
        assert lines[0] == "\t".join(FOLD_COLUMNS)
        for line in lines[1:]:
            cells = line.split("\t")
            assert len(cells) == len(FOLD_COLUMNS)
            x, y, dx, dy, tilt, yaw, score = (int(v) for v in cells[5:])
            assert x >= 0 and y >= 0 and 100 <= dx <= 1500 and abs(dy - dx) <= 1
            assert -30 <= tilt <= 30 and yaw in (-30, -15, 0, 15, 30) and 0 <= score < 150


def test_images_are_128_px_rgb_jpegs(demo):
    for path in demo.faces["path"].iloc[::25]:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (128, 128)
            pixels = np.asarray(image)
        assert pixels.std() > 10  # a drawing, not a blank


def test_raw_labels_carry_real_kinds_of_noise(demo):
    faces = demo.faces
    raw = set(faces["age_raw"])
    assert set(CANONICAL_AGES) <= raw
    assert set(NOISE_STRINGS) <= raw
    assert (faces["age_class"] == NO_CLASS).any()
    assert (faces["gender_raw"] == "").any() and (faces["gender_class"] == NO_CLASS).any()
    unknown = faces[faces["gender_raw"] == "u"]
    assert len(unknown) and (unknown["age_class"].isin([0, 1, NO_CLASS])).all()
    assert (unknown["age_class"] == 0).mean() > 0.5  # as in the real files, mostly babies
    assert (faces["age_raw"].isin(CANONICAL_AGES)).mean() > 0.75


def test_noisy_labels_never_contradict_the_drawn_class(demo):
    labelled = demo.faces[demo.faces["age_class"] != NO_CLASS]
    assert (labelled.groupby("subject")["age_class"].nunique() == 1).all()
    genders = demo.faces[demo.faces["gender_class"].isin([0, 1])]
    assert (genders.groupby("subject")["gender_class"].nunique() == 1).all()


def test_marker_says_synthetic_and_how_it_was_made(demo_root: Path):
    marker = json.loads((demo_root / DEMO_MARKER).read_text(encoding="utf-8"))
    assert marker["name"] == "audience-demo" and marker["synthetic"] is True
    assert marker["seed"] == 0 and marker["generator"] == GENERATOR and marker["version"] == DEMO_VERSION
    assert marker["images"] == len(list((demo_root / "aligned").rglob("*.jpg")))


def test_same_seed_gives_the_same_bytes_and_another_seed_differs(demo_root: Path, tmp_path: Path):
    again = make_demo_dataset(tmp_path / "again", seed=0)
    for fold in range(N_FOLDS):
        assert fold_file(again, fold).read_bytes() == fold_file(demo_root, fold).read_bytes()
    assert _image_bytes(again) == _image_bytes(demo_root)
    assert (again / DEMO_MARKER).read_bytes() == (demo_root / DEMO_MARKER).read_bytes()
    other = make_demo_dataset(tmp_path / "other", seed=1, n_subjects=60)
    assert fold_file(other, 0).read_bytes() != fold_file(demo_root, 0).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_reuses_a_finished_demo_and_rebuilds_on_request(tmp_path: Path):
    root = make_demo_dataset(tmp_path / "demo", seed=2, n_subjects=60)
    (root / "sentinel.txt").write_text("kept while reused", encoding="utf-8")
    assert make_demo_dataset(root, seed=2, n_subjects=60) == root
    assert (root / "sentinel.txt").exists()
    make_demo_dataset(root, seed=2, n_subjects=60, overwrite=True)
    assert not (root / "sentinel.txt").exists()
    make_demo_dataset(root, seed=3, n_subjects=60)  # other settings: the old demo is replaced
    assert json.loads((root / DEMO_MARKER).read_text(encoding="utf-8"))["seed"] == 3
    assert read_adience(root).synthetic


def test_refuses_to_touch_a_folder_that_is_not_a_demo(tmp_path: Path):
    foreign = tmp_path / "my-photos"
    foreign.mkdir()
    (foreign / "holiday.txt").write_text("precious", encoding="utf-8")
    for overwrite in (False, True):
        with pytest.raises(AudienceError, match="not empty and holds no demo dataset"):
            make_demo_dataset(foreign, overwrite=overwrite)
    assert sorted(p.name for p in foreign.iterdir()) == ["holiday.txt"]
    assert (foreign / "holiday.txt").read_text(encoding="utf-8") == "precious"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(AudienceError, match="is a file"):
        make_demo_dataset(a_file)
    with pytest.raises(AudienceError, match="number of subjects"):
        make_demo_dataset(tmp_path / "tiny", n_subjects=10)
    with pytest.raises(AudienceError, match="seed"):
        make_demo_dataset(tmp_path / "neg", seed=-1)
    assert not (tmp_path / "tiny").exists() and not (tmp_path / "neg").exists()


def test_an_empty_folder_is_filled(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_adience(make_demo_dataset(empty, n_subjects=60)).synthetic


def test_ensure_demo_dataset_makes_it_under_the_app_home_once(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AUDIENCE_HOME", str(tmp_path / "home"))
    root = ensure_demo_dataset()
    assert root == settings.demo_root().resolve()
    marker = root / DEMO_MARKER
    stamp = marker.stat().st_mtime_ns
    assert ensure_demo_dataset() == root and marker.stat().st_mtime_ns == stamp


def test_cli_writes_and_reports_counts(tmp_path: Path, capsys):
    out = tmp_path / "cli-demo"
    assert make_demo_data.main(["--out", str(out), "--seed", "4", "--subjects", "60"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(out.resolve())
    faces = read_adience(out).faces
    assert f"{len(faces)} images of 60 subjects" in lines[1]


@pytest.mark.parametrize("argv, needle", [
    (["--out", "FOREIGN"], "holds no demo dataset"),
    (["--out", "NEW", "--subjects", "many"], "--subjects"),
    (["--out", "NEW", "--subjects", "3"], "number of subjects"),
    ([], "--out"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, argv, needle):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine", encoding="utf-8")
    names = {"FOREIGN": str(foreign), "NEW": str(tmp_path / "new")}
    assert make_demo_data.main([names.get(a, a) for a in argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert (foreign / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_cues_are_learnable_by_a_linear_model_on_simple_features(demo):
    """Age and gender must be visible: HOG features + a ridge classifier, trained on folds 1-4."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    faces = demo.faces
    hog = cv2.HOGDescriptor((64, 64), (16, 16), (8, 8), (8, 8), 9)
    features = np.array([
        hog.compute(cv2.resize(cv2.imread(p, cv2.IMREAD_GRAYSCALE), (64, 64), interpolation=cv2.INTER_AREA)).ravel()
        for p in faces["path"]
    ])
    test_fold = faces["fold"].to_numpy() == 0
    scores = {}
    for task, n_classes in (("age_class", len(AGE_CLASSES)), ("gender_class", 2)):
        labels = faces[task].to_numpy()
        usable = (labels >= 0) & (labels < n_classes)
        model = make_pipeline(StandardScaler(), RidgeClassifier(alpha=3000.0))
        model.fit(features[usable & ~test_fold], labels[usable & ~test_fold])
        predicted = model.predict(features[usable & test_fold])
        truth = labels[usable & test_fold]
        scores[task] = ((predicted == truth).mean(), (np.abs(predicted - truth) <= 1).mean())
    assert scores["age_class"][0] >= 2 / len(AGE_CLASSES), scores
    assert scores["age_class"][1] >= 0.7, scores  # ordinal cues: most misses are to a neighbouring class
    assert scores["gender_class"][0] >= 0.7, scores
