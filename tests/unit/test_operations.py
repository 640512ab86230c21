"""The master's operations as pure state machines: events in, actions out.

Each test plays the loop's part with plain records (``master_records``):
it applies the actions it got (a successor in the slot, a promotion on
READY, a reaped worker) and feeds the next event. No fork, no socket.
"""

from __future__ import annotations

import signal

import pytest

from app_server.control import StopReason
from app_server.master.actions import (
    FINISHED,
    AddSlot,
    AddSlotFailed,
    CloseListeners,
    CountRestart,
    NotifyReloading,
    RecycleFailed,
    ReloadEnded,
    RemoveSlot,
    RetireSlot,
    SpawnSuccessor,
    Started,
    StopWorker,
    Tick,
    WorkerExited,
    WorkerReady,
)
from app_server.master.model import EXIT_BOOT_FAILED, Phase, Slot, Worker
from app_server.master.operations import (
    DRAIN_QUEUE_MAX_S,
    QUEUE_QUIET_S,
    Recycle,
    Reload,
    ScaleDown,
    ScaleUp,
)
from tests.unit.master_records import exited, make_slots, promote, view, worker


def successor_of(slot: Slot, pid: int) -> Worker:
    """Carry out SpawnSuccessor(slot): a booting replacement in ``slot.successor``."""
    slot.successor = worker(slot, pid, Phase.BOOTING, serving=False)
    return slot.successor


# -- Reload ---------------------------------------------------------------------------


def test_reload_replaces_each_slot_in_turn_and_ends_ok() -> None:
    slots = make_slots(2)
    old = [worker(s, 10 + s.index) for s in slots]
    reload = Reload()
    assert reload.handle(Started(), view(slots, now=100.0)) == [
        NotifyReloading(),
        SpawnSuccessor(slots[0]),
    ]
    new0 = successor_of(slots[0], 20)
    # The old worker's own READY or heartbeat does not move the reload on.
    assert reload.handle(WorkerReady(old[1]), view(slots)) == []
    promote(new0)
    assert reload.handle(WorkerReady(new0), view(slots)) == [SpawnSuccessor(slots[1])]
    # The replaced worker of slot 0 exiting (it was told STOP) is not a failure.
    assert reload.handle(WorkerExited(exited(old[0], 0)), view(slots)) == []
    new1 = successor_of(slots[1], 21)
    promote(new1)
    assert reload.handle(WorkerReady(new1), view(slots, now=103.5)) == [
        ReloadEnded(replaced=2, took_s=3.5, failure=None, retired=(old[0], old[1])),
        FINISHED,
    ]


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (EXIT_BOOT_FAILED, "exit 3: the application failed to boot"),  # import or start hook
        (-signal.SIGABRT, "signal SIGABRT"),  # hung while booting: aborted by the master
        (-signal.SIGKILL, "signal SIGKILL"),  # killed (out of memory, an operator)
        (1, "exit 1"),  # crashed
    ],
)
def test_reload_aborts_when_a_new_worker_dies_before_ready(code: int, cause: str) -> None:
    slots = make_slots(3)
    old0 = worker(slots[0], 10)
    for slot in slots[1:]:
        worker(slot, 10 + slot.index)
    reload = Reload()
    reload.handle(Started(), view(slots))
    new0 = successor_of(slots[0], 20)
    promote(new0)
    assert reload.handle(WorkerReady(new0), view(slots)) == [SpawnSuccessor(slots[1])]
    new1 = successor_of(slots[1], 21)
    actions = reload.handle(WorkerExited(exited(new1, code)), view(slots, now=2.0))
    assert actions == [
        ReloadEnded(
            3,
            2.0,
            f"the new worker for slot 1 failed to start "
            f"({cause}); the running workers keep serving",
            (old0,),
        ),
        FINISHED,
    ]
    assert slots[1].worker is not None and slots[1].worker.pid == 11  # the old one serves on
    assert slots[2].successor is None  # slot 2 was never touched


