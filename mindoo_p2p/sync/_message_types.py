"""The sync protocol's message values: constants, the message types and their field checks.

Each message is a small immutable value that validates its fields on construction
(``ValueError``), so the wire codec (:mod:`.messages`: the frame layout, `encode_message`,
`decode_message`) can only write what it accepts. Import them from :mod:`.messages`, the
protocol's one public module for its messages; this module holds the values, that one their
bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from ..codec import Reader, Writer
from ..entry import DATABASE_NAME_RE, ID_SIZE, MAX_ENTRY_SIZE, TENANT_LOG
from ..errors import DecodeError, MindooError
from ..recon import (
    DEFAULT_FRAME_SIZE_LIMIT,
    FINGERPRINT_SIZE,
    MAX_TIMESTAMP,
    ReconItem,
)

PROTOCOL_VERSION = 3
"""The version a HELLO announces. 3: as 2, but the responder announces a DATABASE_SUMMARY (its
list with each database's fingerprint, so a database both hold alike needs no reconciliation),
the initiator sends its list only after it (its list and first requests always leave in one
flight), and a FINISH after a session in which the initiator pushed nothing ends it at both
ends (no FINISHED: there is no push to acknowledge); 2: the responder sends its DATABASE_LIST
right after its proof, without waiting for the initiator's (which may then arrive before or
after ours); 1: the responder answers the initiator's list. A responder speaks every version
from :data:`MIN_PROTOCOL_VERSION` up and denies any other."""
MIN_PROTOCOL_VERSION = 1
"""The oldest version a responder still speaks (an initiator of 1 gets the version-1 session)."""
LIST_FIRST_VERSION = 2
"""From this version on, the responder announces its database list first."""
SUMMARY_VERSION = 3
"""From this version on, the responder announces a DATABASE_SUMMARY, the initiator's list waits
for it, and FINISHED answers a FINISH only when the initiator pushed entries (an ENTRIES or
ENTRY_FRAGMENT frame) in the session: both sides see the same frames in the same order, so
they agree on whether it comes."""

MAX_FRAME_SIZE = 256 * 1024 + 1024
"""The largest frame either side sends or accepts (the transport's default limit)."""
MAX_RECON_PAYLOAD = DEFAULT_FRAME_SIZE_LIMIT
"""The largest Negentropy message carried in one frame (256 KiB)."""
NONCE_SIZE = 32
TAG_SIZE = 32
MAX_SEALED_CREDENTIAL = 4096
MAX_EVIDENCE = 4096
MAX_DATABASES = 1024
MAX_FETCH_IDS = 1024
MAX_INDEX_PAGE = 4096
MAX_ENTRIES_PER_FRAME = 4096
MAX_COUNT = (1 << 64) - 1

VIOLATION_PENALTY = 100
"""Score points a peer loses for a protocol violation (the driver also drops the stream)."""


class ProtocolViolation(MindooError):
    """The peer broke the protocol: an undecodable, oversized or unexpected frame, a reply that
    does not answer the request, or an entry that failed verification.

    ``penalty`` is what the driver reports to the peer scorer. ``report`` is filled in by the
    driver with what the session did before it stopped (what was valid is kept).
    """

    def __init__(self, reason: str, *, penalty: int = VIOLATION_PENALTY) -> None:
        super().__init__(reason)
        self.reason = reason
        self.penalty = penalty
        self.report: object | None = None


class MessageType(enum.IntEnum):
    HELLO = 0x01
    CHALLENGE = 0x02
    INITIATOR_PROOF = 0x03
    RESPONDER_PROOF = 0x04
    DENIED = 0x05
    DATABASE_LIST = 0x10
    RECON_REQUEST = 0x11
    RECON_REPLY = 0x12
    INDEX_REQUEST = 0x13
    INDEX_PAGE = 0x14
    FETCH_REQUEST = 0x15
    ENTRIES = 0x16
    ENTRY_FRAGMENT = 0x17
    FETCH_END = 0x18
    FINISH = 0x19
    FINISHED = 0x1A
    DATABASE_SUMMARY = 0x1B


class CredentialKind(enum.IntEnum):
    MEMBER_KEY = 1
    """Signed by a member signing key of the tenant."""
    MIRROR_GRANT = 2
    """Signed by a node key holding a mirror grant from the tenant admin (reserved: a grant is
    carried and bounded, but not accepted yet)."""


# --- field checks ------------------------------------------------------------------------------


def _check_bytes(value: object, size: int, what: str) -> None:
    if type(value) is not bytes or len(value) != size:
        raise ValueError(f"{what} must be {size} bytes")


def _check_count(value: object, low: int, high: int, what: str) -> None:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{what} must be an int in [{low}, {high}], got {value!r}")


def _check_ids(ids: object, low: int, high: int, what: str) -> None:
    if type(ids) is not tuple or not low <= len(ids) <= high:
        raise ValueError(f"{what} must be a tuple of {low}-{high} ids")
    for item_id in ids:
        _check_bytes(item_id, ID_SIZE, f"each id of {what}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{what} lists an id twice")


def _check_blob(value: object, low: int, high: int, what: str) -> None:
    if type(value) is not bytes or not low <= len(value) <= high:
        raise ValueError(f"{what} must be {low}-{high} bytes")


def is_database_name(name: object) -> bool:
    """True for the tenant log's name and for valid user database names."""
    return isinstance(name, str) and (
        name == TENANT_LOG or DATABASE_NAME_RE.fullmatch(name) is not None
    )


# --- auth messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """Initiator -> responder: opens a session with the initiator's fresh nonce."""

    version: int
    nonce: bytes
    TYPE: ClassVar[MessageType] = MessageType.HELLO

    def __post_init__(self) -> None:
        _check_count(self.version, 0, 255, "version")
        _check_bytes(self.nonce, NONCE_SIZE, "nonce")


@dataclass(frozen=True, slots=True)
class Challenge:
    """Responder -> initiator: the responder's fresh nonce."""

    nonce: bytes
    TYPE: ClassVar[MessageType] = MessageType.CHALLENGE

    def __post_init__(self) -> None:
        _check_bytes(self.nonce, NONCE_SIZE, "nonce")


@dataclass(frozen=True, slots=True)
class InitiatorProof:
    """Initiator -> responder: the blinded tenant tag and the sealed :class:`Credential`."""

    tenant_tag: bytes
    sealed_credential: bytes
    TYPE: ClassVar[MessageType] = MessageType.INITIATOR_PROOF

    def __post_init__(self) -> None:
        _check_bytes(self.tenant_tag, TAG_SIZE, "tenant tag")
        _check_blob(self.sealed_credential, 1, MAX_SEALED_CREDENTIAL, "sealed credential")


@dataclass(frozen=True, slots=True)
class ResponderProof:
    """Responder -> initiator: the responder's sealed :class:`Credential`."""

    sealed_credential: bytes
    TYPE: ClassVar[MessageType] = MessageType.RESPONDER_PROOF

    def __post_init__(self) -> None:
        _check_blob(self.sealed_credential, 1, MAX_SEALED_CREDENTIAL, "sealed credential")


@dataclass(frozen=True, slots=True)
class Denied:
    """Either side: the session is refused. Always the same single byte, whatever the cause."""

    TYPE: ClassVar[MessageType] = MessageType.DENIED


@dataclass(frozen=True, slots=True)
class Credential:
    """What a side proves itself with; travels sealed inside a proof message.

    ``signature`` is by ``member_key`` over the session transcript (see :mod:`.auth`).
    ``evidence`` is what vouches for the key, signed by the tenant admin: for
    :attr:`CredentialKind.MEMBER_KEY` optionally the sealed tenant-log entry that added the
    member (so a peer whose membership log is behind can still admit it), for
    :attr:`CredentialKind.MIRROR_GRANT` the grant (required). At most `MAX_EVIDENCE` bytes.
    """

    kind: CredentialKind
    member_key: bytes
    signature: bytes
    evidence: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, CredentialKind):
            raise ValueError(f"unknown credential kind {self.kind!r}")
        _check_bytes(self.member_key, 32, "member key")
        _check_bytes(self.signature, 64, "signature")
        low = 1 if self.kind is CredentialKind.MIRROR_GRANT else 0
        _check_blob(self.evidence, low, MAX_EVIDENCE, "evidence")

    def encode(self) -> bytes:
        w = Writer().u8(int(self.kind)).raw(self.member_key).raw(self.signature)
        w.blob(self.evidence)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Credential:
        """Strict: DecodeError and nothing else."""
        if type(data) is not bytes or len(data) > MAX_SEALED_CREDENTIAL:
            raise DecodeError("credential: not bytes, or too large")
        r = Reader(data, "credential")
        kind_value = r.u8("kind")
        try:
            kind = CredentialKind(kind_value)
        except ValueError:
            raise DecodeError(f"credential: unknown kind {kind_value}") from None
        member_key = r.fixed(32, "member key")
        signature = r.fixed(64, "signature")
        evidence = r.blob("evidence", MAX_EVIDENCE)
        r.end()
        try:
            return cls(kind, member_key, signature, evidence)
        except ValueError as exc:
            raise DecodeError(f"credential: {exc}") from None


