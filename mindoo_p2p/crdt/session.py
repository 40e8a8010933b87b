"""One local change in progress: the read/write surface the proxies use.

A session starts a transaction on the real document and logs every write. Two things the
binding cannot do inside that transaction make it move to a *fork* of the document (taken at
the same heads, with the same actor), where the logged writes are replayed:

* creating a counter: the counter is put as an ``Int`` on the fork, its op counter is noted,
  and at commit the fork's change is rewritten by
  :func:`~mindoo_p2p.crdt.counter_patch.patch_counter_ops`; the patched change is what the
  caller applies to the real document;
* reading a value the binding cannot convert (a counter): the real document, now free of any
  transaction, is forked once more, the log replayed and committed there, and the value read
  from that scratch copy's diff.

Transactions that do neither never fork and commit in place. Reads during the session see the
session's own writes. After :meth:`ChangeSession.close` every call raises RuntimeError, so
proxies kept past their ``with`` block fail loudly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from automerge.core import Document, ObjType, ScalarType, Transaction

from ..errors import DecodeError
from .binding import is_panic, op_counter
from .counter_patch import patch_counter_ops
from .diff_values import Place, Readout, obj_key_of_exid, scalar_readouts
from .reader import Slot, read_slot
from .values import check_i64

_LoggedOp = tuple[str, tuple[Any, ...], Any]
"""(transaction method name, arguments, result)."""

_ENDED = "this proxy belongs to a change block that has ended"


class AutomergePanic(RuntimeError):
    """The binding panicked during a local change; the document is unusable from now on."""


class ChangeSession:
    """The state of one ``AutomergeDocument.change()`` block (see the module docstring)."""

    __slots__ = (
        "_closed",
        "_counter_ids",
        "_counter_ops",
        "_doc",
        "_fork",
        "_log",
        "_readouts",
        "_tx",
        "base_heads",
        "poisoned",
    )

    def __init__(self, doc: Document) -> None:
        self._doc = doc
        self.base_heads: list[bytes] = doc.get_heads()
        self._fork: Document | None = None
        tx = self._tx = doc.transaction()  # `_open`, inline (a session per local change)
        tx.__enter__()
        self._log: list[_LoggedOp] = []
        self._counter_ops: set[int] = set()
        self._counter_ids: set[bytes] = set()
        self._readouts: dict[Place, Readout] | None = None
        self._closed = False
        self.poisoned = False

    # -- plumbing ------------------------------------------------------------------------------
    def _open(self, doc: Document) -> Transaction:
        tx = doc.transaction()
        tx.__enter__()
        return tx

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(_ENDED)

    def _raise_if_panic(self, name: str, exc: BaseException) -> None:
        """AutomergePanic (the session is poisoned) if ``exc`` is the binding's panic."""
        if is_panic(exc):
            self.poisoned = True
            raise AutomergePanic(f"automerge panicked in {name}: {exc}") from None

    def _call(self, name: str, *args: Any) -> Any:
        if self._closed:
            raise RuntimeError(_ENDED)
        try:
            return getattr(self._tx, name)(*args)
        except Exception as exc:
            raise ValueError(f"automerge refused {name}: {exc}") from exc
        except BaseException as exc:
            self._raise_if_panic(name, exc)
            raise

    def _write(self, name: str, *args: Any) -> Any:
        """`_call`, logged for a replay on a fork (`put`, the usual write, has it inline)."""
        result = self._call(name, *args)
        self._log.append((name, args, result))
        self._readouts = None
        return result

    def _replay(self, tx: Transaction) -> None:
        for name, args, result in self._log:
            replayed = getattr(tx, name)(*args)
            if isinstance(result, bytes) and obj_key_of_exid(replayed) != obj_key_of_exid(result):
                raise RuntimeError(f"replaying {name} on a fork gave a different object id")

    def _move_to_fork(self) -> None:
        """Roll back the real transaction and continue on a fork at the same heads."""
        if self._fork is not None:
            return
        self._check_open()
        self._tx.__exit__(RuntimeError, RuntimeError("moving to a fork"), None)
        fork = self._doc.fork()
        fork.set_actor(self._doc.get_actor())
        tx = self._open(fork)
        self._replay(tx)
        self._fork, self._tx = fork, tx

    # -- reading -------------------------------------------------------------------------------
    def read(self, obj: bytes, prop: str | int) -> Slot:
        """The slot at ``obj[prop]`` as this session sees it (see :func:`read_slot`)."""
        self._check_open()
        return read_slot(self._tx, obj, prop, None)

    @property
    def created_counters(self) -> bool:
        """True if the session created at least one counter."""
        return bool(self._counter_ops)

    def is_new_counter(self, exid: bytes) -> bool:
        """True if ``exid`` is a counter created in this session (it reads as an Int)."""
        return exid in self._counter_ids

    def readout(self, obj: bytes, prop: str | int) -> Readout | None:
        """The value of an unconvertible slot, as of this session's writes."""
        self._check_open()
        if self._readouts is None:
            self._move_to_fork()
            scratch = self._doc.fork()
            scratch.set_actor(self._doc.get_actor())
            with scratch.transaction() as tx:
                self._replay(tx)
            self._readouts = scalar_readouts(scratch, scratch.get_heads())
        return self._readouts.get((obj_key_of_exid(obj), prop))

    def keys(self, obj: bytes) -> list[str]:
        result: list[str] = self._call("keys", obj)
        return result

    def length(self, obj: bytes) -> int:
        result: int = self._call("length", obj)
        return result

    def text(self, obj: bytes) -> str:
        result: str = self._call("text", obj)
        return result

    # -- writing -------------------------------------------------------------------------------
    def put(self, obj: bytes, prop: str | int, scalar_type: ScalarType, value: Any) -> None:
        # `_write("put", ...)` inline: the usual write of a local change, one call level less.
        if self._closed:
            raise RuntimeError(_ENDED)
        try:
            self._tx.put(obj, prop, scalar_type, value)
        except Exception as exc:
            raise ValueError(f"automerge refused put: {exc}") from exc
        except BaseException as exc:
            self._raise_if_panic("put", exc)
            raise
        self._log.append(("put", (obj, prop, scalar_type, value), None))
        self._readouts = None

    def insert(self, obj: bytes, index: int, scalar_type: ScalarType, value: Any) -> None:
        self._write("insert", obj, index, scalar_type, value)

    def insert_text(self, obj: bytes, index: int, chars: Sequence[str]) -> None:
        """Insert one text element per character, starting at ``index``."""
        for offset, char in enumerate(chars):
            self._write("insert", obj, index + offset, ScalarType.Str, char)

    def put_object(self, obj: bytes, prop: str | int, obj_type: ObjType) -> bytes:
        result: bytes = self._write("put_object", obj, prop, obj_type)
        return result

    def insert_object(self, obj: bytes, index: int, obj_type: ObjType) -> bytes:
        result: bytes = self._write("insert_object", obj, index, obj_type)
        return result

    def delete(self, obj: bytes, prop: str | int) -> None:
        self._write("delete", obj, prop)

    def put_counter(self, obj: bytes, prop: str | int, value: int, *, insert: bool) -> None:
        """Create a counter at ``obj[prop]`` (inserted before ``prop`` in a list if ``insert``)."""
        check_i64(value, "counter value")
        self._move_to_fork()
        self._write("insert" if insert else "put", obj, prop, ScalarType.Int, value)
        slot = self.read(obj, prop)
        if not isinstance(slot, tuple):
            raise RuntimeError("a counter just written cannot be read back")
        exid = slot[1]
        self._counter_ops.add(op_counter(exid))
        self._counter_ids.add(exid)

    def increment(self, obj: bytes, prop: str | int, by: int) -> None:
        """Add ``by`` to the counter at ``obj[prop]``; TypeError if it is not a counter.

        An existing counter is incremented directly (never read: reading one makes the binding
        panic, harmlessly but loudly); a counter created in this session is an Int until commit,
        so it is rewritten with its new value instead.
        """
        check_i64(by, "increment")
        try:
            self._write("increment", obj, prop, by)
            return
        except ValueError:
            pass
        slot = self.read(obj, prop)
        if isinstance(slot, tuple) and not isinstance(slot[0], ObjType):
            (_, raw), exid = slot
            if self.is_new_counter(exid):
                self.put_counter(obj, prop, check_i64(raw + by, "counter value"), insert=False)
                return
        raise TypeError(f"{prop!r} does not hold a counter")

    # -- ending --------------------------------------------------------------------------------
    def commit(self) -> bytes | None:
        """End the session keeping its writes.

        Returns None if the change was committed in place (or the session made no operation),
        else the change bytes the caller must apply to the real document.
        """
        if self._closed:
            raise RuntimeError(_ENDED)
        self._closed = True
        self._tx.__exit__(None, None, None)
        if self._fork is None:
            return None
        changes = self._fork.get_changes(self.base_heads)
        if not changes:
            return None
        if len(changes) != 1:
            raise RuntimeError(f"a change block produced {len(changes)} changes")
        raw: bytes = changes[0].raw_bytes
        if not self._counter_ops:
            return raw
        try:
            return patch_counter_ops(raw, self._counter_ops)
        except DecodeError as exc:
            raise RuntimeError(f"cannot patch our own change: {exc}") from exc

    def rollback(self) -> None:
        """End the session discarding its writes (no-op if already ended)."""
        if self._closed:
            return
        self._closed = True
        self._tx.__exit__(RuntimeError, RuntimeError("rolled back"), None)
