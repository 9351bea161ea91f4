"""Reading an Adience root into one table of faces.

An Adience root holds `fold_0_data.txt` ... `fold_4_data.txt` and images under
`aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>` and/or
`faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>`. The demo dataset has the
same layout plus a `DEMO_MARKER` file that says it is synthetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from audience.data.contained import files_inside, is_plain_name, is_symlink_loop, missing_reason, resolves_inside
from audience.errors import AudienceError, quoted, shorten
from audience.files import read_json
from audience.labels import NO_CLASS, POLICIES, parse_age, parse_gender

N_FOLDS = 5
FOLD_COLUMNS: tuple[str, ...] = (
    "user_id", "original_image", "face_id", "age", "gender", "x", "y", "dx", "dy",
    "tilt_ang", "fiducial_yaw_angle", "fiducial_score",
)
IMAGE_MODES: tuple[str, ...] = ("auto", "aligned", "faces", "none")
IMAGE_FOLDERS: dict[str, str] = {
    "aligned": "landmark_aligned_face",
    "faces": "coarse_tilt_aligned_face",
}
DEMO_MARKER = "audience_demo.json"

# Columns of AdienceData.faces, in order. `age_class` / `gender_class` are class indices into
# labels.AGE_CLASSES / GENDER_CLASSES, NO_CLASS (-1) where the row has no such label.
TABLE_COLUMNS: tuple[str, ...] = (
    "fold", "user_id", "face_id", "subject", "original_image", "path",
    "age_raw", "gender_raw", "age_class", "gender_class",
)


@dataclass
class AdienceData:
    """One row per face with its labels, plus what was read and how."""

    faces: pd.DataFrame
    root: Path
    policy: str
    images: str  # the folder actually used: "aligned", "faces" or "none" (metadata only)
    missing_images: int = 0
    synthetic: bool = False
    name: str = "adience"
    missing_examples: list[str] = field(default_factory=list)
    format: str = "adience"  # "adience" (the demo set too) or "utkface"
    split_level: str = "subject"  # "subject": folds keep people apart; "image": no identities (UTKFace)
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> names of rows left out (UTKFace)
    between_groups: int = 0  # rows whose exact age lies in no age group of the policy (UTKFace)
    licence: str | None = None
    crop: dict | None = None  # where faces sit in the images (measured for training, see audience.crop_geometry)
    alignment: dict | None = None  # how level their eyes are, when they are (measured for training, see align)

    def describe(self) -> dict:
        """What a run, checkpoint or card records about the data: name, format, split level, counts, licence."""
        return {"name": self.name, "synthetic": self.synthetic, "policy": self.policy, "images": self.images,
                "format": self.format, "split_level": self.split_level, "faces": len(self.faces),
                "dropped": {reason: len(names) for reason, names in self.dropped.items()},
                "between_groups": self.between_groups, "licence": self.licence}

    @property
    def labelled_age(self) -> pd.DataFrame:
        return self.faces[self.faces["age_class"] != NO_CLASS]

    @property
    def labelled_gender(self) -> pd.DataFrame:
        return self.faces[self.faces["gender_class"] != NO_CLASS]


def fold_file(root: Path, fold: int) -> Path:
    return Path(root) / f"fold_{fold}_data.txt"


def image_path(root: Path, images: str, user_id: str, face_id: str, original_image: str) -> Path:
    """Where the image of one face lies under the chosen folder."""
    prefix = IMAGE_FOLDERS[images]
    return Path(root) / images / user_id / f"{prefix}.{face_id}.{original_image}"


def read_fold_file(path: Path, fold: int) -> pd.DataFrame:
    """The rows of one fold file as strings, checked line by line.

    Raises AudienceError naming the file and line for a wrong header or a malformed line.
    Windows line endings and a UTF-8 byte-order mark are accepted.
    """
    path = Path(path)
    if is_symlink_loop(path):
        raise AudienceError(f"{path}: the fold file is {missing_reason(path)}.")
    if not path.is_file():
        raise AudienceError(f"{path}: fold file not found (an Adience root needs fold_0_data.txt ... fold_4_data.txt).")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AudienceError(f"{path}: not a text file ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:  # e.g. no read permission, or a folder named like the file
        raise AudienceError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    # Lines end at \n or \r\n only, as in any TSV reader: str.splitlines() also breaks at a form feed, U+2028
    # and other separators inside a field, which then reads as a line with too few fields.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines[-1] == "":
        lines.pop()
    if not lines:
        raise AudienceError(f"{path} line 1: the file is empty; expected a header line.")
    header = tuple(cell.strip() for cell in lines[0].split("\t"))
    if header != FOLD_COLUMNS:
        raise AudienceError(
            f"{path} line 1: wrong header; expected the 12 tab-separated columns "
            f"{', '.join(FOLD_COLUMNS)}, found {shorten(', '.join(header) or 'nothing')}."
        )
    records = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = [cell.strip() for cell in line.split("\t")]
        if len(cells) != len(FOLD_COLUMNS):
            raise AudienceError(
                f"{path} line {number}: expected {len(FOLD_COLUMNS)} tab-separated fields, found {len(cells)}."
            )
        user_id, original_image, face_id = _checked_names(path, number, cells)
        records.append((fold, user_id, face_id, cells[3], cells[4], original_image))
    frame = pd.DataFrame(records, columns=["fold", "user_id", "face_id", "age_raw", "gender_raw", "original_image"])
    if frame.empty:
        raise AudienceError(f"{path}: the fold file has a header but no rows.")
    return frame


def _checked_names(path: Path, number: int, cells: list[str]) -> tuple[str, str, str]:
    """(user_id, original_image, face_id) of one line, which name files under the root: plain names only."""
    user_id, original_image, face_id = cells[0], cells[1], cells[2]
    if not user_id or not original_image:
        raise AudienceError(f"{path} line {number}: user_id and original_image must not be empty.")
    if not (is_plain_name(user_id) and is_plain_name(original_image)):
        raise AudienceError(f"{path} line {number}: user_id and original_image must be plain names, "
                            "without '/', '\\', '..' or a NUL byte.")
    if not face_id.isdigit():
        raise AudienceError(f"{path} line {number}: face_id must be a whole number, found {quoted(face_id)}.")
    return user_id, original_image, face_id


def image_folder_of(root: Path) -> str | None:
    """The image folder `images="auto"` reads ("aligned", else "faces"), or None for a labels-only root."""
    return next((candidate for candidate in ("aligned", "faces") if (Path(root) / candidate).is_dir()), None)


def _resolve_images(root: Path, images: str) -> str:
    if images not in IMAGE_MODES:
        raise AudienceError(f"unknown image folder {quoted(images)}: use one of {', '.join(IMAGE_MODES)}.")
    if images == "auto":
        if (found := image_folder_of(root)) is not None:
            return found
        raise AudienceError(
            f"{root}: neither aligned/ nor faces/ exists; point to a root with images, "
            "or read the labels only (images 'none')."
        )
    if images != "none" and not (root / images).is_dir():
        raise AudienceError(f"{root / images}: folder not found (choose another image folder or 'auto').")
    return images


def read_demo_marker(root: Path) -> dict | None:
    """The demo dataset's marker (it says the data is synthetic), or None for a real root."""
    marker = Path(root) / DEMO_MARKER
    if not marker.is_file():
        return None
    try:
        return read_json(marker)
    except (OSError, ValueError):
        return {"synthetic": True}


