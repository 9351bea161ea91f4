"""Reading Adience roots: synthetic roots in tmp_path, and the real fold files in ../shared."""

from pathlib import Path

import pytest

from audience.data.adience import FOLD_COLUMNS, TABLE_COLUMNS, read_adience
from audience.errors import AudienceError
from audience.labels import NO_CLASS

HEADER = "\t".join(FOLD_COLUMNS)


def write_root(root: Path, rows_per_fold: dict[int, list[tuple[str, str, str, str, str]]], images: str = "aligned",
               newline: str = "\n", make_images: bool = True) -> Path:
    """A minimal Adience root: rows are (user_id, original_image, face_id, age, gender)."""
    prefix = {"aligned": "landmark_aligned_face", "faces": "coarse_tilt_aligned_face"}[images]
    root.mkdir(parents=True, exist_ok=True)
    for fold in range(5):
        lines = [HEADER]
        for user, original, face, age, gender in rows_per_fold.get(fold, []):
            lines.append("\t".join([user, original, face, age, gender, "1", "2", "3", "4", "0", "0", "50"]))
            if make_images:
                folder = root / images / user
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{prefix}.{face}.{original}").write_bytes(b"jpeg")
        (root / f"fold_{fold}_data.txt").write_text(newline.join(lines) + newline)
    return root


def simple_rows():
    return {
        fold: [(f"u{fold}", f"img{i}.jpg", str(1 + i % 2), age, gender)
               for i, (age, gender) in enumerate([("(25, 32)", "m"), ("(0, 2)", "u"), ("None", "f"), ("(38, 48)", "")])]
        for fold in range(5)
    }


def test_reads_one_row_per_face(tmp_path):
    data = read_adience(write_root(tmp_path / "r", simple_rows()))
    assert list(data.faces.columns) == list(TABLE_COLUMNS)
    assert len(data.faces) == 20
    assert data.images == "aligned" and data.missing_images == 0 and not data.synthetic
    assert data.faces.groupby("fold").size().tolist() == [4] * 5
    row = data.faces.iloc[0]
    assert row.subject == "u0/1" and Path(row.path).is_file()
    # a row without an age class still counts for gender, and the other way round
    assert ((data.faces.age_class == NO_CLASS) & (data.faces.gender_class != NO_CLASS)).sum() == 5
    assert ((data.faces.age_class != NO_CLASS) & (data.faces.gender_class == NO_CLASS)).sum() == 0
    assert (data.faces.gender_class == NO_CLASS).sum() == 5


def test_windows_line_endings(tmp_path):
    data = read_adience(write_root(tmp_path / "r", simple_rows(), newline="\r\n"))
    assert len(data.faces) == 20 and set(data.faces.gender_raw) == {"m", "u", "f", ""}


def test_auto_prefers_aligned_then_faces(tmp_path):
    root = write_root(tmp_path / "r", simple_rows(), images="faces")
    assert read_adience(root).images == "faces"
    write_root(root, simple_rows(), images="aligned")
    assert read_adience(root).images == "aligned"
    assert read_adience(root, images="faces").images == "faces"


def test_missing_images_are_left_out_and_counted(tmp_path):
    root = write_root(tmp_path / "r", simple_rows())
    victim = next((root / "aligned" / "u3").iterdir())
    victim.unlink()
    data = read_adience(root)
    assert len(data.faces) == 19 and data.missing_images == 1
    assert data.missing_examples == [str(victim)]


def test_metadata_only_mode_needs_no_images(tmp_path):
    data = read_adience(write_root(tmp_path / "r", simple_rows(), make_images=False), images="none")
    assert len(data.faces) == 20 and data.faces.path.isna().all() and data.images == "none"


def test_user_in_two_folds_is_refused(tmp_path):
    rows = simple_rows()
    rows[3][0] = ("u1", "x.jpg", "1", "(0, 2)", "f")
    with pytest.raises(AudienceError, match=r"not subject-exclusive: user_id u1 appears in folds 1, 3"):
        read_adience(write_root(tmp_path / "r", rows))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "fold_2_data.txt").unlink(), r"fold_2_data.txt: fold file not found"),
        (lambda root: (root / "fold_1_data.txt").write_text("user\tage\n"), r"fold_1_data.txt line 1: wrong header"),
        (lambda root: (root / "fold_4_data.txt").write_text(HEADER + "\nu4\timg.jpg\t1\t(0, 2)\n"),
         r"fold_4_data.txt line 2: expected 12 tab-separated fields, found 4"),
        (lambda root: (root / "fold_0_data.txt").write_text(
            HEADER + "\n" + "\t".join(["u0", "a.jpg", "x"] + ["1"] * 9)),
         r"fold_0_data.txt line 2: face_id must be a whole number"),
        (lambda root: (root / "fold_3_data.txt").write_bytes(b"\xff\xfe\x00binary"),
         r"fold_3_data.txt: not a text file"),
        (lambda root: (root / "fold_3_data.txt").write_text(""), r"fold_3_data.txt line 1: the file is empty"),
    ],
)
def test_bad_fold_files_name_file_and_line(tmp_path, damage, message):
    root = write_root(tmp_path / "r", simple_rows())
    damage(root)
    with pytest.raises(AudienceError, match=message):
        read_adience(root)


def test_bad_root_and_options(tmp_path):
    with pytest.raises(AudienceError, match="data root not found"):
        read_adience(tmp_path / "nowhere")
    root = write_root(tmp_path / "r", simple_rows(), make_images=False)
    with pytest.raises(AudienceError, match="neither aligned/ nor faces/"):
        read_adience(root)
    with pytest.raises(AudienceError, match="faces: folder not found"):
        read_adience(root, images="faces")
    with pytest.raises(AudienceError, match="unknown label policy"):
        read_adience(root, policy="fuzzy", images="none")


def test_real_metadata_counts(adience_meta):
    data = read_adience(adience_meta, images="none")
    faces = data.faces
    assert len(faces) == 19487
    assert faces.user_id.nunique() == 168 and faces.subject.nunique() == 2284
    assert faces.groupby("fold").size().tolist() == [4496, 3745, 3953, 3459, 3834]
    assert faces.gender_raw.value_counts().to_dict() == {"f": 9411, "m": 8192, "u": 1100, "": 784}
    assert (faces.age_raw == "None").sum() == 753
    strict = read_adience(adience_meta, policy="strict", images="none").faces
    assert (strict.age_class != NO_CLASS).groupby(strict.fold).sum().tolist() == [4316, 3101, 3339, 2975, 3693]
    # bins keeps every strict label and adds the clean off-grid ones
    assert (faces.age_class != NO_CLASS).sum() > 17424


def test_real_sample_images(adience_sample):
    data = read_adience(adience_sample)
    assert data.images == "faces" and len(data.faces) == 19
    assert data.missing_images == 19487 - 19
    assert set(data.faces.subject) == {"30601258@N03/1", "30601258@N03/2"}
    by_subject = data.faces.groupby("subject")
    assert by_subject.size().to_dict() == {"30601258@N03/1": 8, "30601258@N03/2": 11}
    assert set(data.faces[data.faces.face_id == "1"].age_raw) == {"(25, 23)"}
    assert all(Path(p).is_file() for p in data.faces.path)
