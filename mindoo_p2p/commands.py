"""The command layer: what a user asks of a node, answered as plain data.

The CLI renders these answers and the daemon serves them; neither prints, prompts or parses here,
and nothing here touches process-wide state (the environment is a mapping passed in, a prompt
is a function passed in). One function per question:

=========================  ==============================================================
`node_status`              the node-only part of ``status``: home, identity, entry count,
                           tenants with their databases, peer id, the durability ledger's
                           entries that exist only here (the daemon adds its live
                           part: listen addresses, peers, per-database sync state)
`peer_list`                the peers of the address book and the daemon: name, state,
                           address in use, last error, failures, last sync
`find_member`              a member or device of a tenant named by the user: a name, a
                           fingerprint, or a signing key (hex, or a unique prefix of at
                           least `MIN_KEY_PREFIX` hex digits)
`PasswordPolicy`           where a password comes from (its environment variable, else a
                           prompt), when it is asked twice (a new password), and the
                           shortest one accepted; `NODE_PASSWORD`, `KEY_FILE_PASSWORD`,
                           `RECOVERY_KIT_PASSWORD`
=========================  ==============================================================

Bundle checks live in ``cli/bundle_check.py`` (being moved to the library separately).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from .errors import MindooError, NotFoundError
from .identity import PublicIdentity
from .net.address_book import AddressBook
from .node import Node
from .recovery import MIN_PASSWORD_CHARS
from .tenant import Tenant

# -- status ------------------------------------------------------------------------------------


DatabaseStatus = dict[str, str | int]
"""``name`` and the database's `Database.stats` (entries, documents, ...)."""


class ForkStatus(TypedDict):
    author: str
    """The author's signing key (hex)."""
    name: str | None
    """The member or device it belongs to, when known."""
    seq: int
    """The fork point: the author's entries from here on are withdrawn on every node."""
    evidence: list[str]
    """The ids (hex) of the entries kept as evidence at the fork point."""


class TenantStatus(TypedDict):
    id: str
    name: str
    admin: bool
    members: int
    """Members not revoked."""
    databases: list[DatabaseStatus]
    forks: list[ForkStatus]
    """Authors that forked (signed two entries at one sequence number, or two different
    predecessors): evidence of a stolen key or a misbehaving member (`mindoo_p2p.chains`)."""
    restored: bool
    """Restored from a recovery kit and not synced yet: own writes are refused until a sync
    session completes or the user confirms (`mindoo_p2p.restore_guard`)."""


class IdentityStatus(TypedDict):
    name: str
    fingerprint: str


class NodeStatus(TypedDict):
    home: str
    identity: IdentityStatus
    entries: int
    tenants: list[TenantStatus]
    peer_id: str
    """The libp2p peer id derived from the node's peer seed (stable across restarts)."""
    durability: list[dict[str, Any]]
    """Per tenant and database, own entries no peer is known to hold (`durability`)."""


def node_status(node: Node, *, with_durability: bool = True) -> NodeStatus:
    """What ``status`` shows of ``node`` whether or not a daemon runs it (no networking).
    ``with_durability=False`` leaves the durability rows empty: a running daemon's status has
    them, counted incrementally (`DurabilityCounter`); counted here, they would read every
    own entry's feed row again. Counted here, they start from the count a daemon saved
    (`mindoo_p2p.durability_count`, read only)."""
    from .durability import durability, load_ledger
    from .durability_count import load_count
    from .net.peer_identity import peer_id_of

    tenants: list[TenantStatus] = []
    for tenant in node.tenants():
        databases: list[DatabaseStatus] = []
        for name in tenant.databases():
            databases.append({"name": name, **tenant.open_db(name).stats()})
        tenants.append(
            {
                "id": tenant.id_hex,
                "name": tenant.name,
                "admin": tenant.is_admin,
                "members": sum(1 for m in tenant.members() if m.revoked_entry is None),
                "databases": databases,
                "forks": [
                    {
                        "author": fork.author.hex(),
                        "name": tenant.member_name(fork.author),
                        "seq": fork.seq,
                        "evidence": [entry_id.hex() for entry_id in fork.evidence],
                    }
                    for fork in node.store.forks(tenant.id)
                ],
                "restored": node.is_restored(tenant),
            }
        )
    ident = node.public_identity()
    return {
        "home": str(node.home),
        "identity": {"name": ident.name, "fingerprint": ident.fingerprint},
        "entries": node.store.count(),
        "tenants": tenants,
        "peer_id": peer_id_of(node.peer_seed()),
        "durability": [
            row.to_dict()
            for row in durability(node, load_ledger(node.home), load_count(node.home, node.store))
        ]
        if with_durability
        else [],
    }


