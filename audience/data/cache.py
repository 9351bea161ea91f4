"""The decoded-image cache: every face image decoded and resized once, then memory-mapped.

Decoding an 816 px Adience JPEG costs more than a training step of a small network, and the seed
paid it for every image in every epoch. Here `build_image_cache(paths, size)` decodes each image
once into an (N, size, size, 3) uint8 array stored as a `.npy` file (read with mmap) plus a `.json`
index, keyed by a hash of the source list (paths, byte sizes, modification times) and the size,
so every fold, epoch, run and later process with the same images reuses it. An image that cannot
be read is left black, listed in `ImageCache.failed` and given row -1 by `rows_of`, so the trainer
drops it before training instead of failing in the middle of an epoch.

The cached square keeps the whole face: longest side to `size`, centred black padding, the same
geometry as the train/eval transforms' first step, so they see it unchanged. `cache_size_for`
makes it the square the train transform crops from (a bit larger than the input size).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from audience import settings
from audience.data.images import IMAGE_ERRORS, check_pixel_count, unreadable_reason
from audience.data.transforms import TRAIN_MARGIN
from audience.errors import AudienceError
from audience.files import atomic_path, read_json, write_json_atomic

CACHE_FORMAT = 1
INDEX_MAX_BYTES = 256 * 1024 * 1024  # the index lists every image path: ~100 bytes each, far below this


def cache_size_for(image_size: int) -> int:
    """Side of the cached square for a model input of `image_size`: the train transform's source square."""
    return round(image_size * TRAIN_MARGIN)


