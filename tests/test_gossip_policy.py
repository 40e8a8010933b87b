"""The pure rules of gossip, driven directly: no host, no sockets, no trio.

`SubscriptionBook` (what peers announced, what we told them), `PublishPacing` (which peers a
publish waits for) and the validation steps (`screen_message`, `judge_verdict`,
`ValidatedValues`). The service running them over py-libp2p is tested in test_gossip.py.
"""

from __future__ import annotations

import hashlib

import pytest

from mindoo_p2p.net.gossip_codec import FrameKind, GossipFrame, encode_frame
from mindoo_p2p.net.gossip_pacing import PublishPacing
from mindoo_p2p.net.gossip_subscriptions import SubscriptionBook
from mindoo_p2p.net.gossip_validation import (
    FAILED_VALIDATION,
    NOT_ACCEPTED_HERE,
    WRONG_TOPIC,
    Refusal,
    ValidatedValues,
    judge_verdict,
    needs_validation,
    screen_message,
)

TOPIC = "mindoo/" + "a" * 32


# -- SubscriptionBook ---------------------------------------------------------------------------


def test_a_stranger_is_remembered_for_few_topics_an_admitted_peer_for_many() -> None:
    book = SubscriptionBook[str](max_remembered=10, max_unadmitted=3)
    stored = [book.remember("stranger", f"t{i}", admitted=False) for i in range(6)]
    assert stored == [True, True, True, False, False, False]
    assert len(book.topics_of("stranger")) == 3
    # Admitted to one topic: that peer's bound is the large one.
    assert all(book.remember("member", f"t{i}", admitted=(i == 0)) for i in range(1))
    assert all(book.remember("member", f"t{i}", admitted=False) for i in range(1, 3))
    assert not book.remember("member", "t3", admitted=False)  # told nothing yet: small bound
    book.announcements("member", [TOPIC], lambda topic: True)  # now told a topic
    assert all(book.remember("member", f"t{i}", admitted=False) for i in range(3, 10))
    assert not book.remember("member", "t10", admitted=True)  # the large bound holds too
    assert book.remember("member", "t0", admitted=False)  # already remembered: still is


def test_invalid_topic_names_are_never_remembered() -> None:
    book = SubscriptionBook[str](max_remembered=10, max_unadmitted=10)
    for bad in ("", "x" * 129, "caf\u00e9", "tab\there"):
        assert not book.remember("peer", bad, admitted=True)
    assert book.topics_of("peer") == ()


def test_forget_subscribers_and_drop_peer() -> None:
    book = SubscriptionBook[str](max_remembered=10, max_unadmitted=10)
    book.remember("a", TOPIC, admitted=True)
    book.remember("b", TOPIC, admitted=False)
    book.remember("b", "other", admitted=False)
    assert sorted(book.subscribers(TOPIC)) == ["a", "b"]
    book.forget("a", TOPIC)
    book.forget("nobody", TOPIC)  # no-op
    assert book.subscribers(TOPIC) == ["b"]
    book.drop_peer("b")
    assert book.subscribers(TOPIC) == [] and book.peers() == {"a"}


def test_announcements_tell_exactly_the_admitted_topics_and_take_back_the_rest() -> None:
    book = SubscriptionBook[str](max_remembered=10, max_unadmitted=10)
    admitted = {"t1", "t2"}
    ours = ["t1", "t2", "t3"]
    first = book.announcements("peer", ours, lambda t: t in admitted)
    assert sorted(first) == [("t1", True), ("t2", True)]
    assert book.told("peer") == {"t1", "t2"}
    assert book.announcements("peer", ours, lambda t: t in admitted) == []  # nothing new
    admitted = {"t2", "t3"}  # rights changed: t1 revoked, t3 granted
    assert sorted(book.announcements("peer", ours, lambda t: t in admitted)) == [
        ("t1", False),
        ("t3", True),
    ]
    # Limited to one topic (our unsubscribe): only that one is checked.
    assert book.announcements("peer", ["t2"], lambda t: False, ["t2"]) == [("t2", False)]
    assert book.told("peer") == {"t3"}
    book.forget_told("peer")  # a new stream: told everything again
    assert book.announcements("peer", ours, lambda t: t == "t3") == [("t3", True)]


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SubscriptionBook[str](max_remembered=0, max_unadmitted=1)


