"""What ``app-server ctl``'s requests do: each maps to what the master already does.

Owns: ``Commands``, the control socket's request handler. ``status`` is
built from the master's records and the workers' last heartbeats (never by
asking a worker); ``reload`` is a HUP (the config file read again, then the
``Reload`` operation; ``wait``: answered by ``ReloadWaits`` once every worker
it retired has exited); ``scale N``, ``add`` and ``remove`` queue
``ScaleUp``/``ScaleDown`` operations for the difference; ``drain SLOT`` is a
``Recycle`` (the successor starts first); ``reopen-logs`` is USR1; ``stop``
is TERM, ``stop --now`` QUIT.

Rule: imports nothing from the package but ``control`` and ``master.*``;
it reads and queues on the master it is given, like a signal would.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from app_server.control import RecycleReason, StopReason
from app_server.master.children import Children
from app_server.master.ctl_server import Answer, Conn, ControlServer, ReloadWaits, worker_status
from app_server.master.model import Slot, Worker
from app_server.master.operations import Operation, Recycle, Reload, ScaleDown, ScaleUp

log = logging.getLogger("app_server.error")


class Controlled(Protocol):
    """What a request may read and do of the master (``master.arbiter.Master``)."""

    @property
    def slots(self) -> Sequence[Slot]: ...

    @property
    def workers(self) -> Mapping[int, Worker]: ...

    @property
    def children(self) -> Children: ...

    @property
    def operations(self) -> deque[Operation]: ...

    @property
    def current(self) -> Operation | None: ...

    @property
    def stopping(self) -> StopReason | None: ...

    @property
    def first_ready(self) -> bool: ...

    @property
    def started(self) -> float: ...

    @property
    def ctl(self) -> ControlServer | None: ...

    @property
    def waits(self) -> ReloadWaits | None: ...

    def reload(self, why: str) -> Reload | str: ...

    def desired(self) -> int: ...

    def reopen_logs(self) -> None: ...

    def shutdown(self, reason: StopReason) -> None: ...


class Commands:
    def __init__(self, master: Controlled) -> None:
        self.master = master

    def handle(self, request: dict[str, Any], conn: Conn) -> Answer | None:
        """One request: its answer, or None when it comes later (``reload --wait``)."""
        m = self.master
        command = request.get("command")
        if command == "status":
            return {"ok": True, **self.status()}
        if m.stopping is not None and command != "stop":
            return {"ok": False, "error": "the server is stopping"}
        if command == "reload":
            reload = m.reload("ctl reload")
            if isinstance(reload, str):
                return {"ok": False, "error": f"reload aborted: {reload}"}
            if request.get("wait") is True and m.waits is not None:
                m.waits.wait(reload, conn)
                return None
            return {"ok": True, "queued": True}
        if command == "scale":
            target = request.get("workers")
            if not isinstance(target, int) or isinstance(target, bool) or target < 1:
                return {"ok": False, "error": "scale: the worker count must be an integer >= 1"}
            change = target - m.desired()
            op: type[Operation] = ScaleUp if change > 0 else ScaleDown
            m.operations.extend(op() for _ in range(abs(change)))
            log.info("ctl scale: %d workers (%+d)", target, change)
            return {"ok": True, "workers": target}
        if command in ("add", "remove"):
            m.operations.append(ScaleUp() if command == "add" else ScaleDown())
            return {"ok": True, "workers": m.desired()}
        if command == "drain":
            return self._drain(request.get("slot"))
        if command == "reopen-logs":
            m.reopen_logs()
            return {"ok": True}
        if command == "stop":
            now = request.get("now") is True
            log.info(
                "ctl stop%s: %s shutdown",
                " --now" if now else "",
                "immediate" if now else "graceful",
            )
            answer = {"ok": True}
            m.ctl.answer(conn, answer)  # type: ignore[union-attr]  # before the workers go
            m.shutdown(StopReason.IMMEDIATE if now else StopReason.SHUTDOWN)
            return None
        return {
            "ok": False,
            "error": f"unknown command {command!r}"
            if isinstance(command, str)
            else 'a request needs a "command" string',
        }

    def _drain(self, index: object) -> Answer:
        m = self.master
        slot = (
            next((s for s in m.slots if s.index == index), None)
            if isinstance(index, int) and not isinstance(index, bool)
            else None
        )
        if slot is None:
            return {
                "ok": False,
                "error": f"drain: no slot {index!r} (slots: "
                f"{', '.join(str(s.index) for s in m.slots)})",
            }
        worker = slot.worker
        if worker is None or not m.children.mark_recycling(worker, RecycleReason.DRAIN, False):
            return {
                "ok": False,
                "error": f"drain: slot {slot.index} has no ready worker "
                "that is not already being replaced",
            }
        m.operations.append(Recycle(worker))
        return {"ok": True, "pid": worker.pid, "slot": slot.index}

    def status(self) -> Answer:
        """``ctl status``: from the records and the last heartbeats, never asking a worker."""
        m = self.master
        now = time.monotonic()
        state = "stopping" if m.stopping is not None else "ready" if m.first_ready else "starting"
        workers = sorted(m.workers.values(), key=lambda w: (w.slot.index, w.started))
        return {
            "master": {
                "pid": os.getpid(),
                "state": state,
                "workers": m.desired(),
                "uptime_s": round(now - m.started, 3),
                "operation": type(m.current).__name__.lower() if m.current is not None else None,
                "queued": len(m.operations),
            },
            "workers": [worker_status(w, now) for w in workers],
        }
