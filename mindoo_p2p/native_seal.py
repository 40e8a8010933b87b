"""Native chain sealing: `writer.seal_drafts` with its contract and its bytes, the encryption,
signing and hashing of each author's run of drafts done in one C call that releases the GIL.

Why: sealing is ~28 µs of the writing thread per local change, 19 of them Ed25519 signing, and
an author's entries can only be sealed one after another (each names the id of the one before,
which hashes its signature). In C, one call seals a whole run with the GIL released, so a
thread can seal a batch's drafts on the other core while the application goes on making
changes (`sealing_ahead`), and even in line the Python work per entry is smaller.

What runs where:
- here, in Python: the numbering (from ``positions`` or the `SealingState`), the resolution of
  ChangeRefs to ids sealed by an earlier call, every check `EntryHeader.__post_init__` makes,
  the payload size limit, and each header encoded in
  format 2 with zeros where the chain link and the ids of parents of the same run go;
- in `mindoo_p2p/_seal_chain.c` (GIL released): the nonces drawn, those links and ids written
  in, the AEAD, the signature, the id; libsodium's own functions (the ones PyNaCl loaded) do
  the cryptography and draw the nonces.

The bytes are those of `Entry.seal` (`tests/test_native_seal.py` seals the same drafts with the
same nonces both ways and compares). The module is an optional build (setup.py): where it was
not built (no C compiler) or libsodium's functions cannot be found, `available()` is False and
`writer.seal_drafts` seals in Python as before. ``MINDOO_NATIVE_SEAL=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import logging
import os
from array import array
from collections.abc import Callable, Sequence

from .codec import encode_varint
from .crypto.aead import NONCE_SIZE, TAG_SIZE
from .entry import (
    _ENTRY_FIELDS,
    _HEADER_FIELDS,
    _HEADER_START,
    _U64X2,
    FORMAT_VERSION,
    ID_SIZE,
    KEY_ID_SIZE,
    MAX_CIPHERTEXT,
    MAX_DEPS,
    SIGNING_DOMAIN,
    Entry,
    EntryHeader,
    EntryKind,
    _header_of,
)
from .store import AuthorPositions
from .writer import (
    ChainKey,
    ChangeKey,
    ChangeRef,
    Draft,
    SealingState,
    UnresolvedDependencyError,
)

logger = logging.getLogger(__name__)

_SealChain = Callable[..., list[Entry]]
_Template = tuple[
    EntryKind, str, bytes, int, tuple[bytes | int, ...], bytes, "ChangeKey | None", bytes
]

nonce_source: Callable[[], bytes] | None = None
"""Where the nonces come from: None, drawn by the C call itself (libsodium's randombytes_buf,
the OS's CSPRNG, with the GIL released: no GIL round trip for `aead.random_nonce`'s refills in
the sealing thread); tests set a function of fixed nonces to compare bytes with `Entry.seal`."""

_NO_NONCE = bytes(NONCE_SIZE)
"""Stands for a nonce the C call draws, while the header's fields are checked."""

_U64_LIMIT = 1 << 64
_MAX_PAYLOAD = MAX_CIPHERTEXT - TAG_SIZE

_PLACEHOLDER = bytes(ID_SIZE)
_LINKED = b"\xff" * ID_SIZE
"""Stands for a chain link not known yet (the previous entry is in the same call) while the
header's fields are checked: any id but `NO_PREV` checks the same (author_seq > 1)."""