def test_reload_aborts_when_shutdown_stops_the_new_worker() -> None:
    slots = make_slots(1)
    worker(slots[0], 10)
    reload = Reload()
    reload.handle(Started(), view(slots))
    new = successor_of(slots[0], 20)
    new.phase = Phase.STOPPING  # the master stops every worker on TERM
    actions = reload.handle(WorkerExited(exited(new, 0)), view(slots, stopping=True))
    assert isinstance(actions[0], ReloadEnded) and actions[0].failure is not None
    assert actions[-1] == FINISHED


def test_reload_survives_the_old_worker_dying_while_its_successor_boots() -> None:
    slots = make_slots(1)
    old = worker(slots[0], 10)
    reload = Reload()
    reload.handle(Started(), view(slots))
    new = successor_of(slots[0], 20)
    assert reload.handle(WorkerExited(exited(old, -signal.SIGKILL)), view(slots)) == []
    promote(new)
    assert reload.handle(WorkerReady(new), view(slots)) == [
        ReloadEnded(1, 0.0, None, (old,)),
        FINISHED,
    ]


def test_reload_skips_retiring_respawning_and_already_replaced_slots() -> None:
    slots = make_slots(4)
    worker(slots[0], 10)
    slots[0].retiring = True  # TTOU is retiring it
    # slots[1] has no worker: it respawns, with the new code anyway
    worker(slots[2], 12)
    successor_of(slots[2], 22)  # a recycle is replacing it already
    worker(slots[3], 13)
    reload = Reload()
    assert reload.handle(Started(), view(slots)) == [NotifyReloading(), SpawnSuccessor(slots[3])]


def test_reload_with_nothing_to_replace_ends_at_once() -> None:
    slots = make_slots(1)
    assert Reload().handle(Started(), view(slots)) == [
        NotifyReloading(),
        ReloadEnded(1, 0.0, None),
        FINISHED,
    ]


def test_reload_skips_a_slot_removed_while_it_waited() -> None:
    slots = make_slots(2)
    old = [worker(slot, 10 + slot.index) for slot in slots]
    reload = Reload()
    reload.handle(Started(), view(slots))
    new0 = successor_of(slots[0], 20)
    promote(new0)
    assert reload.handle(WorkerReady(new0), view(slots[:1])) == [
        ReloadEnded(2, 0.0, None, (old[0],)),
        FINISHED,
    ]


# -- Recycle --------------------------------------------------------------------------


def test_recycle_starts_a_successor_and_ends_when_it_is_ready() -> None:
    slots = make_slots(2)
    old = worker(slots[1], 11)
    recycle = Recycle(old)
    assert recycle.handle(Started(), view(slots)) == [SpawnSuccessor(slots[1])]
    new = successor_of(slots[1], 21)
    assert recycle.handle(WorkerReady(worker(slots[0], 10)), view(slots)) == []
    promote(new)
    assert recycle.handle(WorkerReady(new), view(slots)) == [FINISHED]


@pytest.mark.parametrize("stopping", [False, True])
def test_recycle_keeps_the_worker_when_its_successor_fails(stopping: bool) -> None:
    slots = make_slots(1)
    old = worker(slots[0], 10)
    recycle = Recycle(old)
    recycle.handle(Started(), view(slots))
    new = successor_of(slots[0], 20)
    assert recycle.handle(WorkerExited(exited(new, 1)), view(slots, stopping=stopping)) == [
        RecycleFailed(old, quiet=stopping),
        FINISHED,
    ]


def test_recycle_of_a_worker_gone_or_replaced_meanwhile_does_nothing() -> None:
    slots = make_slots(3)
    dead = exited(worker(slots[0], 10), -signal.SIGKILL)
    replaced = worker(slots[1], 11)
    successor_of(slots[1], 21)
    retiring = worker(slots[2], 12)
    slots[2].retiring = True
    for record in (dead, replaced, retiring):
        assert Recycle(record).handle(Started(), view(slots)) == [FINISHED]


# -- ScaleUp --------------------------------------------------------------------------


