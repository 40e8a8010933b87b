"""The node home's hygiene: permissions, and identity.json checked against the keystore."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.errors import KeystoreError
from mindoo_p2p.home_files import IDENTITY_FILE
from mindoo_p2p.identity import PublicIdentity
from mindoo_p2p.node import Node

PASSWORD = "home files test"


def make_home(tmp_path: Path) -> tuple[Path, PublicIdentity]:
    home = tmp_path / "home"
    with Node.init(home, PASSWORD, name="ada", kdf=KdfProfile.TESTING) as node:
        return home, node.public_identity()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_home_is_private(tmp_path: Path) -> None:
    home, _ = make_home(tmp_path)
    assert mode(home) == 0o700
    assert mode(home / IDENTITY_FILE) == 0o600
    assert mode(home / "keystore.bin") == 0o600


def test_a_home_others_can_read_is_tightened_and_one_they_can_write_refused(
    tmp_path: Path,
) -> None:
    """Issue 9: an existing home kept whatever permissions it had."""
    home, _ = make_home(tmp_path)
    os.chmod(home, 0o755)
    os.chmod(home / IDENTITY_FILE, 0o644)
    Node.open(home, PASSWORD).close()
    assert mode(home) == 0o700
    assert mode(home / IDENTITY_FILE) == 0o600
    os.chmod(home, 0o777)
    with pytest.raises(KeystoreError, match=r"can be written by other users .*chmod 700"):
        Node.open(home, PASSWORD)
    assert mode(home) == 0o777  # refused, nothing changed


@pytest.mark.parametrize(
    "damage",
    [b"", b"not json at all", b'{"type": "mindoo-identity"}', None, "other"],
    ids=["empty", "garbage", "incomplete", "missing", "another identity"],
)
def test_identity_json_is_checked_against_the_keystore(
    tmp_path: Path, damage: bytes | str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10: a garbage identity.json went unnoticed (and was what a user sends to an
    admin). It is rewritten from the keystore on open; a damaged one is kept and named."""
    home, identity = make_home(tmp_path)
    path = home / IDENTITY_FILE
    if damage is None:
        path.unlink()
    elif damage == "other":
        other, _ = make_home(tmp_path / "other")
        damage = (other / IDENTITY_FILE).read_bytes()
        path.write_bytes(damage)
    else:
        path.write_bytes(damage)
    with caplog.at_level(logging.WARNING), Node.open(home, PASSWORD):
        pass
    assert PublicIdentity.from_json(path.read_text()) == identity
    if damage is not None:
        assert (home / "identity.json.damaged").read_bytes() == damage
        assert "identity.json.damaged" in caplog.text
