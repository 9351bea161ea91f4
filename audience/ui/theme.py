"""The app's Gradio theme: Gradio's default look, with font weights whose files are complete.

Gradio 6.31's default theme declares Source Sans Pro and IBM Plex Mono at weights 400 and 600,
served from its own static/fonts. Its SemiBold files are subsets of a few glyphs (5 KB and 4 KB,
against about 100 KB and 36 KB for Regular and Bold), so every weight-600 text (headings, labels,
table headers) was drawn in a system fallback font, except for letters such as the capital "A"
that the subset holds. Declaring 700 instead of 600 makes the browser use the full Bold files for
that text. The fonts stay local (served by Gradio itself): nothing is fetched from Google Fonts,
which a server or CI without Internet access could not reach. Passed to `demo.launch(theme=...)`:
in Gradio 6 the theme belongs to launch(), not Blocks().
"""

from __future__ import annotations

import gradio as gr

SANS = gr.themes.LocalFont("Source Sans Pro", weights=(400, 700))
MONO = gr.themes.LocalFont("IBM Plex Mono", weights=(400, 700))

THEME = gr.themes.Default(
    font=[SANS, "ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=[MONO, "ui-monospace", "Consolas", "monospace"],
)
