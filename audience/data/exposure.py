"""Exposure standardisation: a face crop's brightness and contrast set to those of the training faces.

A flash, a bright window or haze lifts a photo toward white and flattens it; a dim room darkens it. To a first
approximation each is the same change of every pixel, `a * pixel + b`, and a model trained on well-lit faces
reads light, flat skin and hair as grey and old (docs/measurements.md, "Washed-out photos"). Standardising
undoes any such change before the model sees the crop: the crop's pixels (all three channels together, so
colour is kept) are moved and scaled to the mean and spread its model's training faces have on average. A
crop already lit like them changes little.

A checkpoint that standardises records the training faces' figures as `exposure` (`mean`, `std` on the 0-255
scale, and the faces they were measured on); its eval transform (audience.data.transforms) then starts with
`standardize_exposure`. A model trained with `--standardize-exposure` records them from its training faces
(audience.train.prepare.exposure_reference) and saw its training crops standardised too; for a model trained
without it, `python -m audience.cli.benchmark exposure-reference --checkpoint C --write` measures and records them
(audience.bench.exposure).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np

# Ranges a recorded reference must fall in (0-255 pixel scale): a mean at either end or a spread of almost
# nothing would turn every face into one flat colour.
MEAN_RANGE = (16.0, 240.0)
STD_RANGE = (8.0, 128.0)
# Training faces a reference is measured on (a fixed sample of them: the same on every machine and on resuming).
REFERENCE_SAMPLE = 2000
# Below this spread (a blank or almost uniform crop) the crop is left as it is rather than its noise amplified.
MIN_STD = 2.0


def standardize_exposure(image: np.ndarray, mean: float, std: float, **_) -> np.ndarray:
    """The RGB uint8 `image` with its pixels moved and scaled, all channels alike, to mean `mean` and standard
    deviation `std` (0-255 scale), rounded and clipped to 0-255. An image of almost no spread is returned unchanged.
    (`**_`: albumentations' Lambda passes its parameters along.)

    One table of 256 values applied to every pixel (cv2.LUT) after OpenCV's per-channel mean and spread: about
    0.26 ms for a 400 px crop, where the same in float32 numpy took 3.7 ms (2-core box, under load)."""
    channel_means, channel_stds = (values.ravel() for values in cv2.meanStdDev(np.ascontiguousarray(image)))
    own_mean = float(channel_means.mean())
    own_std = math.sqrt(max(0.0, float(np.mean(channel_stds ** 2 + channel_means ** 2)) - own_mean ** 2))
    if own_std < MIN_STD:
        return image
    table = np.clip(np.rint((np.arange(256) - own_mean) * (float(std) / own_std) + float(mean)), 0, 255)
    return cv2.LUT(np.ascontiguousarray(image), table.astype(np.uint8))


def exposure_statistics(images: Iterable[np.ndarray]) -> dict:
    """The reference of a set of RGB uint8 images: {"mean": the mean of their pixel means, "std": the mean of
    their pixel standard deviations (all channels together), "images": how many}. AudienceError for none."""
    from audience.errors import AudienceError

    means, stds = [], []
    for image in images:
        pixels = np.asarray(image, dtype=np.float32)
        means.append(float(pixels.mean()))
        stds.append(float(pixels.std()))
    if not means:
        raise AudienceError("No readable image to measure the exposure of.")
    return {"mean": round(float(np.mean(means)), 2), "std": round(float(np.mean(stds)), 2), "images": len(means)}