def decode_face(path: str | Path, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3): the whole image, longest side to `size`, centred on black.

    JPEG decoding uses the codec's DCT scaling (PIL draft) when the file is at least twice the
    target, which is most of the cost for 816 px Adience images. Raises AudienceError when the
    file cannot be read as an image.
    """
    try:
        with Image.open(path) as image:
            check_pixel_count(image, str(path))
            image.draft("RGB", (size, size))
            image = ImageOps.exif_transpose(image).convert("RGB")
            pixels = np.asarray(image)
    except IMAGE_ERRORS as error:
        raise AudienceError(f"{path}: not a readable image ({unreadable_reason(error)}).") from None
    height, width = pixels.shape[:2]
    if min(height, width) < 1:
        raise AudienceError(f"{path}: the image is empty.")
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    pixels = cv2.resize(pixels, (new_w, new_h), interpolation=interpolation)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return cv2.copyMakeBorder(
        pixels, top, size - new_h - top, left, size - new_w - left, cv2.BORDER_CONSTANT, value=(0, 0, 0)
    )


@dataclass
class ImageCache:
    """A built cache: row i of the array at `array_path` is the image of `paths[i]`."""

    array_path: Path
    paths: list[str]
    size: int
    failed: dict[str, str] = field(default_factory=dict)  # path -> why it could not be read
    decoded: int = 0  # images decoded by the call that returned this (0: reused from disk)
    seconds: float = 0.0

    def open(self) -> np.ndarray:
        """The (N, size, size, 3) uint8 array, memory-mapped read-only."""
        return np.load(self.array_path, mmap_mode="r")

    def rows_of(self, paths: Sequence[str]) -> np.ndarray:
        """Cache row of each path; -1 for a path that failed to decode or is not cached."""
        index = {path: row for row, path in enumerate(self.paths) if path not in self.failed}
        return np.array([index.get(str(path), -1) for path in paths], dtype=np.int64)


def _cache_key(paths: Sequence[str], size: int) -> str:
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{size}".encode())
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"\n{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"\n{path}|missing".encode())
    return digest.hexdigest()[:24]


def _load_existing(array_path: Path, index_path: Path, paths: list[str], size: int) -> ImageCache | None:
    try:
        index = read_json(index_path, max_bytes=INDEX_MAX_BYTES)
        shape = np.load(array_path, mmap_mode="r").shape
    except (OSError, ValueError):
        return None
    if index.get("paths") != paths or index.get("size") != size or shape != (len(paths), size, size, 3):
        return None
    return ImageCache(array_path, paths, size, failed=dict(index.get("failed", {})))


def _check_disk(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed * 1.05:
        raise AudienceError(
            f"The image cache needs {needed / 1e9:.1f} GB in {folder} but only {free / 1e9:.1f} GB is free; "
            "free space or set AUDIENCE_HOME to a larger disk."
        )


def _decode_all(array: np.ndarray, paths: list[str], size: int, workers: int | None,
                on_progress: Callable[[int, int], None] | None) -> dict[str, str]:
    """Decode paths[i] into array[i] on a thread pool; return {path: problem} of those that failed."""

    def decode_into(row: int) -> str | None:
        try:
            array[row] = decode_face(paths[row], size)
            return None
        except AudienceError as error:
            return str(error)

    failed: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for row, problem in enumerate(pool.map(decode_into, range(len(paths)), chunksize=16)):
            if problem is not None:
                failed[paths[row]] = problem
            if on_progress is not None and ((row + 1) % 256 == 0 or row + 1 == len(paths)):
                on_progress(row + 1, len(paths))
    return failed


def build_image_cache(
    paths: Sequence[str | Path],
    size: int,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImageCache:
    """Decode `paths` (duplicates are kept once) at `size` into the cache, or reuse the cache built before.

    `cache_dir` defaults to settings.cache_dir(); `workers` threads decode in parallel (OpenCV and
    PIL release the GIL); `on_progress(done, total)` is called while building. The array and its
    index are written to temporary names and renamed, so an interrupted build leaves no cache
    that looks valid.
    """
    started = time.perf_counter()
    unique = list(dict.fromkeys(str(p) for p in paths))
    if not unique:
        raise AudienceError("There are no images to cache: the data has no face with an image file.")
    folder = Path(cache_dir) if cache_dir is not None else settings.cache_dir()
    try:
        return _build_or_reuse(unique, size, folder, workers, on_progress, started)
    except OSError as error:  # not a folder, no permission, a full disk (/dev/full): the user can act on it
        raise AudienceError(f"{folder}: the image cache cannot be written there ({error.strerror or error}); choose "
                            "another --cache-dir (or AUDIENCE_HOME) or free some space.") from None


def _build_or_reuse(unique: list[str], size: int, folder: Path, workers, on_progress, started: float) -> ImageCache:
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{_cache_key(unique, size)}-{size}px"
    array_path, index_path = folder / f"{stem}.npy", folder / f"{stem}.json"
    existing = _load_existing(array_path, index_path, unique, size)
    if existing is not None:
        os.utime(array_path)  # recently used: the last to be evicted
        existing.seconds = time.perf_counter() - started
        return existing

    _check_disk(folder, len(unique) * size * size * 3)
    with atomic_path(array_path, suffix=".tmp.npy") as temp_path:
        array = np.lib.format.open_memmap(temp_path, mode="w+", dtype=np.uint8, shape=(len(unique), size, size, 3))
        failed = _decode_all(array, unique, size, workers, on_progress)
        array.flush()
        del array  # closes the map before the rename (required on Windows)
    write_json_atomic(index_path, {"format": CACHE_FORMAT, "size": size, "paths": unique, "failed": failed})
    evict_caches(folder, settings.cache_max_bytes(), keep=array_path)
    return ImageCache(array_path, unique, size, failed=failed, decoded=len(unique),
                      seconds=time.perf_counter() - started)


def _cache_files(folder: Path) -> list[Path]:
    return [path for path in folder.glob("*px.npy") if path.is_file()]


def evict_caches(folder: str | Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used caches in `folder` until the rest fit in `max_bytes`; return the deleted.

    One array per data set and size is kept until then (each is reused by every run at that size); the
    cache just built (`keep`) is never deleted, even alone over the limit.
    """
    arrays = sorted(_cache_files(Path(folder)), key=lambda path: path.stat().st_mtime)
    total = sum(path.stat().st_size for path in arrays)
    deleted = []
    for path in arrays:
        if total <= max_bytes:
            break
        if keep is not None and path == keep:
            continue
        total -= path.stat().st_size
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
        deleted.append(path)
    return deleted


