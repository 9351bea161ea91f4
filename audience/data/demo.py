"""A synthetic demo dataset in the Adience layout: procedurally drawn faces, no real person.

The app, the tests and a first-time user need data whose age group and gender are visible,
without the research-only Adience images. The raw labels carry the same kinds of noise as the
real fold files (None, single ages, off-grid and two-class intervals, empty gender, `u` for most
babies), while the drawing always follows the true class. Albums are assigned to folds so that
folds are subject-exclusive and each holds every age class and both genders.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from audience import settings
from audience.data.adience import DEMO_MARKER, FOLD_COLUMNS, IMAGE_FOLDERS, N_FOLDS, fold_file, read_demo_marker
from audience.data.demo_faces import draw_face, make_look
from audience.errors import AudienceError, quoted
from audience.labels import AGE_CLASSES, CANONICAL_AGES

DEMO_NAME = "audience-demo"
DEMO_VERSION = 1
# An identifier stored in every demo marker, not the module path: kept so that demo sets made earlier stay valid.
GENERATOR = "audience.demo"
JPEG_QUALITY = 90
ANCHORS_PER_FOLD = len(AGE_CLASSES)  # one clean subject per age class in every fold
MIN_SUBJECTS = N_FOLDS * (ANCHORS_PER_FOLD + 4)  # a few more per fold to carry the label noise
MAX_SUBJECTS = 5000
# About 1000 images of 250 people, made in about 2 s: with fewer people (120) the tiny net learned the
# look of the training people more than the cues (fold-0 gender f/m 0.70-0.75 instead of 0.9+).
DEFAULT_SUBJECTS = 250

# Noisy raw age strings seen in the real files, keyed by the true class they are written for.
SINGLE_AGES = {0: ("2",), 1: ("3",), 2: ("13",), 4: ("22", "23", "29", "32"), 5: ("34", "35", "36", "42"),
               6: ("45", "46"), 7: ("55", "56", "57", "58")}
OFF_GRID_AGES = {4: ("(27, 32)", "(25, 23)"), 5: ("(38, 42)",)}
SPANNING_AGES = {2: "(8, 23)", 3: "(8, 23)", 5: "(38, 48)", 6: "(38, 48)"}
# Strings made to occur at least once (with the classes that may carry them), so users and tests see each kind.
REQUIRED_AGES = {"None": range(8), "2": (0,), "23": (4,), "35": (5,), "(27, 32)": (4,), "(25, 23)": (4,),
                 "(38, 42)": (5,), "(38, 48)": (5, 6), "(8, 23)": (2, 3)}
# Mildly uneven like the real data, with (25, 32) the largest group.
CLASS_WEIGHTS = np.array([0.13, 0.12, 0.12, 0.11, 0.18, 0.14, 0.10, 0.10])


@dataclass
class Subject:
    """One drawn person: true labels, the raw labels written for them, and where they live."""

    fold: int
    age_class: int
    gender: str  # the drawn gender, f or m
    anchor: bool  # kept clean so that every fold has every age class and both genders
    age_raw: str = ""
    gender_raw: str = ""
    user_id: str = ""
    face_id: int = 0
    look: dict = field(default_factory=dict)


def _plan_subjects(rng: np.random.Generator, n_subjects: int) -> list[Subject]:
    subjects = []
    for fold in range(N_FOLDS):
        count = n_subjects // N_FOLDS + (fold < n_subjects % N_FOLDS)
        classes = list(range(ANCHORS_PER_FOLD)) + list(rng.choice(8, size=count - ANCHORS_PER_FOLD, p=CLASS_WEIGHTS))
        first = int(rng.integers(2))
        for i, age_class in enumerate(classes):
            anchor = i < ANCHORS_PER_FOLD
            gender = "fm"[(age_class + first) % 2] if anchor else "fm"[int(rng.integers(2))]
            subjects.append(Subject(fold, int(age_class), gender, anchor))
    return subjects


def _label_subjects(rng: np.random.Generator, subjects: list[Subject]) -> None:
    """Write raw labels with Adience-like noise; anchors stay clean."""
    for s in subjects:
        s.age_raw, s.gender_raw = CANONICAL_AGES[s.age_class], s.gender
        if s.age_class == 0 and rng.random() < 0.65 or s.age_class == 1 and not s.anchor and rng.random() < 0.1:
            s.gender_raw = "u"  # as in the real files, most babies' gender is unknown
        if s.anchor:
            continue
        roll = rng.random()
        if roll < 0.05:
            s.age_raw = "None"
        elif roll < 0.14 and s.age_class in SINGLE_AGES:
            s.age_raw = str(rng.choice(SINGLE_AGES[s.age_class]))
        elif roll < 0.20 and s.age_class in OFF_GRID_AGES:
            s.age_raw = str(rng.choice(OFF_GRID_AGES[s.age_class]))
        elif roll < 0.23 and s.age_class in SPANNING_AGES:
            s.age_raw = SPANNING_AGES[s.age_class]
        if rng.random() < 0.04:
            s.gender_raw = ""
    for raw, classes in REQUIRED_AGES.items():
        carriers = [s for s in subjects if not s.anchor and s.age_class in classes
                    and s.age_raw == CANONICAL_AGES[s.age_class]]
        if carriers and all(s.age_raw != raw for s in subjects):
            carriers[int(rng.integers(len(carriers)))].age_raw = raw
    free = [s for s in subjects if not s.anchor and s.gender_raw]
    if free and all(s.gender_raw for s in subjects):
        free[int(rng.integers(len(free)))].gender_raw = ""


def _name_photo(rng: np.random.Generator, taken: set[str]) -> str:
    while True:  # Flickr-like names, as in the real fold files
        name = f"{rng.integers(10**10, 10**11)}_{int(rng.integers(16**10)):010x}_o.jpg"
        if name not in taken:
            taken.add(name)
            return name


def _plan_rows(rng: np.random.Generator, subjects: list[Subject], per_subject: tuple[int, int]) -> list[dict]:
    """Group each fold's subjects into albums of 1-4 people and give each person 2-6 photos.

    Some photos of an album are shared by several of its people, as in real group pictures.
    """
    groups: list[list[Subject]] = []
    for fold in range(N_FOLDS):
        members = [subjects[i] for i in rng.permutation(len(subjects)) if subjects[i].fold == fold]
        while members:
            size = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.3, 0.25, 0.15]))
            groups.append(members[:size])
            members = members[size:]
    rows, taken = [], set()
    for number, group in zip(rng.permutation(len(groups)) + 1, groups, strict=True):
        user_id = f"demo{number:04d}@N0{int(rng.integers(10))}"
        album: list[str] = []
        for face_id, s in enumerate(group, start=1):
            s.user_id, s.face_id = user_id, face_id
            s.look = make_look(rng, s.age_class, s.gender)
            mine: list[str] = []
            for _ in range(int(rng.integers(per_subject[0], per_subject[1] + 1))):
                shared = [photo for photo in album if photo not in mine]
                photo = str(rng.choice(shared)) if shared and rng.random() < 0.3 else _name_photo(rng, taken)
                mine.append(photo)
                age_raw = "None" if not s.anchor and rng.random() < 0.02 else s.age_raw
                rows.append({"subject": s, "original_image": photo, "age": age_raw})
            album += [photo for photo in mine if photo not in album]
    rows.sort(key=lambda r: (r["subject"].fold, r["subject"].user_id, r["original_image"], r["subject"].face_id))
    return rows


def _build(folder: Path, seed: int, n_subjects: int, per_subject: tuple[int, int], size: int) -> dict:
    rng = np.random.default_rng(seed)
    subjects = _plan_subjects(rng, n_subjects)
    _label_subjects(rng, subjects)
    rows = _plan_rows(rng, subjects, per_subject)
    lines: list[list[str]] = [["\t".join(FOLD_COLUMNS)] for _ in range(N_FOLDS)]
    prefix = IMAGE_FOLDERS["aligned"]
    for index, row in enumerate(rows):
        s = row["subject"]
        photo_rng = np.random.default_rng([seed, index])  # one stream per photo: pose and metadata agree
        image, angle, yaw = draw_face(s.look, photo_rng, size)
        box = int(photo_rng.integers(150, 1400))
        values = (s.user_id, row["original_image"], str(s.face_id), row["age"], s.gender_raw,
                  str(int(photo_rng.integers(0, 2600 - box))), str(int(photo_rng.integers(0, 1800 - box))),
                  str(box), str(box + int(photo_rng.integers(0, 2))), str(int(round(-angle))),
                  str(int(round(yaw * 2)) * 15), str(int(photo_rng.integers(0, 150))))
        lines[s.fold].append("\t".join(values))
        target = folder / "aligned" / s.user_id / f"{prefix}.{s.face_id}.{row['original_image']}"
        target.parent.mkdir(parents=True, exist_ok=True)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise AudienceError(f"{target}: OpenCV could not encode the drawn image as JPEG.")
        target.write_bytes(encoded.tobytes())
    for fold in range(N_FOLDS):
        fold_file(folder, fold).write_text("\n".join(lines[fold]) + "\n", encoding="utf-8")
    marker = {"name": DEMO_NAME, "synthetic": True, "seed": seed, "generator": GENERATOR, "version": DEMO_VERSION,
              "n_subjects": n_subjects, "images_per_subject": list(per_subject), "image_size": size,
              "images": len(rows), "albums": len({s.user_id for s in subjects}),
              "rows_per_fold": [len(fold_lines) - 1 for fold_lines in lines],
              "note": "Procedurally drawn faces of no real person; the raw labels carry Adience-like noise on purpose."}
    # Written last: a folder without it was never finished.
    (folder / DEMO_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return marker


def _check_settings(seed, n_subjects, images_per_subject, image_size) -> tuple[int, int]:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise AudienceError(f"seed must be a whole number >= 0, got {quoted(seed)}.")
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int | np.integer) or not (
            MIN_SUBJECTS <= n_subjects <= MAX_SUBJECTS):
        raise AudienceError(f"the number of subjects must be a whole number from {MIN_SUBJECTS} to {MAX_SUBJECTS}, "
                            f"got {quoted(n_subjects)}.")
    try:
        low, high = (images_per_subject,) * 2 if np.isscalar(images_per_subject) else images_per_subject
        low, high = int(low), int(high)
    except (TypeError, ValueError):
        low, high = 0, 0
    if not (1 <= low <= high <= 50):
        raise AudienceError(f"images per subject must be a number or a (low, high) range within 1..50, "
                            f"got {quoted(images_per_subject)}.")
    if not isinstance(image_size, int) or not 32 <= image_size <= 512:
        raise AudienceError(f"image size must be a whole number of pixels from 32 to 512, got {quoted(image_size)}.")
    return low, high


def _is_finished_demo(out: Path, wanted: dict) -> bool:
    marker = read_demo_marker(out) or {}
    return (all(marker.get(key) == value for key, value in wanted.items())
            and all(fold_file(out, fold).is_file() for fold in range(N_FOLDS)))


def make_demo_dataset(out: str | Path, seed: int = 0, n_subjects: int = DEFAULT_SUBJECTS,
                      images_per_subject: int | tuple[int, int] = (2, 6), image_size: int = 128,
                      overwrite: bool = False) -> Path:
    """Write (or reuse) the synthetic demo dataset at `out` and return its resolved path.

    A finished demo dataset made with the same settings is reused unless `overwrite`; a demo
    dataset made otherwise is rebuilt. A non-empty folder that is not a demo dataset is never
    touched (AudienceError), overwrite or not. The data are built in a hidden sibling folder and
    moved into place at the end, so `out` is either absent, the old dataset or the finished new one.
    """
    per_subject = _check_settings(seed, n_subjects, images_per_subject, image_size)
    out = Path(out).expanduser().absolute()
    wanted = {"generator": GENERATOR, "version": DEMO_VERSION, "seed": int(seed), "n_subjects": int(n_subjects),
              "images_per_subject": list(per_subject), "image_size": image_size}
    if out.exists():
        check_demo_folder(out)
        if not overwrite and _is_finished_demo(out, wanted):
            return out.resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise AudienceError(f"{out}: cannot create the demo dataset there ({exc.strerror}).") from None
    try:
        _build(staging, int(seed), int(n_subjects), per_subject, image_size)
        _move_into_place(staging, out)
    except OSError as exc:
        if _is_finished_demo(out, wanted):  # another process finished the same dataset first
            return out.resolve()
        raise AudienceError(f"{out}: could not write the demo dataset ({exc.strerror or exc}).") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out.resolve()


def _move_into_place(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        out.rename(old)  # replaces the empty placeholder folder
    try:
        staging.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_demo_folder(out: str | Path) -> None:
    """AudienceError when `out` exists and cannot hold the demo dataset: a file, or a non-empty folder holding
    something else (never overwritten). Cheap: the app checks it at start and makes the data on first use."""
    out = Path(out).expanduser().absolute()
    if not out.exists():
        return
    if not out.is_dir():
        raise AudienceError(f"{out}: is a file, not a folder; choose another place for the demo dataset.")
    if any(out.iterdir()) and (read_demo_marker(out) or {}).get("generator") != GENERATOR:
        raise AudienceError(f"{out}: the folder is not empty and holds no demo dataset; "
                            "choose an empty or new folder (nothing there was changed).")


# One maker at a time in this process: the EDA tab's page load and a training job may both ask for it first.
_making = threading.Lock()


def ensure_demo_dataset(root: str | Path | None = None) -> Path:
    """The demo dataset at `root` (default: settings.demo_root()), made on first use."""
    with _making:
        return make_demo_dataset(settings.demo_root() if root is None else root)