# --- sync messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    """One database a side holds for the tenant, and how many entries it has there."""

    name: str
    item_count: int

    def __post_init__(self) -> None:
        if not is_database_name(self.name):
            raise ValueError(f"invalid database name {self.name!r}")
        _check_count(self.item_count, 0, MAX_COUNT, "item count")


@dataclass(frozen=True, slots=True)
class DatabaseList:
    """Each side's databases of the tenant, names strictly increasing (so each appears once)."""

    databases: tuple[DatabaseInfo, ...]
    TYPE: ClassVar[MessageType] = MessageType.DATABASE_LIST

    def __post_init__(self) -> None:
        if type(self.databases) is not tuple or len(self.databases) > MAX_DATABASES:
            raise ValueError(f"databases must be a tuple of at most {MAX_DATABASES}")
        previous = ""
        for index, info in enumerate(self.databases):
            if not isinstance(info, DatabaseInfo):
                raise ValueError("databases must hold DatabaseInfo values")
            if index and info.name <= previous:
                raise ValueError("database names must strictly increase")
            previous = info.name


@dataclass(frozen=True, slots=True)
class DatabaseSummary:
    """Either side's database list in version 3 (the responder's first, then the
    initiator's in answer), with each database's fingerprint: the Negentropy fingerprint of
    all its items (SHA-256 of the id sum mod 2**256 and the count, truncated;
    `fingerprints[i]` is of `databases[i]`). A database both summaries give the same item
    count and fingerprint is held alike: the initiator does not reconcile it, and the
    responder reports it ``alike``. The fingerprint is additive, not collision resistant
    against a member who grinds entry ids (docs/security.md)."""

    databases: tuple[DatabaseInfo, ...]
    fingerprints: tuple[bytes, ...]
    TYPE: ClassVar[MessageType] = MessageType.DATABASE_SUMMARY

    def __post_init__(self) -> None:
        DatabaseList(self.databases)  # the same checks as the list's
        if type(self.fingerprints) is not tuple or len(self.fingerprints) != len(self.databases):
            raise ValueError("a summary needs exactly one fingerprint per database")
        for fingerprint in self.fingerprints:
            _check_bytes(fingerprint, FINGERPRINT_SIZE, "fingerprint")

    @property
    def listed(self) -> DatabaseList:
        """The summary as a plain database list."""
        return DatabaseList(self.databases)


