"""Make gradio's image output cache safe under concurrent identical outputs.

gradio 6.31 saves each output image to `<cache>/<content hash>/image.<fmt>` and rewrites that
file in place (`Path.write_bytes`) every time the same image is produced again. When several
requests return the same image at once, a download that overlaps a rewrite is cut short
("Too little data for declared Content-Length"; how often is in docs/measurements.md). Writing
to a temporary file and renaming it into place makes each rewrite atomic, so every reader sees a
whole file. Remove this once gradio writes atomically.

The patch replaces a private function, so it is installed only on the gradio version it was
written against (PATCHED_GRADIO); tests/test_ui_theme.py fails when the pinned gradio changes, as
a reminder to check whether gradio still needs it and still calls it the same way.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import gradio
from gradio import processing_utils

from audience.files import write_bytes_atomic


def _save_pil_to_cache(img, cache_dir, name: str = "image", format: str = "webp") -> str:  # noqa: A002 (gradio's name)
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    target = (folder / f"{name}.{format}").resolve()
    write_bytes_atomic(target, data)
    return str(target)


PATCHED_GRADIO = "6.31.0"


def install_atomic_image_cache() -> bool:
    """Replace gradio's in-place cache write with the atomic one (idempotent); False on another gradio."""
    if gradio.__version__ != PATCHED_GRADIO:
        warnings.warn(f"gradio {gradio.__version__} is not {PATCHED_GRADIO}, the version the atomic image cache "
                      "patch was written for: it is not installed.", RuntimeWarning, stacklevel=2)
        return False
    processing_utils.save_pil_to_cache = _save_pil_to_cache
    return True
