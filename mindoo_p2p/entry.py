"""The sealed entry: the only thing that reaches the disk or crosses the network.

Canonical encoding, format version 2 (all integers big-endian, varint = minimal LEB128)::

    header:
      magic          3 bytes  b"MDE"
      version        u8       2 (1: the legacy format, without ``prev``)
      kind           u8       EntryKind
      tenant_id      16 bytes
      database       varint length (<= 64) + ASCII name (a user database name or "_tenant")
      document_id    16 bytes (all zero for tenant-level entries)
      author         32 bytes Ed25519 public key of the signer
      author_seq     u64      the author's sequence number within the tenant (1, 2, ...)
      timestamp_ms   u64      author's clock, milliseconds since the Unix epoch
      prev           32 bytes (version 2 only) the id of the author's previous entry in the
                              tenant, the one at author_seq - 1: all zero exactly when
                              author_seq is 1; author_seq is at least 1
      deps           varint count (<= 1024), then 32-byte entry ids (the causal parents)
      key_id         16 bytes id of the encryption key (version-specific)
      nonce          24 bytes XChaCha20-Poly1305 nonce
    body:
      ciphertext     varint length (<= MAX_CIPHERTEXT) + bytes; AEAD over the payload with the
                     whole header as associated data
    signature        64 bytes Ed25519 by `author` over SIGNING_DOMAIN + header + body

    entry id = SHA-256 of all the sealed bytes.

Anyone can check an entry's id and signature without any document key; only holders of the key
named by `key_id` can decrypt.

The ``prev`` link makes each author's entries in a tenant a hash chain (see `mindoo_p2p.chains`
for the rules built on it: forks, contiguity, revocation cuts by entry id). Version 1 entries
(written before chains existed) still decode and verify; they carry no link
(`EntryHeader.prev` is None) and take part in the chain rules by their sequence number only.
New entries are version 2 (`Entry.seal` with ``prev``).

`Entry.decode` is strict: any byte string that is not exactly one canonical entry raises
:class:`~mindoo_p2p.errors.DecodeError` and nothing else.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import re
import struct
from dataclasses import dataclass, field

from .codec import Reader, encode_varint
from .crypto import aead
from .crypto.signing import SigningKeyPair, verify_signature
from .errors import DecodeError, InvalidNameError, VerificationError

MAGIC = b"MDE"
FORMAT_VERSION = 2
"""The format of new entries: chained (the header carries ``prev``)."""
LEGACY_FORMAT_VERSION = 1
"""The format before per-author chains: no ``prev``; still decodes."""
FORMAT_VERSIONS = frozenset({LEGACY_FORMAT_VERSION, FORMAT_VERSION})
SIGNING_DOMAIN = b"mindoo/entry/v1\x00"

ID_SIZE = 32
TENANT_ID_SIZE = 16
DOCUMENT_ID_SIZE = 16
KEY_ID_SIZE = 16
AUTHOR_SIZE = 32
SIGNATURE_SIZE = 64
MAX_DATABASE_NAME = 64
MAX_DEPS = 1024
MAX_CIPHERTEXT = 16 * 1024 * 1024
MAX_ENTRY_SIZE = MAX_CIPHERTEXT + 64 * 1024

TENANT_LOG = "_tenant"
"""The reserved database name of a tenant's own log (membership records and the like)."""

NO_DOCUMENT = bytes(DOCUMENT_ID_SIZE)

NO_PREV = bytes(ID_SIZE)
"""The ``prev`` of an author's first entry in a tenant (author_seq 1)."""

DATABASE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


_U64X2 = struct.Struct(">QQ")


class EntryKind(enum.IntEnum):
    CHANGE = 1
    """An Automerge change of one document."""
    DELETE = 2
    """A tombstone: the document is deleted from now on; its history stays."""
    MEMBERSHIP = 3
    """A membership record of the tenant log, signed by the tenant admin."""


