"""examples/ws_data_stream.py (Sanic real-time data stream) over a real socket."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from examples import ws_data_stream
from examples.ws_data_stream import app
from tests.conftest import serve_app
from tests.examples.ws_client import recv_json, recv_json_until, run, ws_connect


@pytest.fixture(autouse=True)
def fast_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    # One reading every 20 ms instead of every second keeps the test short.
    monkeypatch.setattr(ws_data_stream, "STREAM_INTERVAL", 0.02)


def is_data(message: dict) -> bool:
    return message.get("type") == "data"


def check_reading(message: dict) -> datetime:
    assert set(message) == {"type", "timestamp", "value", "sensor_id", "temperature", "humidity"}
    assert message["sensor_id"] == "sensor_001"
    assert 1 <= message["value"] <= 100
    assert 20.0 <= message["temperature"] <= 30.0
    assert 40.0 <= message["humidity"] <= 80.0
    stamp = datetime.fromisoformat(message["timestamp"])
    assert stamp.utcoffset() is not None
    return stamp


def test_stream_of_readings_interleaved_with_replies() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/ws/data-stream") as ws:
            first = await recv_json(ws)
            assert first["type"] == "connected"
            assert first["message"] == "Data stream connected"
            datetime.fromisoformat(first["timestamp"])

            stamps = [check_reading(await recv_json(ws)) for _ in range(5)]
            assert stamps == sorted(stamps)

            # Requests are answered while the stream goes on; readings may come first.
            await ws.send(json.dumps({"type": "ping"}))
            pong, before = await recv_json_until(ws, lambda m: not is_data(m))
            assert pong["type"] == "pong" and set(pong) == {"type", "timestamp"}
            assert all(is_data(m) for m in before)

            await ws.send(json.dumps({"type": "subscribe", "sensor_id": "sensor_042"}))
            subscribed, _ = await recv_json_until(ws, lambda m: not is_data(m))
            assert subscribed == {
                "type": "subscribed",
                "sensor_id": "sensor_042",
                "message": "Subscribed to sensor_042",
            }

            await ws.send("this is not JSON")
            error, _ = await recv_json_until(ws, lambda m: not is_data(m))
            assert error == {"type": "error", "message": "Invalid message format"}

            # Unknown types get no answer: the next non-reading is the next pong.
            await ws.send(json.dumps({"type": "unknown"}))
            await ws.send(json.dumps({"type": "ping"}))
            reply, _ = await recv_json_until(ws, lambda m: not is_data(m))
            assert reply["type"] == "pong"

            # The stream is still alive after all that.
            check_reading((await recv_json_until(ws, is_data))[0])

            await ws.close()
            assert ws.close_code == 1000

    with serve_app(app) as server:
        run(scenario(server))


def test_several_clients_each_get_their_own_stream() -> None:
    async def scenario(server) -> None:
        async with (
            ws_connect(server, "/ws/data-stream") as a,
            ws_connect(server, "/ws/data-stream") as b,
        ):
            for ws in (a, b):
                assert (await recv_json(ws))["type"] == "connected"
            for _ in range(3):
                check_reading(await recv_json(a))
                check_reading(await recv_json(b))
            await a.close()
            # b keeps streaming after a left.
            for _ in range(3):
                check_reading(await recv_json(b))

    with serve_app(app) as server:
        run(scenario(server))
