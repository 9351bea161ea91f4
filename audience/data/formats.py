"""Which dataset a folder holds, and reading it: an Adience root (the demo set too) or a UTKFace folder.

Both become the same face table (`AdienceData`), so everything downstream (EDA, splits, training,
evaluation) works on either. `read_dataset` is what the command lines and the tabs call.
"""

from __future__ import annotations

from pathlib import Path

from audience.data.adience import IMAGE_MODES, AdienceData, fold_file, image_folder_of, read_adience
from audience.data.utkface import UTKFACE_LICENCE, read_utkface_table, utkface_folder
from audience.errors import AudienceError, quoted

DATA_FORMATS: dict[str, str] = {"adience": "Adience layout", "utkface": "UTKFace folder"}  # format -> shown as


def detect_format(root: str | Path) -> str:
    """"adience" (fold files), "utkface" (a folder of *.chip.jpg, or its parent), or AudienceError."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise AudienceError(f"{root}: data root not found (expected an Adience root with fold_0_data.txt ... "
                            "fold_4_data.txt, or a UTKFace folder).")
    if fold_file(root, 0).is_file():
        return "adience"
    if utkface_folder(root) is not None:
        return "utkface"
    raise AudienceError(f"{root}: neither an Adience root (no fold_0_data.txt) nor a UTKFace folder "
                        "(no *.jpg.chip.jpg images in it or in UTKFace/).")


def images_to_explore(root: str | Path, images: str) -> str:
    """The image folder the EDA reads (the tab and the eda command alike): `images`, except that "auto" on an
    Adience root with neither aligned/ nor faces/ reads its labels only ("none") instead of refusing."""
    if images == "auto" and fold_file(Path(root), 0).is_file() and image_folder_of(Path(root)) is None:
        return "none"
    return images


def read_dataset(root: str | Path, policy: str = "bins", images: str = "auto") -> AdienceData:
    """The face table of an Adience root or a UTKFace folder, whichever `root` is (see detect_format)."""
    if detect_format(root) == "utkface":
        return read_utkface(root, policy, images)
    return read_adience(root, policy, images)


def read_utkface(root: str | Path, policy: str = "bins", images: str = "auto") -> AdienceData:
    """A UTKFace folder as a face table with image-level folds (see audience.utkface)."""
    if images not in IMAGE_MODES:
        raise AudienceError(f"unknown image folder {quoted(images)}: use one of {', '.join(IMAGE_MODES)}.")
    faces, folder, dropped, between = read_utkface_table(root, policy, images=images != "none")
    return AdienceData(faces=faces, root=folder.resolve(), policy=policy,
                       images="none" if images == "none" else "chips", name="UTKFace", format="utkface",
                       split_level="image", dropped=dropped,
                       between_groups=between, licence=UTKFACE_LICENCE)
