"""The public exception hierarchy and the status-code constants."""

from __future__ import annotations

import copy
import enum
import pickle
from collections.abc import Iterable
from http import HTTPStatus

import pytest

from app_server import status
from app_server.exceptions import (
    AppServerError,
    BadRequest,
    ChannelGap,
    ChannelUnavailable,
    Forbidden,
    HTTPError,
    HTTPVersionNotSupported,
    InvalidWebSocketStateError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestHeaderFieldsTooLarge,
    RequestTimeout,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    UpgradeRequired,
    WebSocketClosed,
    WebsocketClosed,
    WebSocketDisconnect,
    WebSocketDisconnectError,
    WebSocketError,
)

HTTP_ERRORS = [
    (BadRequest, 400, "Bad Request"),
    (Unauthorized, 401, "Unauthorized"),
    (Forbidden, 403, "Forbidden"),
    (NotFound, 404, "Not Found"),
    (MethodNotAllowed, 405, "Method Not Allowed"),
    (RequestTimeout, 408, "Request Timeout"),
    (PayloadTooLarge, 413, "Request Entity Too Large"),
    (UpgradeRequired, 426, "Upgrade Required"),
    (RequestHeaderFieldsTooLarge, 431, "Request Header Fields Too Large"),
    (ServerError, 500, "Internal Server Error"),
    (ServiceUnavailable, 503, "Service Unavailable"),
    (HTTPVersionNotSupported, 505, "HTTP Version Not Supported"),
]


class State(enum.Enum):
    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2


# -- HTTP errors --------------------------------------------------------------


@pytest.mark.parametrize(("cls", "code", "phrase"), HTTP_ERRORS)
def test_http_error_defaults(cls: type[HTTPError], code: int, phrase: str) -> None:
    error = cls()
    assert isinstance(error, HTTPError)
    assert isinstance(error, AppServerError)
    assert error.status == code == cls.status
    assert error.status_code == code
    assert error.message == phrase
    assert str(error) == phrase


@pytest.mark.parametrize(("cls", "code", "phrase"), HTTP_ERRORS)
def test_http_error_custom_message(cls: type[HTTPError], code: int, phrase: str) -> None:
    error = cls("custom text")
    assert error.message == "custom text"
    assert str(error) == "custom text"
    assert error.status == code
    assert repr(error) == f"{cls.__name__}('custom text', status={code})"


def test_http_error_base_is_500() -> None:
    assert HTTPError().status == 500
    assert HTTPError().message == "Internal Server Error"


@pytest.mark.parametrize(
    ("code", "message"),
    [(418, "I'm a Teapot"), (429, "Too Many Requests"), (599, "HTTP error 599"), (302, "Found")],
)
def test_http_error_status_override(code: int, message: str) -> None:
    error = HTTPError(status=code)
    assert error.status == code
    assert error.message == message
    assert HTTPError.status == 500  # the class default is untouched


@pytest.mark.parametrize("code", [0, 99, 600, -404])
def test_http_error_rejects_impossible_status(code: int) -> None:
    with pytest.raises(ValueError, match=str(code)):
        HTTPError(status=code)


def test_http_error_headers_are_copied() -> None:
    source = {"Retry-After": "5"}
    error = ServiceUnavailable(headers=source)
    source["Retry-After"] = "10"
    assert error.headers == {"Retry-After": "5"}
    assert NotFound().headers == {}
    assert NotFound().headers is not NotFound().headers


@pytest.mark.parametrize(
    ("allowed", "header", "methods"),
    [
        (["POST", "GET"], "GET, POST", ("GET", "POST")),
        ({"put", "GET", "get"}, "GET, PUT", ("GET", "PUT")),
        ((), "", ()),
        (iter(["DELETE"]), "DELETE", ("DELETE",)),
    ],
)
def test_method_not_allowed_sets_allow(
    allowed: Iterable[str], header: str, methods: tuple[str, ...]
) -> None:
    error = MethodNotAllowed("nope", allowed=allowed)
    assert error.headers == {"Allow": header}
    assert error.allowed == methods
    assert error.message == "nope"


def test_method_not_allowed_keeps_other_headers() -> None:
    error = MethodNotAllowed(allowed=["GET"], headers={"X-Trace": "1", "Allow": "stale"})
    assert error.headers == {"X-Trace": "1", "Allow": "GET"}


def test_upgrade_required_names_websocket() -> None:
    assert UpgradeRequired().headers == {"Upgrade": "websocket"}
    assert UpgradeRequired(headers={"X-A": "b"}).headers == {"Upgrade": "websocket", "X-A": "b"}


@pytest.mark.parametrize(
    "error",
    [
        NotFound("gone"),
        HTTPError("teapot", status=418, headers={"X": "y"}),
        MethodNotAllowed(allowed=["GET", "HEAD"]),
        UpgradeRequired(),
        WebSocketClosed(1008, "policy"),
        InvalidWebSocketStateError("client", "CONNECTING", "CONNECTED"),
        ChannelGap("room:1", 4294967297, "trimmed"),
        ChannelUnavailable("redis", "connection refused"),
    ],
)
def test_exceptions_pickle_and_copy(error: AppServerError) -> None:
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(clone) is type(error)
        assert clone.__dict__ == error.__dict__
        assert str(clone) == str(error)