@dataclass(frozen=True, slots=True)
class ReconRequest:
    """Initiator -> responder: a Negentropy message about database number ``database`` of the
    agreed list."""

    database: int
    payload: bytes
    TYPE: ClassVar[MessageType] = MessageType.RECON_REQUEST

    def __post_init__(self) -> None:
        _check_count(self.database, 0, MAX_DATABASES - 1, "database index")
        _check_blob(self.payload, 1, MAX_RECON_PAYLOAD, "reconciliation payload")


@dataclass(frozen=True, slots=True)
class ReconReply:
    """Responder -> initiator: the Negentropy answer to the oldest unanswered request."""

    payload: bytes
    TYPE: ClassVar[MessageType] = MessageType.RECON_REPLY

    def __post_init__(self) -> None:
        _check_blob(self.payload, 1, MAX_RECON_PAYLOAD, "reconciliation payload")


@dataclass(frozen=True, slots=True)
class IndexRequest:
    """Initiator -> responder: up to ``limit`` index items of a database strictly after
    ``after`` (from the start when None), for the bulk catch-up."""

    database: int
    after: ReconItem | None
    limit: int
    TYPE: ClassVar[MessageType] = MessageType.INDEX_REQUEST

    def __post_init__(self) -> None:
        _check_count(self.database, 0, MAX_DATABASES - 1, "database index")
        if self.after is not None and (
            not isinstance(self.after, ReconItem) or self.after.timestamp == MAX_TIMESTAMP
        ):
            raise ValueError("after must be a ReconItem with a finite timestamp, or None")
        _check_count(self.limit, 1, MAX_INDEX_PAGE, "limit")


