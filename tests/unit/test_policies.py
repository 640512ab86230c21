"""The master's policies with plain records and times: no fork, no socket, no clock."""

from __future__ import annotations

import pytest

from app_server.control import StopReason
from app_server.master import policies
from app_server.master.model import EXIT_BOOT_FAILED, Phase, Slot
from app_server.master.policies import Deadlines, Verdict, check_worker, plan_cover
from tests.unit.master_records import exited, make_slots, worker

DEADLINES = Deadlines(timeout_s=10.0, late_s=0.75)

# -- respawn ----------------------------------------------------------------------------


def test_backoff_grows_with_fast_deaths_and_resets_after_a_stable_worker() -> None:
    deaths, delays = 0, []
    for _ in range(9):
        deaths, delay = policies.respawn_backoff(deaths, lived_s=0.1)
        delays.append(delay)
    # One crash is not a loop: the first respawn is at once; then 0.25 s doubling, capped.
    assert delays == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert policies.respawn_backoff(deaths, lived_s=policies.FAST_DEATH_S) == (0, 0.0)


def test_only_a_boot_failure_before_any_worker_was_ready_stops_the_master() -> None:
    assert policies.gives_up(first_ready=False, exit_code=EXIT_BOOT_FAILED)
    assert not policies.gives_up(first_ready=True, exit_code=EXIT_BOOT_FAILED)
    assert not policies.gives_up(first_ready=False, exit_code=1)


def test_stop_grace_is_the_graceful_timeout_plus_margin_or_short_when_immediate() -> None:
    assert policies.stop_grace(StopReason.RELOAD, 30.0) == 30.0 + policies.STOP_GRACE_S
    assert policies.stop_grace(StopReason.IMMEDIATE, 30.0) == policies.IMMEDIATE_GRACE_S


# -- silence, deadlines, age -----------------------------------------------------------------


def test_a_quiet_ready_worker_is_late_then_aborted_at_the_timeout() -> None:
    slot = make_slots(1)[0]
    record = worker(slot, 10, started=100.0)
    assert check_worker(record, 100.5, DEADLINES) == []
    assert check_worker(record, 100.8, DEADLINES) == [Verdict.LATE]
    record.late = True
    assert check_worker(record, 105.0, DEADLINES) == []  # late once, not again
    assert check_worker(record, 110.1, DEADLINES) == [Verdict.ABORT]
    record.late = False
    assert check_worker(record, 110.1, DEADLINES) == [Verdict.LATE, Verdict.ABORT]


def test_a_booting_worker_has_the_longer_boot_timeout_and_is_never_late() -> None:
    record = worker(make_slots(1)[0], 10, Phase.BOOTING, started=0.0)
    assert check_worker(record, 25.0, DEADLINES) == []
    assert check_worker(record, policies.BOOT_TIMEOUT_MIN_S + 0.1, DEADLINES) == [Verdict.ABORT]
    assert Deadlines(60.0, 0.75).boot_timeout_s == 60.0


def test_stopping_or_aborted_workers_are_killed_at_their_deadline_only() -> None:
    record = worker(make_slots(1)[0], 10, started=0.0)
    record.phase, record.deadline_kill = Phase.STOPPING, 50.0
    assert check_worker(record, 49.9, DEADLINES) == []  # silent, but stopping: not aborted
    assert check_worker(record, 50.0, DEADLINES) == [Verdict.KILL]
    record.phase, record.aborted = Phase.READY, True
    assert check_worker(record, 50.0, DEADLINES) == [Verdict.KILL]
    record.aborted = False
    assert check_worker(record, 50.0, DEADLINES) == []


def test_lifetime_recycles_a_ready_worker_once_its_time_comes() -> None:
    record = worker(make_slots(1)[0], 10, started=0.0)
    record.recycle_at = policies.lifetime_end(0.0, max_lifetime_s=60.0, jitter_s=2.5)
    record.last_seen = 62.4
    assert check_worker(record, 62.4, DEADLINES) == []
    record.last_seen = 62.5
    assert check_worker(record, 62.5, DEADLINES) == [Verdict.RECYCLE]
    assert policies.lifetime_end(0.0, 0.0, 0.0) == float("inf")  # no --max-lifetime


def test_max_requests_jitter_is_bounded() -> None:
    assert policies.max_requests(1000, 50, draw=20) == 1020
    assert policies.max_requests(1000, 50, draw=99) == 1050
    assert policies.max_requests(0, 50, draw=20) == 0  # no limit stays no limit
    assert policies.max_requests(1000, 0, draw=20) == 1000


def test_only_ready_workers_not_yet_recycling_may_be_recycled() -> None:
    slots = make_slots(3)
    ready, booting, recycling = (
        worker(slots[0], 10),
        worker(slots[1], 11, Phase.BOOTING),
        worker(slots[2], 12),
    )
    recycling.recycling = True
    assert policies.memory_candidates(slots) == [ready]
    assert policies.may_recycle(ready, stopping=False)
    assert not policies.may_recycle(ready, stopping=True)
    assert not policies.may_recycle(booting, stopping=False)
    assert not policies.may_recycle(recycling, stopping=False)


