"""The public exception hierarchy of app-server.

Owns: ``AppServerError`` and its two families, ``HTTPError`` (each subclass
carries the HTTP ``status`` the framework answers with, plus any headers that
status requires) and ``WebSocketError`` (``WebSocketClosed`` with the close
``code``/``reason``, ``InvalidWebSocketStateError`` with the party and its
states), and the names ported code from Sanic, BlackSheep and Bocadillo
catches.

Rule: this module imports nothing from the package; everything else may
import it. Every exception keeps its constructor arguments in ``args`` so it
pickles and copies like a builtin exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus

__all__ = [
    "AppServerError",
    "BadRequest",
    "ChannelError",
    "ChannelGap",
    "ChannelUnavailable",
    "Forbidden",
    "HTTPError",
    "HTTPVersionNotSupported",
    "InvalidWebSocketStateError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RequestHeaderFieldsTooLarge",
    "RequestTimeout",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
    "UpgradeRequired",
    "WebSocketClosed",
    "WebSocketDisconnect",
    "WebSocketDisconnectError",
    "WebSocketError",
    "WebsocketClosed",
]


class AppServerError(Exception):
    """Base class of every exception app-server raises on purpose."""


# -- HTTP ---------------------------------------------------------------------


def reason_phrase(status: int) -> str:
    """The standard reason phrase for ``status`` ("Not Found"), or a generic one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP error {status}"


class HTTPError(AppServerError):
    """An error the framework turns into an HTTP response with ``status``.

    ``message`` becomes the response body (the reason phrase by default) and
    ``headers`` are added to the response.
    """

    status: int = 500

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if status is not None:
            if not 100 <= status <= 599:
                raise ValueError(f"HTTP status must be within 100-599, got {status!r}")
            self.status = status
        self.message: str = message if message is not None else reason_phrase(self.status)
        self.headers: dict[str, str] = dict(headers) if headers else {}
        super().__init__(self.message)

    @property
    def status_code(self) -> int:
        """Sanic's and Starlette's name for ``status``."""
        return self.status

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status})"


class BadRequest(HTTPError):
    status = 400


class Unauthorized(HTTPError):
    status = 401


class Forbidden(HTTPError):
    status = 403


class NotFound(HTTPError):
    status = 404


class MethodNotAllowed(HTTPError):
    """405; ``allowed`` fills the ``Allow`` header RFC 9110 §15.5.6 requires."""

    status = 405

    def __init__(
        self,
        message: str | None = None,
        *,
        allowed: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.allowed: tuple[str, ...] = tuple(sorted({method.upper() for method in allowed}))
        super().__init__(message, headers={**(headers or {}), "Allow": ", ".join(self.allowed)})


class RequestTimeout(HTTPError):
    status = 408


class PayloadTooLarge(HTTPError):
    status = 413


class UpgradeRequired(HTTPError):
    """426; RFC 9110 §15.5.22 requires an ``Upgrade`` header naming the protocol."""

    status = 426

    def __init__(
        self, message: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, headers={"Upgrade": "websocket", **(headers or {})})


class RequestHeaderFieldsTooLarge(HTTPError):
    status = 431


class ServerError(HTTPError):
    status = 500


class ServiceUnavailable(HTTPError):
    status = 503


class HTTPVersionNotSupported(HTTPError):
    status = 505


# -- WebSocket ----------------------------------------------------------------


class WebSocketError(AppServerError):
    """Base class of the WebSocket errors."""


class WebSocketClosed(WebSocketError):
    """The connection is closed; ``code`` and ``reason`` are those of the close.

    Raised by receive and send once the connection has closed, so a handler
    can read why (BlackSheep: ``except WebSocketDisconnectError as e: e.code``).
    """

    def __init__(self, code: int = 1000, reason: str | None = "") -> None:
        self.code: int = code
        self.reason: str = reason or ""
        super().__init__(code, self.reason)

    def __str__(self) -> str:
        return f"WebSocket closed (code={self.code}, reason={self.reason!r})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, reason={self.reason!r})"


def _describe_states(states: object) -> str:
    """One state, or "A or B" for a collection of acceptable states."""
    if isinstance(states, tuple | list | set | frozenset):
        return " or ".join(str(state) for state in states)
    return str(states)


class InvalidWebSocketStateError(WebSocketError):
    """An operation needs ``party`` ("client" or "server") in another state.

    ``expected_state`` may be one state or a collection of acceptable ones.
    """

    def __init__(self, party: str, current_state: object, expected_state: object) -> None:
        self.party = party
        self.current_state = current_state
        self.expected_state = expected_state
        super().__init__(party, current_state, expected_state)

    def __str__(self) -> str:
        return (
            f"invalid {self.party} WebSocket state: "
            f"expected {_describe_states(self.expected_state)}, got {self.current_state}"
        )


# -- channels (SPEC §9) ---------------------------------------------------------


class ChannelError(AppServerError):
    """Base class of the channel (publish/subscribe) errors."""


class ChannelGap(ChannelError):
    """Messages of ``topic`` after ``since`` cannot be replayed (or were lost).

    Raised by ``subscribe(topic, since=offset)`` when the kept history no
    longer reaches back to ``offset`` (trimmed, expired, or an offset of
    another epoch), and by a handler-side subscription when messages were
    lost (the backend was down, or the subscriber's queue overflowed). The
    app then sends a full state instead of a replay. ``since`` is None when
    the subscriber had no offset.
    """

    def __init__(self, topic: str, since: int | None, reason: str) -> None:
        self.topic = topic
        self.since = since
        self.reason = reason
        super().__init__(topic, since, reason)

    def __str__(self) -> str:
        where = "" if self.since is None else f" after offset {self.since}"
        return f"channel gap on topic {self.topic!r}{where}: {self.reason}"


class ChannelUnavailable(ChannelError):
    """The channel backend cannot be reached now; nothing was published.

    Raised at once (never after a silent drop) while the backend is down;
    the backend reconnects by itself, so a later call may succeed.
    """

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(backend, reason)

    def __str__(self) -> str:
        return f"channel backend {self.backend} unavailable: {self.reason}"


# Names kept so ported handlers only change their imports.
WebsocketClosed = WebSocketClosed  # Sanic
WebSocketDisconnectError = WebSocketClosed  # BlackSheep
WebSocketDisconnect = WebSocketClosed  # Bocadillo / Starlette
