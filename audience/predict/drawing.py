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
# gradio draws its overlays over the top of an image (the name badge top-left, the toolbar
# top-right): labels stay out of this top fraction of the image where they can.
OVERLAY_BAND = 0.15
MIN_FONT_SIZE = 8
# the font's size in pixels: a 28th of the image's short side, at least READABLE_FONT_SIZE (a 320x240 webcam
# frame got 8 px tall letters); only a label wider than the image is made smaller, down to MIN_FONT_SIZE
READABLE_FONT_SIZE = 16
FONT_PER_SHORT_SIDE = 1 / 28


def face_number(number: int) -> str:
    """How a face's number is written before its label: "#1", so that "1 22-32" never reads as "122-32"."""
    return f"#{number}"


def label_of(prediction: FacePrediction) -> str:
    """A face's label after its number: "22-32 0.61 · m 0.93", one head only, or "face 0.92" without a model."""
    parts = []
    for head in HEADS:
        probs = prediction.probs_of(head)
        if probs is not None:
            parts.append(f"{prediction.shown_label(head)} {max(probs):.2f}")
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


def _fitting_font(draw: ImageDraw.ImageDraw, texts: Sequence[str], size: int, width: int):
    """The default font at `size`, made smaller until the longest label fits the image's width."""
    while True:
        font = ImageFont.load_default(size=size)
        widest = max((draw.textbbox((0, 0), text, font=font)[2] for text in texts), default=0)
        if widest + 4 <= width or size <= MIN_FONT_SIZE:
            return font
        size = max(MIN_FONT_SIZE, int(size * 0.85))


def label_position(
    box: tuple[int, int, int, int], text_size: tuple[int, int], image_size: tuple[int, int]
) -> tuple[int, int]:
    """Where a label of (w, h) goes for a box (x0, y0, x1, y1) in an image of (width, height).

    Below the box where it fits; else above it unless that is in the top band, where the app's
    overlays sit (the image's name badge top-left, its toolbar top-right); else inside the box at
    its bottom. Always wholly inside the image.
    """
    (x0, y0, _, y1), (text_w, text_h), (width, height) = box, text_size, image_size
    band = OVERLAY_BAND * height
    if y1 + 1 + text_h <= height:
        top = y1 + 1
    elif y0 - text_h >= band:
        top = y0 - text_h
    else:
        top = max(y1 + 1 - text_h, round(band))
    return min(max(0, x0), max(0, width - text_w)), min(max(0, top), max(0, height - text_h))


def draw_predictions(image: np.ndarray, predictions: Sequence[FacePrediction],
                     numbers: Sequence[int] | None = None) -> np.ndarray:
    """An annotated RGB uint8 copy of `image` (same size): one box and a numbered label per face.

    Faces are numbered #1, #2, ... in the order given (the Predictor's reading order, the rows of
    the UI table and the CLI), or by `numbers` (a video's track ids). Line width and font size scale with
    the image, so labels stay legible on a 100 px crop and on a 6000 px photo alike; labels are placed by
    `label_position`.
    """
    canvas = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8, copy=False), mode="RGB")
    draw = ImageDraw.Draw(canvas)
    height, width = image.shape[:2]
    short_side = min(height, width)
    line_width = max(1, round(short_side / 250))
    numbers = range(1, len(predictions) + 1) if numbers is None else numbers
    texts = [f"{face_number(number)} {label_of(p)}" for number, p in zip(numbers, predictions, strict=True)]
    font = _fitting_font(draw, texts, max(READABLE_FONT_SIZE, round(short_side * FONT_PER_SHORT_SIDE)), width)
    for prediction, text in zip(predictions, texts, strict=True):
        x, y, w, h = prediction.box
        box = (int(x), int(y), int(x + w - 1), int(y + h - 1))
        colour = _colour_of(prediction)
        if prediction.uncertain:
            _dashed_rectangle(draw, box, colour, line_width)
        else:
            draw.rectangle(box, outline=colour, width=line_width)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = max(1, line_width)
        text_w, text_h = right - left + 2 * pad, bottom - top + 2 * pad
        text_x, text_y = label_position(box, (text_w, text_h), (width, height))
        draw.rectangle((text_x, text_y, text_x + text_w - 1, text_y + text_h - 1), fill=colour)
        draw.text((text_x + pad - left, text_y + pad - top), text, fill=TEXT_COLOUR, font=font)
    return np.asarray(canvas)