def read_adience(root: str | Path, policy: str = "bins", images: str = "auto") -> AdienceData:
    """Read the five fold files of an Adience root into one table of faces.

    `images`: "aligned", "faces", "auto" (aligned if present, else faces) or "none" (labels only,
    no image is looked for). Rows whose image is missing are left out and counted. Raises
    AudienceError with one sentence for a missing root or file, a malformed line, or folds that
    are not subject-exclusive.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise AudienceError(
            f"{root}: data root not found (expected a folder with fold_0_data.txt ... fold_4_data.txt)."
        )
    if policy not in POLICIES:
        raise AudienceError(f"unknown label policy {quoted(policy)}: use one of {', '.join(POLICIES)}.")
    root = root.resolve()
    for fold in range(N_FOLDS):
        if fold_file(root, fold).exists() and not resolves_inside(fold_file(root, fold), root):
            raise AudienceError(f"{fold_file(root, fold)}: the fold file leads outside the data root {root} "
                                "(a symlink); it is not read.")
    frames = [read_fold_file(fold_file(root, fold), fold) for fold in range(N_FOLDS)]
    faces = pd.concat(frames, ignore_index=True)

    folds_per_user = faces.groupby("user_id")["fold"].unique()
    shared = folds_per_user[folds_per_user.map(len) > 1]
    if len(shared):
        user = shared.index[0]
        folds = ", ".join(str(f) for f in sorted(shared.iloc[0]))
        raise AudienceError(
            f"{root}: folds are not subject-exclusive: user_id {user} appears in folds {folds} "
            f"({len(shared)} user_id(s) in more than one fold)."
        )

    used = _resolve_images(root, images)
    faces["subject"] = faces["user_id"] + "/" + faces["face_id"]
    faces["age_class"] = faces["age_raw"].map(lambda raw: parse_age(raw, policy)).astype("int8")
    faces["gender_class"] = faces["gender_raw"].map(parse_gender).astype("int8")
    faces["fold"] = faces["fold"].astype("int8")

    missing = 0
    examples: list[str] = []
    if used == "none":
        faces["path"] = None
    else:
        listing: dict[str, set[str]] = {}
        paths = []
        for user_id, face_id, original in zip(faces["user_id"], faces["face_id"], faces["original_image"], strict=True):
            if user_id not in listing:
                listing[user_id] = files_inside(root / used / user_id, root)
            path = image_path(root, used, user_id, face_id, original)
            paths.append(str(path) if path.name in listing[user_id] else None)
        faces["path"] = paths
        absent = faces["path"].isna()
        missing = int(absent.sum())
        examples = [
            str(image_path(root, used, u, f, o))
            for u, f, o in faces.loc[absent, ["user_id", "face_id", "original_image"]].head(5).itertuples(index=False)
        ]
        faces = faces[~absent].reset_index(drop=True)

    marker = read_demo_marker(root)
    return AdienceData(
        faces=faces[list(TABLE_COLUMNS)],
        root=root,
        policy=policy,
        images=used,
        missing_images=missing,
        synthetic=marker is not None,
        name=(marker or {}).get("name", "adience-demo") if marker is not None else root.name,
        missing_examples=examples,
    )
