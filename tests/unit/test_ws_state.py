"""The WebSocket connection's state machine, driven without a loop or a socket.

Every close path of ``protocols.websocket.lifecycle.Lifecycle`` and the
races between them: what Close frame is sent (once), what the socket is told,
which deadline is armed, when the connection is finished (once), the close
code the application sees, and the party states the framework reports.
"""

from __future__ import annotations

import pytest

from app_server.exceptions import InvalidWebSocketStateError
from app_server.protocols.websocket.lifecycle import (
    Deadline,
    Event,
    Lifecycle,
    Phase,
    Step,
    Transport,
    WebSocketState,
)
from app_server.status import CloseCode

CONNECTING = WebSocketState.CONNECTING
CONNECTED = WebSocketState.CONNECTED
DISCONNECTED = WebSocketState.DISCONNECTED


def opened() -> Lifecycle:
    lifecycle = Lifecycle()
    lifecycle.transition(Event.ACCEPT)
    return lifecycle


def views(lifecycle: Lifecycle) -> tuple[WebSocketState, WebSocketState, WebSocketState]:
    return (lifecycle.state, lifecycle.client_state, lifecycle.server_state)


def closing(code: int = CloseCode.NORMAL_CLOSURE, reason: str = "bye") -> Lifecycle:
    lifecycle = opened()
    lifecycle.transition(Event.CLOSE, code, reason)
    return lifecycle


def failing(code: int = CloseCode.PROTOCOL_ERROR, reason: str = "protocol error") -> Lifecycle:
    lifecycle = opened()
    lifecycle.transition(Event.FAIL, code, reason)
    return lifecycle


def test_handshake_accept_and_reject() -> None:
    lifecycle = Lifecycle()
    assert views(lifecycle) == (CONNECTING, CONNECTING, CONNECTING)
    assert not lifecycle.accepted and not lifecycle.rejected
    step = lifecycle.transition(Event.ACCEPT)
    assert (step.send_close, step.transport, step.finished) == (None, Transport.KEEP, False)
    assert lifecycle.phase is Phase.OPEN and lifecycle.accepted
    assert views(lifecycle) == (CONNECTED, CONNECTED, CONNECTED)
    assert lifecycle.close_seen() is None

    refused = Lifecycle()
    refused.transition(Event.REJECT)
    assert refused.rejected and not refused.accepted
    assert views(refused) == (DISCONNECTED, DISCONNECTED, DISCONNECTED)
    assert refused.close_seen() == (CloseCode.ABNORMAL_CLOSURE, "")


@pytest.mark.parametrize("event", [Event.ACCEPT, Event.REJECT])
@pytest.mark.parametrize("first", [Event.ACCEPT, Event.REJECT])
def test_answering_the_handshake_twice_names_party_and_states(first: Event, event: Event) -> None:
    lifecycle = Lifecycle()
    lifecycle.transition(first)
    with pytest.raises(InvalidWebSocketStateError) as info:
        lifecycle.transition(event)
    error = info.value
    assert error.party == "server"
    assert error.current_state is lifecycle.phase
    assert error.expected_state is Phase.CONNECTING
    assert "server" in str(error)


@pytest.mark.parametrize(
    "event", [Event.CLOSE, Event.PEER_CLOSE, Event.FAIL, Event.DEADLINE, Event.LOST]
)
def test_no_close_path_before_the_handshake_is_answered(event: Event) -> None:
    """A drain during the handshake, say, must wait for the accept: the glue asks first."""
    lifecycle = Lifecycle()
    with pytest.raises(InvalidWebSocketStateError) as info:
        lifecycle.transition(event, CloseCode.GOING_AWAY, "server shutting down")
    assert info.value.party == (
        "server" if event is Event.CLOSE or event is Event.DEADLINE else "client"
    )
    assert info.value.current_state is Phase.CONNECTING
    assert Phase.OPEN in info.value.expected_state  # type: ignore[operator]  # a tuple
    assert lifecycle.phase is Phase.CONNECTING  # nothing changed


