"""Every shape a raw HTTP request may give /predict's image, and /gradio_api/upload's form, gets a sentence.

gradio checks a request's payload before the app sees it, and on a public server (show_error off)
answers what it refuses with a bare `event: error` and `null`, or a 500:
- a plain string (a path, even one gradio received) or a number fails gradio's ImageData validation:
  `ImagePayload` (the Predict image's data model) takes a string as the path it names and anything
  else as a payload without a file, so the app's own checks (audience/ui/uploads.py) answer them;
- a `{path, meta}` payload naming a file gradio did not receive fails gradio's upload-folder check:
  `install_request_sentences` makes that refusal a gradio Error carrying REFUSED (the app's sentence for
  any server path, the same whatever the path is), which gradio shows on a public server too;
- an upload whose form part has an empty file name is a form field to starlette, and gradio's upload
  route fails on it (500): `UploadFormCheck` answers 400 with a sentence instead;
- a call whose `data` list has fewer values than the endpoint takes fails gradio's input check with a
  ValueError (a bare `null` on a public server): `install_request_sentences` makes it a gradio Error that
  says how many values came and which the endpoint takes (TOO_FEW_VALUES). Extra values gradio ignores.
"""

from __future__ import annotations

import json
import warnings

import gradio
from gradio import processing_utils
from gradio.data_classes import ImageData
from gradio.exceptions import InvalidPathError
from pydantic import model_validator

from audience.ui.uploads import REFUSED

NO_FILE_NAME = "The upload has no file name; send the image as a file (a multipart part with a filename)."
TOO_FEW_VALUES = ("The request's data list has {got} value{s}; /{api} takes {needed}, in this order: {names}. Send "
                  "one value for each (GET /gradio_api/info lists them).")
PATCHED_GRADIO = "6.31.0"


class ImagePayload(ImageData):
    """gradio's ImageData, also taking a plain string (a path or a data: URL) and any other JSON value
    (which becomes a payload without a file), so that the handler answers it with a sentence."""

    @model_validator(mode="before")
    @classmethod
    def _any_json(cls, value):
        if isinstance(value, dict | ImageData):
            return value
        if isinstance(value, str):
            return {"url": value} if value.startswith("data:") else {"path": value}
        return {}


_original_check_allowed = processing_utils._check_allowed


def _check_allowed(path, check_in_upload_folder: bool):
    try:
        return _original_check_allowed(path, check_in_upload_folder)
    except InvalidPathError:
        if not check_in_upload_folder:  # an output file the app made: gradio's own error stays
            raise
        raise gradio.Error(REFUSED, print_exception=False) from None


_original_validate_inputs = gradio.Blocks.validate_inputs


def _validate_inputs(self, block_fn, inputs):
    needed = list(block_fn.inputs)
    if len(inputs) < len(needed):
        names = ", ".join(getattr(block, "label", None) or type(block).__name__ for block in needed)
        raise gradio.Error(TOO_FEW_VALUES.format(got=len(inputs), s="" if len(inputs) == 1 else "s",
                                                 api=block_fn.api_name or block_fn.name, needed=len(needed),
                                                 names=names), print_exception=False)
    return _original_validate_inputs(self, block_fn, inputs)


def install_request_sentences() -> bool:
    """A request's file outside gradio's uploads gets REFUSED, and a call with too few values TOO_FEW_VALUES,
    instead of `null` (idempotent); False (not installed) on another gradio than the one this was written for,
    whose checks may differ."""
    if gradio.__version__ != PATCHED_GRADIO:
        warnings.warn(f"gradio {gradio.__version__} is not {PATCHED_GRADIO}: the request sentences are not "
                      "installed (a server path or too few values in a request get gradio's bare error).",
                      RuntimeWarning, stacklevel=2)
        return False
    processing_utils._check_allowed = _check_allowed
    gradio.Blocks.validate_inputs = _validate_inputs
    return True


class UploadFormCheck:
    """Pure ASGI middleware: gradio's upload route failing on a form it cannot read (a part without a
    file name) answers 400 with NO_FILE_NAME, not 500."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope.get("path", "").endswith("/gradio_api/upload"):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except TypeError:  # gradio: "File is not an instance of GradioUploadFile"
            if started:
                raise
            body = json.dumps({"error": NO_FILE_NAME}).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
