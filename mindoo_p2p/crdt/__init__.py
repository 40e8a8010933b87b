"""The Automerge document layer: change bytes in, a document and change bytes out. Pure: no I/O.

`AutomergeDocument` applies, produces and reads changes; `MapProxy`/`ListProxy`/`TextProxy` are
the mutable views inside `AutomergeDocument.change()`; `Counter` and `Text` are the value
objects for CRDT counters and collaborative text; `change_hash`/`change_deps` read a change's
identity from its bytes without a document.
"""

from .automerge_doc import AutomergeDocument, ChangeInfo
from .change_chunk import ChangeIdentity, change_deps, change_hash, change_identity
from .counter_patch import patch_counter_ops
from .proxies import ListProxy, MapProxy, TextProxy
from .values import Counter, Text

__all__ = [
    "AutomergeDocument",
    "ChangeIdentity",
    "ChangeInfo",
    "Counter",
    "ListProxy",
    "MapProxy",
    "Text",
    "TextProxy",
    "change_deps",
    "change_hash",
    "change_identity",
    "patch_counter_ops",
]
