"""Thin helpers around the `automerge` binding: panics, object ids and sync messages.

The binding (``automerge==1.0.0rc1``) reports bad input in two ways: an ordinary ``Exception``,
or a Rust panic, raised as ``pyo3_runtime.PanicException``, which derives from
``BaseException`` only. A panic inside a call that holds the document's lock poisons the
document: every later call on it fails. Nothing in this module touches a document; it only
recognises panics, parses object ids and builds the one sync message we use to apply changes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from automerge.core import Message

from ..codec import Reader, encode_varint
from ..errors import DecodeError

EXID_TAG = 0x10
"""First byte of an object/op id (ExId) returned by the binding; the root map is b"\\x00"."""

MAX_ACTOR_ID_SIZE = 128
"""Automerge actor ids are arbitrary bytes; we bound what we accept when parsing ids."""

SYNC_MESSAGE_TYPE = 0x42

T = TypeVar("T")


def is_panic(exc: BaseException) -> bool:
    """True if ``exc`` is the binding's ``pyo3_runtime.PanicException``.

    The class is created at run time by pyo3, so it is recognised by its name and module
    rather than imported.
    """
    cls = type(exc)
    return cls.__name__ == "PanicException" and cls.__module__ == "pyo3_runtime"


_STDERR_LOCK = threading.Lock()
_SAVED_STDERR: int | None = None
_DEV_NULL: int | None = None


@contextmanager
def quiet_panics() -> Iterator[None]:
    """Silence file descriptor 2 around a binding call that may panic on purpose.

    Rust prints every panic to stderr before pyo3 turns it into an exception; reads of values
    the binding cannot convert (counters, odd timestamps) panic by design and are handled, so
    their message would only confuse a CLI user. Costs two dup2 calls.
    """
    global _SAVED_STDERR, _DEV_NULL
    with _STDERR_LOCK:
        try:
            if _SAVED_STDERR is None:
                _SAVED_STDERR = os.dup(2)
                _DEV_NULL = os.open(os.devnull, os.O_WRONLY)
            assert _DEV_NULL is not None
            os.dup2(_DEV_NULL, 2)
        except OSError:  # no usable fd 2: nothing to silence
            yield
            return
        try:
            yield
        finally:
            os.dup2(_SAVED_STDERR, 2)


def guarded(call: Callable[[], T], what: str) -> T:
    """Run a binding call that does not hold the document's write lock (a read).

    Its ordinary errors and its panics (which a read survives) become :class:`DecodeError`:
    reading fails this way only on document content Automerge itself cannot handle.
    """
    try:
        return call()
    except Exception as exc:
        raise DecodeError(f"automerge could not {what}: {exc}") from exc
    except BaseException as exc:
        if is_panic(exc):
            raise DecodeError(f"automerge panicked trying to {what}: {exc}") from None
        raise


def op_counter(exid: bytes) -> int:
    """The op counter of an ExId: ``0x10, varint(len) actor, varint(actor index), varint(ctr)``.

    Raises :class:`DecodeError` if ``exid`` is not of that form (the root id has no counter).
    """
    reader = Reader(exid, "automerge object id")
    if reader.u8("tag") != EXID_TAG:
        raise DecodeError(f"not an automerge op id: {exid.hex()}")
    reader.blob("actor", MAX_ACTOR_ID_SIZE)
    reader.varint("actor index")
    counter = reader.varint("op counter")
    reader.end()
    return counter


def changes_message(changes: Sequence[bytes]) -> Message:
    """A v1 sync message that carries ``changes`` and nothing else.

    Layout: ``0x42, varint(0) heads, varint(0) need, varint(0) have, varint(n)``, then each
    change as ``varint(len) + bytes``. Feeding it to ``receive_sync_message`` with a fresh
    ``SyncState`` applies the changes (queuing those whose dependencies are missing).
    Raises :class:`DecodeError` if the binding refuses to decode it.
    """
    parts = [bytes([SYNC_MESSAGE_TYPE, 0, 0, 0]), encode_varint(len(changes))]
    for change in changes:
        parts.append(encode_varint(len(change)))
        parts.append(change)
    try:
        return Message.decode(b"".join(parts))
    except Exception as exc:
        raise DecodeError(f"automerge refused the sync message: {exc}") from exc
    except BaseException as exc:
        if is_panic(exc):
            raise DecodeError(f"automerge panicked decoding a sync message: {exc}") from None
        raise
