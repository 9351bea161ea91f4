"""The app theme declares only font files that Gradio ships whole (its SemiBold files are glyph subsets)."""

from __future__ import annotations

import re

import pytest
from gradio.themes.utils.fonts import LocalFont, font_file_path

from audience.ui.theme import THEME

FULL_FONT_BYTES = 20_000  # the complete Regular and Bold files are 35-105 KB; the broken subsets 4-5 KB


def test_every_local_font_weight_is_a_complete_file():
    local = [font for font in THEME._font + THEME._font_mono if isinstance(font, LocalFont)]
    assert {font.name for font in local} == {"Source Sans Pro", "IBM Plex Mono"}
    for font in local:
        for weight in font.weights:
            path = font_file_path(font.name, weight)
            assert path.is_file() and path.stat().st_size > FULL_FONT_BYTES, (font.name, weight, path)


def test_the_theme_fetches_nothing_from_the_network():
    css = THEME._get_theme_css()
    assert "static/fonts/SourceSansPro/SourceSansPro-Bold.woff2" in css
    assert "SemiBold" not in css and "@import" not in css
    assert not re.findall(r"url\(['\"]?(https?:)?//", css)  # every url() is local or inline data


def test_the_gradio_patch_matches_the_pinned_gradio(monkeypatch):
    """Fails when requirements.txt moves gradio: check whether the atomic image cache patch is still needed."""
    import inspect

    import gradio
    from gradio import processing_utils

    from audience.settings import PROJECT_ROOT
    from audience.ui import gradio_cache

    pinned = re.search(r"^gradio==(\S+)", (PROJECT_ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert gradio.__version__ == pinned == gradio_cache.PATCHED_GRADIO
    original = processing_utils.save_pil_to_cache
    monkeypatch.setattr(processing_utils, "save_pil_to_cache", original)
    if original is not gradio_cache._save_pil_to_cache:  # the app may have installed it already
        assert list(inspect.signature(original).parameters) == list(
            inspect.signature(gradio_cache._save_pil_to_cache).parameters)
    assert gradio_cache.install_atomic_image_cache() is True
    assert processing_utils.save_pil_to_cache is gradio_cache._save_pil_to_cache
    monkeypatch.setattr(gradio, "__version__", "99.0.0")
    monkeypatch.setattr(processing_utils, "save_pil_to_cache", original)
    with pytest.warns(RuntimeWarning, match="not installed"):
        assert gradio_cache.install_atomic_image_cache() is False
    assert processing_utils.save_pil_to_cache is original
