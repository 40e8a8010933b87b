"""The sync protocol's wire messages: small immutable values, their encoding and strict decoding.

Every frame is one message: a type byte, then the fields (big-endian fixed-width integers,
LEB128 varints and length-prefixed blobs from :mod:`mindoo_p2p.codec`)::

    auth:  HELLO 0x01           version u8, nonce 32
           CHALLENGE 0x02       nonce 32
           INITIATOR_PROOF 0x03 tenant tag 32, sealed credential blob
           RESPONDER_PROOF 0x04 sealed credential blob
           DENIED 0x05          (nothing: the one generic denial)
    sync:  DATABASE_LIST 0x10   count, then (name text, item count varint), names increasing
           RECON_REQUEST 0x11   database index varint, Negentropy V1 message blob
           RECON_REPLY 0x12     Negentropy V1 message blob
           INDEX_REQUEST 0x13   database index, has-position u8, [timestamp u64, id 32], limit
           INDEX_PAGE 0x14      count, (timestamp varint, id 32) increasing, more u8
           FETCH_REQUEST 0x15   database index, count, ids (distinct)
           ENTRIES 0x16         count, sealed entry blobs
           ENTRY_FRAGMENT 0x17  total size, offset, data blob (a piece of one large entry)
           FETCH_END 0x18       count, ids requested but not sent (distinct)
           FINISH 0x19          (nothing)
           FINISHED 0x1A        entries added varint, entries refused varint (version 3: only
                                after a session in which the initiator pushed entries)
           DATABASE_SUMMARY 0x1B  (version 3, both sides: each one's database list) count,
                                then (name text, item count varint, fingerprint 16), names
                                increasing

Messages validate their fields on construction (``ValueError``), so :func:`encode_message` can
only write what :func:`decode_message` accepts. :func:`decode_message` is strict and bounded: any
byte string that is not exactly one canonical message of at most :data:`MAX_FRAME_SIZE` bytes
raises :class:`~mindoo_p2p.errors.DecodeError` and nothing else, and nothing is allocated before
its size has been checked against the bytes present. Semantic checks that need the session (is
this reply the one we asked for?) belong to the state machines, not here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from ..codec import Reader, Writer
from ..entry import DATABASE_NAME_RE, ID_SIZE, MAX_DATABASE_NAME, MAX_ENTRY_SIZE, TENANT_LOG
from ..errors import DecodeError, MindooError
from ..recon import (
    DEFAULT_FRAME_SIZE_LIMIT,
    FINGERPRINT_SIZE,
    MAX_TIMESTAMP,
    ReconItem,
    checked_items,
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


# --- writing -----------------------------------------------------------------------------------


def _write_item_fixed(w: Writer, item: ReconItem) -> None:
    w.u64(item.timestamp).raw(item.id)


def _write_ids(w: Writer, ids: tuple[bytes, ...]) -> None:
    w.varint(len(ids))
    for item_id in ids:
        w.raw(item_id)


def _write_body(w: Writer, message: Message) -> None:
    if isinstance(message, Hello):
        w.u8(message.version).raw(message.nonce)
    elif isinstance(message, Challenge):
        w.raw(message.nonce)
    elif isinstance(message, InitiatorProof):
        w.raw(message.tenant_tag).blob(message.sealed_credential)
    elif isinstance(message, ResponderProof):
        w.blob(message.sealed_credential)
    elif isinstance(message, DatabaseList):
        w.varint(len(message.databases))
        for info in message.databases:
            w.text(info.name).varint(info.item_count)
    elif isinstance(message, DatabaseSummary):
        w.varint(len(message.databases))
        for info, fingerprint in zip(message.databases, message.fingerprints, strict=True):
            w.text(info.name).varint(info.item_count).raw(fingerprint)
    elif isinstance(message, ReconRequest):
        w.varint(message.database).blob(message.payload)
    elif isinstance(message, ReconReply):
        w.blob(message.payload)
    elif isinstance(message, IndexRequest):
        w.varint(message.database)
        if message.after is None:
            w.u8(0)
        else:
            _write_item_fixed(w.u8(1), message.after)
        w.varint(message.limit)
    elif isinstance(message, IndexPage):
        w.varint(len(message.items))
        for item in message.items:
            w.varint(item.timestamp).raw(item.id)
        w.u8(1 if message.more else 0)
    elif isinstance(message, FetchRequest):
        _write_ids(w.varint(message.database), message.ids)
    elif isinstance(message, Entries):
        w.varint(len(message.raws))
        for raw in message.raws:
            w.blob(raw)
    elif isinstance(message, EntryFragment):
        w.varint(message.total_size).varint(message.offset).blob(message.data)
    elif isinstance(message, FetchEnd):
        _write_ids(w, message.unsent)
    elif isinstance(message, Finished):
        w.varint(message.added).varint(message.refused)
    # Denied and Finish have no body.


def encode_message(message: Message) -> bytes:
    """The frame of ``message``; ValueError if it would exceed :data:`MAX_FRAME_SIZE`."""
    w = Writer().u8(int(message.TYPE))
    _write_body(w, message)
    if len(w) > MAX_FRAME_SIZE:
        raise ValueError(f"{type(message).__name__} frame of {len(w)} bytes is over the limit")
    return w.getvalue()


def len_varint(value: int) -> int:
    """Bytes in the LEB128 varint of ``value``."""
    return max(1, (value.bit_length() + 6) // 7)


# --- reading -----------------------------------------------------------------------------------


def _read_bool(r: Reader, field: str) -> bool:
    value = r.u8(field)
    if value > 1:
        raise DecodeError(f"{r.what}: {field} must be 0 or 1, got {value}")
    return value == 1


def _read_ids(r: Reader, field: str, limit: int) -> tuple[bytes, ...]:
    count = r.varint(f"{field} count", max_value=limit)
    if count * ID_SIZE > r.remaining:
        raise DecodeError(f"{r.what}: {count} {field} announced, {r.remaining} bytes left")
    return tuple(r.fixed(ID_SIZE, field) for _ in range(count))


def _read_hello(r: Reader) -> Message:
    return Hello(r.u8("version"), r.fixed(NONCE_SIZE, "nonce"))


def _read_challenge(r: Reader) -> Message:
    return Challenge(r.fixed(NONCE_SIZE, "nonce"))


def _read_initiator_proof(r: Reader) -> Message:
    tag = r.fixed(TAG_SIZE, "tenant tag")
    return InitiatorProof(tag, r.blob("sealed credential", MAX_SEALED_CREDENTIAL))


def _read_responder_proof(r: Reader) -> Message:
    return ResponderProof(r.blob("sealed credential", MAX_SEALED_CREDENTIAL))


def _read_denied(r: Reader) -> Message:
    return Denied()


def _read_database_list(r: Reader) -> Message:
    count = r.varint("database count", max_value=MAX_DATABASES)
    if count * 2 > r.remaining:
        raise DecodeError(f"{r.what}: {count} databases announced, {r.remaining} bytes left")
    infos = tuple(
        DatabaseInfo(r.text("database name", MAX_DATABASE_NAME), r.varint("item count"))
        for _ in range(count)
    )
    return DatabaseList(infos)


def _read_database_summary(r: Reader) -> Message:
    count = r.varint("database count", max_value=MAX_DATABASES)
    if count * (2 + FINGERPRINT_SIZE) > r.remaining:
        raise DecodeError(f"{r.what}: {count} databases announced, {r.remaining} bytes left")
    infos, fingerprints = [], []
    for _ in range(count):
        name = r.text("database name", MAX_DATABASE_NAME)
        infos.append(DatabaseInfo(name, r.varint("item count")))
        fingerprints.append(r.fixed(FINGERPRINT_SIZE, "fingerprint"))
    return DatabaseSummary(tuple(infos), tuple(fingerprints))


def _read_recon_request(r: Reader) -> Message:
    database = r.varint("database index", max_value=MAX_DATABASES - 1)
    return ReconRequest(database, r.blob("reconciliation payload", MAX_RECON_PAYLOAD))


def _read_recon_reply(r: Reader) -> Message:
    return ReconReply(r.blob("reconciliation payload", MAX_RECON_PAYLOAD))


def _read_index_request(r: Reader) -> Message:
    database = r.varint("database index", max_value=MAX_DATABASES - 1)
    after: ReconItem | None = None
    if _read_bool(r, "has position"):
        after = ReconItem(r.u64("after timestamp"), r.fixed(ID_SIZE, "after id"))
    return IndexRequest(database, after, r.varint("limit", max_value=MAX_INDEX_PAGE))


def _read_index_page(r: Reader) -> Message:
    count = r.varint("item count", max_value=MAX_INDEX_PAGE)
    if count * (ID_SIZE + 1) > r.remaining:
        raise DecodeError(f"{r.what}: {count} items announced, {r.remaining} bytes left")
    pairs = r.varints_with_fixed(count, ID_SIZE, MAX_TIMESTAMP - 1)  # fast path (issue 8)
    items = (
        tuple(
            ReconItem(r.varint("timestamp", max_value=MAX_TIMESTAMP - 1), r.fixed(ID_SIZE, "id"))
            for _ in range(count)
        )
        if pairs is None
        else checked_items(pairs)
    )
    return IndexPage(items, _read_bool(r, "more"))


def _read_fetch_request(r: Reader) -> Message:
    database = r.varint("database index", max_value=MAX_DATABASES - 1)
    return FetchRequest(database, _read_ids(r, "ids", MAX_FETCH_IDS))


def _read_entries(r: Reader) -> Message:
    count = r.varint("entry count", max_value=MAX_ENTRIES_PER_FRAME)
    if count * 2 > r.remaining:
        raise DecodeError(f"{r.what}: {count} entries announced, {r.remaining} bytes left")
    raws = r.blobs(count, MAX_FRAME_SIZE)  # fast path (issue 8)
    if raws is None:
        return Entries(tuple(r.blob("sealed entry", MAX_FRAME_SIZE) for _ in range(count)))
    return Entries(tuple(raws))


def _read_entry_fragment(r: Reader) -> Message:
    total = r.varint("total size", max_value=MAX_ENTRY_SIZE)
    offset = r.varint("offset", max_value=MAX_ENTRY_SIZE)
    return EntryFragment(total, offset, r.blob("fragment data", MAX_FRAME_SIZE))


def _read_fetch_end(r: Reader) -> Message:
    return FetchEnd(_read_ids(r, "unsent ids", MAX_FETCH_IDS))


def _read_finish(r: Reader) -> Message:
    return Finish()


def _read_finished(r: Reader) -> Message:
    return Finished(r.varint("added"), r.varint("refused"))


_READERS: dict[int, Callable[[Reader], Message]] = {
    MessageType.HELLO: _read_hello,
    MessageType.CHALLENGE: _read_challenge,
    MessageType.INITIATOR_PROOF: _read_initiator_proof,
    MessageType.RESPONDER_PROOF: _read_responder_proof,
    MessageType.DENIED: _read_denied,
    MessageType.DATABASE_LIST: _read_database_list,
    MessageType.RECON_REQUEST: _read_recon_request,
    MessageType.RECON_REPLY: _read_recon_reply,
    MessageType.INDEX_REQUEST: _read_index_request,
    MessageType.INDEX_PAGE: _read_index_page,
    MessageType.FETCH_REQUEST: _read_fetch_request,
    MessageType.ENTRIES: _read_entries,
    MessageType.ENTRY_FRAGMENT: _read_entry_fragment,
    MessageType.FETCH_END: _read_fetch_end,
    MessageType.FINISH: _read_finish,
    MessageType.FINISHED: _read_finished,
    MessageType.DATABASE_SUMMARY: _read_database_summary,
}


def decode_message(frame: bytes) -> Message:
    """Decode one frame strictly (see the module docstring); DecodeError and nothing else."""
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise DecodeError(f"frame: expected bytes, got {type(frame).__name__}")
    frame = bytes(frame)
    if len(frame) > MAX_FRAME_SIZE:
        raise DecodeError(f"frame: {len(frame)} bytes, over the limit {MAX_FRAME_SIZE}")
    if not frame:
        raise DecodeError("frame: empty")
    reader = _READERS.get(frame[0])
    if reader is None:
        raise DecodeError(f"frame: unknown message type 0x{frame[0]:02x}")
    r = Reader(frame, f"{MessageType(frame[0]).name} message")
    r.u8("type")
    try:
        message = reader(r)
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"{r.what}: {exc}") from None
    r.end()
    return message