# -- WebSocket errors ---------------------------------------------------------


def test_websocket_closed_defaults() -> None:
    error = WebSocketClosed()
    assert (error.code, error.reason) == (1000, "")
    assert isinstance(error, WebSocketError)
    assert isinstance(error, AppServerError)


@pytest.mark.parametrize(
    ("args", "kwargs", "code", "reason"),
    [
        ((1001,), {}, 1001, ""),
        ((1008, "token expired"), {}, 1008, "token expired"),
        ((), {"code": 4003, "reason": "boom"}, 4003, "boom"),
        ((1006, None), {}, 1006, ""),  # Starlette passes reason=None
    ],
)
def test_websocket_closed_fields(
    args: tuple[object, ...], kwargs: dict[str, object], code: int, reason: str
) -> None:
    error = WebSocketClosed(*args, **kwargs)  # type: ignore[arg-type]
    assert (error.code, error.reason) == (code, reason)
    assert str(code) in str(error)
    assert repr(reason) in str(error)


@pytest.mark.parametrize("alias", [WebsocketClosed, WebSocketDisconnectError, WebSocketDisconnect])
def test_seed_aliases_are_websocket_closed(alias: type[WebSocketClosed]) -> None:
    assert alias is WebSocketClosed
    with pytest.raises(alias) as caught:
        raise WebSocketClosed(1001, "going away")
    assert caught.value.code == 1001


def test_blacksheep_style_handler_catches_disconnect_with_code() -> None:
    # except order from the BlackSheep seed: disconnect, state, generic.
    def handle(error: Exception) -> str:
        try:
            raise error
        except WebSocketDisconnectError as e:
            return f"disconnect {e.code}"
        except InvalidWebSocketStateError as e:
            return f"state {e.current_state}"
        except WebSocketError as e:
            return f"generic {e}"

    assert handle(WebSocketDisconnectError(1006)) == "disconnect 1006"
    assert handle(InvalidWebSocketStateError("server", "A", "B")) == "state A"
    assert handle(WebSocketError("x")) == "generic x"


def test_invalid_state_error_blacksheep_keywords() -> None:
    error = InvalidWebSocketStateError(
        party="server", current_state=State.DISCONNECTED, expected_state=State.CONNECTED
    )
    assert error.party == "server"
    assert error.current_state is State.DISCONNECTED
    assert error.expected_state is State.CONNECTED
    assert str(error) == (
        "invalid server WebSocket state: expected State.CONNECTED, got State.DISCONNECTED"
    )


def test_invalid_state_error_lists_acceptable_states() -> None:
    error = InvalidWebSocketStateError(
        "client", State.CONNECTING, (State.CONNECTED, State.DISCONNECTED)
    )
    assert "expected State.CONNECTED or State.DISCONNECTED, got State.CONNECTING" in str(error)
    assert "client" in str(error)


# -- status constants ---------------------------------------------------------


@pytest.mark.parametrize("member", list(HTTPStatus), ids=lambda m: m.name)
def test_every_http_status_has_a_constant(member: HTTPStatus) -> None:
    assert getattr(status, f"HTTP_{member.value}_{member.name}") == member.value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HTTP_200_OK", 200),
        ("HTTP_404_NOT_FOUND", 404),
        ("HTTP_413_CONTENT_TOO_LARGE", 413),
        ("HTTP_413_REQUEST_ENTITY_TOO_LARGE", 413),
        ("HTTP_422_UNPROCESSABLE_CONTENT", 422),
        ("HTTP_422_UNPROCESSABLE_ENTITY", 422),
        ("HTTP_418_IM_A_TEAPOT", 418),
        ("WS_1000_NORMAL_CLOSURE", 1000),
        ("WS_1008_POLICY_VIOLATION", 1008),
        ("WS_1011_INTERNAL_ERROR", 1011),
        ("WS_1015_TLS_HANDSHAKE", 1015),
    ],
)
def test_named_constants(name: str, value: int) -> None:
    assert getattr(status, name) == value


def test_constant_names_carry_their_value() -> None:
    for name, value in vars(status).items():
        if name.startswith(("HTTP_", "WS_")):
            assert name.split("_")[1] == str(value), name


def test_close_code_enum_matches_ws_constants() -> None:
    ws_constants = {
        name.split("_", 2)[2]: value
        for name, value in vars(status).items()
        if name.startswith("WS_")
    }
    assert len(ws_constants) == 15
    assert {member.name: member.value for member in status.CloseCode} == ws_constants
    assert status.CloseCode(1008) is status.CloseCode.POLICY_VIOLATION
    assert int(status.CloseCode.GOING_AWAY) == status.WS_1001_GOING_AWAY == 1001
