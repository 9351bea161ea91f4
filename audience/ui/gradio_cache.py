"""Make gradio's image output cache safe under concurrent identical outputs.

gradio 6.31 saves each output image to `<cache>/<content hash>/image.<fmt>` and rewrites that
file in place (`Path.write_bytes`) every time the same image is produced again. When several
requests return the same image at once, a download that overlaps a rewrite is cut short
("Too little data for declared Content-Length"): measured 9 of 60 identical concurrent
`/predict` calls failing. Writing to a temporary file and renaming it into place makes each
rewrite atomic, so every reader sees a whole file. Remove this once gradio writes atomically.
"""

from __future__ import annotations

from pathlib import Path

from gradio import processing_utils

from audience.files import write_bytes_atomic


def _save_pil_to_cache(img, cache_dir, name: str = "image", format: str = "webp") -> str:  # noqa: A002 (gradio's name)
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    target = (folder / f"{name}.{format}").resolve()
    write_bytes_atomic(target, data)
    return str(target)


def install_atomic_image_cache() -> None:
    """Replace gradio's in-place cache write with the atomic one (idempotent)."""
    processing_utils.save_pil_to_cache = _save_pil_to_cache
