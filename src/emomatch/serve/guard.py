"""What a client controls at the connection level, bounded: uvicorn has no timeout for a
request's headers and answers its own concurrency limit with a plain-text 503 without
``Retry-After``. The HTTP protocol here is uvicorn's h11 one with

- a cap on open connections, refused at once with a JSON 503 that says when to try again;
- a deadline for each request's headers (a client that opens a connection and sends half a
  request line holds nothing for long: 408 and the connection is closed);
- a check of the ``Host`` header where the service listens on the loopback address only, so a
  web page cannot reach it through DNS rebinding (its requests carry the attacker's name).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: names that mean this machine in a ``Host`` header
_LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


def refusal(detail: str, retry_after: int | None = None) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers every refusal of the service has: ``{"detail": ...}`` as JSON, the
    connection closed (the request may not have been read whole, so the connection cannot carry
    another), and ``Retry-After`` where the client may try again."""
    body = json.dumps({"detail": detail}, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    return body, headers


def json_response(status: int, detail: str, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 refusal (see :func:`refusal`), for the protocol level."""
    body, headers = refusal(detail, retry_after)
    reason = {408: "Request Timeout", 421: "Misdirected Request", 503: "Service Unavailable"}
    lines = [f"HTTP/1.1 {status} {reason.get(status, 'Error')}".encode()]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to listen on) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_allowed(value: bytes | None, port: int | None) -> bool:
    """Whether a request's ``Host`` header names this machine (with the service's port or
    none). A request without one (HTTP/1.0) is let through: browsers always send it."""
    if value is None:
        return True
    text = value.decode("latin-1").strip().lower()
    for name in _LOCAL_NAMES:
        if text == name:
            return True
        given = text.removeprefix(f"{name}:")
        if given != text and given.isdigit() and (not port or int(given) == port):
            return True  # port 0 or unknown: the OS chose it, any is this service's
    return False


def guarded_protocol(
    max_connections: int, header_timeout_s: float, retry_after_s: int
) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the connection cap and the header deadline (see above)."""

    class GuardedH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(
                    json_response(
                        503,
                        f"the service holds {max_connections} connections already; try again "
                        "shortly",
                        retry_after_s,
                    )
                )
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return  # a request is being read or answered: its body has its own deadline
            if self.conn.trailing_data[0]:
                # part of a request came, the rest did not: say so before closing
                self.transport.write(
                    json_response(
                        408, f"the request's headers did not arrive within {header_timeout_s:g} s"
                    )
                )
            self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection gets the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11
