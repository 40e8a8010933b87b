"""Gossip topic names: opaque per-(tenant, database) names, and which strings count as topics.

Each (tenant, database) has one topic, named by `topic_name`: an HMAC under a secret the daemon
takes from the tenant's membership key, so a name says nothing about its tenant or database.
Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac

from ..entry import TENANT_ID_SIZE, TENANT_LOG, validate_database_name

MAX_TOPIC_LENGTH = 128
TOPIC_PREFIX = "mindoo/"
TOPIC_DOMAIN = b"mindoo/gossip-topic/v1\x00"


def topic_name(secret: bytes, tenant_id: bytes, database: str) -> str:
    """The opaque gossip topic of ``database`` in tenant ``tenant_id``.

    ``"mindoo/"`` + the first 128 bits, in hex, of HMAC-SHA256(secret, domain + tenant id +
    database). Without ``secret`` (the daemon passes the tenant's membership key) the name
    cannot be computed, and it reveals neither the tenant nor the database.
    """
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise ValueError("the topic secret must be at least 16 bytes")
    if not isinstance(tenant_id, bytes) or len(tenant_id) != TENANT_ID_SIZE:
        raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
    if database != TENANT_LOG:
        validate_database_name(database)
    mac = hmac.new(secret, TOPIC_DOMAIN + tenant_id + database.encode("ascii"), hashlib.sha256)
    return TOPIC_PREFIX + mac.hexdigest()[:32]


def is_valid_topic(topic: object) -> bool:
    """Whether ``topic`` is a string this node will subscribe to or track for a peer."""
    return (
        isinstance(topic, str)
        and 0 < len(topic) <= MAX_TOPIC_LENGTH
        and topic.isascii()
        and topic.isprintable()
    )


__all__ = ["MAX_TOPIC_LENGTH", "TOPIC_DOMAIN", "TOPIC_PREFIX", "is_valid_topic", "topic_name"]
