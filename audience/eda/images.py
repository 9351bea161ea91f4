"""The EDA parts that read image files: sizes from headers, and a montage of sample faces per class.

An unreadable image never stops the analysis: it becomes a row with an `error` in the size table
and a grey tile in the montage. Data read with images "none" gives an empty table and an image
that says so.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont, ImageOps

from audience.data.adience import AdienceData
from audience.data.images import IMAGE_ERRORS, check_pixel_count
from audience.eda.tables import set_title, title_for
from audience.errors import AudienceError
from audience.figures import empty_figure
from audience.labels import AGE_CLASSES, NO_CLASS, gender_label

SIZE_COLUMNS: tuple[str, ...] = ("path", "width", "height", "format", "error")
_GAP = 4
_LABEL_WIDTH = 96
_HEADER = 32


def _no_images_reason(data: AdienceData) -> str | None:
    if data.images == "none":
        return "the data was read with images 'none' (labels only)"
    if data.faces["path"].isna().all():
        return "no row of the table has an image"
    return None


def image_size_table(data: AdienceData, sample: int = 200, seed: int = 0) -> pd.DataFrame:
    """Width, height and format of up to `sample` randomly chosen images, read from their headers only.

    Columns: path, width, height, format, error (None, or why the file could not be read).
    """
    paths = data.faces["path"].dropna()
    if sample < len(paths):
        paths = paths.sample(n=max(sample, 0), random_state=seed)
    records = []
    for path in paths:
        try:
            with Image.open(path) as image:  # lazy: decodes nothing, reads the size from the header
                records.append((path, image.width, image.height, image.format, None))
        except IMAGE_ERRORS as exc:
            records.append((path, None, None, None, f"{type(exc).__name__}: {exc}"))
    table = pd.DataFrame(records, columns=list(SIZE_COLUMNS))
    return table.astype({"width": "Int64", "height": "Int64"})


def plot_image_sizes(data: AdienceData, sizes: pd.DataFrame) -> go.Figure:
    """Scatter of width against height of the sampled images, one marker per distinct size."""
    title = title_for(data, "Image sizes")
    reason = _no_images_reason(data)
    if reason is not None:
        return empty_figure(title, f"No image sizes: {reason}.")
    readable = sizes[sizes["error"].isna()]
    unreadable = len(sizes) - len(readable)
    if readable.empty:
        return empty_figure(title, f"None of the {len(sizes)} sampled images could be read.")
    groups = readable.groupby(["width", "height"]).size().rename("images").reset_index()
    largest = groups["images"].max()
    figure = go.Figure(go.Scatter(
        x=groups["width"], y=groups["height"], mode="markers",
        marker={"size": [8 + 32 * (n / largest) ** 0.5 for n in groups["images"]]},
        customdata=groups["images"], hovertemplate="%{x} x %{y}: %{customdata} images<extra></extra>",
    ))
    # axes from 0 with headroom: one distinct size otherwise gets a +-1 px range around its marker
    figure.update_layout(
        xaxis={"title": "width (px)", "range": [0, int(groups["width"].max()) * 1.2]},
        yaxis={"title": "height (px)", "range": [0, int(groups["height"].max()) * 1.2]},
    )
    sizes_word = "size" if len(groups) == 1 else "sizes"
    return set_title(figure, data, "Image sizes",
                     f"{len(sizes)} sampled images, {len(groups)} distinct {sizes_word}, {unreadable} unreadable")


def _read_tile(path: str, tile: int) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            check_pixel_count(image, path)
            image.draft("RGB", (tile * 2, tile * 2))  # JPEG decodes at a reduced scale: much faster for big files
            return ImageOps.fit(image.convert("RGB"), (tile, tile))
    except (*IMAGE_ERRORS, AudienceError):
        return None


def _message_image(title: str, message: str) -> Image.Image:
    font = ImageFont.load_default(size=16)
    width = int(max(font.getlength(title), font.getlength(message))) + 32
    canvas = Image.new("RGB", (max(width, 480), 96), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((16, 16), title, fill="black", font=font)
    draw.text((16, 52), message, fill=(160, 0, 0), font=font)
    return canvas


def build_sample_grid(data: AdienceData, per_class: int = 4, tile: int = 96, seed: int = 0) -> Image.Image:
    """A montage of up to `per_class` random faces per age class: one row per class, each tile marked
    with its gender label. Missing or unreadable images are grey tiles."""
    title = title_for(data, "Sample faces per age class")
    reason = _no_images_reason(data)
    if reason is not None:
        return _message_image(title, f"No sample faces: {reason}.")
    font = ImageFont.load_default(size=14)
    width = max(_LABEL_WIDTH + per_class * (tile + _GAP), int(font.getlength(title)) + 16)
    canvas = Image.new("RGB", (width, _HEADER + len(AGE_CLASSES) * (tile + _GAP)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 8), title, fill="black", font=font)
    with_images = data.faces[data.faces["path"].notna() & (data.faces["age_class"] != NO_CLASS)]
    for index, name in enumerate(AGE_CLASSES):
        rows = with_images[with_images["age_class"] == index]
        top = _HEADER + index * (tile + _GAP)
        draw.text((8, top + tile // 2 - 18), f"{name}\n{len(rows)} images", fill="black", font=font)
        picks = rows.sample(n=min(per_class, len(rows)), random_state=seed)
        for column in range(per_class):
            left = _LABEL_WIDTH + column * (tile + _GAP)
            face = _read_tile(picks["path"].iloc[column], tile) if column < len(picks) else None
            if face is None:
                draw.rectangle((left, top, left + tile - 1, top + tile - 1), fill=(220, 220, 220))
                if column < len(picks):
                    draw.text((left + 4, top + tile // 2 - 8), "unreadable", fill=(160, 0, 0), font=font)
                continue
            canvas.paste(face, (left, top))
            gender = gender_label(int(picks["gender_class"].iloc[column]))
            draw.text((left + 4, top + 2), gender, fill="white", font=font, stroke_width=2, stroke_fill="black")
    return canvas
