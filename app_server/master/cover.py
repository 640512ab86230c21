"""Carrying out a cover plan: lending listeners over the control channel, steering.

Owns: ``Cover``, which holds what the kernel and the workers were last told
(the steering, its success) and applies the difference to a
``policies.CoverPlan``: RELEASE to an adopter that loses a slot, ADOPT with
the slot's listeners to its new one, and a new reuseport program when the
set of accepting slots changed. The decisions are ``policies.plan_cover``'s.

Rule: imports nothing from the package but ``control`` and ``master.*``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from app_server import control
from app_server.control import Kind
from app_server.master import reuseport
from app_server.master.model import Slot, Worker
from app_server.master.policies import CoverPlan

log = logging.getLogger("app_server.error")


class Cover:
    def __init__(self) -> None:
        self.steering: tuple[int, ...] | None = None  # slot positions; None: the hash
        self.steering_ok = True

    def apply(self, slots: Sequence[Slot], plan: CoverPlan) -> bool:
        """False if a reuseport group could not be steered as wanted."""
        for position, slot in enumerate(slots):
            want = plan.lent.get(position)
            if want is not slot.adopter:
                _give_back(slot)
                if want is not None:
                    _lend(slot, want)
        return self._steer(slots, plan.steer)

    def _steer(self, slots: Sequence[Slot], want: tuple[int, ...] | None) -> bool:
        if want == self.steering or not slots or not slots[0].sockets:
            return self.steering_ok
        ok = True
        for group in range(len(slots[0].sockets)):
            # Any open socket of the group carries the program for all of it.
            sock = next(
                (
                    s.sockets[group]
                    for s in slots
                    if len(s.sockets) > group and s.sockets[group].fileno() != -1
                ),
                None,
            )
            if sock is None:
                continue
            if want is None:
                reuseport.stop_steering(sock)
            elif not reuseport.steer(sock, want):
                ok = False
        if want is not None:
            log.info("new connections go to slots %s", ", ".join(map(str, want)))
        elif self.steering is not None:
            log.info("new connections go to every slot again")
        self.steering, self.steering_ok = want, ok
        return ok


def _lend(slot: Slot, worker: Worker) -> None:
    try:
        control.send_adopt(worker.channel, slot.index, slot.sockets)
    except OSError as exc:
        log.warning(
            "slot %d: cannot lend its listeners to worker %d: %s", slot.index, worker.pid, exc
        )
        return
    slot.adopter = worker
    log.info(
        "slot %d: worker %d accepts its connections until the slot's worker does",
        slot.index,
        worker.pid,
    )


def _give_back(slot: Slot) -> None:
    adopter, slot.adopter = slot.adopter, None
    if adopter is None or adopter.exit_code is not None:
        return
    with contextlib.suppress(OSError):
        adopter.channel.send(control.encode(Kind.RELEASE, 0, slot.index))
    log.info("slot %d: worker %d gives its listeners back", slot.index, adopter.pid)
