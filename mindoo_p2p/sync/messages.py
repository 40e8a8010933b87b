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

The message values, the protocol's constants and their field checks live in
:mod:`._message_types` and are imported from here, the one public module for messages; this
module is their bytes. Messages validate their fields on construction (``ValueError``), so
:func:`encode_message` can only write what :func:`decode_message` accepts.
:func:`decode_message` is strict and bounded: any byte string that is not exactly one canonical
message of at most :data:`MAX_FRAME_SIZE` bytes raises :class:`~mindoo_p2p.errors.DecodeError`
and nothing else, and nothing is allocated before its size has been checked against the bytes
present. Semantic checks that need the session (is
this reply the one we asked for?) belong to the state machines, not here.
"""

from __future__ import annotations

from collections.abc import Callable

from ..codec import Reader, Writer
from ..entry import ID_SIZE, MAX_DATABASE_NAME, MAX_ENTRY_SIZE
from ..errors import DecodeError
from ..recon import (
    FINGERPRINT_SIZE,
    MAX_TIMESTAMP,
    ReconItem,
    checked_items,
)
from ._message_types import (
    LIST_FIRST_VERSION,
    MAX_COUNT,
    MAX_DATABASES,
    MAX_ENTRIES_PER_FRAME,
    MAX_EVIDENCE,
    MAX_FETCH_IDS,
    MAX_FRAME_SIZE,
    MAX_INDEX_PAGE,
    MAX_RECON_PAYLOAD,
    MAX_SEALED_CREDENTIAL,
    MIN_PROTOCOL_VERSION,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    SUMMARY_VERSION,
    TAG_SIZE,
    VIOLATION_PENALTY,
    Challenge,
    Credential,
    CredentialKind,
    DatabaseInfo,
    DatabaseList,
    DatabaseSummary,
    Denied,
    Entries,
    EntryFragment,
    FetchEnd,
    FetchRequest,
    Finish,
    Finished,
    Hello,
    IndexPage,
    IndexRequest,
    InitiatorProof,
    Message,
    MessageType,
    ProtocolViolation,
    ReconReply,
    ReconRequest,
    ResponderProof,
    is_database_name,
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


__all__ = [
    "LIST_FIRST_VERSION",
    "MAX_COUNT",
    "MAX_DATABASES",
    "MAX_ENTRIES_PER_FRAME",
    "MAX_EVIDENCE",
    "MAX_FETCH_IDS",
    "MAX_FRAME_SIZE",
    "MAX_INDEX_PAGE",
    "MAX_RECON_PAYLOAD",
    "MAX_SEALED_CREDENTIAL",
    "MIN_PROTOCOL_VERSION",
    "NONCE_SIZE",
    "PROTOCOL_VERSION",
    "SUMMARY_VERSION",
    "TAG_SIZE",
    "VIOLATION_PENALTY",
    "Challenge",
    "Credential",
    "CredentialKind",
    "DatabaseInfo",
    "DatabaseList",
    "DatabaseSummary",
    "Denied",
    "Entries",
    "EntryFragment",
    "FetchEnd",
    "FetchRequest",
    "Finish",
    "Finished",
    "Hello",
    "IndexPage",
    "IndexRequest",
    "InitiatorProof",
    "Message",
    "MessageType",
    "ProtocolViolation",
    "ReconReply",
    "ReconRequest",
    "ResponderProof",
    "decode_message",
    "encode_message",
    "is_database_name",
    "len_varint",
]
