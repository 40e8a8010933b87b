"""`AutomergeDocument`: one Automerge document, built from change bytes and read as Python.

This layer is pure (no I/O) and knows nothing of encryption, entries or storage: it turns
Automerge change bytes into a document and local edits into change bytes.

Applying changes. The binding has no ``apply_changes``; changes go in through a sync message
(see :func:`~mindoo_p2p.crdt.binding.changes_message`). Every change is parsed and checked
first (:func:`~mindoo_p2p.crdt.change_chunk.parse_change`), then held in a
:class:`~mindoo_p2p.crdt.change_index.ChangeIndex` until everything it builds on is applied;
only then are its op ids checked and is it handed to Automerge, in causal order. Guarded
against:

* op ids that collide with existing ones (Automerge would try to allocate gigabytes);
* a change the binding cannot parse: a non-empty document silently drops it and every change
  after it in the same message. Whatever the binding did not apply is retried one change at a
  time, and the culprit is named;
* Rust panics. A panic while applying poisons the document: this object then refuses every
  call with :class:`~mindoo_p2p.errors.DecodeError`, and the caller must rebuild the document
  from scratch (a new ``AutomergeDocument`` fed the changes it trusts). Panics while reading do
  no harm and become DecodeError.

One bad change never takes its batch down: the others are applied, then DecodeError names the
bad ones.

Reading. The binding cannot convert counters (nor unknown value types, nor timestamps outside
Python's range) and its reads at past heads omit counters incremented since; those values are
read from the Debug text of a whole-document diff instead (:mod:`.diff_values`).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from contextlib import AbstractContextManager, suppress
from types import TracebackType
from typing import Any, NamedTuple

from automerge.core import ROOT, Document, SyncState, random_actor_id

from ..errors import DecodeError, NotFoundError
from .binding import changes_message, is_panic
from .change_chunk import (
    MAX_ACTOR_ID_SIZE,
    ChangeChunk,
    has_unconvertible_values,
    parse_change,
)
from .change_index import MAX_OP_COUNTER, ChangeIndex, ChangeMeta
from .conflicts import FieldWrites, conflicting_fields
from .diff_values import (
    COUNTER_MARKER,
    Place,
    Readout,
    materialize_from_diff,
    patch_texts,
    scalar_readouts,
)
from .proxies import MapProxy
from .reader import MAX_NESTING, materialize
from .session import ChangeSession


class ChangeInfo(NamedTuple):
    """One committed Automerge change (a named tuple: one is made for every local change, and
    a frozen dataclass took seven times as long to build)."""

    hash: builtins.bytes
    """SHA-256 change hash (32 bytes)."""
    deps: tuple[builtins.bytes, ...]
    """Hashes of the changes it depends on."""
    bytes: builtins.bytes
    """The change chunk, as :meth:`AutomergeDocument.apply_changes` accepts it."""
    actor: builtins.bytes
    seq: int


_new_tuple = tuple.__new__


def _change_info(change: Any) -> ChangeInfo:
    """The `ChangeInfo` of a binding ``Change``, made by ``tuple.__new__`` (the named tuple's
    own ``__new__`` is a Python function: a third of the cost, once per local change)."""
    return _new_tuple(
        ChangeInfo, (change.hash, tuple(change.deps), change.bytes, change.actor_id, change.seq)
    )


class _Refused(Exception):
    """The binding refused a change with an ordinary error (the document is still usable)."""


def _check_actor(actor_id: bytes | None) -> bytes:
    if actor_id is None:
        return random_actor_id()
    if not isinstance(actor_id, bytes) or not 1 <= len(actor_id) <= MAX_ACTOR_ID_SIZE:
        raise ValueError(f"actor id must be 1 to {MAX_ACTOR_ID_SIZE} bytes")
    return actor_id


def _meta_of_chunk(chunk: ChangeChunk) -> ChangeMeta:
    return ChangeMeta(chunk.actor, chunk.seq, chunk.start_op, chunk.max_op, chunk.deps)


def _meta_of_change(change: Any) -> ChangeMeta:
    """From a binding ``Change`` object."""
    return ChangeMeta(
        change.actor_id, change.seq, change.start_op, change.max_op, tuple(change.deps)
    )


def _scratch_error(change: bytes) -> str | None:
    """Why an empty document refuses ``change`` alone (None if it accepts it)."""
    try:
        Document().receive_sync_message(SyncState(), changes_message([change]))
    except DecodeError as exc:
        return str(exc)
    except Exception as exc:
        return f"automerge refused the change: {exc}"
    except BaseException as exc:
        if is_panic(exc):
            return f"automerge panicked on the change: {exc}"
        raise
    return None


class AutomergeDocument:
    """An Automerge document (see the module docstring for the guarantees)."""

    def __init__(self, actor_id: bytes | None = None) -> None:
        """A new empty document writing as ``actor_id`` (a fresh random actor by default)."""
        self._doc = Document(_check_actor(actor_id))
        self._reset()

    def _reset(self) -> None:
        self.last_change: ChangeInfo | None = None
        self._index: ChangeIndex | None = None
        self._session: ChangeSession | None = None
        self._poisoned = False
        self._unconvertible = False
        """True once the document is known to hold values the binding cannot convert."""

    @classmethod
    def load(cls, saved: bytes, actor_id: bytes | None = None) -> AutomergeDocument:
        """A document from :meth:`save` output; DecodeError if ``saved`` does not load."""
        if not isinstance(saved, bytes):
            raise DecodeError(f"saved document must be bytes, not {type(saved).__name__}")
        if not saved:
            raise DecodeError("saved document is empty")
        actor = _check_actor(actor_id)
        try:
            doc = Document.load(saved)
        except Exception as exc:
            raise DecodeError(f"automerge could not load the document: {exc}") from exc
        except BaseException as exc:
            if is_panic(exc):
                raise DecodeError(f"automerge panicked loading the document: {exc}") from None
            raise
        doc.set_actor(actor)
        document = cls.__new__(cls)
        document._doc = doc
        document._reset()
        return document

    @classmethod
    def from_root_change(
        cls, change: bytes, chunk: ChangeChunk, actor_id: bytes | None = None
    ) -> AutomergeDocument | None:
        """A new document holding exactly ``change``, a root change that `apply_changes`
        would apply to an empty document at once (no deps, seq 1, op ids from 1 up to at most
        `MAX_OP_COUNTER`), given with its `parse_change` (``chunk``). Automerge loads it in
        one call (no sync message, no change index: a quarter of `apply_changes`' cost).
        None when ``change`` is not such a change or Automerge does not take exactly it: the
        caller then applies it the usual way, which names what is wrong."""
        if (
            chunk.deps
            or chunk.seq != 1
            or chunk.start_op != 1
            or chunk.max_op > MAX_OP_COUNTER
            or len(chunk.actor) > MAX_ACTOR_ID_SIZE
        ):
            return None
        actor = _check_actor(actor_id)
        try:
            doc = Document.load(change)
            if doc.get_heads() != [chunk.hash]:
                return None
            doc.set_actor(actor)
        except Exception:
            return None
        except BaseException as exc:
            if is_panic(exc):
                return None
            raise
        document = cls.__new__(cls)
        document._doc = doc
        document._reset()
        # `_unconvertible` stays False: a counter or an unknown value type makes the first
        # bulk read fail, and `to_py` reads that object slot by slot (as after any load);
        # looking for them up front cost as much as the load itself.
        return document

    # -- state ---------------------------------------------------------------------------------
    @property
    def actor_id(self) -> bytes:
        """The actor this document writes as."""
        actor: bytes = self._doc.get_actor()
        return actor

    @property
    def poisoned(self) -> bool:
        """True once the binding panicked: the document must be rebuilt from scratch."""
        return self._poisoned

    def _check_usable(self) -> None:
        if self._poisoned:
            raise DecodeError(
                "this automerge document is unusable after a panic in the binding;"
                " rebuild it from its changes"
            )
        if self._session is not None:
            raise RuntimeError("the document is inside a change block")

    def save(self) -> bytes:
        """The whole document in Automerge's compact form (queued changes are not included)."""
        self._check_usable()
        saved: bytes = self._doc.save()
        return saved

    def heads(self) -> list[bytes]:
        """The hashes of the changes nothing depends on yet, sorted."""
        if self._poisoned or self._session is not None:
            self._check_usable()  # raises
        return sorted(self._doc.get_heads())

    def _changes(self) -> ChangeIndex:
        if self._index is None:
            self._index = ChangeIndex(
                (change.hash, _meta_of_change(change)) for change in self._doc.get_changes([])
            )
        return self._index

    def has_change(self, change_hash: bytes) -> bool:
        """True if the change is applied (a change waiting for its dependencies is not)."""
        self._check_usable()
        return self._changes().has(change_hash)

    def is_waiting(self, change_hash: bytes) -> bool:
        """True if the change was given and waits for its dependencies (not applied yet)."""
        self._check_usable()
        return self._changes().is_queued(change_hash)

    def missing_deps(self) -> list[bytes]:
        """Sorted hashes of the changes that waiting changes need and that are not here."""
        self._check_usable()
        return self._changes().missing_deps()

    # -- applying ------------------------------------------------------------------------------
    def _receive(self, changes: list[bytes]) -> None:
        try:
            message = changes_message(changes)
        except DecodeError as exc:
            raise _Refused(str(exc)) from exc
        try:
            self._doc.receive_sync_message(SyncState(), message)
        except Exception as exc:
            raise _Refused(f"automerge refused the change: {exc}") from exc
        except BaseException as exc:
            if is_panic(exc):
                self._poisoned = True
                raise DecodeError(
                    f"automerge panicked applying changes ({exc}); the document is unusable"
                    " and must be rebuilt from scratch"
                ) from None
            raise

    def _applied_since(self, base_heads: list[bytes]) -> set[bytes]:
        return {change.hash for change in self._doc.get_changes(base_heads)}

    def apply_changes(
        self, changes: Sequence[bytes], *, parsed: Sequence[ChangeChunk | None] = ()
    ) -> None:
        """Apply change chunks, in any order; duplicates and known changes are ignored.

        A change whose dependencies are not all here waits (see :meth:`missing_deps`) and is
        applied when they arrive. Raises DecodeError naming every change that is malformed or
        refused; the others are applied all the same. If the binding panics, the document
        becomes unusable (see :attr:`poisoned`) and must be rebuilt from scratch by the caller.
        ``parsed``: `parse_change` of the changes, by position, where the caller has it (not
        parsed again; None or a shorter sequence: parsed here).
        """
        self._check_usable()
        index = self._changes()
        failures: list[str] = []
        for position, raw in enumerate(changes):
            chunk = parsed[position] if position < len(parsed) else None
            try:
                chunk = chunk if chunk is not None else parse_change(raw)
            except DecodeError as exc:
                failures.append(f"change {position}: {exc}")
                continue
            if not self._unconvertible and has_unconvertible_values(chunk):
                self._unconvertible = True
            index.enqueue(chunk.hash, raw, _meta_of_chunk(chunk))
        self._apply_ready(index, failures)
        if failures:
            raise DecodeError("; ".join(failures))

    def _apply_ready(self, index: ChangeIndex, failures: list[str]) -> None:
        ready, invalid = index.take_ready()
        for change_hash, reason in invalid:
            index.reject(change_hash)
            failures.append(f"change {change_hash.hex()}: {reason}")
        if not ready:
            return
        base_heads = self._doc.get_heads()
        with suppress(_Refused):
            self._receive([queued.raw for queued in ready])
        applied = self._applied_since(base_heads)
        for queued in ready:
            if queued.hash in applied:
                index.mark_applied(queued.hash, queued.meta)
        if all(queued.hash in applied for queued in ready):
            return
        # Something was refused, or silently dropped by the binding (it drops a change it
        # cannot parse and everything after it): go again one change at a time.
        for queued in ready:
            if not index.is_ready(queued.hash):
                continue
            base_heads = self._doc.get_heads()
            error: str | None = None
            try:
                self._receive([queued.raw])
            except _Refused as exc:
                error = str(exc)
            if queued.hash in self._applied_since(base_heads):
                index.mark_applied(queued.hash, queued.meta)
                continue
            index.reject(queued.hash)
            reason = error or _scratch_error(queued.raw) or "automerge did not apply it"
            failures.append(f"change {queued.hash.hex()}: {reason}")
        self._apply_ready(index, failures)

    # -- local changes -------------------------------------------------------------------------
    def change(self) -> AbstractContextManager[MapProxy]:
        """Edit the document: ``with doc.change() as root:`` gives a mutable proxy of the root
        map.

        On normal exit the block's edits are committed as one Automerge change and
        :attr:`last_change` describes it (None if the block made no operation). If the block
        raises, every edit is rolled back and the exception propagates. Blocks cannot nest, and
        proxies must not be used after their block.
        """
        return _ChangeBlock(self)

    def _begin_change(self) -> ChangeSession:
        if self._poisoned or self._session is not None:
            self._check_usable()  # raises
        session = self._session = ChangeSession(self._doc)
        self.last_change = None
        return session

    def _end_change(self, session: ChangeSession, keep: bool) -> None:
        """Commit (``keep``) or roll back the block's session; see `change`."""
        try:
            if not keep:
                session.rollback()
                return
            patched = session.commit()
        finally:
            self._session = None
            if session.poisoned:
                self._poisoned = True
        if session.created_counters:
            self._unconvertible = True
        if patched is not None:
            try:
                self._receive([patched])
            except _Refused as exc:
                raise RuntimeError(f"automerge refused our own change: {exc}") from exc
        new = self._doc.get_changes(session.base_heads)
        if len(new) > 1:
            raise RuntimeError(f"a change block produced {len(new)} changes")
        if new:
            change = new[0]
            info = self.last_change = _change_info(change)
            if self._index is not None:
                meta = ChangeMeta(info.actor, info.seq, change.start_op, change.max_op, info.deps)
                self._index.mark_applied(info.hash, meta)

    # -- reading -------------------------------------------------------------------------------
    def _check_heads(self, heads: Sequence[bytes]) -> list[bytes]:
        index = self._changes()
        unknown = [h for h in heads if not index.has(h)]
        if unknown:
            names = ", ".join(h.hex() if isinstance(h, bytes) else repr(h) for h in unknown)
            raise NotFoundError(f"no change {names} in this document")
        return list(heads)

    def to_py(self, heads: Sequence[bytes] | None = None) -> dict[str, Any]:
        """The document as plain Python, now or at ``heads`` (NotFoundError if unknown).

        Values: dict, list, str (for both strings and text), int, float, bool, None, bytes,
        timezone-aware UTC datetime, and counters as int. Values the binding cannot represent
        (an unknown value type, a timestamp outside Python's range) read as None.
        """
        self._check_usable()
        if heads is not None:
            return self._to_py_at(self._check_heads(heads))
        current = self._doc.get_heads()

        def readouts() -> dict[Place, Readout]:
            self._unconvertible = True
            return scalar_readouts(self._doc, current)

        return materialize(self._doc, None, readouts, eager=self._unconvertible)

    def _to_py_at(self, heads: list[bytes]) -> dict[str, Any]:
        texts = patch_texts(self._doc, heads)
        if any(COUNTER_MARKER in text for text in texts):
            # The binding's reads at past heads omit counters incremented since: use the diff.
            self._unconvertible = True
            return materialize_from_diff(texts, MAX_NESTING)

        def readouts() -> dict[Place, Readout]:
            return scalar_readouts(self._doc, heads)

        return materialize(self._doc, heads, readouts)

    def conflicts(self) -> list[FieldWrites]:
        """The map fields (nested ones too) holding competing values from concurrent changes,
        each with the changes whose values compete (the shown value's first); see
        `.conflicts`."""
        self._check_usable()
        try:
            return conflicting_fields(self._doc)
        except BaseException as exc:
            if is_panic(exc):
                raise DecodeError(f"automerge failed to read conflicts: {exc}") from None
            raise

    def get_changes(self, since_heads: Sequence[bytes] = ()) -> list[ChangeInfo]:
        """Applied changes not reachable from ``since_heads`` (all of them by default), in
        causal order. NotFoundError if a head is unknown."""
        self._check_usable()
        since = self._check_heads(since_heads)
        return [_change_info(change) for change in self._doc.get_changes(since)]


class _ChangeBlock:
    """The context manager of `AutomergeDocument.change` (a class: one is entered for every
    local change, and a generator-based one costs more)."""

    __slots__ = ("_document", "_session")

    def __init__(self, document: AutomergeDocument) -> None:
        self._document = document
        self._session: ChangeSession | None = None

    def __enter__(self) -> MapProxy:
        if self._session is not None:  # as the generator-based manager refused it
            raise RuntimeError("a change block is entered once: call change() again")
        session = self._session = self._document._begin_change()
        return MapProxy(session, ROOT)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._session is not None, "a change block is exited only after being entered"
        self._document._end_change(self._session, keep=exc_type is None)
