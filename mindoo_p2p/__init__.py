"""mindoo_p2p: end-to-end encrypted, offline-first Automerge document databases, synced P2P.

Start with `Node.init(home, password)` once, then `Node.open(home, password)`::

    node = Node.open(home, password)
    tenant = node.create_tenant("acme")
    contacts = tenant.create_db("contacts")  # open_db opens an existing one
    doc_id = contacts.create_document({"name": "Ada"})
    with contacts.change(doc_id) as doc:
        doc["email"] = "ada@example.org"
    open_ones = node.index.query(contacts, where={"status": "open"}, sort=["name"], limit=50)
"""

from .crdt import Counter, Text
from .database import ChangeEvent, Database, HistoryItem
from .entry import Entry, EntryKind
from .errors import (
    DecodeError,
    DocumentDeletedError,
    InvalidNameError,
    KeystoreError,
    MindooError,
    MissingKeyError,
    NotFoundError,
    StoreError,
    VerificationError,
    WrongPasswordError,
)
from .identity import PublicIdentity, UserIdentity
from .index import QueryError, QueryIndex, ViewDefinition
from .node import Node, default_home
from .tenant import Tenant

__all__ = [
    "ChangeEvent",
    "Counter",
    "Database",
    "DecodeError",
    "DocumentDeletedError",
    "Entry",
    "EntryKind",
    "HistoryItem",
    "InvalidNameError",
    "KeystoreError",
    "MindooError",
    "MissingKeyError",
    "Node",
    "NotFoundError",
    "PublicIdentity",
    "QueryError",
    "QueryIndex",
    "StoreError",
    "Tenant",
    "Text",
    "UserIdentity",
    "VerificationError",
    "ViewDefinition",
    "WrongPasswordError",
    "default_home",
]
