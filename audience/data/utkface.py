"""Reading a UTKFace folder into the same face table as an Adience root.

UTKFace ("Aligned & Cropped") is a folder of 200x200 JPEG chips named
`age_gender_race_datetime.jpg.chip.jpg` (gender 0 = male, 1 = female; race 0-4). The release has
messy names: a missing field (`39_1_20170116174525125.jpg.chip.jpg`), a space before `.jpg`, a
missing dot (`…357jpg.chip.jpg`). Age and gender are the first two fields, so whatever name still
starts with `age_gender_` is read; a name that does not is dropped, counted and named.

UTKFace lists no identities, so its folds are made from the file name (a stable hash, the same on
every machine) and are **image-level**: one person may have images in two folds. Every run, card and
comparison made from it says so (`split_level` "image").

Ages are exact; they get one of the eight Adience groups by the label policy (`labels.age_class_of`):
an age between two groups (7, 14, 21, 33, 44, 54) or over 100 keeps its row (its gender still
counts) with no age class, and is counted, never mapped to a neighbouring group.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import pandas as pd

from audience.data.contained import files_inside, resolves_inside
from audience.errors import AudienceError, quoted
from audience.labels import GENDER_CLASSES, NO_CLASS, POLICIES, age_class_of

UTKFACE_SUFFIX = ".chip.jpg"
UTKFACE_SUBFOLDER = "UTKFace"
UTKFACE_FOLDS = 5
UTKFACE_GENDERS = {"0": "m", "1": "f"}
UTKFACE_RACES = ("White", "Black", "Asian", "Indian", "Others")
UTKFACE_LICENCE = ("UTKFace: non-commercial research purposes only; the copyright of the images belongs "
                   "to their original owners (https://susanqq.github.io/UTKFace/)")
MAX_AGE = 116  # the oldest age in the release

_NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>\d)(?:_(?P<race>\d))?_")


def image_files(folder: Path, root: Path | None = None) -> list[str]:
    """The names of the UTKFace chips directly in `folder` (sorted), [] when it is not a folder; only
    those whose real location is inside `root` (default: `folder`), so a symlink never leads out."""
    return sorted(name for name in files_inside(folder, folder if root is None else root)
                  if name.endswith(UTKFACE_SUFFIX))


LINKS_OUT = "a symlink that leads out of the folder (skipped)"


def links_leading_out(folder: Path, root: Path) -> list[str]:
    """The chips in `folder` that are symlinks to files outside `root`: skipped, so that a data root never
    opens a file elsewhere (audience.data.contained), and counted, so that a folder of links says why."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entry.name for entry in entries
                          if entry.name.endswith(UTKFACE_SUFFIX) and entry.is_symlink()
                          and not resolves_inside(entry.path, root))
    except OSError:
        return []


def utkface_folder(root: Path) -> Path | None:
    """The folder of chips of a UTKFace root: the root itself or its `UTKFace/` subfolder; None if neither."""
    root = Path(root)
    for folder in (root, root / UTKFACE_SUBFOLDER):
        if folder.is_dir() and any(name.endswith(UTKFACE_SUFFIX) for name in _first_names(folder)):
            return folder
    return None


def _first_names(folder: Path, limit: int = 200) -> list[str]:
    names = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                names.append(entry.name)
                if len(names) >= limit:
                    break
    except OSError:
        return []
    return names


def parse_utkface_name(name: str) -> tuple[int, str, str | None] | str:
    """(age, gender f/m, race name or None) of a chip's file name, or the reason it cannot be read."""
    match = _NAME.match(name)
    if not match:
        return "name does not start with age_gender_"
    age = int(match.group("age"))
    gender = UTKFACE_GENDERS.get(match.group("gender"))
    if gender is None:
        return "gender field is not 0 or 1"
    if not 0 < age <= MAX_AGE:
        return f"age outside 1-{MAX_AGE}"
    race_field = match.group("race")
    race = UTKFACE_RACES[int(race_field)] if race_field is not None and int(race_field) < len(UTKFACE_RACES) else None
    return age, gender, race


def fold_of_name(name: str, folds: int = UTKFACE_FOLDS) -> int:
    """The image-level fold of a file name: a stable hash (crc32), the same on every machine and Python."""
    return zlib.crc32(name.encode("utf-8")) % folds


def read_utkface_table(root: str | Path, policy: str = "bins", images: bool = True):
    """(faces table, folder, dropped {reason: [names]}, between_groups count) of a UTKFace root.

    The table has the Adience reader's columns (user_id and subject are the file name: no identities)
    plus `age_years` and `race`. Raises AudienceError when the folder holds no chip at all.
    """
    if policy not in POLICIES:
        raise AudienceError(f"unknown label policy {quoted(policy)}: use one of {', '.join(POLICIES)}.")
    root = Path(root).expanduser()
    folder = utkface_folder(root)
    if folder is None:
        raise AudienceError(f"{root}: no UTKFace images (*{UTKFACE_SUFFIX}) in it or in its "
                            f"{UTKFACE_SUBFOLDER}/ folder.")
    folder = folder.resolve()
    records, dropped = [], {}
    for name in image_files(folder, root):
        parsed = parse_utkface_name(name)
        if isinstance(parsed, str):
            dropped.setdefault(parsed, []).append(name)
            continue
        age, gender, race = parsed
        records.append((fold_of_name(name), name, "0", name, name, str(folder / name) if images else None,
                        str(age), gender, age_class_of(age, policy), GENDER_CLASSES.index(gender), age, race))
    outside = links_leading_out(folder, root)
    if outside:
        dropped[LINKS_OUT] = outside
    if not records:
        unread = sum(len(names) for reason, names in dropped.items() if reason != LINKS_OUT)
        if outside:
            raise AudienceError(
                f"{folder}: no UTKFace image in it could be read: {len(outside)} of its files are symlinks that lead "
                f"out of the folder and were skipped, {unread} other file names could not be read (a data root's "
                "images must lie inside it: copy the files, or point at the folder the links lead to).")
        raise AudienceError(f"{folder}: none of its {unread} UTKFace file names could be read (expected "
                            "age_gender_race_datetime.jpg.chip.jpg).")
    faces = pd.DataFrame(records, columns=["fold", "user_id", "face_id", "subject", "original_image", "path",
                                           "age_raw", "gender_raw", "age_class", "gender_class", "age_years", "race"])
    faces = faces.astype({"fold": "int8", "age_class": "int8", "gender_class": "int8", "age_years": "int16"})
    between = int((faces["age_class"] == NO_CLASS).sum())
    return faces, folder, dropped, between
