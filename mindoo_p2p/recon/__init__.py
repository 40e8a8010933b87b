"""Set reconciliation, pure and I/O-free: Negentropy protocol V1 over (timestamp, id) items.

Two parties find which ids each lacks in a few round trips, with traffic proportional to the
difference rather than to the set size. :class:`ReconInitiator` drives a session and learns the
have/need lists; :class:`ReconResponder` answers, statelessly. Both read their items through a
:class:`ReconStorage` (in memory: :class:`VectorStorage`; the store provides an LMDB one). The
wire format is Negentropy V1 (hoytech/negentropy, docs/negentropy-protocol-v1.md), so other
implementations can take part; messages can also be handled as values with
:func:`decode_message` and :func:`encode_message`.
"""

from ._engine import MIN_FRAME_SIZE_LIMIT
from ._fingerprint import (
    FINGERPRINT_SIZE,
    fingerprint_from_sum,
    fingerprint_of_ids,
    id_value,
)
from ._item import ID_SIZE, MAX_TIMESTAMP, ReconItem, checked_items
from ._messages import (
    INFINITE_BOUND,
    PROTOCOL_VERSION,
    START_BOUND,
    Bound,
    FingerprintRange,
    IdListRange,
    Message,
    Mode,
    Range,
    SkipRange,
)
from ._reader import DEFAULT_MAX_MESSAGE_SIZE, decode_message
from ._session import DEFAULT_FRAME_SIZE_LIMIT, ReconInitiator, ReconResponder
from ._split import DEFAULT_SPLIT, SplitPolicy
from ._state import ReconStateError, SessionState
from ._storage import ReconStorage, VectorStorage
from ._writer import encode_message

__all__ = [
    "DEFAULT_FRAME_SIZE_LIMIT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_SPLIT",
    "FINGERPRINT_SIZE",
    "ID_SIZE",
    "INFINITE_BOUND",
    "MAX_TIMESTAMP",
    "MIN_FRAME_SIZE_LIMIT",
    "PROTOCOL_VERSION",
    "START_BOUND",
    "Bound",
    "FingerprintRange",
    "IdListRange",
    "Message",
    "Mode",
    "Range",
    "ReconInitiator",
    "ReconItem",
    "ReconResponder",
    "ReconStateError",
    "ReconStorage",
    "SessionState",
    "SkipRange",
    "SplitPolicy",
    "VectorStorage",
    "checked_items",
    "decode_message",
    "encode_message",
    "fingerprint_from_sum",
    "fingerprint_of_ids",
    "id_value",
]