def test_handler_close_sends_once_and_waits_for_the_peer() -> None:
    lifecycle = opened()
    step = lifecycle.transition(Event.CLOSE, CloseCode.NORMAL_CLOSURE, "done")
    assert step.send_close == (CloseCode.NORMAL_CLOSURE, "done")
    assert step.transport is Transport.KEEP and step.deadline is Deadline.CLOSING
    assert not step.finished
    assert lifecycle.phase is Phase.CLOSE_SENT
    # The peer may still send until its Close: the client stays connected.
    assert views(lifecycle) == (DISCONNECTED, CONNECTED, DISCONNECTED)
    assert lifecycle.code is None
    assert lifecycle.close_seen() == (CloseCode.NORMAL_CLOSURE, "done")

    answer = lifecycle.transition(Event.PEER_CLOSE, CloseCode.NORMAL_CLOSURE, "ok")
    assert answer.send_close is None  # ours is already out
    assert answer.transport is Transport.CLOSE and answer.finished
    assert lifecycle.closed
    assert lifecycle.close_seen() == (CloseCode.NORMAL_CLOSURE, "ok")
    assert views(lifecycle) == (DISCONNECTED, DISCONNECTED, DISCONNECTED)


def test_double_close_sends_one_frame() -> None:
    lifecycle = closing(CloseCode.NORMAL_CLOSURE, "first")
    again = lifecycle.transition(Event.CLOSE, 4001, "second")
    assert again.send_close is None and not again.finished
    assert again.deadline is Deadline.NONE  # the first deadline stands
    assert lifecycle.sent == (CloseCode.NORMAL_CLOSURE, "first")


@pytest.mark.parametrize("code", [CloseCode.NORMAL_CLOSURE, CloseCode.NO_STATUS_RCVD, 4000])
def test_peer_close_is_answered_with_its_code_then_the_socket_closes(code: int) -> None:
    lifecycle = opened()
    step = lifecycle.transition(Event.PEER_CLOSE, code, "bye")
    assert step.send_close == (code, "bye")
    assert step.transport is Transport.CLOSE and step.finished
    assert lifecycle.phase is Phase.CLOSED
    assert lifecycle.close_seen() == (code, "bye")


def test_peer_close_while_ours_is_in_flight_keeps_the_peer_code() -> None:
    lifecycle = closing(CloseCode.GOING_AWAY, "server shutting down")
    step = lifecycle.transition(Event.PEER_CLOSE, CloseCode.NORMAL_CLOSURE, "")
    assert step.send_close is None and step.finished
    assert lifecycle.code == CloseCode.NORMAL_CLOSURE
    assert lifecycle.sent == (CloseCode.GOING_AWAY, "server shutting down")


def test_protocol_failure_sends_close_then_lingers() -> None:
    lifecycle = failing(CloseCode.MESSAGE_TOO_BIG, "message too big")
    assert lifecycle.phase is Phase.LINGERING
    assert lifecycle.sent == (CloseCode.MESSAGE_TOO_BIG, "message too big")
    assert lifecycle.close_seen() == (CloseCode.MESSAGE_TOO_BIG, "message too big")
    assert views(lifecycle) == (DISCONNECTED, DISCONNECTED, DISCONNECTED)
    step = Lifecycle()
    step.transition(Event.ACCEPT)
    first = step.transition(Event.FAIL, CloseCode.PROTOCOL_ERROR, "protocol error")
    assert first.send_close == (CloseCode.PROTOCOL_ERROR, "protocol error")
    assert first.transport is Transport.LINGER and first.deadline is Deadline.LINGER
    assert not first.finished


def test_fail_after_close_sent_shuts_without_a_second_close() -> None:
    lifecycle = closing(CloseCode.TRY_AGAIN_LATER, "slow consumer")
    step = lifecycle.transition(Event.FAIL, CloseCode.PROTOCOL_ERROR, "protocol error")
    assert step.send_close is None
    assert step.transport is Transport.LINGER and not step.finished
    assert lifecycle.phase is Phase.LINGERING
    # The application learns why the connection failed; we sent our 1013.
    assert lifecycle.close_seen() == (CloseCode.PROTOCOL_ERROR, "protocol error")
    assert lifecycle.sent == (CloseCode.TRY_AGAIN_LATER, "slow consumer")