# -- peers -------------------------------------------------------------------------------------
def peer_list(book: AddressBook, live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every peer of the address book and of the daemon's peer table (``live``: its status
    rows, empty when no daemon runs), connected first: its name, state (``connected``,
    ``unreachable`` when the keepalive found the path dead, ``disconnected``), the address
    in use (the connection's, else the book's best), every known address, the last error,
    failed dial rounds since the last success, and the last sync."""
    by_id = {row["peer_id"]: row for row in live}
    rows = []
    for peer_id in sorted(set(book.peers()) | set(by_id)):
        record = book.get(peer_id)
        row = by_id.get(peer_id, {})
        addrs = list(record.addrs) if record is not None else []
        if row.get("connected"):
            state = "connected"
        elif row.get("dead_path"):
            state = "unreachable"
        else:
            state = "disconnected"
        rows.append(
            {
                "peer_id": peer_id,
                "name": record.name if record is not None else None,
                "state": state,
                "connected": state == "connected",
                "address": row.get("address") if state == "connected" else None,
                "addrs": addrs,
                "last_error": row.get("last_error") or (record.last_error if record else None),
                "failures": record.failures if record is not None else 0,
                "last_connected": record.last_connected if record is not None else None,
                "last_sync_ms": row.get("last_sync_ms"),
            }
        )
    rows.sort(key=lambda r: (not r["connected"], r["name"] or "~", r["peer_id"]))
    return rows


# -- members -----------------------------------------------------------------------------------
MIN_KEY_PREFIX = 8
"""The shortest signing-key prefix (hex digits) that names a member or device."""


class AmbiguousNameError(MindooError, LookupError):
    """A name that fits more than one member or device."""


@dataclass(frozen=True, slots=True)
class MemberMatch:
    """The member or device a user named."""

    identity: PublicIdentity
    kind: Literal["member", "device"]

    @property
    def signing_key(self) -> bytes:
        return self.identity.signing_key


def find_member(tenant: Tenant, who: str) -> MemberMatch:
    """The member or device of ``tenant`` that ``who`` names: its name (exact), its
    fingerprint (any case) or its signing key in hex (any case; a unique prefix of at least
    `MIN_KEY_PREFIX` digits will do). Revoked ones are found too (to show or revoke again).

    Raises `NotFoundError` when nothing fits and `AmbiguousNameError` when several do.
    """
    wanted = who.lower()
    candidates = [MemberMatch(m.identity, "member") for m in tenant.members()]
    candidates += [MemberMatch(d.identity, "device") for d in tenant.membership.devices()]
    matches = {
        c.signing_key: c
        for c in candidates
        if c.identity.name == who
        or c.identity.fingerprint.lower() == wanted
        or (len(wanted) >= MIN_KEY_PREFIX and c.signing_key.hex().startswith(wanted))
    }
    if not matches:
        raise NotFoundError(f"no member or device {who!r} in tenant {tenant.name!r}")
    if len(matches) > 1:
        raise AmbiguousNameError(
            f"{who!r} names {len(matches)} members or devices of tenant {tenant.name!r}: use the"
            " fingerprint"
        )
    (match,) = matches.values()
    return match


# -- passwords ---------------------------------------------------------------------------------
PromptFn = Callable[[str, bool], str]
"""``prompt(text, confirm)``: ask for a hidden password, twice when ``confirm``."""


class PasswordNeededError(MindooError):
    """No password from the environment and no way to ask for one."""


class WeakPasswordError(MindooError, ValueError):
    """A password the policy refuses (empty, or shorter than its minimum)."""


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """How one kind of password is obtained and what is accepted.

    Rules: the environment variable ``env_var`` wins; else, where a terminal is available,
    a hidden prompt, asked twice when the password is new (it will protect something being
    created now, so a typo would lock the user out); else `PasswordNeededError` naming
    the variable. Accepted: at least ``min_chars`` characters (never empty), also for
    passwords from the environment.
    """

    label: str
    """How messages name it ("key file password")."""
    prompt: str
    """The prompt's text ("Key file password")."""
    env_var: str
    min_chars: int = 1

    def check(self, password: str, *, new: bool) -> str:
        """``password`` if acceptable; `WeakPasswordError` naming the rule otherwise. An
        existing password is only refused when empty (it was accepted when it was set)."""
        if not password:
            raise WeakPasswordError(f"the {self.label} must not be empty")
        if new and len(password) < self.min_chars:
            raise WeakPasswordError(
                f"the {self.label} must have at least {self.min_chars} characters"
            )
        return password

    def obtain(
        self,
        env: Mapping[str, str],
        *,
        new: bool,
        prompt: PromptFn | None,
        remote: bool = False,
        other_sources: str = "",
    ) -> str:
        """The password from ``env``, else from ``prompt`` (None: no terminal), checked.

        ``remote``: the command runs in a daemon on the user's behalf, so the message says the
        variable must be set in the user's shell. ``other_sources`` ("use --password-file")
        is named in the message when no source gave a password.
        """
        password = env.get(self.env_var)
        if not password:
            if remote:
                raise PasswordNeededError(
                    f"a {self.label} is needed: the running daemon executes this command, so"
                    f" set {self.env_var} in your shell"
                )
            if prompt is None:
                also = f", {other_sources}," if other_sources else ""
                raise PasswordNeededError(
                    f"a {self.label} is needed: set {self.env_var}{also} or run in a terminal"
                )
            password = prompt(self.prompt, new)
        return self.check(password, new=new)


NODE_PASSWORD = PasswordPolicy(
    "password", "Node password", "MINDOO_PASSWORD", min_chars=MIN_PASSWORD_CHARS
)
"""Unlocks the node's keystore (a new one: at least 8 characters)."""
KEY_FILE_PASSWORD = PasswordPolicy("key file password", "Key file password", "MINDOO_KEY_PASSWORD")
"""Protects a key file exported with ``--password``."""
RECOVERY_KIT_PASSWORD = PasswordPolicy(
    "recovery kit password",
    "Recovery kit password",
    "MINDOO_RECOVERY_PASSWORD",
    min_chars=MIN_PASSWORD_CHARS,
)
"""Protects a recovery kit: whoever has the kit and the password becomes the user."""

FORWARDED_PASSWORDS = (KEY_FILE_PASSWORD, RECOVERY_KIT_PASSWORD)
"""Passwords a command run by the daemon on a client's behalf may need (taken from the
client's environment). The node password never travels: the daemon holds the unlocked node."""
