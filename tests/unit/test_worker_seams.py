"""The worker's small seams: write flow control and the metrics sink choice."""

from __future__ import annotations

import asyncio

import pytest

from app_server.metrics.recorder import Recorder
from app_server.metrics.sink import NullWorkerMetrics
from app_server.settings.model import HttpLimits
from app_server.workers.flow_control import FlowControl
from app_server.workers.state import ServerState


def test_a_writer_waits_while_paused_and_resumes_with_the_transport() -> None:
    async def scenario() -> list[str]:
        flow = FlowControl()
        seen: list[str] = []
        flow.pause_writing()

        async def writer() -> None:
            await flow.drain()
            seen.append("resumed")

        task = asyncio.ensure_future(writer())
        await asyncio.sleep(0)
        assert flow.is_waiting and not seen
        flow.resume_writing()
        await task
        assert not flow.paused and not flow.is_waiting
        return seen

    assert asyncio.run(scenario()) == ["resumed"]


def test_a_lost_connection_fails_every_waiting_writer_and_later_drains() -> None:
    async def scenario() -> None:
        flow = FlowControl()
        flow.pause_writing()
        waiters = [asyncio.ensure_future(flow.drain()) for _ in range(2)]
        await asyncio.sleep(0)
        flow.connection_lost()
        for waiter in waiters:
            with pytest.raises(ConnectionResetError):
                await waiter
        with pytest.raises(ConnectionResetError):
            await flow.drain()

    asyncio.run(scenario())


def test_the_null_metrics_sink_costs_the_request_path_no_call() -> None:
    off = ServerState(object(), HttpLimits(), None, None, 0.0, None, NullWorkerMetrics())
    assert off.recorder is None  # the hot path's `is not None` test skips it
    recorder = Recorder()
    on = ServerState(object(), HttpLimits(), None, None, 0.0, None, recorder)
    assert on.recorder is recorder
    assert recorder.connections is on.connections  # watched for live counts
