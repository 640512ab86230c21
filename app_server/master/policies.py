"""The master's decisions, as pure functions of its records and the time.

Owns: crash backoff (``respawn_backoff``), how long a stopped worker may
take (``stop_grace``), what a worker's silence or age calls for
(``check_worker``: late, abort as hung, kill after its deadline, recycle at
``--max-lifetime``), recycling limits with their jitter, the watchdog's
freshness rule, when the loop must wake up next, and which slots are
covered (``plan_cover``: steered away from, and lent to which worker).

Nothing here sends, forks, kills or reads a clock: the loop passes the
time and carries out what comes back, and unit tests call these with plain
records.

Rule: imports nothing from the package but ``master.model`` and ``control``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from app_server.control import StopReason
from app_server.master.model import EXIT_BOOT_FAILED, Phase, Slot, Worker

ABORT_GRACE_S = 1.0  # between SIGABRT (stack dump) and SIGKILL
STOP_GRACE_S = 5.0  # a stopped worker may outlive --graceful-timeout by this much
IMMEDIATE_GRACE_S = 3.0
FAST_DEATH_S = 5.0  # a worker dying sooner than this after start counts toward backoff
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 15.0
BOOT_TIMEOUT_MIN_S = 30.0
WATCHDOG_FRESH_S = 3.0  # WATCHDOG=1 only while every serving worker spoke this recently
INFINITY = float("inf")


# -- respawn and stop ----------------------------------------------------------------


def respawn_backoff(fast_deaths: int, lived_s: float) -> tuple[int, float]:
    """(the slot's new count of fast deaths, seconds before its next worker).

    A worker that lived ``FAST_DEATH_S`` resets the count. The first fast
    death respawns at once (one crash is not a loop); from the second the
    wait doubles from ``BACKOFF_FIRST_S`` up to ``BACKOFF_MAX_S``.
    """
    deaths = fast_deaths + 1 if lived_s < FAST_DEATH_S else 0
    if deaths <= 1:
        return deaths, 0.0
    return deaths, min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (deaths - 2))


def gives_up(first_ready: bool, exit_code: int | None) -> bool:
    """The application cannot boot before any worker was ever ready: stop, not loop."""
    return not first_ready and exit_code == EXIT_BOOT_FAILED


def stop_grace(reason: StopReason, graceful_s: float) -> float:
    """How long a stopped worker may take before SIGKILL."""
    if reason is StopReason.IMMEDIATE:
        return IMMEDIATE_GRACE_S
    return graceful_s + STOP_GRACE_S


# -- a worker's silence and age --------------------------------------------------------


class Verdict(Enum):
    LATE = "late"  # ready but silent: cover its slot, do not kill it
    ABORT = "abort"  # silent past --timeout: SIGABRT (stacks), replace it
    KILL = "kill"  # stopping or aborted, past its deadline: SIGKILL
    RECYCLE = "recycle"  # --max-lifetime reached


@dataclass(frozen=True, slots=True)
class Deadlines:
    timeout_s: float  # --timeout: silence that makes a worker hung
    late_s: float  # silence that makes a ready worker late (control.late_after)

    @property
    def boot_timeout_s(self) -> float:
        return max(self.timeout_s, BOOT_TIMEOUT_MIN_S)


def check_worker(worker: Worker, now: float, deadlines: Deadlines) -> list[Verdict]:
    if now >= worker.deadline_kill:
        stuck = worker.aborted or worker.phase is Phase.STOPPING
        return [Verdict.KILL] if stuck else []
    verdicts = []
    silent = now - worker.last_seen
    if worker.phase is Phase.READY and not worker.late and silent > deadlines.late_s:
        verdicts.append(Verdict.LATE)
    limit = deadlines.boot_timeout_s if worker.phase is Phase.BOOTING else deadlines.timeout_s
    if worker.phase is not Phase.STOPPING and silent > limit and not worker.aborted:
        verdicts.append(Verdict.ABORT)
    elif now >= worker.recycle_at and worker.phase is Phase.READY:
        verdicts.append(Verdict.RECYCLE)
    return verdicts


def next_wakeup(
    workers: Iterable[Worker], slots: Iterable[Slot], deadlines: Deadlines, now: float
) -> float:
    """The earliest moment one of ``check_worker``'s verdicts or a respawn is due."""
    wakeup = now + 0.5
    for worker in workers:
        wakeup = min(wakeup, worker.deadline_kill, worker.recycle_at)
        if worker.phase is Phase.READY:
            wakeup = min(wakeup, worker.last_seen + deadlines.timeout_s)
            if not worker.late:
                wakeup = min(wakeup, worker.last_seen + deadlines.late_s)
    for slot in slots:
        if slot.respawn_at is not None:
            wakeup = min(wakeup, slot.respawn_at)
    return wakeup


# -- recycling limits ----------------------------------------------------------------


def max_requests(limit: int, jitter: int, draw: int) -> int:
    """A worker's --max-requests: ``draw`` in [0, jitter] spreads the recycles."""
    return limit + min(draw, jitter) if limit and jitter else limit


def lifetime_end(started: float, max_lifetime_s: float, jitter_s: float) -> float:
    """When a worker is recycled for age (``jitter_s`` already drawn); inf: never."""
    return started + max_lifetime_s + jitter_s if max_lifetime_s else INFINITY


def may_recycle(worker: Worker, stopping: bool) -> bool:
    return not worker.recycling and worker.phase is Phase.READY and not stopping


def memory_candidates(slots: Iterable[Slot]) -> list[Worker]:
    """The serving workers whose memory is worth a look (ready, not yet recycling)."""
    return [
        s.worker
        for s in slots
        if s.worker is not None and s.worker.phase is Phase.READY and not s.worker.recycling
    ]


# -- readiness and the watchdog ------------------------------------------------------------


def all_ready(slots: Iterable[Slot]) -> bool:
    return all(
        s.worker is not None and s.worker.phase is Phase.READY for s in slots if not s.retiring
    )


def heartbeats_fresh(slots: Iterable[Slot], now: float, timeout_s: float) -> bool:
    """Every serving worker heartbeat recently (within seconds, not --timeout).

    Wider than ``late_after``: a worker late for a moment has its slot
    covered, but does not cost the whole service a watchdog ping.
    """
    serving = [s.worker for s in slots if s.worker is not None]
    fresh = min(0.75 * timeout_s, WATCHDOG_FRESH_S)
    return bool(serving) and all(
        w.phase is Phase.READY and now - w.last_seen <= fresh for w in serving
    )


def next_period(previous: float, interval: float, now: float) -> float:
    """The next tick of a period, without drift, and never in the past."""
    following = previous + interval
    return following if following > now else now + interval


# -- covering slots that cannot accept ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class CoverPlan:
    """``lent``: slot position -> the worker accepting from its listeners (None: nobody).
    ``steer``: the slot positions new connections go to; None: all (the kernel's hash)."""

    lent: dict[int, Worker | None]
    steer: tuple[int, ...] | None


def accepting(worker: Worker | None) -> bool:
    return worker is not None and worker.phase is Phase.READY and not worker.late


def needs_cover(slot: Slot, first_ready: bool) -> bool:
    # Before the first time every worker is ready there is nobody to lend
    # to; a shared listener (--no-reuse-port) is accepted by every worker.
    return first_ready and bool(slot.sockets) and not slot.retiring and not accepting(slot.worker)


def plan_cover(slots: Sequence[Slot], first_ready: bool) -> CoverPlan:
    """Which slots are steered away from, and which worker is lent which slot.

    A slot that cannot accept keeps its adopter while that one still can;
    otherwise it is lent to the accepting worker of another live slot that
    holds the fewest lent slots. Steering lists the slots that accept (all
    live ones if none does: better a queue than a refusal).
    """
    lent: dict[int, Worker | None] = {}
    for position, slot in enumerate(slots):
        lent[position] = _adopter(slot, slots, lent) if needs_cover(slot, first_ready) else None
    live = [i for i, slot in enumerate(slots) if not slot.retiring]
    allowed = [i for i in live if not needs_cover(slots[i], first_ready)] or live
    steer = None if len(allowed) == len(slots) else tuple(allowed)
    return CoverPlan(lent, steer)


def _adopter(slot: Slot, slots: Sequence[Slot], lent: dict[int, Worker | None]) -> Worker | None:
    current = slot.adopter
    if (
        current is not None
        and current.exit_code is None
        and accepting(current)
        and not current.slot.retiring
    ):
        return current
    candidates = [
        s.worker
        for s in slots
        if s is not slot and not s.retiring and s.worker is not None and accepting(s.worker)
    ]
    if not candidates:
        return None  # nobody can accept: steering alone (or nothing) until one can
    # The one lent the fewest slots (as planned so far, as they stand for the rest).
    return min(
        candidates,
        key=lambda w: sum(
            1 for i, s in enumerate(slots) if (lent[i] if i in lent else s.adopter) is w
        ),
    )
