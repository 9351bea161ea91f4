"""Gradio's own answer to a value outside a choice list quotes the value whole ("Value: <20 MB> is not in the
list of choices: ..."): a request could make the server echo megabytes. `bound_choice_errors` cuts that
answer to the project's QUOTE_LIMIT, the same bound every sentence of the app keeps.

Gradio checks the choice in the component's `preprocess`, before the app's handler runs, so the app can
only shorten the error it raises there; each choice component of the built Blocks gets a wrapper.
"""

from __future__ import annotations

import functools

import gradio as gr

from audience.errors import QUOTE_LIMIT, shorten

CHOICE_COMPONENTS = (gr.Dropdown, gr.Radio, gr.CheckboxGroup)


def _bounded(preprocess):
    @functools.wraps(preprocess)
    def wrapper(payload):
        try:
            return preprocess(payload)
        except gr.Error as error:
            message = str(error.message if hasattr(error, "message") else error)
            if len(message) <= QUOTE_LIMIT:
                raise
            raise gr.Error(f"{shorten(message, QUOTE_LIMIT)} (a value outside the choices)") from None

    wrapper.audience_bounded = True
    return wrapper


def bound_choice_errors(demo: gr.Blocks) -> int:
    """Wrap every choice component's preprocess in `demo`; returns how many were wrapped."""
    wrapped = 0
    for block in demo.blocks.values():
        if isinstance(block, CHOICE_COMPONENTS) and not getattr(block.preprocess, "audience_bounded", False):
            block.preprocess = _bounded(block.preprocess)
            wrapped += 1
    return wrapped
