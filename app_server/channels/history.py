"""Channel history: which topics keep messages, offsets with epochs, replay.

Owns: ``HistoryRules`` (the patterns of ``app.channels.history(pattern,
size=, ttl=)``: fnmatch-style globs, the first matching rule wins), the
offset arithmetic (``make_offset``/``split_offset``), ``select_since`` (the
one replay rule every backend applies), and ``TopicLog``, a bounded
per-topic log for backends that keep history in process memory.

An offset is ``epoch * 2**32 + seq``: ``seq`` grows by one per message of a
topic within an epoch, starting at 1, and the epoch (1 .. 2**21 - 1) changes
whenever the history is lost (a new process for the local log, Redis
restarted empty). An offset from another epoch is therefore recognisable and
raises ``ChannelGap`` instead of replaying the wrong messages; and every
offset stays below 2**53, so JavaScript clients hold it exactly.

Pure: no I/O, no clock reads (``now`` is passed in). Imports nothing from
the package but ``app_server.exceptions``: the master will use it for the
master backend's history, and the master never imports the framework.
"""

from __future__ import annotations

import fnmatch
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from app_server.exceptions import ChannelGap

SEQ_BITS = 32
SEQ_LIMIT = 1 << SEQ_BITS
EPOCH_LIMIT = 1 << 21  # epochs 1 .. 2**21 - 1: offsets < 2**53
MAX_CACHED_TOPICS = 4096  # topic -> rule lookups remembered (bounded: topics are unbounded)
T = TypeVar("T")


def make_offset(epoch: int, seq: int) -> int:
    return epoch * SEQ_LIMIT + seq


def split_offset(offset: int) -> tuple[int, int]:
    """``(epoch, seq)`` of an offset."""
    return divmod(offset, SEQ_LIMIT)


def check_since(topic: str, since: object) -> int:
    """``since`` as a valid offset; ValueError names what was expected."""
    if isinstance(since, bool) or not isinstance(since, int):
        raise ValueError(
            f"since must be an offset (int) returned by publish or received with a message, "
            f"got {since!r} for topic {topic!r}"
        )
    if since < 0 or since >= EPOCH_LIMIT * SEQ_LIMIT:
        raise ValueError(f"since={since} is not an offset (0 <= offset < 2**53)")
    return since


@dataclass(frozen=True, slots=True)
class HistoryRule:
    pattern: str
    size: int
    ttl_s: float | None


class HistoryRules:
    """The ``history(pattern, size=, ttl=)`` rules; ``for_topic`` picks the first match."""

    __slots__ = ("rules", "_compiled", "_cache")

    def __init__(self) -> None:
        self.rules: list[HistoryRule] = []
        self._compiled: list[tuple[re.Pattern[str], HistoryRule]] = []
        self._cache: dict[str, HistoryRule | None] = {}

    def add(self, pattern: str, size: int, ttl: float | None = None) -> HistoryRule:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"history pattern must be a non-empty string, got {pattern!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"history size must be a positive integer, got {size!r}")
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0
        ):
            raise ValueError(
                f"history ttl must be a positive number of seconds or None, got {ttl!r}"
            )
        rule = HistoryRule(pattern, size, None if ttl is None else float(ttl))
        self.rules.append(rule)
        self._compiled.append((re.compile(fnmatch.translate(pattern)), rule))
        self._cache.clear()
        return rule

    def for_topic(self, topic: str) -> HistoryRule | None:
        cache = self._cache
        try:
            return cache[topic]
        except KeyError:
            pass
        found = None
        for regex, rule in self._compiled:
            if regex.match(topic):
                found = rule
                break
        if len(cache) >= MAX_CACHED_TOPICS:
            cache.clear()
        cache[topic] = found
        return found


