"""UTKFace as a dataset: messy real names, format detection, image-level folds, EDA and evaluation on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audience.data.formats import detect_format, read_dataset
from audience.data.splits import make_split
from audience.data.utkface import UTKFACE_SUFFIX, fold_of_name, parse_utkface_name
from audience.eda.tables import build_table_figures, label_noise_table, summarize
from audience.errors import AudienceError
from audience.labels import AGE_CLASSES, NO_CLASS, age_class_of

# Real names of the release, the messy ones included (the files themselves come from ../shared).
REAL_NAMES = {
    "26_1_0_20170103175557343.jpg.chip.jpg": (26, "f", "White"),
    "100_0_0_20170112213500903.jpg.chip.jpg": (100, "m", "White"),
    "24_0_1_20170116220224657 .jpg.chip.jpg": (24, "m", "Black"),  # a space before .jpg
    "39_1_20170116174525125.jpg.chip.jpg": (39, "f", None),  # no race field
    "55_0_0_20170116232725357jpg.chip.jpg": (55, "m", "White"),  # no dot before jpg
}


@pytest.mark.parametrize(("name", "expected"), [
    *REAL_NAMES.items(),
    ("7_1_2_20170104.jpg.chip.jpg", (7, "f", "Asian")),
    ("x_1_0_20170103175557343.jpg.chip.jpg", "name does not start with age_gender_"),
    ("26_3_0_20170103175557343.jpg.chip.jpg", "gender field is not 0 or 1"),
    ("0_1_0_20170103175557343.jpg.chip.jpg", "age outside 1-116"),
    ("26.jpg.chip.jpg", "name does not start with age_gender_"),
])
def test_names_parse_or_say_why(name, expected):
    assert parse_utkface_name(name) == expected


@pytest.mark.parametrize(("age", "bins", "strict"), [
    (1, "0-2", "0-2"), (3, "3-6", "dropped"), (7, "dropped", "dropped"), (22, "22-32", "dropped"),
    (26, "22-32", "22-32"), (33, "dropped", "dropped"), (54, "dropped", "dropped"), (100, "55-100", "55-100"),
    (101, "dropped", "dropped"),
])
def test_exact_ages_follow_the_label_policy(age, bins, strict):
    names = {index: name for index, name in enumerate(AGE_CLASSES)}
    assert names.get(age_class_of(age, "bins"), "dropped") == bins
    assert names.get(age_class_of(age, "strict"), "dropped") == strict


def test_folds_come_from_the_name_alone():
    # pinned: the protocol must give every image the same fold in every version, on every machine
    assert [fold_of_name(name) for name in list(REAL_NAMES)[:2] + ["39_1_20170116174525125.jpg.chip.jpg"]] == [1, 1, 4]
    folds = [fold_of_name(f"{i}_0_0_2017.jpg.chip.jpg") for i in range(1, 400)]
    assert set(folds) == {0, 1, 2, 3, 4} and max(np.bincount(folds)) < 120  # spread, not all in one


def _chip(path: Path, shade: int) -> None:
    Image.fromarray(np.full((40, 40, 3), shade, dtype=np.uint8)).save(path, quality=90)


@pytest.fixture
def messy_folder(tmp_path, shared_dir) -> Path:
    """A UTKFace root made of copies of real messy files, plus an unreadable name and a between-groups age."""
    source = shared_dir / "utkface" / "UTKFace"
    if not source.is_dir():
        pytest.skip("../shared/utkface is not present")
    folder = tmp_path / "utk" / "UTKFace"
    folder.mkdir(parents=True)
    for name in REAL_NAMES:
        shutil.copyfile(source / name, folder / name)
    shutil.copyfile(source / "26_1_0_20170103175557343.jpg.chip.jpg", folder / "x_1_0_2017.jpg.chip.jpg")
    shutil.copyfile(source / "26_1_0_20170103175557343.jpg.chip.jpg", folder / "33_0_0_2017.jpg.chip.jpg")
    (folder / "notes.txt").write_text("not an image")
    return tmp_path / "utk"


def test_reader_on_real_messy_names(messy_folder):
    assert detect_format(messy_folder) == detect_format(messy_folder / "UTKFace") == "utkface"
    data = read_dataset(messy_folder)
    faces = data.faces.set_index("original_image")
    assert len(faces) == len(REAL_NAMES) + 1  # the five real names and the 33-year-old; x_ is dropped
    for name, (age, gender, race) in REAL_NAMES.items():
        assert (faces.loc[name, "age_years"], faces.loc[name, "gender_raw"]) == (age, gender)
        assert (faces.loc[name, "race"] if race else None) == (race if race else None)
        assert Path(faces.loc[name, "path"]).is_file()
    assert data.dropped == {"name does not start with age_gender_": ["x_1_0_2017.jpg.chip.jpg"]}
    assert data.between_groups == 1 and faces.loc["33_0_0_2017.jpg.chip.jpg", "age_class"] == NO_CLASS
    assert faces.loc["33_0_0_2017.jpg.chip.jpg", "gender_raw"] == "m"  # gender still counts
    assert data.split_level == "image" and data.format == "utkface" and "research" in data.licence
    summary = summarize(data)
    assert summary["dropped"] == {"name does not start with age_gender_": 1} and summary["between_groups"] == 1


def test_format_detection_refuses_other_folders(tmp_path):
    (tmp_path / "photos").mkdir()
    _chip(tmp_path / "photos" / "holiday.jpg", 90)
    with pytest.raises(AudienceError, match="neither an Adience root .* nor a UTKFace folder"):
        detect_format(tmp_path / "photos")
    with pytest.raises(AudienceError, match="data root not found"):
        read_dataset(tmp_path / "absent")


def test_a_folder_of_unreadable_names_is_one_sentence(tmp_path):
    _chip(tmp_path / "abc.jpg.chip.jpg", 90)
    with pytest.raises(AudienceError, match="none of its 1 UTKFace file names could be read"):
        read_dataset(tmp_path)


@pytest.fixture
def small_utkface(tmp_path) -> Path:
    """120 synthetic chips with UTKFace names over every age group and both genders."""
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    ages = [1, 4, 10, 17, 26, 38, 48, 70]
    for index in range(120):
        age, gender = ages[index % len(ages)], index % 2
        _chip(folder / f"{age}_{gender}_{index % 5}_2017{index:09d}.jpg.chip.jpg", 40 + index)
    return folder


def test_image_level_folds_split_images_and_say_so(small_utkface):
    data = read_dataset(small_utkface)
    split = make_split(data, "folds", 0, val_fraction=0.1, seed=0)
    sets = [set(split.train), set(split.val), set(split.test)]
    assert all(a.isdisjoint(b) for i, a in enumerate(sets) for b in sets[i + 1:])
    assert set(data.faces.loc[list(split.test), "fold"]) == {0}
    figures = build_table_figures(data)
    assert "lists no identities" in figures["images_per_subject"].layout.annotations[0].text.replace("<br>", " ")
    assert len(figures["age_years"].layout.shapes) == len(AGE_CLASSES)  # one band per group
    assert sum(figures["race"].data[0].y) == len(data.faces)
    noise = label_noise_table(data)
    assert set(noise[noise["field"] == "age"]["raw"]) == {"1", "4", "10", "17", "26", "38", "48", "70"}
    assert noise.set_index(["field", "raw"]).loc[("age", "4"), "strict"] == "3-6"


def _evaluate_main():
    from audience.cli import evaluate

    return evaluate.main


@pytest.mark.slow
def test_evaluate_split_all_prints_the_headline_json(small_utkface, tmp_path, capsys):
    import torch

    from audience.model.checkpoint import save_checkpoint
    from audience.model.network import build_model
    main = _evaluate_main()
    torch.manual_seed(0)
    stem = tmp_path / "tiny"
    save_checkpoint(stem, build_model("tiny", pretrained=False), {"image_size": 32, "dataset": {"name": "demo"}})
    assert main([str(stem) + ".json", "--data", str(small_utkface), "--split", "all", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_age"] == result["n_gender"] == 120 and result["split"] == "all"
    for key in ("age_exact", "age_one_off", "gender_acc"):
        assert 0.0 <= result[key] <= 1.0


def test_evaluate_needs_a_fold_or_split_all(small_utkface, tmp_path, capsys):
    main = _evaluate_main()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "x.json"), "--data", str(small_utkface)])
    assert exit_info.value.code == 2
    assert "--split all" in capsys.readouterr().err


@pytest.mark.slow
def test_the_train_tab_job_trains_on_a_utkface_folder(small_utkface, tmp_path, monkeypatch):
    """The Train tab's path (the background job, which measures the crop) on a UTKFace folder."""
    import audience.train.cross_validate
    from audience.faces.align import measure_framing
    from audience.train import job as jobs
    from audience.train.config import TrainConfig

    for name in ("SPACE_ID", "AUDIENCE_ALLOW_TRAINING", "GRADIO_SERVER_NAME", "AUDIENCE_DATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUDIENCE_DATA_DIRS", str(small_utkface.parent))
    monkeypatch.setenv("AUDIENCE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("AUDIENCE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(jobs, "_job", None)
    config = TrainConfig(data=str(small_utkface), arch="tiny", folds="0", epochs=1, batch_size=16, image_size=32,
                         workers=0, calibrate=False)
    level = {"method": "level", "angle_median": 1.2, "angle_p90": 3.0, "level": True, "measured_on": 7, "sampled": 9}

    def framing(paths):  # the real crop measurement; these synthetic chips have no eyes, so a recorded alignment
        return {**measure_framing(paths), "alignment": level}

    monkeypatch.setattr(audience.train.cross_validate, "measure_framing", framing)
    jobs.start_job(config, server_name="127.0.0.1")
    jobs.wait_job(timeout=300)
    status = jobs.job_status(200)
    assert status.state == "finished", status.error
    log = "\n".join(status.log)
    assert "UTKFace folder" in log and "image-level" in log
    best = json.loads(next((tmp_path / "runs").glob("*/fold0/best.json")).read_text(encoding="utf-8"))
    assert best["split_level"] == "image" and best["dataset"]["format"] == "utkface"
    assert best["alignment"] == level and "the training faces are level (median tilt 1.2 degrees)" in log


def test_a_folder_of_links_leading_out_says_they_were_skipped(small_utkface, tmp_path, capsys):
    """evaluate.py (and every reader) on a folder whose chips are symlinks to another folder: the links are
    skipped, never followed, and the sentence says so and how many (issue 21 item 5)."""
    from audience.data.utkface import LINKS_OUT

    links = tmp_path / "links"
    links.mkdir()
    chips = sorted(small_utkface.glob(f"*{UTKFACE_SUFFIX}"))
    for chip in chips[:7]:
        (links / chip.name).symlink_to(chip)
    main = _evaluate_main()
    shipped = Path(__file__).resolve().parent.parent / "checkpoints" / "utkface-mobilenetv3.json"
    assert main([str(shipped), "--data", str(links), "--split", "all", "--json"]) == 2
    error = capsys.readouterr().err
    assert "7 of its files are symlinks that lead out of the folder and were skipped" in error
    # one real chip beside the links: it is read, and the links are counted among the dropped images
    (links / "1_0_0_20170101000000000.jpg.chip.jpg").write_bytes(chips[0].read_bytes())
    data = read_dataset(links)
    assert len(data.faces) == 1 and len(data.dropped[LINKS_OUT]) == 7


def test_utkface_gender_charts_show_only_the_genders_it_labels(tmp_path):
    from audience.data.formats import read_dataset
    from audience.eda.tables import age_gender_table, gender_table, plot_gender

    folder = tmp_path / "UTKFace"
    folder.mkdir()
    for name in ("25_0_0_20170116174525125.jpg.chip.jpg", "30_1_2_20170116174525126.jpg.chip.jpg",
                 "41_1_1_20170116174525127.jpg.chip.jpg"):
        (folder / name).write_bytes(b"")
    data = read_dataset(tmp_path, images="none")
    assert gender_table(data)["class"].tolist() == ["f", "m"]
    assert gender_table(data)["rows"].tolist() == [2, 1]
    assert "u" not in age_gender_table(data).columns and "f" in age_gender_table(data).columns
    assert list(plot_gender(data).data[0].x) == ["f", "m"]
