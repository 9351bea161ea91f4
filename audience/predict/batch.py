"""Prediction over files and folders (the engine of audience.cli.predict): one record per image."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from audience.data.images import read_image
from audience.errors import AudienceError, shorten
from audience.predict.drawing import draw_predictions
from audience.predict.predictor import Predictor, capped_note


def _annotated_path(out_dir: Path, image_path: Path, used: set[Path]) -> Path:
    """out_dir/<stem>.jpg, with a number added when two inputs share a stem (no output is overwritten)."""
    target = out_dir / f"{image_path.stem}.jpg"
    number = 1
    while target in used:
        number += 1
        target = out_dir / f"{image_path.stem}-{number}.jpg"
    used.add(target)
    return target


def _make_out_folder(out: Path) -> None:
    """Create the folder for annotated images, or AudienceError saying why it cannot be one (nothing is
    written over an existing file)."""
    if out.exists() and not out.is_dir():
        raise AudienceError(f"The output folder {shorten(out)} is an existing file, not a folder; give a folder "
                            "for the annotated images (the file is left as it is).")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = ("a part of the path is a file" if isinstance(error, FileExistsError | NotADirectoryError)
                  else error.strerror or error)
        raise AudienceError(f"Cannot create the output folder {shorten(out)} for the annotated images "
                            f"({reason}).") from None


def predict_files(
    images: Iterable[Path],
    predictor: Predictor,
    out_dir: str | Path | None = None,
    whole_image: bool = False,
    tta_flip: bool | None = None,
) -> Iterator[dict]:
    """For each image: {"image": path, "faces": [face dicts], "faces_found": n} or {"image": path, "error": sentence}.

    `faces_found` counts the faces before the predictor's max_faces cut; when it is larger than
    len(faces), the record also has a "note" saying so.

    A file that cannot be read yields its error record and the others go on. With `out_dir`, an
    annotated JPEG per readable image is written there (the record gains "annotated": path).
    """
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        _make_out_folder(out)
    used: set[Path] = set()
    for path in images:
        record: dict = {"image": str(path)}
        try:
            image = read_image(path)
            predictions, timings = predictor.predict_timed(image, whole_image=whole_image, tta_flip=tta_flip)
        except AudienceError as error:
            record["error"] = str(error)
            yield record
            continue
        record["faces"] = [prediction.to_dict() for prediction in predictions]
        record["faces_found"] = timings.faces_found
        note = capped_note(len(predictions), timings.faces_found, "raise --max-faces to see the rest")
        if note:
            record["note"] = note
        if out is not None:
            target = _annotated_path(out, Path(path), used)
            annotated = draw_predictions(image, predictions)
            try:
                Image.fromarray(np.asarray(annotated)).save(target, quality=92)
            except OSError as error:
                reason = error.strerror or error
                raise AudienceError(f"Cannot write the annotated image {target} ({reason}).") from error
            record["annotated"] = str(target)
        yield record