def test_scale_up_adds_a_slot_and_ends_when_its_worker_is_ready_or_died() -> None:
    slots = make_slots(2)
    for slot in slots:
        worker(slot, 10 + slot.index)
    for outcome in ("ready", "died"):
        scale = ScaleUp()
        assert scale.handle(Started(), view(slots)) == [AddSlot()]
        new_slot = Slot(2, [])
        new = worker(new_slot, 30, Phase.BOOTING)
        assert scale.handle(WorkerReady(slots[0].worker), view(slots)) == []  # type: ignore[arg-type]
        event = WorkerReady(new) if outcome == "ready" else WorkerExited(exited(new, 1))
        assert scale.handle(event, view([*slots, new_slot])) == [FINISHED]


def test_scale_up_ends_when_the_slot_cannot_be_bound() -> None:
    scale = ScaleUp()
    scale.handle(Started(), view(make_slots(1)))
    assert scale.handle(AddSlotFailed(), view(make_slots(1))) == [FINISHED]


# -- ScaleDown ------------------------------------------------------------------------


def test_scale_down_keeps_the_last_worker() -> None:
    slots = make_slots(1)
    worker(slots[0], 10)
    assert ScaleDown().handle(Started(), view(slots)) == [FINISHED]


def test_scale_down_drains_the_queue_then_stops_and_removes_the_slot() -> None:
    slots = make_slots(3)
    for slot in slots:
        worker(slot, 10 + slot.index)
    last = slots[2]
    scale = ScaleDown()
    assert scale.handle(Started(), view(slots, now=0.0)) == [RetireSlot(last)]
    last.retiring = True
    # Connections queued before the steering: its worker still accepts them.
    assert scale.handle(Tick({2: 4}), view(slots, now=0.1)) == []
    assert scale.handle(Tick({2: 0}), view(slots, now=0.2)) == []  # empty, not for long yet
    assert scale.handle(Tick({2: 1}), view(slots, now=0.21)) == []  # one more came in flight
    assert scale.handle(Tick({2: 0}), view(slots, now=0.3)) == []
    stop = scale.handle(Tick({2: 0}), view(slots, now=0.3 + 2 * QUEUE_QUIET_S))
    assert stop == [
        CountRestart("scale"),
        CloseListeners(last),
        StopWorker(last.worker, StopReason.SCALE_DOWN),
    ]  # type: ignore[arg-type]
    assert last.worker is not None
    last.worker.phase = Phase.STOPPING
    assert scale.handle(Tick({}), view(slots, now=1.0)) == []  # once only
    assert scale.handle(WorkerExited(exited(slots[0].worker, 1)), view(slots)) == []  # type: ignore[arg-type]
    assert scale.handle(WorkerExited(exited(last.worker, 0)), view(slots)) == [
        RemoveSlot(last),
        FINISHED,
    ]


def test_scale_down_stops_waiting_for_a_queue_that_never_empties() -> None:
    slots = make_slots(2)
    for slot in slots:
        worker(slot, 10 + slot.index)
    scale = ScaleDown()
    scale.handle(Started(), view(slots, now=0.0))
    assert scale.handle(Tick({1: 9}), view(slots, now=DRAIN_QUEUE_MAX_S - 0.01)) == []
    actions = scale.handle(Tick({1: 9}), view(slots, now=DRAIN_QUEUE_MAX_S))
    assert actions[-1] == StopWorker(slots[1].worker, StopReason.SCALE_DOWN)  # type: ignore[arg-type]


def test_scale_down_waits_for_a_booting_worker_and_removes_an_empty_slot_at_once() -> None:
    slots = make_slots(2)
    worker(slots[0], 10)
    booting = worker(slots[1], 11, Phase.BOOTING)
    scale = ScaleDown()
    scale.handle(Started(), view(slots))
    assert scale.handle(Tick({1: 0}), view(slots, now=1.0)) == []
    slots[1].worker = None  # it died (or was aborted as hung): a retiring slot is not respawned
    exited(booting, 1)
    assert scale.handle(Tick({}), view(slots, now=1.1)) == [
        CountRestart("scale"),
        CloseListeners(slots[1]),
        RemoveSlot(slots[1]),
        FINISHED,
    ]
