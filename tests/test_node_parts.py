"""The parts `Node` composes (node_home, tenant_registry, entry_intake, node_invites,
tenant_keystore): none holds or imports the node, and each does its one job when driven
directly."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from test_import_layers import import_graph

from mindoo_p2p.crypto.keystore import Keystore
from mindoo_p2p.errors import NotFoundError
from mindoo_p2p.node import Node
from mindoo_p2p.node_home import keystore_secret, replace_keystore_secret
from mindoo_p2p.tenant_keystore import learn_saved_keys, save_tenant_secrets
from mindoo_p2p.tenant_secrets import TenantSecrets

MakeNode = Callable[[str], Node]
PARTS = (
    "mindoo_p2p.node_home",
    "mindoo_p2p.tenant_registry",
    "mindoo_p2p.entry_intake",
    "mindoo_p2p.node_invites",
    "mindoo_p2p.tenant_keystore",
)


def test_the_node_parts_never_name_the_node() -> None:
    graph = import_graph()
    for name in PARTS:
        assert "mindoo_p2p.node" not in graph[name], name


def test_the_node_parts_hold_collaborators_not_the_node(make_node: MakeNode) -> None:
    node = make_node("n")
    parts = [node.tenant_registry, node.intake, node.invitations]
    held = [value for part in parts for value in vars(part).values()]
    assert not any(isinstance(value, Node) for value in held)


def test_a_tenant_is_found_by_name_id_or_a_long_enough_id_prefix(make_node: MakeNode) -> None:
    node = make_node("n")
    acme = node.create_tenant("acme")
    node.create_tenant("globex")
    registry = node.tenant_registry
    assert registry.find("acme") is acme
    assert registry.find(acme.id) is acme
    assert registry.find(acme.id_hex.upper()[:8]) is acme
    with pytest.raises(NotFoundError, match="no tenant"):
        registry.find(acme.id_hex[:7])  # too short to name a tenant
    with pytest.raises(NotFoundError, match="no tenant"):
        registry.find(bytes(16))
    assert [t.name for t in registry.sorted()] == ["acme", "globex"]
    assert registry.label(bytes(16)) == bytes(16).hex()
    assert registry.label(acme.id) == "acme"


def test_two_tenants_of_one_name_are_told_apart_by_id(make_node: MakeNode) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    mine = alice.create_tenant("acme")
    theirs = bob.create_tenant("acme")
    alice.join(bob.invite(theirs, alice.invite_identity()))
    with pytest.raises(NotFoundError, match="several tenants"):
        alice.tenant_registry.find("acme")
    assert alice.tenant(mine.id_hex) is mine


def test_a_keystore_secret_is_created_once_and_replaced_on_demand(make_node: MakeNode) -> None:
    node = make_node("n")
    keystore: Keystore = node._keystore
    first = keystore_secret(keystore, "test_secret")
    assert len(first) == 32 and keystore_secret(keystore, "test_secret") == first
    replace_keystore_secret(keystore, "test_secret", b"\x01" * 32)
    assert keystore_secret(keystore, "test_secret") == b"\x01" * 32


def test_a_save_keeps_keys_another_process_saved_and_learns_them(make_node: MakeNode) -> None:
    node = make_node("n")
    tenant = node.create_tenant("acme")
    keystore: Keystore = node._keystore
    stale = TenantSecrets.from_dict(tenant.id_hex, tenant.secrets.to_dict())  # read earlier
    tenant.rotate_key("default")  # the other process's save: a new key version
    rotated = {k.key_id for k in tenant.keyring}
    assert not rotated <= {k.key_id for k in stale.keyring}
    learner = TenantSecrets.from_dict(tenant.id_hex, stale.to_dict())
    save_tenant_secrets(keystore, stale)  # an overwrite would lose the new version
    assert {k.key_id for k in stale.keyring} >= rotated
    learn_saved_keys(keystore, learner)
    assert {k.key_id for k in learner.keyring} >= rotated
    saved = keystore.read()["tenants"][tenant.id_hex]
    assert {k.key_id for k in TenantSecrets.from_dict(tenant.id_hex, saved).keyring} >= rotated