def clear_caches(folder: str | Path | None = None) -> int:
    """Delete every decoded-image cache (`folder` defaults to settings.cache_dir()); return the bytes freed."""
    folder = Path(folder) if folder is not None else settings.cache_dir()
    freed = 0
    for path in _cache_files(folder) if folder.is_dir() else []:
        freed += path.stat().st_size
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
    return freed


def describe_bytes(count: int) -> str:
    """A byte count as people read it: '512 bytes', '3.4 kB', '12.0 MB', '1.25 GB'."""
    if count < 1_000_000:
        return f"{count / 1000:.1f} kB" if count >= 1000 else f"{count} bytes"
    return f"{count / 1e6:.1f} MB" if count < 1e9 else f"{count / 1e9:.2f} GB"


def describe_unreadable(cache: ImageCache, examples: int = 3) -> str | None:
    """One sentence on the images that could not be read (a count and a few examples), or None.

    A root of unreadable images would otherwise give one line per image; the full list is in the
    cache's index file.
    """
    if not cache.failed:
        return None
    problems = list(cache.failed.values())
    shown = "; ".join(problem.rstrip(".") for problem in problems[:examples])
    more = f"; and {len(problems) - examples} more" if len(problems) > examples else ""
    return (f"{len(problems)} of {len(cache.paths)} images could not be read and are left out: {shown}{more} "
            f"(all are listed under 'failed' in {cache.array_path.with_suffix('.json')})")


class CachedFaces:
    """Faces read from the cache's memmap, transformed, with their age and gender class (-1 = none).

    A map-style dataset for torch's DataLoader (`__len__` and `__getitem__` are all it asks for); it does not
    subclass torch's Dataset, so that importing this module (the app does, at start) does not import torch.

    An item is an index, or an (index, seed) pair from a seeded sampler: the augmentation RNG of
    that one sample then starts from `seed`, so the augmentations of an epoch depend only on the
    epoch's seed, not on the number of workers or on which worker draws the sample.

    `years` (exact ages, -1 where unknown; UTKFace) adds a fourth item, for a years age head.
    """

    def __init__(self, cache: ImageCache, rows: np.ndarray, age: np.ndarray, gender: np.ndarray, transform,
                 years: np.ndarray | None = None):
        if not (len(rows) == len(age) == len(gender)) or (years is not None and len(years) != len(rows)):
            raise ValueError("rows, age, gender and years must have the same length")
        if len(rows) and rows.min() < 0:
            raise ValueError("rows must not contain failed (-1) cache rows")
        self.array_path = cache.array_path
        self.rows = np.asarray(rows, dtype=np.int64)
        self.age = np.asarray(age, dtype=np.int64)
        self.gender = np.asarray(gender, dtype=np.int64)
        self.years = None if years is None else np.asarray(years, dtype=np.int64)
        self.transform = transform
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        # Worker processes open their own memmap instead of receiving a pickled copy of the images.
        return {**self.__dict__, "_array": None}

    def __getitem__(self, item) -> tuple:
        index, seed = item if isinstance(item, tuple) else (item, None)
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        image = np.array(self._array[self.rows[index]])
        if seed is None:
            tensor = self.transform(image)
        else:
            pipeline = self.transform.pipeline
            pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
            tensor = pipeline(image=image)["image"]
        if self.years is not None:
            return tensor, int(self.age[index]), int(self.gender[index]), int(self.years[index])
        return tensor, int(self.age[index]), int(self.gender[index])
