"""Albumentations pipelines: RGB uint8 face crop (HxWx3) in, normalised float tensor (3xSxS) out.

The eval pipeline keeps the aspect ratio (longest side to S, then pad to a square), so the
trainer's validation and the predictor's face crops see the same geometry. Pipelines are built
with strict=True so a misspelt argument raises instead of being ignored with a warning.

Reproducibility: albumentations 2 draws from its own RNG, not numpy's or torch's. A train
transform is seeded from `seed` (default: torch.initial_seed(), so torch.manual_seed(...) before
building it is enough); inside a DataLoader worker it reseeds itself once per worker iterator from
the worker's torch seed, which differs per worker and per epoch yet follows the loader's seed.
`transform(image, seed=s)` instead starts that one call from `s` (per-sample seeding).

albumentations (with scipy) and torch are imported where a pipeline is built or run, not with this module:
the app imports its constants at start and must not wait for torch (issue 19's cold start).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import cv2
import numpy as np

from audience.errors import AudienceError

if TYPE_CHECKING:
    import albumentations as A
    import torch

# "exposure": "default" plus over- and under-exposed, flat and hazy photos (see _exposure).
AUGMENT_STRENGTHS: tuple[str, ...] = ("none", "light", "default", "exposure")

# Train crops come from a square slightly larger than the input, as ImageNet-style training does (224 of 256).
TRAIN_MARGIN = 256 / 224


class ImageTransform:
    """A callable pipeline: `transform(image)` -> float32 tensor 3xSxS; `set_seed(seed)` restarts its RNG."""

    def __init__(self, pipeline: A.Compose, image_size: int, seed: int | None = None):
        self.pipeline = pipeline
        self.image_size = image_size
        self._worker_key: tuple[int, int] | None = None
        self.set_seed(seed)

    def set_seed(self, seed: int | None) -> None:
        """Restart the augmentation RNG; None takes torch.initial_seed() so torch.manual_seed governs it."""
        import torch

        self.seed = int(torch.initial_seed() if seed is None else seed) % 2**32
        self._restart_rng(self.seed)

    def _restart_rng(self, seed: int) -> None:
        # One generator shared by every step. albumentations' own set_random_seed / Compose(seed=)
        # gives each step its own generator with the same seed, so steps of equal p (flip, affine,
        # colour) would all fire together or not at all.
        self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def _reseed_in_worker(self) -> None:
        # Forked workers share the parent's RNG state: without this every worker (and every epoch
        # without persistent workers) would repeat the same augmentations.
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is None:
            return
        key = (info.id, info.seed)
        if key != self._worker_key:
            self._worker_key = key
            self._restart_rng((info.seed + self.seed) % 2**32)

    def __call__(self, image: np.ndarray, seed: int | None = None) -> torch.Tensor:
        """The transformed image; with `seed`, this one call's augmentations start from that seed
        (a per-sample seed makes an epoch independent of worker count and scheduling)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            described = (
                f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            )
            raise AudienceError(f"Expected an RGB uint8 image of shape HxWx3, got a {described}.")
        if min(image.shape[:2]) < 1:
            raise AudienceError(f"Expected a non-empty image, got shape {image.shape}.")
        if seed is None:
            self._reseed_in_worker()
        else:
            self._restart_rng(int(seed) % 2**32)
        return self.pipeline(image=image)["image"]

    def __repr__(self) -> str:
        return f"ImageTransform(size={self.image_size}, seed={self.seed}, pipeline={self.pipeline!r})"


def _check_size(image_size: int) -> int:
    if int(image_size) < 8:
        raise AudienceError(f"Image size {image_size} is too small: use at least 8 pixels.")
    return int(image_size)


def _square(size: int) -> list:
    """Longest side to `size`, then pad to size x size with black (keeps the face's aspect ratio)."""
    import albumentations as A

    return [
        A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_LINEAR, area_for_downscale="image"),
        A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_CONSTANT, fill=0),
    ]


def _finish(mean: Sequence[float], std: Sequence[float]) -> list:
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