def _load() -> _SealChain | None:
    if os.environ.get("MINDOO_NATIVE_SEAL", "1") == "0":
        return None
    try:
        import nacl._sodium

        from . import _seal_chain  # type: ignore[attr-defined]
    except ImportError as exc:
        logger.debug("native sealing not built (%s): sealing in Python", exc)
        return None
    try:
        # The libsodium PyNaCl loaded (already initialised by it): its exported functions, or
        # those of the system libsodium it links to (dlsym searches the library's
        # dependencies too).
        sodium = ctypes.CDLL(nacl._sodium.__file__)
        addresses = [
            ctypes.cast(getattr(sodium, name), ctypes.c_void_p).value
            for name in (
                "crypto_aead_xchacha20poly1305_ietf_encrypt",
                "crypto_sign_detached",
                "crypto_hash_sha256",
                "randombytes_buf",
            )
        ]
        _seal_chain.configure(*addresses)
        _seal_chain.configure_entries(
            EntryHeader,
            tuple(vars(EntryHeader)[name] for name in _HEADER_FIELDS),
            Entry,
            tuple(vars(Entry)[name] for name in _ENTRY_FIELDS),
        )
    except (OSError, AttributeError, ValueError, TypeError) as exc:
        logger.warning("native sealing unavailable (%s): sealing in Python", exc)
        return None
    seal_chain: _SealChain = _seal_chain.seal_chain
    return seal_chain


_seal_chain_call = _load()


def available() -> bool:
    """Whether drafts are sealed natively (the module was built and libsodium found)."""
    return _seal_chain_call is not None


def seal_drafts(
    drafts: Sequence[Draft], positions: AuthorPositions, state: SealingState | None = None
) -> list[Entry]:
    """`writer.seal_drafts`, natively: the same numbering, links, ChangeRef resolution, errors
    and bytes. Each maximal run of consecutive drafts of one chain is one C call. Only when
    `available()`. After an exception ``state`` is where the last whole run left it."""
    if _seal_chain_call is None:
        raise RuntimeError("native sealing is not available")
    if state is None:
        state = SealingState()
    entries: list[Entry] = []
    start, count = 0, len(drafts)
    while start < count:
        first = drafts[start]
        tenant_id, author = first.tenant_id, first.signer.public_key
        end = start + 1
        while (
            end < count
            and drafts[end].tenant_id == tenant_id
            and drafts[end].signer.public_key == author
        ):
            end += 1
        entries.extend(_seal_run(drafts[start:end], (tenant_id, author), positions, state))
        start = end
    return entries


_PLACES_LIMIT = 4096
_CHAINS_LIMIT = 64
_places: dict[ChainKey, dict[tuple[EntryKind, str, bytes], bytes]] = {}
"""Per chain, the header start (magic to author) of each (kind, database, document) whose
header has passed `EntryHeader.__post_init__`: those fields are then known good for any later
draft (the key holds their exact values). Shared by every sealer of the process (dict
operations are atomic under the GIL). Bounded: a chain's documents are forgotten when a new
one would make more than `_PLACES_LIMIT`, and all chains when a new one would make more than
`_CHAINS_LIMIT`."""


