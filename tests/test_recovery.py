"""Recovery kits: export, read, restore into a new home; bad kits and passwords; the CLI."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from cli_helpers import PASSWORD as CLI_PASSWORD
from cli_helpers import CliResult, assert_one_line_error, cli_env, init_home, mindoo, mindoo_command
from conftest import PASSWORD
from helpers import daemon_process, run_cli_main
from hypothesis import given, settings
from hypothesis import strategies as st

from mindoo_p2p.codec import Reader, Writer
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.errors import (
    DecodeError,
    KeystoreError,
    VerificationError,
    WrongPasswordError,
)
from mindoo_p2p.home_files import IDENTITY_FILE
from mindoo_p2p.key_transfer import read_password_sealed, seal_with_password
from mindoo_p2p.keyring import DEFAULT_KEY
from mindoo_p2p.node import KEYSTORE_FILE, Node, is_initialized
from mindoo_p2p.recovery import (
    KIT_MAGIC,
    KIT_VERSION,
    RecoveryKit,
    export_recovery_kit,
    read_recovery_kit,
)
from mindoo_p2p.tenant import Tenant

pytestmark = pytest.mark.timeout(120)

MakeNode = Callable[[str], Node]
KIT_PASSWORD = "a long recovery kit password"
NEW_PASSWORD = "the restored node's own password"
TESTING = KdfProfile.TESTING
run_cli = partial(run_cli_main, password=PASSWORD)


@dataclass
class Alice:
    """A user who administers ``acme`` and is a member of ``bobco`` and a mirror of ``relay``."""

    node: Node
    acme: Tenant
    documents: dict[str, dict[str, object]]
    """acme/notes documents (under the default key and the rotated named key) and content."""


def make_alice(make_node: MakeNode) -> Alice:
    alice, bob = make_node("alice"), make_node("bob")
    acme = alice.create_tenant("acme")
    acme.create_key("hr")
    acme.rotate_key("hr")
    acme.rotate_key(DEFAULT_KEY)
    acme.create_db("empty")
    notes = acme.create_db("notes")
    documents: dict[str, dict[str, object]] = {
        notes.create_document({"text": "plain"}): {"text": "plain"},
        notes.create_document({"salary": 1}, key="hr"): {"salary": 1},
    }
    bobco = bob.create_tenant("bobco")
    alice.join(bob.invite(bobco, alice.public_identity()))
    relay = bob.create_tenant("relay")
    alice.join(bob.invite(relay, alice.public_identity(), role="mirror"))
    return Alice(alice, acme, documents)


def open_payload(kit: bytes, password: str = KIT_PASSWORD) -> bytes:
    """The decrypted payload of a kit (through the shared password helpers)."""
    r = Reader(kit, "kit")
    assert r.fixed(len(KIT_MAGIC), "magic") == KIT_MAGIC and r.u8("version") == KIT_VERSION
    return read_password_sealed(r, kit, len(kit)).open(password, "the kit")


def reseal(payload: bytes, password: str = KIT_PASSWORD, version: int = KIT_VERSION) -> bytes:
    """A kit holding ``payload`` as is: how a test crafts kits a real export never makes."""
    return seal_with_password(Writer().raw(KIT_MAGIC).u8(version), payload, password, TESTING)


@pytest.fixture(scope="module")
def sample_kit(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    home = tmp_path_factory.mktemp("kit") / "node"
    with Node.init(home, PASSWORD, name="sample", kdf=TESTING) as node:
        tenant = node.create_tenant("acme")
        tenant.create_key("hr")
        tenant.create_db("notes")
        return export_recovery_kit(node, KIT_PASSWORD, TESTING)


# -- round trip ----------------------------------------------------------------------------------
def test_round_trip_restores_identity_every_key_version_and_admin_seed(
    make_node: MakeNode, tmp_path: Path
) -> None:
    alice = make_alice(make_node)
    original = alice.node
    data = export_recovery_kit(original, KIT_PASSWORD, TESTING)
    for secret in (
        original.identity.signing.seed,
        bytes(original.identity.encryption),
        *(k.secret for t in original.tenants() for k in t.keyring),
    ):
        assert secret not in data

    kit = read_recovery_kit(data, KIT_PASSWORD)
    assert isinstance(kit, RecoveryKit)
    assert [t.name for t in sorted(kit.tenants, key=lambda t: t.name)] == ["acme", "bobco", "relay"]
    assert "secret" not in repr(kit) and original.identity.signing.seed.hex() not in repr(kit)

    restored = Node.restore(tmp_path / "new-device", data, KIT_PASSWORD, NEW_PASSWORD, kdf=TESTING)
    with restored:
        assert restored.identity.name == original.identity.name
        assert restored.identity.signing.seed == original.identity.signing.seed
        assert bytes(restored.identity.encryption) == bytes(original.identity.encryption)
        assert restored.public_identity() == original.public_identity()
        assert (restored.home / IDENTITY_FILE).read_text() == original.public_identity().to_json()
        assert restored.peer_seed() != original.peer_seed()  # a new device, a new peer id
        assert len(original.tenants()) == len(restored.tenants()) == 3
        for before in original.tenants():
            after = restored.tenant(before.id)
            assert after.secrets.to_dict() == before.secrets.to_dict()  # keys, seed, databases
            assert after.is_admin == before.is_admin
            assert after.members() == before.members()  # the tenant log came with the kit
            assert after.key_directory() == before.key_directory()
        acme = restored.tenant("acme")
        assert acme.is_admin and acme.secrets.admin_seed == alice.acme.secrets.admin_seed
        assert [k.version for k in acme.keyring if k.name == "hr"] == [1, 2]
        assert [k.version for k in acme.keyring if k.name == DEFAULT_KEY] == [1, 2]
        assert "empty" in acme.databases()
        assert not restored.tenant("bobco").is_admin
        assert restored.tenant("relay").keyring.names() == ["$membership"]

        # Documents come back from any copy of the entries and read the same.
        result = restored.ingest([e.raw for e in original.store.iter_entries()])
        assert not result.rejected
        # Writing waits for a sync (restore_guard): this ingest of everything was one.
        assert restored.is_restored(acme)
        assert restored.settle_restored(acme).cleared
        notes = acme.create_db("notes")
        for doc_id, content in alice.documents.items():
            assert notes.get(doc_id) == content
        # The restored admin acts as admin: its membership records are accepted by the original.
        carol = make_node("carol")
        entry = acme.add_member(carol.public_identity())
        assert not original.ingest([entry.raw]).rejected
        assert alice.acme.membership.is_member(carol.public_identity().signing_key)

    with pytest.raises(WrongPasswordError):
        Node.open(tmp_path / "new-device", KIT_PASSWORD)
    Node.open(tmp_path / "new-device", NEW_PASSWORD).close()


def test_restore_into_an_existing_empty_directory(sample_kit: bytes, tmp_path: Path) -> None:
    home = tmp_path / "empty"
    home.mkdir()
    Node.restore(home, sample_kit, KIT_PASSWORD, NEW_PASSWORD, kdf=TESTING).close()
    assert sorted(p.name for p in home.iterdir()) == [IDENTITY_FILE, KEYSTORE_FILE, "store"]


# -- refusals ------------------------------------------------------------------------------------
def test_wrong_password_is_clear_and_writes_nothing(sample_kit: bytes, tmp_path: Path) -> None:
    with pytest.raises(WrongPasswordError, match="wrong password for the recovery kit"):
        read_recovery_kit(sample_kit, "not the password")
    with pytest.raises(WrongPasswordError, match="protected by a password"):
        read_recovery_kit(sample_kit, "")
    home = tmp_path / "home"
    with pytest.raises(WrongPasswordError):
        Node.restore(home, sample_kit, "not the password", NEW_PASSWORD, kdf=TESTING)
    assert not home.exists()


def test_export_refuses_a_short_password(make_node: MakeNode) -> None:
    node = make_node("alice")
    with pytest.raises(WrongPasswordError, match="at least 8 characters"):
        export_recovery_kit(node, "short", TESTING)


def test_restore_refuses_an_existing_node(
    sample_kit: bytes, make_node: MakeNode, tmp_path: Path
) -> None:
    node = make_node("existing")
    keystore = (node.home / KEYSTORE_FILE).read_bytes()
    with pytest.raises(KeystoreError, match="a node already exists"):
        Node.restore(node.home, sample_kit, KIT_PASSWORD, NEW_PASSWORD, kdf=TESTING)
    assert (node.home / KEYSTORE_FILE).read_bytes() == keystore
    assert not [p for p in node.home.iterdir() if p.name.startswith(".restore-")]

    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / IDENTITY_FILE).write_text("{}")
    with pytest.raises(KeystoreError, match=r"holds identity\.json but no keystore"):
        Node.restore(stray, sample_kit, KIT_PASSWORD, NEW_PASSWORD, kdf=TESTING)
    assert [p.name for p in stray.iterdir()] == [IDENTITY_FILE]


def test_a_tenant_log_that_does_not_verify_leaves_no_node(
    sample_kit: bytes, tmp_path: Path
) -> None:
    payload = open_payload(sample_kit)
    kit = read_recovery_kit(sample_kit, KIT_PASSWORD)
    raw = kit.tenants[0].tenant_log[0]
    assert payload.count(raw) == 1
    forged = raw[:-1] + bytes([raw[-1] ^ 1])  # the signature's last byte
    bad = reseal(payload.replace(raw, forged))
    for home in (tmp_path / "new", tmp_path / "existing-empty"):
        if home.name.startswith("existing"):
            home.mkdir()
        with pytest.raises(VerificationError, match="does not verify"):
            Node.restore(home, bad, KIT_PASSWORD, NEW_PASSWORD, kdf=TESTING)
        assert not is_initialized(home)
        assert not home.exists() or list(home.iterdir()) == []


def test_not_a_kit_other_versions_and_unbounded_kdf_are_decode_errors(sample_kit: bytes) -> None:
    payload = open_payload(sample_kit)
    with pytest.raises(DecodeError, match="not a mindoo recovery kit"):
        read_recovery_kit(b"MDKX" + sample_kit[4:], KIT_PASSWORD)
    with pytest.raises(DecodeError, match="unsupported version 3"):
        read_recovery_kit(reseal(payload, version=3), KIT_PASSWORD)
    with pytest.raises(DecodeError, match="recovery kit payload"):  # version 2 read as 1
        read_recovery_kit(reseal(payload, version=1), KIT_PASSWORD)
    with pytest.raises(DecodeError, match="trailing"):
        read_recovery_kit(reseal(payload + b"\0"), KIT_PASSWORD)
    with pytest.raises(DecodeError, match="trailing"):
        read_recovery_kit(sample_kit + b"\0", KIT_PASSWORD)
    huge = bytearray(sample_kit)
    huge[5 + 8 : 5 + 16] = (1 << 40).to_bytes(8, "big")  # memlimit: 1 TiB
    with pytest.raises(DecodeError, match="refusing argon2id limits"):
        read_recovery_kit(bytes(huge), KIT_PASSWORD)
    with pytest.raises(DecodeError, match="expected bytes"):
        read_recovery_kit("text", KIT_PASSWORD)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_damaged_kits_raise_only_decode_or_password_errors(
    sample_kit: bytes, data: st.DataObject
) -> None:
    """Truncated, flipped or garbage kits: DecodeError or WrongPasswordError, nothing else."""
    kind = data.draw(st.sampled_from(["truncate", "flip", "garbage"]))
    if kind == "truncate":
        damaged = sample_kit[: data.draw(st.integers(0, len(sample_kit) - 1))]
        with pytest.raises(DecodeError):
            read_recovery_kit(damaged, KIT_PASSWORD)
        return
    if kind == "flip":
        buf = bytearray(sample_kit)
        where = st.integers(0, len(buf) - 1)
        for at in data.draw(st.lists(where, min_size=1, max_size=3, unique=True)):
            buf[at] ^= data.draw(st.integers(1, 255))
        damaged = bytes(buf)
    else:
        tail = data.draw(st.binary(max_size=200))
        damaged = (KIT_MAGIC + bytes([KIT_VERSION]) if data.draw(st.booleans()) else b"") + tail
    with pytest.raises((DecodeError, WrongPasswordError)):
        read_recovery_kit(damaged, KIT_PASSWORD)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_malformed_payloads_under_the_right_password_raise_only_decode_errors(
    sample_kit: bytes, data: st.DataObject
) -> None:
    """A kit made by a broken or hostile exporter: strict decoding, DecodeError only."""
    payload = bytearray(open_payload(sample_kit))
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert"]))
    if kind == "truncate":
        payload = payload[: data.draw(st.integers(0, len(payload) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 3))):
            payload[data.draw(st.integers(0, len(payload) - 1))] ^= data.draw(st.integers(1, 255))
    else:
        at = data.draw(st.integers(0, len(payload)))
        payload[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        kit = read_recovery_kit(reseal(bytes(payload)), KIT_PASSWORD)
    except DecodeError:
        return
    # Some bytes are free (a secret, a timestamp): then the kit must still be consistent.
    assert kit.tenants and kit.identity.name


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_export_and_restore(
    make_node: MakeNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("MINDOO_HOME", raising=False)
    monkeypatch.delenv("MINDOO_RECOVERY_PASSWORD", raising=False)
    alice = make_alice(make_node)
    fingerprint = alice.node.identity.fingerprint
    alice.node.close()
    home = ["--home", str(alice.node.home)]
    kit_file = tmp_path / "alice.kit"

    code, _, err = run_cli(monkeypatch, capsys, *home, "recovery", "export", "--out", str(kit_file))
    assert code == 1 and "MINDOO_RECOVERY_PASSWORD" in err and err.count("\n") == 1
    assert not kit_file.exists()
    monkeypatch.setenv("MINDOO_RECOVERY_PASSWORD", "short")
    code, _, err = run_cli(monkeypatch, capsys, *home, "recovery", "export", "--out", str(kit_file))
    assert code == 1 and "at least 8 characters" in err and not kit_file.exists()

    monkeypatch.setenv("MINDOO_RECOVERY_PASSWORD", KIT_PASSWORD)
    code, out, err = run_cli(
        monkeypatch, capsys, *home, "--json", "recovery", "export", "--out", str(kit_file)
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["tenants"] == 3 and report["fingerprint"] == fingerprint
    assert "anyone with this file and its password becomes" in report["warning"]
    assert stat.S_IMODE(kit_file.stat().st_mode) == 0o600
    kit_bytes = kit_file.read_bytes()
    assert read_recovery_kit(kit_bytes, KIT_PASSWORD).identity.fingerprint == fingerprint
    code, _, err = run_cli(monkeypatch, capsys, *home, "recovery", "export", "--out", str(kit_file))
    assert code == 1 and "exists already" in err and kit_file.read_bytes() == kit_bytes

    # Bad input: one clear line, exit 1, nothing written.
    new_home = tmp_path / "new-device"
    truncated, not_a_kit = tmp_path / "truncated.kit", tmp_path / "identity.json"
    truncated.write_bytes(kit_bytes[:100])
    not_a_kit.write_text(alice.node.public_identity().to_json())
    restore = ["--home", str(new_home), "recovery", "restore"]
    for path, password, message in (
        (kit_file, "not the kit password", "wrong password for the recovery kit"),
        (truncated, KIT_PASSWORD, "truncated"),
        (not_a_kit, KIT_PASSWORD, "not a mindoo recovery kit"),
    ):
        monkeypatch.setenv("MINDOO_RECOVERY_PASSWORD", password)
        code, out, err = run_cli(monkeypatch, capsys, *restore, str(path))
        assert code == 1 and out == "" and err.count("\n") == 1 and message in err, err
        assert not new_home.exists()

    monkeypatch.setenv("MINDOO_RECOVERY_PASSWORD", KIT_PASSWORD)
    code, out, err = run_cli(monkeypatch, capsys, *restore, str(kit_file))
    assert code == 0, err
    assert f"restored alice ({fingerprint})" in out and "tenant acme" in out
    with Node.open(new_home, PASSWORD) as node:  # run_cli's node password
        assert node.identity.fingerprint == fingerprint
        assert sorted(t.name for t in node.tenants()) == ["acme", "bobco", "relay"]
    code, _, err = run_cli(monkeypatch, capsys, *restore, str(kit_file))
    assert code == 1 and "a node already exists" in err


# -- through a running daemon --------------------------------------------------------------------
def run_with_kit_password(
    home: Path, *args: str, kit_password: str | None, node_password: str | None = None
) -> CliResult:
    """``mindoo --home HOME ARGS`` in a subprocess (cwd: HOME's parent) with these passwords."""
    env = cli_env(node_password)
    if kit_password is not None:
        env["MINDOO_RECOVERY_PASSWORD"] = kit_password
    done = subprocess.run(
        [*mindoo_command(), "--home", str(home), *args],
        env=env,
        cwd=home.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def daemon_home(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A node home (made by the CLI, tenant ``acme``) with a running daemon on loopback;
    yields the home and the daemon's peer id."""
    home = tmp_path / "a"
    init_home(home, "alice")
    mindoo(home, "tenant", "create", "acme").ok()
    daemon_cwd = tmp_path / "daemon-cwd"  # not the client's (home.parent): see the export test
    daemon_cwd.mkdir()
    with daemon_process(home, daemon_cwd, cli_env(CLI_PASSWORD)) as (_proc, info):
        yield home, info["peer_id"]


@pytest.mark.slow
def test_export_through_a_running_daemon(daemon_home: tuple[Path, str], tmp_path: Path) -> None:
    home, peer_id = daemon_home
    export = ("recovery", "export", "--out", "a.kit")  # relative: the client's directory
    refused = run_with_kit_password(home, *export, kit_password=None)
    assert_one_line_error(refused, 1, "set MINDOO_RECOVERY_PASSWORD in your shell")
    # No node password: the daemon holds the unlocked node; the kit password travels along.
    done = run_with_kit_password(home, *export, kit_password=KIT_PASSWORD).ok()
    assert "WARNING: anyone with this file and its password becomes alice" in done.stdout
    kit_file = tmp_path / "a.kit"
    assert stat.S_IMODE(kit_file.stat().st_mode) == 0o600
    assert not (tmp_path / "daemon-cwd" / "a.kit").exists()

    busy = run_with_kit_password(home, "recovery", "restore", "a.kit", kit_password=KIT_PASSWORD)
    assert_one_line_error(busy, 1, "a node already exists", str(home))

    new_home = tmp_path / "b"
    restored = run_with_kit_password(
        new_home, "--json", "recovery", "restore", "a.kit",
        kit_password=KIT_PASSWORD, node_password=CLI_PASSWORD,
    ).ok()  # fmt: skip
    assert [t["name"] for t in json.loads(restored.stdout)["tenants"]] == ["acme"]
    status = json.loads(mindoo(new_home, "status", json_output=True).ok().stdout)
    assert status["identity"]["fingerprint"] == json.loads(restored.stdout)["fingerprint"]
    assert status["peer_id"] != peer_id