def select_since(
    topic: str,
    since: int,
    epoch: int,
    head: int,
    kept: Sequence[tuple[int, T]],
) -> list[tuple[int, T]]:
    """The kept messages after ``since`` as ``(offset, item)``, or raise ChannelGap.

    ``epoch`` is the topic's current epoch, ``head`` the seq of its last
    message (0: none yet) and ``kept`` the ``(seq, item)`` pairs still kept,
    oldest first. A gap: another epoch, an offset past the head, or history
    that no longer reaches back to ``since`` (trimmed or expired).
    """
    since_epoch, since_seq = split_offset(since)
    if since_epoch != epoch:
        raise ChannelGap(topic, since, "the offset is from another epoch (history was lost)")
    if since_seq > head:
        raise ChannelGap(topic, since, f"the offset is past the last message ({head})")
    if since_seq == head:
        return []
    if not kept or kept[0][0] > since_seq + 1:
        raise ChannelGap(topic, since, "the kept history no longer reaches back to the offset")
    base = epoch * SEQ_LIMIT
    return [(base + seq, item) for seq, item in kept if seq > since_seq]


class TopicLog(Generic[T]):
    """A topic's last ``size`` messages (each kept at most ``ttl_s``) with their offsets."""

    __slots__ = ("topic", "epoch", "head", "size", "ttl_s", "entries")

    def __init__(self, topic: str, epoch: int, size: int, ttl_s: float | None) -> None:
        self.topic = topic
        self.epoch = epoch
        self.head = 0
        self.size = size
        self.ttl_s = ttl_s
        self.entries: deque[tuple[int, float, T]] = deque(maxlen=size)

    def append(self, item: T, now: float) -> int:
        """Keep ``item``; return its offset."""
        self.head += 1
        if self.head >= SEQ_LIMIT:
            # 4 billion messages in one epoch: start a new epoch rather than
            # let seq spill into the epoch bits (old offsets then gap).
            self.epoch = self.epoch % (EPOCH_LIMIT - 1) + 1
            self.head = 1
            self.entries.clear()
        self.entries.append((self.head, now, item))
        return make_offset(self.epoch, self.head)

    def expire(self, now: float) -> None:
        ttl = self.ttl_s
        if ttl is None:
            return
        entries = self.entries
        while entries and entries[0][1] < now - ttl:
            entries.popleft()

    @property
    def last_offset(self) -> int:
        return make_offset(self.epoch, self.head)

    def replay(self, since: int, now: float) -> list[tuple[int, T]]:
        """Kept messages after ``since`` in order, or ChannelGap."""
        self.expire(now)
        kept = [(seq, item) for seq, _, item in self.entries]
        return select_since(self.topic, since, self.epoch, self.head, kept)

    def is_idle(self, now: float) -> bool:
        """Nothing kept any more (every entry expired): the log may be dropped."""
        self.expire(now)
        return not self.entries and self.ttl_s is not None


class TopicLogs(Generic[T]):
    """Every history topic's ``TopicLog`` in one process, created on first publish."""

    __slots__ = ("rules", "epoch", "logs", "_clock")

    def __init__(self, rules: HistoryRules, epoch: int, clock: Callable[[], float]) -> None:
        self.rules = rules
        self.epoch = epoch
        self.logs: dict[str, TopicLog[T]] = {}
        self._clock = clock

    def append(self, topic: str, item: T) -> int | None:
        """Keep ``item`` if the topic has history; its offset, else None."""
        log = self.logs.get(topic)
        if log is None:
            rule = self.rules.for_topic(topic)
            if rule is None:
                return None
            log = self.logs[topic] = TopicLog(topic, self.epoch, rule.size, rule.ttl_s)
        return log.append(item, self._clock())

    def head(self, topic: str) -> int | None:
        """The last offset of a history topic (seq 0 before its first message)."""
        log = self.logs.get(topic)
        if log is not None:
            return log.last_offset
        return make_offset(self.epoch, 0) if self.rules.for_topic(topic) else None

    def replay(self, topic: str, since: int) -> list[tuple[int, T]]:
        log = self.logs.get(topic)
        if log is None:
            if self.rules.for_topic(topic) is None:
                raise ChannelGap(topic, since, "the topic keeps no history")
            return select_since(topic, since, self.epoch, 0, [])
        return log.replay(since, self._clock())