def test_next_wakeup_is_the_earliest_deadline() -> None:
    slots = make_slots(2)
    ready = worker(slots[0], 10, started=100.0)
    deadlines = Deadlines(timeout_s=0.4, late_s=0.3)
    assert policies.next_wakeup([ready], slots, deadlines, 100.0) == 100.3
    ready.late = True
    assert policies.next_wakeup([ready], slots, deadlines, 100.0) == 100.4  # the timeout
    assert policies.next_wakeup([ready], slots, DEADLINES, 100.0) == 100.5  # the step cap
    slots[1].respawn_at = 100.2
    assert policies.next_wakeup([ready], slots, DEADLINES, 100.0) == 100.2


# -- watchdog ----------------------------------------------------------------------------


def test_watchdog_needs_every_serving_worker_ready_and_recently_heard() -> None:
    slots = make_slots(2)
    first, second = worker(slots[0], 10, started=0.0), worker(slots[1], 11, started=0.0)
    assert policies.heartbeats_fresh(slots, 2.9, timeout_s=30.0)
    assert not policies.heartbeats_fresh(slots, 3.1, timeout_s=30.0)
    first.last_seen = second.last_seen = 3.0
    second.phase = Phase.BOOTING
    assert not policies.heartbeats_fresh(slots, 3.1, timeout_s=30.0)
    assert not policies.heartbeats_fresh(make_slots(1), 0.0, timeout_s=30.0)  # nobody serves


def test_periods_do_not_drift_and_never_fall_behind() -> None:
    assert policies.next_period(10.0, 5.0, now=10.2) == 15.0
    assert policies.next_period(10.0, 5.0, now=31.0) == 36.0


# -- cover ---------------------------------------------------------------------------------


def three_serving() -> list[Slot]:
    slots = make_slots(3)
    for slot in slots:
        worker(slot, 10 + slot.index)
    return slots


def test_no_cover_while_every_slot_accepts_or_before_the_first_ready() -> None:
    slots = three_serving()
    assert plan_cover(slots, first_ready=True) == policies.CoverPlan(
        {0: None, 1: None, 2: None}, None
    )
    slots[1].worker.late = True  # type: ignore[union-attr]
    assert plan_cover(slots, first_ready=False).steer is None


def test_a_late_workers_slot_is_steered_away_from_and_lent_to_another() -> None:
    slots = three_serving()
    slots[1].worker.late = True  # type: ignore[union-attr]
    plan = plan_cover(slots, first_ready=True)
    assert plan.steer == (0, 2)
    assert plan.lent[1] is slots[0].worker
    assert plan.lent[0] is None and plan.lent[2] is None


def test_the_adopter_is_kept_while_it_accepts_and_replaced_when_it_cannot() -> None:
    slots = three_serving()
    slots[0].worker = None  # died: respawning
    slots[0].adopter = slots[2].worker
    assert plan_cover(slots, first_ready=True).lent[0] is slots[2].worker
    slots[2].worker.late = True  # type: ignore[union-attr]
    plan = plan_cover(slots, first_ready=True)
    assert plan.lent[0] is slots[1].worker
    assert plan.steer == (1,)
    slots[0].adopter = exited(worker(slots[1], 99, serving=False), 0)  # a dead adopter
    assert plan_cover(slots, first_ready=True).lent[0] is slots[1].worker


def test_uncovered_slots_are_spread_over_the_accepting_workers() -> None:
    slots = make_slots(4)
    for slot in slots:
        worker(slot, 10 + slot.index, Phase.BOOTING if slot.index < 2 else Phase.READY)
    plan = plan_cover(slots, first_ready=True)
    assert {plan.lent[0].pid, plan.lent[1].pid} == {12, 13}  # type: ignore[union-attr]


def test_nobody_accepting_means_no_lending_and_no_steering_away() -> None:
    slots = three_serving()
    for slot in slots:
        slot.worker.late = True  # type: ignore[union-attr]
    plan = plan_cover(slots, first_ready=True)
    assert plan.lent == {0: None, 1: None, 2: None}
    assert plan.steer is None  # better a queue than a refusal


def test_a_retiring_slot_is_neither_steered_to_covered_nor_an_adopter() -> None:
    slots = three_serving()
    slots[2].retiring = True
    slots[0].worker.late = True  # type: ignore[union-attr]
    plan = plan_cover(slots, first_ready=True)
    assert plan.steer == (1,)
    assert plan.lent == {0: slots[1].worker, 1: None, 2: None}
    slots[0].worker.late = False  # type: ignore[union-attr]
    assert plan_cover(slots, first_ready=True).steer == (0, 1)


@pytest.mark.parametrize("phase", [Phase.BOOTING, Phase.STOPPING])
def test_shared_listeners_are_never_covered(phase: Phase) -> None:
    slots = make_slots(2, listeners=False)  # --no-reuse-port: every worker accepts them
    worker(slots[0], 10, phase)
    worker(slots[1], 11)
    assert plan_cover(slots, first_ready=True) == policies.CoverPlan({0: None, 1: None}, None)