def test_fail_twice_and_close_while_failing_do_nothing() -> None:
    lifecycle = failing()
    for event in (Event.FAIL, Event.CLOSE):
        step = lifecycle.transition(event, CloseCode.INTERNAL_ERROR, "again")
        assert step.send_close is None and step.transport is Transport.KEEP
        assert not step.finished
    assert lifecycle.close_seen() == (CloseCode.PROTOCOL_ERROR, "protocol error")


@pytest.mark.parametrize("make", [closing, failing], ids=["close-sent", "lingering"])
def test_peer_close_or_deadline_ends_a_closing_connection(make: object) -> None:
    for event in (Event.PEER_CLOSE, Event.DEADLINE):
        lifecycle = make()  # type: ignore[operator]  # one of the builders above
        before = lifecycle.code
        step = lifecycle.transition(event, CloseCode.NORMAL_CLOSURE, "")
        assert step.transport is Transport.CLOSE and step.finished
        assert step.send_close is None
        assert lifecycle.phase is Phase.CLOSED
        if event is Event.DEADLINE:
            # Nobody answered: the connection ended abnormally unless it had failed.
            assert lifecycle.code == (before or CloseCode.ABNORMAL_CLOSURE)


def test_transport_lost_during_the_closing_handshake() -> None:
    lifecycle = closing()
    step = lifecycle.transition(Event.LOST)
    assert step.finished and step.send_close is None
    assert lifecycle.phase is Phase.CLOSED
    assert lifecycle.close_seen() == (CloseCode.ABNORMAL_CLOSURE, "")


def test_transport_lost_while_open_and_while_lingering() -> None:
    lifecycle = opened()
    assert lifecycle.transition(Event.LOST).finished
    assert lifecycle.code == CloseCode.ABNORMAL_CLOSURE
    lingering = failing(CloseCode.INVALID_FRAME_PAYLOAD_DATA, "invalid frame payload data")
    assert lingering.transition(Event.LOST).finished
    assert lingering.code == CloseCode.INVALID_FRAME_PAYLOAD_DATA  # the failure is kept


def test_abort_drops_the_socket_and_finishes() -> None:
    lifecycle = opened()
    step = lifecycle.transition(Event.ABORT)
    assert step.transport is Transport.ABORT and step.finished and step.send_close is None
    assert lifecycle.close_seen() == (CloseCode.ABNORMAL_CLOSURE, "")
    unanswered = Lifecycle()
    assert unanswered.transition(Event.ABORT).transport is Transport.ABORT
    assert unanswered.phase is Phase.CLOSED


@pytest.mark.parametrize(
    "event", [Event.CLOSE, Event.PEER_CLOSE, Event.FAIL, Event.DEADLINE, Event.LOST, Event.ABORT]
)
def test_the_connection_finishes_once(event: Event) -> None:
    """Whatever arrives after the end (a late timer, connection_lost after our close) is a no-op."""
    lifecycle = opened()
    assert lifecycle.transition(Event.PEER_CLOSE, CloseCode.GOING_AWAY, "").finished
    step = lifecycle.transition(event, CloseCode.INTERNAL_ERROR, "late")
    assert not step.finished and step.send_close is None
    assert step.transport is Transport.KEEP
    assert lifecycle.close_seen() == (CloseCode.GOING_AWAY, "")


def test_a_deadline_while_open_is_an_error() -> None:
    lifecycle = opened()
    with pytest.raises(InvalidWebSocketStateError) as info:
        lifecycle.transition(Event.DEADLINE)
    assert info.value.current_state is Phase.OPEN
    assert info.value.expected_state == (Phase.CLOSE_SENT, Phase.LINGERING)


def test_a_step_names_its_actions() -> None:
    step = closing().transition(Event.LOST)
    assert isinstance(step, Step)
    assert "finished=True" in repr(step) and "CLOSE" in repr(step)