@dataclass(frozen=True, slots=True)
class IndexPage:
    """Responder -> initiator: index items in increasing order; ``more`` when others follow."""

    items: tuple[ReconItem, ...]
    more: bool
    TYPE: ClassVar[MessageType] = MessageType.INDEX_PAGE

    def __post_init__(self) -> None:
        if type(self.items) is not tuple or len(self.items) > MAX_INDEX_PAGE:
            raise ValueError(f"items must be a tuple of at most {MAX_INDEX_PAGE}")
        previous: bytes | None = None
        for item in self.items:
            if not isinstance(item, ReconItem) or item.timestamp == MAX_TIMESTAMP:
                raise ValueError("items must be ReconItems with finite timestamps")
            key = item.sort_key()
            if previous is not None and key <= previous:
                raise ValueError("index items must strictly increase")
            previous = key
        if type(self.more) is not bool:
            raise ValueError("more must be a bool")


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """Initiator -> responder: send these entries (of database number ``database``)."""

    database: int
    ids: tuple[bytes, ...]
    TYPE: ClassVar[MessageType] = MessageType.FETCH_REQUEST

    def __post_init__(self) -> None:
        _check_count(self.database, 0, MAX_DATABASES - 1, "database index")
        _check_ids(self.ids, 1, MAX_FETCH_IDS, "fetch ids")


@dataclass(frozen=True, slots=True)
class Entries:
    """Sealed entries: part of a fetch answer (responder) or pushed (initiator)."""

    raws: tuple[bytes, ...]
    TYPE: ClassVar[MessageType] = MessageType.ENTRIES

    def __post_init__(self) -> None:
        if type(self.raws) is not tuple or not 1 <= len(self.raws) <= MAX_ENTRIES_PER_FRAME:
            raise ValueError(f"raws must be a tuple of 1-{MAX_ENTRIES_PER_FRAME} entries")
        for raw in self.raws:
            _check_blob(raw, 1, MAX_FRAME_SIZE, "sealed entry")


@dataclass(frozen=True, slots=True)
class EntryFragment:
    """A piece of one entry too large for a frame; pieces of an entry are sent in order, back
    to back, offsets contiguous from 0 to ``total_size``."""

    total_size: int
    offset: int
    data: bytes
    TYPE: ClassVar[MessageType] = MessageType.ENTRY_FRAGMENT

    def __post_init__(self) -> None:
        _check_count(self.total_size, 1, MAX_ENTRY_SIZE, "total size")
        _check_count(self.offset, 0, self.total_size - 1, "offset")
        _check_blob(self.data, 1, MAX_FRAME_SIZE, "fragment data")
        if self.offset + len(self.data) > self.total_size:
            raise ValueError("fragment runs past the entry's total size")


@dataclass(frozen=True, slots=True)
class FetchEnd:
    """Responder -> initiator: the end of one fetch answer, with the requested ids not sent
    (not held, or over the answer's byte budget)."""

    unsent: tuple[bytes, ...]
    TYPE: ClassVar[MessageType] = MessageType.FETCH_END

    def __post_init__(self) -> None:
        _check_ids(self.unsent, 0, MAX_FETCH_IDS, "unsent ids")


@dataclass(frozen=True, slots=True)
class Finish:
    """Initiator -> responder: every request was answered and every push sent."""

    TYPE: ClassVar[MessageType] = MessageType.FINISH


@dataclass(frozen=True, slots=True)
class Finished:
    """Responder -> initiator: the session is over; what the pushed entries did here."""

    added: int
    refused: int
    TYPE: ClassVar[MessageType] = MessageType.FINISHED

    def __post_init__(self) -> None:
        _check_count(self.added, 0, MAX_COUNT, "added")
        _check_count(self.refused, 0, MAX_COUNT, "refused")


Message = (
    Hello
    | DatabaseSummary
    | Challenge
    | InitiatorProof
    | ResponderProof
    | Denied
    | DatabaseList
    | ReconRequest
    | ReconReply
    | IndexRequest
    | IndexPage
    | FetchRequest
    | Entries
    | EntryFragment
    | FetchEnd
    | Finish
    | Finished
)
