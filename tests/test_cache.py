"""The decoded-image cache: built once and reused, unreadable images listed (never a crash), the Dataset."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fixtures.waiting import HANG_S

from audience.data import cache as cache_module
from audience.data.adience import read_adience
from audience.data.cache import CachedFaces, build_image_cache, cache_size_for, decode_face, describe_unreadable
from audience.data.transforms import build_eval_transform, build_train_transform
from audience.errors import AudienceError
from audience.model.network import model_data_config


@pytest.fixture(scope="module")
def demo_paths(demo_root):
    return read_adience(demo_root).faces["path"].astype(str).tolist()[:40]


def test_cache_is_built_once_and_reused(demo_paths, tmp_path, monkeypatch):
    first = build_image_cache(demo_paths, 40, cache_dir=tmp_path)
    assert first.decoded == len(set(demo_paths)) and not first.failed
    images = first.open()
    assert images.shape == (len(set(demo_paths)), 40, 40, 3) and images.dtype == np.uint8
    assert np.array_equal(images[3], decode_face(demo_paths[3], 40))

    def no_decoding(*args, **kwargs):
        raise AssertionError("the second build decoded an image")

    monkeypatch.setattr(cache_module, "decode_face", no_decoding)
    second = build_image_cache(demo_paths, 40, cache_dir=tmp_path)
    assert second.decoded == 0 and second.array_path == first.array_path
    assert np.array_equal(second.open()[7], images[7])
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name], "no temporary file is left behind"


def test_a_changed_image_or_size_gives_a_new_cache(demo_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(demo_root / "aligned", root)
    paths = sorted(str(p) for p in root.rglob("*.jpg"))[:6]
    first = build_image_cache(paths, 32, cache_dir=tmp_path / "cache")
    assert build_image_cache(paths, 36, cache_dir=tmp_path / "cache").array_path != first.array_path
    stat = os.stat(paths[0])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rebuilt = build_image_cache(paths, 32, cache_dir=tmp_path / "cache")
    assert rebuilt.decoded == 6 and rebuilt.array_path != first.array_path


def test_unreadable_images_are_skipped_and_listed(demo_paths, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG at all")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(demo_paths[0], "rb").read()[:200])
    paths = [*demo_paths[:5], str(broken), str(truncated), str(tmp_path / "missing.jpg")]
    cache = build_image_cache(paths, 32, cache_dir=tmp_path / "cache")
    assert set(cache.failed) == {str(broken), str(truncated), str(tmp_path / "missing.jpg")}
    assert all(str(broken) in problem or "not a readable image" in problem for problem in cache.failed.values())
    rows = cache.rows_of(paths)
    assert (rows[:5] >= 0).all() and (rows[5:] == -1).all()
    sentence = describe_unreadable(cache, examples=2)  # a count and a few examples, not a line per image
    assert sentence.startswith("3 of 8 images could not be read and are left out: ") and "; and 1 more" in sentence
    assert sum(path in sentence for path in map(str, (broken, truncated, tmp_path / "missing.jpg"))) == 2
    assert str(cache.array_path.with_suffix(".json")) in sentence and "\n" not in sentence
    assert describe_unreadable(build_image_cache(paths[:5], 32, cache_dir=tmp_path / "cache")) is None
    with pytest.raises(AudienceError, match="not a readable image"):
        decode_face(broken, 32)


def test_decode_keeps_the_whole_face_centred_on_black(tmp_path):
    wide = np.full((50, 100, 3), 200, dtype=np.uint8)
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), wide)
    square = decode_face(path, 40)
    assert square.shape == (40, 40, 3)
    assert (square[:10] == 0).all() and (square[30:] == 0).all()  # 20 rows of image, padded above and below
    assert (square[12:28] == 200).all()


def test_cache_size_leaves_room_for_the_random_crop():
    assert cache_size_for(224) == 256 and cache_size_for(64) > 64


def test_dataset_reads_the_memmap_and_seeds_each_sample(demo_paths, tmp_path):
    config = model_data_config("tiny")
    cache = build_image_cache(demo_paths, cache_size_for(48), cache_dir=tmp_path)
    rows = cache.rows_of(demo_paths)
    age, gender = np.arange(len(rows)) % 8, np.arange(len(rows)) % 3
    train = CachedFaces(cache, rows, age, gender, build_train_transform(48, config["mean"], config["std"]))
    image, a, g = train[(5, 1234)]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32 and (a, g) == (5, 2)
    assert torch.equal(train[(5, 1234)][0], image), "the same sample seed gives the same augmentation"
    assert any(not torch.equal(train[(5, seed)][0], image) for seed in range(1, 6))
    evaluate = CachedFaces(cache, rows, age, gender, build_eval_transform(48, config["mean"], config["std"]))
    assert torch.equal(evaluate[3][0], evaluate[3][0])
    clone = pickle.loads(pickle.dumps(evaluate))
    assert clone._array is None and torch.equal(clone[3][0], evaluate[3][0])  # workers open their own memmap


@pytest.mark.parametrize("where", ["/dev/full", "file"])
def test_a_cache_folder_that_cannot_be_written_is_one_sentence(demo_paths, tmp_path, where):
    folder = tmp_path / "a-file" if where == "file" else Path(where)
    if where == "file":
        folder.write_text("not a folder")
    with pytest.raises(AudienceError, match=f"{folder}: the image cache cannot be written there .*--cache-dir"):
        build_image_cache(demo_paths[:4], 32, cache_dir=folder)


def test_caches_past_the_size_cap_are_evicted_least_recently_used_first(demo_paths, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    sizes = (16, 20, 24)
    built = {}
    for number, size in enumerate(sizes):
        built[size] = build_image_cache(demo_paths[:8], size, cache_dir=folder).array_path
        os.utime(built[size], (1000 + number, 1000 + number))  # made in this order
    os.utime(built[16], (2000, 2000))  # 16 px reused last: the 20 px cache is now the least recently used
    keep_two = built[16].stat().st_size + built[24].stat().st_size
    monkeypatch.setenv("AUDIENCE_CACHE_GB", str((keep_two + 1) / 1e9))
    newest = build_image_cache(demo_paths[:8], 28, cache_dir=folder).array_path
    left = {path.name for path in folder.glob("*.npy")}
    assert newest.name in left and built[20].name not in left and not built[20].with_suffix(".json").exists()
    assert cache_module.clear_caches(folder) > 0 and not list(folder.glob("*.npy"))


def test_train_cli_clears_the_cache(demo_paths, tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "cache"
    build_image_cache(demo_paths[:4], 16, cache_dir=folder)
    done = subprocess.run([sys.executable, "scripts/train.py", "--clear-cache", "--cache-dir", str(folder)],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0 and done.stdout.startswith("freed ") and not list(folder.glob("*.npy"))