def _seal_run(
    run: Sequence[Draft], chain: ChainKey, positions: AuthorPositions, state: SealingState
) -> list[Entry]:
    """Seal consecutive drafts of one chain in one C call; update ``state``.

    Kept lean: in a sealing thread this Python holds the GIL that the writer's thread waits
    for. Each header is checked by `EntryHeader.__post_init__` (the checks and errors of
    `Entry.seal`) whenever one of its fields may be new: the run's first draft (its number and
    link), the first of each document and kind of the chain (`_places`), any draft with a
    parent from ``state`` that is not 32 bytes, and any draft whose key id is not 16 bytes or
    whose number, timestamp or parent count is out of range; the others differ from a checked
    header only in fields the run makes (number, link, nonce, parents of this run) or `Draft`
    has checked (each parent's size). The C call builds the entries (`_entry_of`'s fields) and
    records the run's changes in ``state``."""
    assert _seal_chain_call is not None
    nonces = nonce_source
    position = state.next_position.get(chain)
    if position is None:
        position = (positions.last_seq(*chain) + 1, positions.last_entry_id(*chain))
    first_seq, first_prev = position
    sealed_changes = state.sealed_changes
    tenant_id, author = chain
    places = _places.get(chain)
    if places is None:
        if len(_places) >= _CHAINS_LIMIT:
            _places.clear()
        places = _places[chain] = {}
    headers = bytearray()
    meta = array("Q")
    keys: dict[bytes, int] = {}
    in_run: dict[ChangeKey, int] = {}
    given_nonces: list[bytes] = []
    # per draft: (kind, database, document id, timestamp, parents, key id, change key or None,
    # payload), each parent sealed in this call given as the index of its draft (an int)
    templates: list[_Template] = []
    for index, draft in enumerate(run):
        database, document_id = draft.database, draft.document_id
        deps: tuple[bytes | int, ...] = draft.deps  # type: ignore[assignment]
        if type(deps) is not tuple:  # Draft takes any sequence; the C call reads a tuple
            deps = tuple(deps)
        check = index == 0
        if draft.has_change_refs:
            resolved: list[bytes | int] = []
            for dep in draft.deps:
                if isinstance(dep, ChangeRef):
                    change = (tenant_id, database, document_id, dep.change_hash)
                    source = in_run.get(change)
                    if source is not None:
                        resolved.append(source)
                        continue
                    entry_id = sealed_changes.get(change)
                    if entry_id is None:
                        raise UnresolvedDependencyError.of(document_id, dep.change_hash)
                    if len(entry_id) != ID_SIZE:  # the full check refuses it
                        check = True
                    resolved.append(entry_id)
                else:
                    resolved.append(dep)
            deps = tuple(resolved)
        seq = first_seq + index
        nonce = _NO_NONCE if nonces is None else nonces()
        key = draft.key
        key_id = key.key_id
        kind = draft.kind
        timestamp_ms = draft.timestamp_ms
        place = (kind, database, document_id)
        prefix = places.get(place)
        if (
            check
            or prefix is None
            or len(key_id) != KEY_ID_SIZE
            or seq >= _U64_LIMIT
            or not 0 <= timestamp_ms < _U64_LIMIT
            or len(deps) > MAX_DEPS
        ):
            _header_of(
                kind,
                tenant_id,
                database,
                document_id,
                author,
                seq,
                timestamp_ms,
                tuple(_PLACEHOLDER if isinstance(d, int) else d for d in deps),
                key_id,
                nonce,
                first_prev if index == 0 else _LINKED,
            ).__post_init__()  # raises what Entry.seal raises, before anything is sealed
        if prefix is None:  # the header's start, the same for every entry of a document
            if len(places) >= _PLACES_LIMIT:  # bounded: the chain's documents are forgotten
                places.clear()
            encoded = database.encode("ascii")
            prefix = places[place] = b"".join(
                (
                    _HEADER_START[FORMAT_VERSION, kind],
                    tenant_id,
                    encode_varint(len(encoded)),
                    encoded,
                    document_id,
                    author,
                )
            )
        start = len(headers)
        headers += prefix
        headers += _U64X2.pack(seq, timestamp_ms)
        headers += _PLACEHOLDER
        headers += encode_varint(len(deps))
        deps_offset = len(headers) - start
        for parent in deps:
            headers += _PLACEHOLDER if isinstance(parent, int) else parent
        headers += key_id
        headers += _NO_NONCE
        payload = draft.payload
        if len(payload) > _MAX_PAYLOAD:  # as Entry.seal: after the header
            raise ValueError(f"payload too large: {len(payload)} bytes (limit {MAX_CIPHERTEXT})")
        key_index = keys.get(key.secret)
        if key_index is None:
            key_index = keys[key.secret] = len(keys)
        meta.extend((len(headers) - start, len(prefix) + 16, key_index, deps_offset))
        change_hash = draft.change_hash
        if change_hash is None:
            carried = None
        else:
            carried = (tenant_id, database, document_id, change_hash)
            in_run[carried] = index
        templates.append(
            (kind, database, document_id, timestamp_ms, deps, key_id, carried, payload)
        )
        if nonces is not None:
            given_nonces.append(nonce)
    entries = _seal_chain_call(
        headers,
        meta,
        tuple(templates),
        b"".join(keys),
        run[0].signer.secret_key,
        first_prev if type(first_prev) is bytes else bytes(first_prev),
        SIGNING_DOMAIN,
        b"".join(given_nonces),
        first_seq,
        tenant_id,
        author,
        sealed_changes,
    )
    state.next_position[chain] = (first_seq + len(run), entries[-1].id)
    return entries
