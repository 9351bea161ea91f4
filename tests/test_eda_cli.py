"""scripts/eda.py: the JSON summary, the offline HTML report, the label file and its errors."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fixtures.waiting import HANG_S

from audience.cli import eda as eda_script
from audience.data.adience import read_adience
from audience.eda.report import build_label_records
from audience.errors import AudienceError
from audience.labels import AGE_CLASSES, NO_CLASS

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "eda.py"


def run_json(capsys, *argv: str) -> dict:
    assert eda_script.main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # the whole of stdout is one JSON object


@pytest.mark.parametrize("policy", ["bins", "strict"])
def test_json_summary_of_real_metadata(capsys, adience_meta, policy):
    summary = run_json(capsys, "--data", str(adience_meta), "--images", "none", "--policy", policy)
    assert (summary["rows"], summary["users"], summary["subjects"]) == (19487, 168, 2284)
    assert summary["rows_per_fold"] == [4496, 3745, 3953, 3459, 3834]
    assert summary["gender_counts"] == {"f": 9411, "m": 8192, "u": 1100} and summary["no_gender_class"] == 784
    assert summary["policy"] == policy and summary["synthetic"] is False
    if policy == "strict":
        assert summary["age_rows_per_fold"] == [4316, 3101, 3339, 2975, 3693]


def test_json_summary_of_real_sample_finds_the_faces_folder(capsys, adience_sample):
    summary = run_json(capsys, "--data", str(adience_sample))
    assert summary["images"] == "faces" and summary["rows"] == 19 and summary["missing_images"] == 19468


def test_html_report_is_self_contained(capsys, demo_root, tmp_path):
    out = tmp_path / "report.html"
    assert eda_script.main(["--data", str(demo_root), "--out", str(out), "--sample", "20"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = out.read_text(encoding="utf-8")
    assert page.count("plotly.js v") == 1  # the library inlined once, so the file opens offline
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing fetched from a CDN
    assert page.count("Plotly.newPlot") == 6
    assert "synthetic demo data" in page and "data:image/png;base64," in page
    assert "(25, 23)" in page and "(empty)" in page  # the label noise table
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left behind


def test_label_file_of_the_demo(capsys, demo_root, tmp_path):
    labels_path = tmp_path / "labels.json"
    run_json(capsys, "--data", str(demo_root), "--labels-out", str(labels_path))
    labels = json.loads(labels_path.read_text())
    faces = read_adience(demo_root).faces
    usable = faces[(faces.age_class != NO_CLASS) | (faces.gender_class != NO_CLASS)]
    assert len(labels) == len(usable)
    for key, value in labels.items():
        assert key.startswith("aligned/") and (demo_root / key).is_file()
        assert set(value) == {"age_id", "gender_id"} and value != {"age_id": None, "gender_id": None}
        assert value["age_id"] is None or value["age_id"] in range(len(AGE_CLASSES))
    row = usable.iloc[0]
    assert labels[str(Path(row.path).relative_to(demo_root))]["age_id"] == (
        None if row.age_class == NO_CLASS else int(row.age_class))


def test_label_file_leaves_out_rows_without_labels_or_image(demo_root):
    data = read_adience(demo_root)
    faces = data.faces.copy()
    faces.loc[0, ["age_class", "gender_class"]] = NO_CLASS
    faces.loc[1, "age_class"] = NO_CLASS
    faces.loc[2, "path"] = None
    records = build_label_records(dataclasses.replace(data, faces=faces))
    keys = [str(Path(path).relative_to(demo_root)) for path in data.faces["path"][:3]]
    usable = faces["path"].notna() & ((faces["age_class"] != NO_CLASS) | (faces["gender_class"] != NO_CLASS))
    assert keys[0] not in records and keys[2] not in records and len(records) == int(usable.sum())
    assert int(usable.sum()) <= len(faces) - 2
    assert records[keys[1]] == {"age_id": None, "gender_id": int(faces.loc[1, "gender_class"])}
    repeated = pd.concat([faces.iloc[3:5], faces.iloc[[3]]], ignore_index=True)
    assert len(build_label_records(dataclasses.replace(data, faces=repeated))) == 2  # a repeated row is one entry
    repeated.loc[2, "age_class"] = (repeated.loc[0, "age_class"] + 1) % len(AGE_CLASSES)
    with pytest.raises(AudienceError, match="two different labels"):
        build_label_records(dataclasses.replace(data, faces=repeated))


@pytest.mark.parametrize("policy, face1_age", [("bins", AGE_CLASSES.index("22-32")), ("strict", None)])
def test_label_file_of_the_real_sample(capsys, adience_sample, tmp_path, policy, face1_age):
    labels_path = tmp_path / "labels.json"
    assert eda_script.main(["--data", str(adience_sample), "--policy", policy, "--json",
                            "--labels-out", str(labels_path)]) == 0
    assert "wrote 19 labels" in capsys.readouterr().err
    labels = json.loads(labels_path.read_text())
    face1 = {k: v for k, v in labels.items() if ".1." in Path(k).name}
    assert len(labels) == 19 and len(face1) == 8
    # face 1 is labelled (25, 23) / f: a class under bins, kept for its gender under strict
    assert all(v == {"age_id": face1_age, "gender_id": 0} for v in face1.values())


@pytest.mark.parametrize("make_argv", [
    lambda tmp: ["--data", str(tmp / "no-such-root")],
    lambda tmp: ["--data", str(tmp / "bad"), "--images", "none"],
    lambda tmp: ["--data", str(tmp / "bad-meta"), "--images", "none", "--labels-out", str(tmp / "l.json")],
    lambda tmp: ["--data", str(tmp / "bad-meta"), "--images", "none", "--out", str(tmp / "missing" / "r.html")],
], ids=["missing-root", "malformed-fold-file", "labels-without-images", "unwritable-report"])
def test_bad_input_exits_2_with_one_line(capsys, adience_meta, tmp_path, make_argv):
    bad = tmp_path / "bad"
    bad.mkdir()
    for fold in range(5):
        (bad / f"fold_{fold}_data.txt").write_text("user_id\tage\nx\t(0, 2)\n")
    (tmp_path / "bad-meta").symlink_to(adience_meta)
    assert eda_script.main(make_argv(tmp_path)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not (tmp_path / "l.json").exists()


def test_bad_root_from_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "nowhere"), "--json"],
                            capture_output=True, text=True, timeout=HANG_S, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'nowhere'}: data root not found: it does not exist "
                                          "or is not a folder (expected an Adience root with fold_0_data.txt ... "
                                          "fold_4_data.txt, or a UTKFace folder)."]


def test_unreadable_file_exits_2_with_one_line(capsys, monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/data/fold_0_data.txt")

    monkeypatch.setattr(eda_script, "read_dataset", refuse)
    assert eda_script.main(["--data", str(tmp_path), "--json"]) == 2  # an existing root whose fold file is refused
    assert capsys.readouterr().err == "error: /data/fold_0_data.txt: cannot be read (Permission denied).\n"


def test_a_labels_only_adience_root_opens_as_in_the_eda_tab(capsys, adience_meta, tmp_path):
    """`--images auto` (the default) on fold files without aligned/ or faces/ reads the labels only and says so,
    as the EDA tab does; --labels-out there names the one way forward instead of sending the user back to
    --images (issue 21 item 5: the two refusals used to point at each other)."""
    summary = run_json(capsys, "--data", str(adience_meta))
    assert summary["images"] == "none" and summary["rows"] == 19487
    out = tmp_path / "report.html"
    assert eda_script.main(["--data", str(adience_meta), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reading its labels only" in printed and out.is_file()
    for images in ("auto", "none"):
        assert eda_script.main(["--data", str(adience_meta), "--images", images, "--labels-out",
                                str(tmp_path / "labels.json")]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and "has no images" in error and "leave out --labels-out" in error
        assert "--images" not in error  # no advice to change --images: no image mode helps here
    assert not (tmp_path / "labels.json").exists()


def test_labels_out_with_images_none_on_a_root_with_images_names_the_fix(capsys, demo_root, tmp_path):
    assert eda_script.main(["--data", str(demo_root), "--images", "none", "--labels-out",
                            str(tmp_path / "labels.json"), "--json"]) == 2
    error = capsys.readouterr().err
    assert "use --images auto, aligned or faces with --labels-out" in error
    # and the fix it names works
    assert eda_script.main(["--data", str(demo_root), "--labels-out", str(tmp_path / "labels.json"), "--json"]) == 0
