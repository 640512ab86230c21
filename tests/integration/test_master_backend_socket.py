"""The master backend's worker side over a real relay socket: the master's
``Relay`` component driven by its own selector thread, as in the master;
with the socket gone, ``ChannelUnavailable`` at once."""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from app_server.channels.history import HistoryRules, split_offset
from app_server.channels.hub import ChannelHub
from app_server.channels.master_backend import MasterBackend
from app_server.exceptions import ChannelGap, ChannelUnavailable
from app_server.master.relay import Relay


class RelayThread:
    """The master's relay, in a thread that runs a selector loop like the master's."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.relay = Relay(self.selector, epoch=5)
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def connect(self, wid: int) -> socket.socket:
        master_end, worker_end = Relay.pair()
        with self.lock:
            self.relay.add(wid, master_end)
        return worker_end

    def _run(self) -> None:
        while not self.stopping:
            with self.lock:
                events = self.selector.select(0.01)
                for key, mask in events:
                    key.data(mask)
            time.sleep(0)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.relay.close()
        self.selector.close()


@pytest.fixture
def relay() -> Iterator[RelayThread]:
    thread = RelayThread()
    yield thread
    thread.close()


def rules() -> HistoryRules:
    r = HistoryRules()
    r.add("room:*", size=2)
    return r


def test_two_workers_through_the_relay(relay: RelayThread) -> None:
    async def main() -> None:
        hubs = [ChannelHub(MasterBackend(relay.connect(wid)), rules()) for wid in (1, 2)]
        for hub in hubs:
            await hub.start()
        try:
            async with hubs[0].subscribe("room:a") as mine, hubs[1].subscribe("room:a") as theirs:
                assert await hubs[1].count("room:a") == 2
                offsets = [await hubs[0].publish("room:a", {"n": i}) for i in range(3)]
                assert [split_offset(o) for o in offsets] == [(5, 1), (5, 2), (5, 3)]
                for sub in (mine, theirs):  # the publisher's own subscriber too, via the master
                    got = [await asyncio.wait_for(sub.__anext__(), 5) for _ in range(3)]
                    assert [(m.offset, m.data) for m in got] == [
                        (o, {"n": i}) for i, o in enumerate(offsets)
                    ]
                assert await hubs[1].publish("news", "x") is None  # no history, no offset
                with pytest.raises(ChannelGap):  # size 2: offset 1's successor is gone
                    await hubs[1].backend.fetch("room:a", offsets[0] - 1)
            # leaving is reported in the background: the master's count follows
            # and, once both workers unsubscribed, forwards room:a to nobody
            deadline = time.monotonic() + 10
            while await hubs[0].count("room:a") or relay.relay.core.subs:
                assert time.monotonic() < deadline, relay.relay.core.subs
                await asyncio.sleep(0.005)
        finally:
            for hub in hubs:
                await hub.close()

    asyncio.run(main())


def test_a_gone_relay_socket_makes_publish_fail_at_once() -> None:
    async def main() -> None:
        master_end, worker_end = Relay.pair()
        hub = ChannelHub(MasterBackend(worker_end), rules())
        await hub.start()
        master_end.close()  # the master is gone
        await asyncio.wait_for(_until(lambda: not hub.up), 5)
        with pytest.raises(ChannelUnavailable):
            await asyncio.wait_for(hub.publish("room:a", "x"), 1)
        with pytest.raises(ChannelUnavailable):
            await asyncio.wait_for(hub.backend.count("room:a"), 1)
        await hub.close()

    asyncio.run(main())


async def _until(predicate: object) -> None:
    while not predicate():  # type: ignore[operator]
        await asyncio.sleep(0.005)
