"""Channels' pure parts: typed payloads, history rules, offsets and replay."""

from __future__ import annotations

import pytest

from app_server.channels.history import (
    HistoryRules,
    TopicLog,
    make_offset,
    select_since,
    split_offset,
)
from app_server.channels.payload import Payload
from app_server.exceptions import ChannelGap


@pytest.mark.parametrize("data", ["héllo", b"\x00\xff", {"a": [1, "é"]}, [1, 2]])
def test_payload_keeps_the_published_type_across_the_wire(data: object) -> None:
    back = Payload.from_wire(Payload.of(data).to_wire())
    assert back.data == data and type(back.data) is type(data)


def test_payload_frames_json_as_compact_text_and_refuses_other_types() -> None:
    assert Payload.of({"a": 1}).message == '{"a":1}'
    assert Payload.of(b"x").message == b"x" and not Payload.of(b"x").is_text
    with pytest.raises(TypeError, match="expected str, bytes, dict or list"):
        Payload.of(3)
    with pytest.raises(ValueError):
        Payload.from_wire(b"zzz")


def test_history_rules_first_match_wins_and_validate() -> None:
    rules = HistoryRules()
    rules.add("room:vip*", size=5)
    rules.add("room:*", size=100, ttl=30)
    assert rules.for_topic("room:vip1").size == 5  # type: ignore[union-attr]
    assert rules.for_topic("room:a").ttl_s == 30.0  # type: ignore[union-attr]
    assert rules.for_topic("news") is None
    with pytest.raises(ValueError, match="size"):
        rules.add("x", size=0)
    with pytest.raises(ValueError, match="ttl"):
        rules.add("x", size=1, ttl=-1)


def test_offsets_carry_the_epoch_and_stay_below_2_53() -> None:
    offset = make_offset((1 << 21) - 1, (1 << 32) - 1)
    assert offset < 2**53
    assert split_offset(make_offset(7, 42)) == (7, 42)


def test_replay_returns_what_follows_since_or_a_gap() -> None:
    log: TopicLog[str] = TopicLog("t", epoch=3, size=3, ttl_s=10)
    offsets = [log.append(f"m{i}", now=float(i)) for i in range(5)]  # keeps m2..m4
    assert offsets[1] - offsets[0] == 1
    assert log.replay(offsets[1], now=5) == [
        (offsets[2], "m2"),
        (offsets[3], "m3"),
        (offsets[4], "m4"),
    ]
    assert log.replay(offsets[4], now=5) == []
    with pytest.raises(ChannelGap, match="no longer reaches"):
        log.replay(offsets[0], now=5)  # m1 was trimmed
    with pytest.raises(ChannelGap, match="another epoch"):
        log.replay(make_offset(4, 2), now=5)
    with pytest.raises(ChannelGap, match="past the last"):
        log.replay(offsets[4] + 1, now=5)
    with pytest.raises(ChannelGap, match="no longer reaches"):
        log.replay(offsets[2], now=13.5)  # m3 expired (ttl 10 s)


def test_select_since_with_empty_history() -> None:
    assert select_since("t", make_offset(2, 0), 2, 0, []) == []
    with pytest.raises(ChannelGap):
        select_since("t", make_offset(2, 0), 2, 1, [])