def _augmentations(size: int, strength: str) -> list:
    import albumentations as A

    crop = A.RandomResizedCrop(size=(size, size), scale=(0.7, 1.0), ratio=(0.9, 1.1), area_for_downscale="image")
    flip = A.HorizontalFlip(p=0.5)  # never vertical: faces are upright
    if strength == "light":
        return [*_square(round(size * TRAIN_MARGIN)), crop, flip]
    steps = [
        *_square(round(size * TRAIN_MARGIN)),
        crop,
        flip,
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-15, 15), fill=0, p=0.5),
        A.OneOf(
            [
                A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2),
                A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=15, val_shift_limit=10),
                A.CLAHE(),
            ],
            p=0.5,
        ),
        A.ToGray(p=0.1),
        A.OneOf(
            [
                A.GaussianBlur(blur_limit=(3, 5)),
                A.MotionBlur(blur_limit=(3, 5)),
                A.GaussNoise(std_range=(0.02, 0.08)),
            ],
            p=0.3,
        ),
        A.ImageCompression(quality_range=(60, 100), p=0.3),
        A.CoarseDropout(
            num_holes_range=(1, 4), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15), fill=0, p=0.3
        ),
    ]
    if strength == "exposure":
        at = steps.index(flip) + 1
        steps[at:at] = _exposure()
    return steps


def _exposure() -> list:
    """Exposure as users' photos have it and UTKFace's mostly lack it: lifted toward white and flattened (flash,
    backlight, haze, a photo of a screen), or the mid-tones lightened, darkened or bent by a tone curve. Without it
    a young face washed out toward white is read as 55-100 (docs/measurements.md, "Washed-out photos")."""
    import albumentations as A

    return [
        # washed out: every pixel scaled by 0.4-0.8, then 10-50 % of the range added (flat and light)
        A.RandomBrightnessContrast(brightness_limit=(0.1, 0.5), contrast_limit=(-0.6, -0.2), p=0.2),
        # over- and underexposed mid-tones
        A.OneOf([A.RandomGamma(gamma_limit=(50, 200)), A.RandomToneCurve(scale=0.2)], p=0.3),
    ]


def build_train_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    strength: str = "default",
    seed: int | None = None,
    exposure: tuple[float, float] | None = None,
) -> ImageTransform:
    """Training pipeline for face crops: random resized crop, horizontal flip, and for "default" mild
    affine, colour jitter, occasional gray, blur/noise, JPEG compression and small cut-outs; "exposure" adds
    bright, flat, dark and tone-curved versions of the photo (44 % of the crops: 1 - 0.8 x 0.7) to "default".

    `strength` is one of AUGMENT_STRENGTHS ("none" is the eval pipeline). `seed`: see the module docstring.
    `exposure`: as build_eval_transform's, the crop standardised first (the augmentations then vary it).
    """
    size = _check_size(image_size)
    if strength not in AUGMENT_STRENGTHS:
        raise AudienceError(f"Unknown augmentation strength {strength!r}: use one of {', '.join(AUGMENT_STRENGTHS)}.")
    steps = _square(size) if strength == "none" else _augmentations(size, strength)
    import albumentations as A

    return ImageTransform(A.Compose([*_standardize(exposure), *steps, *_finish(mean, std)], strict=True), size, seed)


def build_eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float],
                         exposure: tuple[float, float] | None = None) -> ImageTransform:
    """Deterministic pipeline for validation, test and the predictor: aspect-keeping resize and pad, normalise.
    With `exposure` (a checkpoint's reference mean and std, 0-255 scale) it first standardises the crop's
    brightness and contrast to them (audience.data.exposure), before the black padding."""
    size = _check_size(image_size)
    import albumentations as A

    steps = [*_standardize(exposure), *_square(size), *_finish(mean, std)]
    return ImageTransform(A.Compose(steps, strict=True), size, seed=0)


def _standardize(exposure: tuple[float, float] | None) -> list:
    """With a reference (mean, std): the step that sets a crop's brightness and contrast to it, first in a pipeline
    (on the crop as cut, before any padding or augmentation); none without one."""
    if exposure is None:
        return []
    import albumentations as A

    from audience.data.exposure import standardize_exposure

    reference = {"mean": float(exposure[0]), "std": float(exposure[1])}
    return [A.Lambda(name="standardize_exposure", image=partial(standardize_exposure, **reference))]