# -- PublishPacing ------------------------------------------------------------------------------


def test_a_publish_waits_for_full_peers_until_it_gives_up_then_not_until_they_drain() -> None:
    pacing = PublishPacing[str](16)  # full at 12, drained at 4
    queued = {"a": 12, "b": 11, "c": 20}
    assert (pacing.high, pacing.low) == (12, 4)
    assert pacing.full(["a", "b", "c"], queued.__getitem__) == ["a", "c"]
    pacing.give_up(["a", "c"])
    assert pacing.full(["a", "b", "c"], queued.__getitem__) == []
    queued.update(a=4, c=5)  # a drained to the low mark, c did not; c disconnects after
    pacing.settle({"a", "b", "c"}, queued.__getitem__)
    assert pacing.congested == {"c"}
    queued.update(a=12)
    assert pacing.full(["a", "b", "c"], queued.__getitem__) == ["a"]
    pacing.settle({"a", "b"}, queued.__getitem__)  # c left: forgotten
    assert pacing.congested == set()


def test_pacing_needs_a_queue_of_four() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        PublishPacing[str](3)


# -- validation ---------------------------------------------------------------------------------


def test_screen_refuses_wrong_topics_without_blame_and_malformed_frames_with_it() -> None:
    data = encode_frame(FrameKind.ENTRY, b"sealed entry")
    assert screen_message([TOPIC], data, {TOPIC}) == GossipFrame(FrameKind.ENTRY, b"sealed entry")
    assert screen_message([], data, {TOPIC}) is WRONG_TOPIC
    assert screen_message([TOPIC, TOPIC], data, {TOPIC}) is WRONG_TOPIC
    assert screen_message(["mindoo/other"], data, {TOPIC}) is WRONG_TOPIC
    malformed = screen_message([TOPIC], b"\x01\x09payload", {TOPIC})
    assert isinstance(malformed, Refusal) and malformed.blames_forwarder
    assert "unknown frame kind 9" in malformed.reason
    short = screen_message([TOPIC], b"\x01\x02" + bytes(31), {TOPIC})
    assert isinstance(short, Refusal) and "announcement of 31 bytes" in short.reason


def test_only_inline_entries_from_others_need_the_validator() -> None:
    entry = GossipFrame(FrameKind.ENTRY, b"x")
    announcement = GossipFrame(FrameKind.ANNOUNCEMENT, bytes(32))
    assert needs_validation(entry, from_self=False)
    assert not needs_validation(entry, from_self=True)
    assert not needs_validation(announcement, from_self=False)


def test_verdicts() -> None:
    assert judge_verdict(True) is None
    assert judge_verdict(False) is FAILED_VALIDATION and FAILED_VALIDATION.blames_forwarder
    assert judge_verdict(None) is NOT_ACCEPTED_HERE and not NOT_ACCEPTED_HERE.blames_forwarder
    assert judge_verdict(object()) is None  # the validator's own value: accepted
    assert judge_verdict(0) is None  # only False itself is "invalid"


def test_validated_values_are_taken_once_and_bounded_oldest_first() -> None:
    values = ValidatedValues(keep=2)
    ids = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
    values.remember(ids[0], True)  # plain True: nothing to keep
    assert len(values) == 0
    for i, message in enumerate(ids):
        values.remember(message, f"verified {i}")
    assert len(values) == 2
    assert values.take(ids[0]) is None  # the oldest was dropped
    assert values.take(ids[2]) == "verified 2"
    assert values.take(ids[2]) is None  # taken once
    values.clear()
    assert values.take(ids[1]) is None and len(values) == 0
