"""Annotated copies of images: a box and a label per predicted face, readable at any image size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from audience.labels import HEADS
from audience.predict.predictor import FacePrediction

CONFIDENT_COLOUR = (46, 204, 64)  # green: both heads above the uncertainty threshold
UNCERTAIN_COLOUR = (255, 165, 0)  # amber, and the label ends in "?"
DETECTION_COLOUR = (0, 150, 255)  # blue: detection only, no classes
TEXT_COLOUR = (0, 0, 0)


def label_of(prediction: FacePrediction) -> str:
    """The text drawn above a face: "22-32 0.61 · m 0.93", one head only, or "face 0.92" without a model."""
    parts = []
    for head in HEADS:
        probs = prediction.probs_of(head)
        if probs is not None:
            parts.append(f"{prediction.label_of(head)} {max(probs):.2f}")
    if not parts:
        return "face" if prediction.score is None else f"face {prediction.score:.2f}"
    text = " · ".join(parts)
    return f"{text} ?" if prediction.uncertain else text


def _colour_of(prediction: FacePrediction) -> tuple[int, int, int]:
    if prediction.age_probs is None and prediction.gender_probs is None:
        return DETECTION_COLOUR
    return UNCERTAIN_COLOUR if prediction.uncertain else CONFIDENT_COLOUR


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], colour, width: int) -> None:
    """Uncertain faces get a dashed outline, so the difference does not rest on colour alone."""
    x0, y0, x1, y1 = box
    dash = max(4, width * 3)
    for start in range(x0, x1, dash * 2):
        end = min(start + dash, x1)
        draw.line([(start, y0), (end, y0)], fill=colour, width=width)
        draw.line([(start, y1), (end, y1)], fill=colour, width=width)
    for start in range(y0, y1, dash * 2):
        end = min(start + dash, y1)
        draw.line([(x0, start), (x0, end)], fill=colour, width=width)
        draw.line([(x1, start), (x1, end)], fill=colour, width=width)


def draw_predictions(image: np.ndarray, predictions: Sequence[FacePrediction]) -> np.ndarray:
    """An annotated RGB uint8 copy of `image` (same size): one box and label per face.

    Line width and font size scale with the image, so labels stay legible on a 100 px crop and on
    a 6000 px photo alike; a label that would leave the image is drawn inside the box instead.
    """
    canvas = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8, copy=False), mode="RGB")
    draw = ImageDraw.Draw(canvas)
    height, width = image.shape[:2]
    short_side = min(height, width)
    line_width = max(1, round(short_side / 250))
    font = ImageFont.load_default(size=max(10, round(short_side / 28)))
    for prediction in predictions:
        x, y, w, h = prediction.box
        box = (int(x), int(y), int(x + w - 1), int(y + h - 1))
        colour = _colour_of(prediction)
        if prediction.uncertain:
            _dashed_rectangle(draw, box, colour, line_width)
        else:
            draw.rectangle(box, outline=colour, width=line_width)
        text = label_of(prediction)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = max(1, line_width)
        text_w, text_h = right - left + 2 * pad, bottom - top + 2 * pad
        text_x = min(max(0, box[0]), max(0, width - text_w))
        text_y = box[1] - text_h if box[1] - text_h >= 0 else box[1] + line_width
        draw.rectangle((text_x, text_y, text_x + text_w, text_y + text_h), fill=colour)
        draw.text((text_x + pad - left, text_y + pad - top), text, fill=TEXT_COLOUR, font=font)
    return np.asarray(canvas)