_HEADER_START = {
    (version, kind): MAGIC + bytes([version, int(kind)])
    for version in FORMAT_VERSIONS
    for kind in EntryKind
}


def validate_database_name(name: str) -> str:
    """Return ``name`` if it is a valid user database name, else raise InvalidNameError."""
    if not isinstance(name, str) or not DATABASE_NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid database name {name!r}: use 1-64 characters from a-z, 0-9, '.', '_', '-',"
            " starting with a letter or digit"
        )
    return name


@functools.lru_cache(maxsize=256)
def _valid_database_field(name: str) -> bool:
    # Cached: every entry sealed or decoded asks, and a node uses a handful of names.
    return name == TENANT_LOG or DATABASE_NAME_RE.fullmatch(name) is not None


_TENANT_ID_OFFSET = len(MAGIC) + 2


@dataclass(frozen=True, slots=True)
class EntryHeader:
    """The clear, signed header of an entry."""

    kind: EntryKind
    tenant_id: bytes
    database: str
    document_id: bytes
    author: bytes
    author_seq: int
    timestamp_ms: int
    deps: tuple[bytes, ...]
    key_id: bytes
    nonce: bytes
    prev: bytes | None = None
    """The id of the author's previous entry in the tenant (`NO_PREV` for author_seq 1); None
    in a version-1 entry, which has no link."""

    @property
    def version(self) -> int:
        """The encoding format: 2 for a chained header, 1 for a legacy one."""
        return LEGACY_FORMAT_VERSION if self.prev is None else FORMAT_VERSION

    def __post_init__(self) -> None:
        # Runs for every entry sealed here (own writes): checks in the cheapest order.
        if len(self.tenant_id) != TENANT_ID_SIZE:
            raise ValueError("tenant_id must be 16 bytes")
        if not _valid_database_field(self.database):
            raise InvalidNameError(f"invalid database name {self.database!r}")
        if len(self.document_id) != DOCUMENT_ID_SIZE:
            raise ValueError("document_id must be 16 bytes")
        if len(self.author) != AUTHOR_SIZE:
            raise ValueError("author must be a 32-byte Ed25519 public key")
        author_seq = self.author_seq
        if not 0 <= author_seq < 1 << 64 or not 0 <= self.timestamp_ms < 1 << 64:
            raise ValueError("author_seq and timestamp_ms must fit in 64 bits")
        deps = self.deps
        if len(deps) > MAX_DEPS:
            raise ValueError(f"deps must be at most {MAX_DEPS} ids of 32 bytes")
        for dep in deps:
            if len(dep) != ID_SIZE:
                raise ValueError(f"deps must be at most {MAX_DEPS} ids of 32 bytes")
        if len(self.key_id) != KEY_ID_SIZE or len(self.nonce) != aead.NONCE_SIZE:
            raise ValueError("key_id must be 16 bytes and nonce 24 bytes")
        prev = self.prev
        if prev is not None:
            if len(prev) != ID_SIZE:
                raise ValueError(f"prev must be a {ID_SIZE}-byte entry id")
            if author_seq < 1:
                raise ValueError("a chained entry's author_seq is at least 1")
            if (author_seq == 1) != (prev == NO_PREV):
                raise ValueError(
                    "prev is all zero exactly for author_seq 1 (the author's first entry)"
                    f" (author_seq {self.author_seq})"
                )

    def encode(self) -> bytes:
        database = self.database.encode("ascii")
        return b"".join(
            (
                _HEADER_START[self.version, self.kind],
                self.tenant_id,
                encode_varint(len(database)),
                database,
                self.document_id,
                self.author,
                _U64X2.pack(self.author_seq, self.timestamp_ms),
                b"" if self.prev is None else self.prev,
                encode_varint(len(self.deps)),
                *self.deps,
                self.key_id,
                self.nonce,
            )
        )

    @classmethod
    def read(cls, r: Reader) -> EntryHeader:
        if r.fixed(len(MAGIC), "magic") != MAGIC:
            raise DecodeError(f"{r.what}: bad magic (not a mindoo entry)")
        version = r.u8("version")
        if version not in FORMAT_VERSIONS:
            raise DecodeError(f"{r.what}: unsupported format version {version}")
        kind_value = r.u8("kind")
        try:
            kind = EntryKind(kind_value)
        except ValueError:
            raise DecodeError(f"{r.what}: unknown entry kind {kind_value}") from None
        tenant_id = r.fixed(TENANT_ID_SIZE, "tenant_id")
        try:
            database = r.text("database", MAX_DATABASE_NAME)
        except DecodeError:
            raise
        if not _valid_database_field(database):
            raise DecodeError(f"{r.what}: invalid database name {database!r}")
        document_id = r.fixed(DOCUMENT_ID_SIZE, "document_id")
        author = r.fixed(AUTHOR_SIZE, "author")
        author_seq = r.u64("author_seq")
        timestamp_ms = r.u64("timestamp_ms")
        prev = r.fixed(ID_SIZE, "prev") if version == FORMAT_VERSION else None
        dep_count = r.varint("deps count", max_value=MAX_DEPS)
        if dep_count * ID_SIZE > r.remaining:
            raise DecodeError(f"{r.what}: truncated at deps")
        deps = tuple(r.fixed(ID_SIZE, "dep") for _ in range(dep_count))
        key_id = r.fixed(KEY_ID_SIZE, "key_id")
        nonce = r.fixed(aead.NONCE_SIZE, "nonce")
        return cls(
            kind=kind,
            tenant_id=tenant_id,
            database=database,
            document_id=document_id,
            author=author,
            author_seq=author_seq,
            timestamp_ms=timestamp_ms,
            deps=deps,
            key_id=key_id,
            nonce=nonce,
            prev=prev,
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """A sealed entry: clear header, AEAD ciphertext, Ed25519 signature, content-addressed id."""

    header: EntryHeader
    ciphertext: bytes
    signature: bytes
    raw: bytes = field(repr=False)
    """The canonical sealed bytes."""
    id: bytes = field(repr=False)
    """SHA-256 of ``raw``."""
    header_bytes: bytes = field(repr=False)
    """The encoded header: the AEAD's associated data."""
    signed_end: int = field(repr=False)
    """``raw[:signed_end]`` is header + body, the signed part."""

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def seal(
        cls,
        *,
        kind: EntryKind,
        tenant_id: bytes,
        database: str,
        document_id: bytes,
        author: SigningKeyPair,
        author_seq: int,
        timestamp_ms: int,
        deps: tuple[bytes, ...] | list[bytes],
        key_id: bytes,
        key: bytes,
        payload: bytes,
        prev: bytes | None = None,
    ) -> Entry:
        """Encrypt ``payload`` with ``key``, sign with ``author`` and return the sealed entry.

        ``prev`` is the id of the author's previous entry in the tenant (`NO_PREV` when
        ``author_seq`` is 1): a version-2 entry. Without it the entry is sealed in the legacy
        version 1 (no chain link): only for tests and tools that must make old entries; the
        node's writer always chains (`writer.seal_drafts`)."""
        # Built through the slots' setters and encoded in place (issue 8, perf-write): the
        # same checks (`EntryHeader.__post_init__`) and the same bytes as `EntryHeader.encode`
        # (tests/test_entry.py seals and compares), without a frozen dataclass's __init__ or a
        # second pass over the fields.
        nonce = aead.random_nonce()
        deps = tuple(deps)
        header = _header_of(
            kind,
            tenant_id,
            database,
            document_id,
            author.public_key,
            author_seq,
            timestamp_ms,
            deps,
            key_id,
            nonce,
            prev,
        )
        header.__post_init__()  # the caller's fields are checked here, once
        database_bytes = database.encode("ascii")
        header_bytes = b"".join(
            (
                _HEADER_START[LEGACY_FORMAT_VERSION if prev is None else FORMAT_VERSION, kind],
                tenant_id,
                encode_varint(len(database_bytes)),
                database_bytes,
                document_id,
                author.public_key,
                _U64X2.pack(author_seq, timestamp_ms),
                b"" if prev is None else prev,
                encode_varint(len(deps)),
                *deps,
                key_id,
                nonce,
            )
        )
        ciphertext = aead.encrypt(key, nonce, payload, header_bytes)
        if len(ciphertext) > MAX_CIPHERTEXT:
            raise ValueError(f"payload too large: {len(payload)} bytes (limit {MAX_CIPHERTEXT})")
        signed = b"".join((header_bytes, encode_varint(len(ciphertext)), ciphertext))
        signature = author.sign(SIGNING_DOMAIN + signed)
        raw = signed + signature
        entry = _new_entry()
        _set_header(entry, header)
        _set_ciphertext(entry, ciphertext)
        _set_signature(entry, signature)
        _set_raw(entry, raw)
        _set_id(entry, _sha256(raw).digest())
        _set_header_bytes(entry, header_bytes)
        _set_signed_end(entry, len(signed))
        return entry

    @classmethod
    def decode(cls, data: bytes, what: str = "entry") -> Entry:
        """Strictly decode sealed bytes. Raises DecodeError, and only DecodeError."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_ENTRY_SIZE:
            raise DecodeError(f"{what}: {len(data)} bytes, over the limit {MAX_ENTRY_SIZE}")
        entry = _decode_usual(data)
        return entry if entry is not None else cls._decode_fields(data, what)

    @classmethod
    def _decode_fields(cls, data: bytes, what: str) -> Entry:
        """The reference decoder, field by field through a bounds-checked `Reader`: it decides
        every entry the fast path (`_decode_usual`) leaves, and names what is wrong."""
        r = Reader(data, what)
        try:
            header = EntryHeader.read(r)
        except (ValueError, InvalidNameError) as exc:
            raise DecodeError(f"{what}: invalid header: {exc}") from None
        header_end = r.pos
        ciphertext = r.blob("ciphertext", MAX_CIPHERTEXT)
        if len(ciphertext) < aead.TAG_SIZE:
            raise DecodeError(f"{what}: ciphertext shorter than the AEAD tag")
        signed_end = r.pos
        signature = r.fixed(SIGNATURE_SIZE, "signature")
        r.end()
        return cls(
            header=header,
            ciphertext=ciphertext,
            signature=signature,
            raw=data,
            id=hashlib.sha256(data).digest(),
            header_bytes=data[:header_end],
            signed_end=signed_end,
        )

    # -- checks ----------------------------------------------------------------------------
    @property
    def signed_message(self) -> bytes:
        return SIGNING_DOMAIN + self.raw[: self.signed_end]

    def verify_signature(self) -> None:
        """Raise VerificationError unless the author's signature is valid."""
        if not verify_signature(self.header.author, self.signed_message, self.signature):
            raise VerificationError(f"entry {self.id.hex()}: bad signature")

    def decrypt(self, key: bytes) -> bytes:
        """The plaintext payload; VerificationError when ``key`` is wrong or bytes were altered."""
        try:
            return aead.decrypt(key, self.header.nonce, self.ciphertext, self.header_bytes)
        except VerificationError as exc:
            raise VerificationError(f"entry {self.id.hex()}: {exc}") from None

    # -- conveniences ----------------------------------------------------------------------
    @property
    def kind(self) -> EntryKind:
        return self.header.kind

    @property
    def tenant_id(self) -> bytes:
        return self.header.tenant_id

    @property
    def database(self) -> str:
        return self.header.database

    @property
    def document_id(self) -> bytes:
        return self.header.document_id

    @property
    def author(self) -> bytes:
        return self.header.author

    @property
    def timestamp_ms(self) -> int:
        return self.header.timestamp_ms

    @property
    def deps(self) -> tuple[bytes, ...]:
        return self.header.deps

    @property
    def author_seq(self) -> int:
        return self.header.author_seq

    @property
    def prev(self) -> bytes | None:
        return self.header.prev

    def __repr__(self) -> str:
        h = self.header
        return (
            f"Entry(id={self.id.hex()[:16]}, kind={h.kind.name}, database={h.database!r},"
            f" document={h.document_id.hex()}, author={h.author.hex()[:16]}, seq={h.author_seq})"
        )


# -- the fast decoder -----------------------------------------------------------------------------
# Ingest decodes every entry that arrives, under the GIL: field-by-field reading through
# `Reader` cost about 14 µs of CPU an entry (6 with this path). `_decode_usual` reads the usual
# shape (a database name and a dependency count of one varint byte each, a ciphertext length of
# at most four) with slicing and one struct unpack. It accepts only what `Entry._decode_fields`
# accepts, and returns None for anything else, which the reference decoder then decides (and
# names the problem); tests/test_entry.py checks the two agree on valid and mutated entries.

_CHAINED_START = MAGIC + bytes([FORMAT_VERSION])
_LEGACY_START = MAGIC + bytes([LEGACY_FORMAT_VERSION])
_KINDS = {int(kind): kind for kind in EntryKind}
_NAME_AT = _TENANT_ID_OFFSET + TENANT_ID_SIZE
_AFTER_NAME = struct.Struct(">16s32sQQ")
"""document_id, author, author_seq, timestamp_ms."""
_SHORTEST_TAIL = KEY_ID_SIZE + aead.NONCE_SIZE + 1 + aead.TAG_SIZE + SIGNATURE_SIZE
_NAME_CACHE_LIMIT = 1024
_checked_names: dict[bytes, str] = {}
"""Database name bytes already found valid (bounded; names repeat across entries)."""


def _database_name(raw_name: bytes) -> str | None:
    name = _checked_names.get(raw_name)
    if name is not None:
        return name
    try:
        name = raw_name.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not _valid_database_field(name):
        return None
    if len(_checked_names) < _NAME_CACHE_LIMIT:
        _checked_names[raw_name] = name
    return name


_HEADER_FIELDS = (
    "kind",
    "tenant_id",
    "database",
    "document_id",
    "author",
    "author_seq",
    "timestamp_ms",
    "deps",
    "key_id",
    "nonce",
    "prev",
)
_ENTRY_FIELDS = ("header", "ciphertext", "signature", "raw", "id", "header_bytes", "signed_end")
# The slots' own setters: a frozen dataclass's __init__ (and object.__setattr__) look each
# field up by name first, which made building the two objects a third of a decode (issue 8);
# the decoder calls them one by one (a loop over them cost 0.45 us a header more: perf-ingest2).
_HEADER_SETTERS = tuple(vars(EntryHeader)[name].__set__ for name in _HEADER_FIELDS)
_ENTRY_SETTERS = tuple(vars(Entry)[name].__set__ for name in _ENTRY_FIELDS)
assert tuple(EntryHeader.__dataclass_fields__) == _HEADER_FIELDS
assert tuple(Entry.__dataclass_fields__) == _ENTRY_FIELDS
(
    _set_kind,
    _set_tenant_id,
    _set_database,
    _set_document_id,
    _set_author,
    _set_author_seq,
    _set_timestamp_ms,
    _set_deps,
    _set_key_id,
    _set_nonce,
    _set_prev,
) = _HEADER_SETTERS
(
    _set_header,
    _set_ciphertext,
    _set_signature,
    _set_raw,
    _set_id,
    _set_header_bytes,
    _set_signed_end,
) = _ENTRY_SETTERS
_new_header = functools.partial(object.__new__, EntryHeader)
_new_entry = functools.partial(object.__new__, Entry)
_sha256 = hashlib.sha256


def _header_of(
    kind: EntryKind,
    tenant_id: bytes,
    database: str,
    document_id: bytes,
    author: bytes,
    author_seq: int,
    timestamp_ms: int,
    deps: tuple[bytes, ...],
    key_id: bytes,
    nonce: bytes,
    prev: bytes | None,
) -> EntryHeader:
    """An `EntryHeader` built through its slots: from fields `_decode_usual` has checked (no
    second validation), or by `Entry.seal`, which then validates it once (`__post_init__`)."""
    header: EntryHeader = _new_header()
    _set_kind(header, kind)
    _set_tenant_id(header, tenant_id)
    _set_database(header, database)
    _set_document_id(header, document_id)
    _set_author(header, author)
    _set_author_seq(header, author_seq)
    _set_timestamp_ms(header, timestamp_ms)
    _set_deps(header, deps)
    _set_key_id(header, key_id)
    _set_nonce(header, nonce)
    _set_prev(header, prev)
    return header


def _entry_of(
    header: EntryHeader,
    ciphertext: bytes,
    signature: bytes,
    raw: bytes,
    entry_id: bytes,
    header_bytes: bytes,
    signed_end: int,
) -> Entry:
    """An `Entry` from fields `_decode_usual` has computed."""
    entry: Entry = _new_entry()
    _set_header(entry, header)
    _set_ciphertext(entry, ciphertext)
    _set_signature(entry, signature)
    _set_raw(entry, raw)
    _set_id(entry, entry_id)
    _set_header_bytes(entry, header_bytes)
    _set_signed_end(entry, signed_end)
    return entry


def _decode_usual(data: bytes) -> Entry | None:
    """``data`` decoded when it has the usual shape and is valid, else None (see above)."""
    size = len(data)
    start = data[:4]
    chained = start == _CHAINED_START
    if size < _NAME_AT + 1 or not (chained or start == _LEGACY_START):
        return None
    kind = _KINDS.get(data[4])
    name_length = data[_NAME_AT]
    if kind is None or name_length > MAX_DATABASE_NAME:
        return None
    pos = _NAME_AT + 1 + name_length
    database = _database_name(data[_NAME_AT + 1 : pos])
    if database is None or size < pos + _AFTER_NAME.size + 1 + _SHORTEST_TAIL:
        return None
    document_id, author, author_seq, timestamp_ms = _AFTER_NAME.unpack_from(data, pos)
    pos += _AFTER_NAME.size
    prev: bytes | None = None
    if chained:
        if size < pos + ID_SIZE + 1 + _SHORTEST_TAIL:
            return None
        prev = data[pos : pos + ID_SIZE]
        pos += ID_SIZE
        if author_seq < 1 or (author_seq == 1) != (prev == NO_PREV):
            return None  # the reference decoder names what is wrong
    dep_count = data[pos]
    if dep_count & 0x80:
        return None
    pos += 1
    deps_end = pos + dep_count * ID_SIZE
    header_end = deps_end + KEY_ID_SIZE + aead.NONCE_SIZE
    if header_end + 1 + aead.TAG_SIZE + SIGNATURE_SIZE > size:
        return None
    # The ciphertext length: a minimal varint of at most four bytes.
    pos = header_end
    length = 0
    for shift in (0, 7, 14, 21):
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and shift:
                return None
            break
    else:
        return None
    signed_end = pos + length
    if length < aead.TAG_SIZE or length > MAX_CIPHERTEXT or signed_end + SIGNATURE_SIZE != size:
        return None
    header = _header_of(
        kind,
        data[_TENANT_ID_OFFSET:_NAME_AT],
        database,
        document_id,
        author,
        author_seq,
        timestamp_ms,
        tuple(
            [
                data[at : at + ID_SIZE]
                for at in range(deps_end - dep_count * ID_SIZE, deps_end, ID_SIZE)
            ]
        ),
        data[deps_end : deps_end + KEY_ID_SIZE],
        data[deps_end + KEY_ID_SIZE : header_end],
        prev,
    )
    return _entry_of(
        header,
        data[pos:signed_end],
        data[signed_end:],
        data,
        hashlib.sha256(data).digest(),
        data[:header_end],
        signed_end,
    )
