"""ASGI middleware in front of the service: the upload gate (size, uploads in flight, a full
pool, stalled or trickling bodies, each answered before the upload is parsed) and the ``Host``
check of a service on the loopback address. Every refusal is one JSON answer that closes the
connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from emomatch.serve.guard import host_allowed, refusal
from emomatch.serve.pool import PredictionPool

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: set in a request's scope when its body passed the upload limit while it was being read
OVERSIZE = "emomatch.upload_too_large"


async def send_json(send: Send, status: int, detail: str, retry: int | None = None) -> None:
    """A whole JSON refusal (:func:`emomatch.serve.guard.refusal`) through ASGI."""
    body, headers = refusal(detail, retry)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class HostCheck:
    """ASGI middleware of a service listening on the loopback address only: a request whose
    ``Host`` names another machine came through DNS rebinding (a web page whose name now
    points at 127.0.0.1) and is answered 421."""

    def __init__(self, app: ASGIApp, port: int | None) -> None:
        self.app = app
        self.port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not host_allowed(
            dict(scope["headers"]).get(b"host"), self.port
        ):
            await send_json(send, 421, "this service answers requests for localhost only")
            return
        await self.app(scope, receive, send)


class UploadGate:
    """ASGI middleware in front of ``POST /predict``: a body over the limit, too many uploads
    in flight or a full pool are answered before the upload is parsed; a body that grows past
    the limit while it streams (no or a false Content-Length) is cut off and answered 413, one
    that stalls (no part for ``read_timeout`` s) or trickles (not whole after ``upload_timeout``
    s) is answered 408. Every such answer closes the connection."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        pool: PredictionPool[Any],
        retry: int,
        max_uploads: int = 32,
        read_timeout: float = 20.0,
        upload_timeout: float = 300.0,
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.pool = pool
        self.retry = retry
        self.max_uploads = max_uploads
        self.read_timeout = read_timeout
        self.upload_timeout = upload_timeout
        #: uploads whose body is being received now (one event loop: no lock needed)
        self.receiving = 0

    def _too_large(self) -> str:
        return (
            f"upload larger than this service's limit of {self.max_bytes / 1e6:g} MB; "
            "send a shorter or more compressed clip"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/predict":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(receive, send, 413, self._too_large())
            return
        if self.pool.full():
            await self._refuse(
                receive, send, 503, "the service is busy; try again shortly", self.retry
            )
            return
        if self.receiving >= self.max_uploads:
            await self._refuse(
                receive,
                send,
                503,
                f"{self.max_uploads} uploads are being received already; try again shortly",
                self.retry,
            )
            return
        self.receiving += 1
        receiving = True
        received = 0
        cut: tuple[int, str] | None = None  # the answer a cut-off body gets
        deadline = time.monotonic() + self.upload_timeout

        def done_receiving() -> None:
            nonlocal receiving
            if receiving:
                receiving = False
                self.receiving -= 1

        async def limited() -> Message:
            nonlocal received, cut
            if cut is not None:
                return {"type": "http.request", "body": b"", "more_body": False}
            wait = min(self.read_timeout, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.0))
            except TimeoutError:
                done_receiving()
                stalled = wait >= self.read_timeout
                cut = (
                    408,
                    f"no part of the upload came for {self.read_timeout:g} s"
                    if stalled
                    else f"the upload did not arrive whole within {self.upload_timeout:g} s",
                )
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                done_receiving()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    cut = (413, self._too_large())
                    scope[OVERSIZE] = True
                    if message.get("more_body", False):
                        await self._drain(receive)
                    done_receiving()
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        replaced = False

        async def guarded(message: Message) -> None:
            nonlocal replaced
            if cut is None:
                await send(message)
                return
            # The app answered a cut-off body (a parse error, most likely): say what happened.
            if message["type"] == "http.response.start" and not replaced:
                replaced = True
                await send_json(send, cut[0], cut[1])

        try:
            await self.app(scope, limited, guarded)
        finally:
            done_receiving()

    async def _drain(self, receive: Receive) -> None:
        # Reading the rest keeps the connection usable for the answer (a client still sending
        # may not see an answer to a connection closed on it); a client that sends too much
        # or too slowly is not worth listening to, and its connection is closed.
        discarded = 0
        deadline = time.monotonic() + min(self.read_timeout, 5.0)
        while discarded <= 16 * self.max_bytes:
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except TimeoutError:
                return
            if message["type"] != "http.request":
                return
            discarded += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(
        self, receive: Receive, send: Send, status: int, detail: str, retry: int | None = None
    ) -> None:
        await self._drain(receive)
        await send_json(send, status, detail, retry)
