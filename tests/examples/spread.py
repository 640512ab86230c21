"""Client connections spread over a master's workers, proven by the pid the
example reports in its welcome message.

The kernel spreads connections over SO_REUSEPORT listeners by a hash of the
4-tuple, so which worker a connection lands on is not chosen by the client:
``spread`` keeps connecting (each new connection has a new source port)
until it holds one client on each of ``want`` different workers, and closes
the extra ones it made on the way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.examples.ws_client import TIMEOUT

MAX_ATTEMPTS = 200  # 4 workers: the chance of missing one in 200 tries is ~4 * 0.75**200


async def spread(
    url: str,
    want: int,
    welcome: Callable[[ClientConnection], Awaitable[int]],
    per_worker: int = 1,
) -> list[tuple[ClientConnection, int]]:
    """``per_worker`` clients on each of ``want`` workers: ``[(ws, pid), ...]``.

    ``welcome(ws)`` reads the example's first message(s) and returns the pid.
    """
    kept: list[tuple[ClientConnection, int]] = []
    per_pid: dict[int, int] = {}
    for _ in range(MAX_ATTEMPTS):
        if len(per_pid) >= want and all(n >= per_worker for n in per_pid.values()):
            return kept
        ws = await client(url)
        pid = await welcome(ws)
        full = len(per_pid) >= want and pid not in per_pid
        if full or per_pid.get(pid, 0) >= per_worker:
            await ws.close()
            continue
        per_pid[pid] = per_pid.get(pid, 0) + 1
        kept.append((ws, pid))
    for ws, _ in kept:
        await ws.close()
    raise AssertionError(f"{MAX_ATTEMPTS} connections did not land on {want} workers: {per_pid}")


async def client(url: str, **options: Any) -> ClientConnection:
    return await connect(
        url,
        proxy=None,
        compression=None,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        max_size=None,
        **options,
    )
