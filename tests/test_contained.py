"""Nothing inside an allowed data root leads out of it: a fold file, image, user folder or UTKFace chip that is
a symlink to elsewhere, or a `..` in a fold file's user_id, never makes the readers open a file outside."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from audience.data.adience import read_adience
from audience.data.formats import read_dataset
from audience.errors import AudienceError


@pytest.fixture()
def root(demo_root, tmp_path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(demo_root, copy)
    return copy


@pytest.fixture()
def outside(tmp_path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(folder / "photo.jpg")
    (folder / "secret.txt").write_text("root:x:0:0:the secret first line\n")
    return folder


def test_a_fold_file_symlinked_out_of_the_root_is_not_read(root, outside):
    (root / "fold_2_data.txt").unlink()
    (root / "fold_2_data.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(AudienceError) as refused:
        read_adience(root, images="none")
    assert "fold_2_data.txt: the fold file leads outside the data root" in str(refused.value)
    assert "secret" not in str(refused.value)


def test_images_and_user_folders_symlinked_out_of_the_root_are_left_out(root, outside):
    before = read_adience(root)
    first = Path(before.faces["path"][0])
    first.unlink()
    first.symlink_to(outside / "photo.jpg")  # one image leads out
    user_folder = Path(before.faces["path"].iloc[-1]).parent
    moved = outside / "user"
    shutil.move(user_folder, moved)
    user_folder.symlink_to(moved, target_is_directory=True)  # a whole user folder leads out
    after = read_adience(root)
    paths = set(after.faces["path"])
    assert str(first) not in paths and not any(p.startswith(str(user_folder) + "/") for p in paths)
    users_rows = int((before.faces["path"].map(lambda p: Path(p).parent) == user_folder).sum())
    assert after.missing_images == before.missing_images + 1 + users_rows
    assert all(Path(p).resolve().is_relative_to(root.resolve()) for p in paths)


@pytest.mark.parametrize("user_id", ["../../../outside/U", "..", "a/b", "a\\b"])
def test_a_user_id_that_is_a_path_is_refused(root, user_id):
    fold = root / "fold_0_data.txt"
    lines = fold.read_text().splitlines()
    cells = lines[1].split("\t")
    lines[1] = "\t".join([user_id, *cells[1:]])
    fold.write_text("\n".join(lines) + "\n")
    with pytest.raises(AudienceError) as refused:
        read_adience(root)
    assert "fold_0_data.txt line 2: user_id and original_image must be plain names" in str(refused.value)


def test_utkface_chips_symlinked_out_of_the_folder_are_left_out(tmp_path, outside):
    folder = tmp_path / "utk"
    folder.mkdir()
    for name in ("25_0_0_20170101000000001.jpg.chip.jpg", "30_1_2_20170101000000002.jpg.chip.jpg"):
        Image.new("RGB", (200, 200), (120, 100, 90)).save(folder / name)
    (folder / "40_1_1_20170101000000003.jpg.chip.jpg").symlink_to(outside / "photo.jpg")
    data = read_dataset(folder, images="auto")
    assert len(data.faces) == 2 and all(Path(p).resolve().parent == folder.resolve() for p in data.faces["path"])
