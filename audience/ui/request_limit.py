"""A bound on the bytes of every HTTP request the app accepts, whatever the route.

gradio's `max_file_size` bounds uploaded files only; an API call's JSON body (which may carry a
base64 `data:` URL image) is read whole. This ASGI middleware answers 413 with one sentence when a
request declares, or sends, more than `max_bytes`; the app never sees such a body.
"""

from __future__ import annotations

import asyncio
import json

REQUEST_LIMIT_BYTES = 25 * 1024 * 1024  # an upload of the 20 MB file limit plus its multipart framing
TOO_LARGE = "The request is larger than the limit of {limit} MB; send a smaller image (at most 20 MB)."


class RequestSizeLimit:
    """Pure ASGI middleware (so streaming responses pass through untouched)."""

    def __init__(self, app, max_bytes: int = REQUEST_LIMIT_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        received = 0
        over = False
        started = False

        async def limited_receive():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body without a Content-Length grew past the limit
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            nonlocal started
            if over and not started:
                return  # the app's answer to the cut body is replaced by ours below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except Exception:
            if not over:  # the app's own failure; a cut body's is answered below
                raise
        if over and not started:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"error": TOO_LARGE.format(limit=self.max_bytes // (1024 * 1024))}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


QUOTA_FULL = ("The server's upload space ({quota} MB for all visitors together) is full; try again in a few "
              "minutes, when older uploads have been deleted.")


class UploadQuota:
    """Answers 413 to an upload (POST .../upload) that would take gradio's upload folder past `quota_bytes`,
    all clients together. An upload counts by its Content-Length (REQUEST_LIMIT_BYTES without one) from the
    moment it is accepted until gradio's route has returned (its background move into the folder included:
    starlette runs a response's background tasks inside the app call), so concurrent uploads cannot pass the
    quota together.

    The folder is walked in a thread while other uploads finish, so the walk can miss a file that arrives
    during it (a file renamed from gradio's temporary name into its own folder after the walk listed the
    top folder). The reservations are therefore read before the walk starts: an upload that finishes during
    the walk still counts by its reservation (counted twice at worst, never zero times), and one that
    finished before the walk is on disk and counted by it."""

    def __init__(self, app, quota_bytes: int, folder=None, max_request_bytes: int = REQUEST_LIMIT_BYTES):
        self.app = app
        self.quota_bytes, self.folder, self.max_request_bytes = quota_bytes, folder, max_request_bytes
        self.reserved = 0
        self.lock = asyncio.Lock()

    def _used(self) -> int:
        from gradio.utils import get_upload_folder

        from audience.ui.uploads import folder_bytes

        return folder_bytes(self.folder or get_upload_folder())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith("/upload"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        size = int(declared) if declared is not None and declared.strip().isdigit() else self.max_request_bytes
        async with self.lock:
            reserved = self.reserved  # before the walk: see the class's docstring
            used = await asyncio.to_thread(self._used)
            if used + reserved + size > self.quota_bytes:
                await self._refuse(send)
                return
            self.reserved += size
        try:
            await self.app(scope, receive, send)
        finally:
            self.reserved -= size

    async def _refuse(self, send) -> None:
        body = json.dumps({"error": QUOTA_FULL.format(quota=f"{self.quota_bytes / 2**20:g}")}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
