"""Per-peer topic bookkeeping behind gossip admission: what each peer announced, what we told
it. Pure (no I/O, no libp2p): `_gossip_pubsub` asks it, then acts.

py-libp2p tells every connected peer every topic we subscribe to, and sends messages to whoever
subscribes, so a peer we only share another tenant with could learn our topic names and read
entry headers and ids it may not see. Admission (``admits(peer, topic)``, the daemon's "has
this peer proven it may replicate the topic's tenant") is therefore applied per peer and topic:
- we announce our subscription only to an admitted peer (none in the hello packet):
  `SubscriptionBook.announcements` says what to tell a peer so that it knows exactly our
  topics it is admitted to;
- a peer's subscription counts only while it is admitted; every subscription it announces is
  remembered (`SubscriptionBook.remember`), so it takes effect once the peer is admitted. A
  peer admitted to none of our topics (and told none) is remembered for at most
  ``max_unadmitted`` topics, any other for at most ``max_remembered``: a stranger cannot make
  us hold thousands of names.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from .gossip_topics import is_valid_topic

P = TypeVar("P", bound=Hashable)
"""A peer id (libp2p's ``ID`` in the service; anything hashable in tests)."""


class SubscriptionBook(Generic[P]):
    """Remote subscriptions remembered per peer (bounded), and our topics told to each peer."""

    def __init__(self, *, max_remembered: int, max_unadmitted: int) -> None:
        if max_remembered < 1 or max_unadmitted < 1:
            raise ValueError("max_remembered and max_unadmitted must be at least 1")
        self._max_remembered = max_remembered
        self._max_unadmitted = max_unadmitted
        self.remembered: dict[P, set[str]] = {}
        """Every topic each connected peer announced, admitted or not (bounded per peer)."""
        self._told: dict[P, set[str]] = {}

    # -- what peers announce ------------------------------------------------------------------

    def remember(self, peer: P, topic: str, *, admitted: bool) -> bool:
        """Record that ``peer`` subscribed to ``topic``; whether it is (now) remembered.

        ``admitted``: whether the peer is admitted to ``topic``. A topic that is not a valid
        name, or beyond the peer's bound, is not remembered (and must not take effect).
        """
        topics = self.remembered.setdefault(peer, set())
        if topic in topics:
            return True
        trusted = admitted or bool(self._told.get(peer))
        limit = self._max_remembered if trusted else self._max_unadmitted
        if len(topics) >= limit or not is_valid_topic(topic):
            return False
        topics.add(topic)
        return True

    def forget(self, peer: P, topic: str) -> None:
        """``peer`` unsubscribed from ``topic``."""
        topics = self.remembered.get(peer)
        if topics is not None:
            topics.discard(topic)

    def topics_of(self, peer: P) -> tuple[str, ...]:
        """The topics ``peer`` announced (a copy: safe to iterate while acting on them)."""
        return tuple(self.remembered.get(peer, ()))

    def subscribers(self, topic: str) -> list[P]:
        """The peers that announced ``topic``."""
        return [peer for peer, topics in self.remembered.items() if topic in topics]

    def peers(self) -> set[P]:
        return set(self.remembered)

    def drop_peer(self, peer: P) -> None:
        """``peer`` disconnected: forget what it announced."""
        self.remembered.pop(peer, None)

    # -- what we tell peers -------------------------------------------------------------------

    def announcements(
        self,
        peer: P,
        our_topics: Iterable[str],
        admits: Callable[[str], bool],
        topics: Iterable[str] | None = None,
    ) -> list[tuple[str, bool]]:
        """The (topic, subscribe) announcements that leave ``peer`` told exactly which of our
        topics it is admitted to, recorded as told: send every one of them.

        ``topics`` limits the check to those (our subscribe or unsubscribe); by default every
        topic of ``our_topics`` and every topic the peer was told is checked.
        """
        told = self._told.setdefault(peer, set())
        candidates = set(our_topics) | told if topics is None else set(topics)
        changes: list[tuple[str, bool]] = []
        for topic in candidates:
            subscribe = admits(topic)
            if subscribe == (topic in told):
                continue
            changes.append((topic, subscribe))
            if subscribe:
                told.add(topic)
            else:
                told.discard(topic)
        return changes

    def told(self, peer: P) -> frozenset[str]:
        """Our topics ``peer`` was told of."""
        return frozenset(self._told.get(peer, ()))

    def forget_told(self, peer: P) -> None:
        """``peer``'s stream ended: a new stream starts from a new hello (nothing told)."""
        self._told.pop(peer, None)


__all__ = ["SubscriptionBook"]
