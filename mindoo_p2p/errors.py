"""The error types of mindoo_p2p.

Every error the library raises on purpose derives from :class:`MindooError`, so an app (and the
CLI) can catch one type and show its message. Each subclass names one kind of problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .rejection import Rejected


class MindooError(Exception):
    """Base class of every error mindoo_p2p raises on purpose."""


class DecodeError(MindooError):
    """Bytes that do not decode: wrong magic, version, length, count or a truncated field.

    This is the only error that decoding bytes from disk or from a peer may raise.
    """


class VerificationError(MindooError):
    """An entry that decodes but fails verification (hash, signature, membership, decryption)."""


class OwnEntryRefusedError(VerificationError):
    """The store refused one of this node's own new entries (e.g. this node was revoked):
    nothing of the write was stored. ``rejected`` lists each refused entry and why."""

    def __init__(self, rejected: Sequence[Rejected]) -> None:
        self.rejected = list(rejected)
        first = rejected[0]
        super().__init__(f"entry {first.entry_id.hex()} was refused by the store: {first.reason}")


class WrongPasswordError(MindooError):
    """The keystore password is wrong (or the keystore file was tampered with)."""


class MissingKeyError(MindooError):
    """The node does not hold the key needed to decrypt or sign something."""


class InvalidNameError(MindooError, ValueError):
    """A tenant, database or key name that does not match the allowed pattern."""


class InvalidPathError(MindooError, ValueError):
    """A document path (``a.b.0``) that does not lead where it must (a value, a bad index)."""


class NotFoundError(MindooError, LookupError):
    """A tenant, database, document or entry that does not exist here."""


class UnknownDatabaseError(NotFoundError):
    """A database that does not exist in a tenant here (never created, never received, or
    forgotten). ``existing`` lists the tenant's databases, ``suggestion`` the closest name
    when one is close (a typo), ``forgotten`` whether it was forgotten here."""

    def __init__(
        self,
        message: str,
        *,
        database: str,
        tenant: str,
        existing: Sequence[str],
        suggestion: str | None,
        forgotten: bool,
    ) -> None:
        super().__init__(message)
        self.database = database
        self.tenant = tenant
        self.existing = list(existing)
        self.suggestion = suggestion
        self.forgotten = forgotten


class DocumentDeletedError(NotFoundError):
    """The document exists but was deleted (its history stays readable through time travel)."""


class StoreError(MindooError):
    """The LMDB store cannot be opened or is inconsistent."""


class KeystoreError(MindooError):
    """The keystore file is missing, unreadable or already exists."""


class KeystoreDamagedError(KeystoreError):
    """The keystore file is truncated or altered (its checksum does not match): not a wrong
    password. The message says how to recover."""


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The only leaf exception of ``group`` (nested groups flattened), else ``group`` itself.

    trio wraps errors of nursery tasks in exception groups; where a single failure is the
    normal case, callers re-raise it bare so users see one clear error.
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
    return leaves[0] if len(leaves) == 1 else group
