"""The password-protected keystore file: round trips, tampering, bounds, concurrency."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id
import pytest

from mindoo_p2p.crypto import aead
from mindoo_p2p.crypto.keystore import (
    HEADER_SIZE,
    MAGIC,
    MAX_FILE_SIZE,
    KdfProfile,
    Keystore,
)
from mindoo_p2p.errors import KeystoreDamagedError, KeystoreError, WrongPasswordError

PASSWORD = "correct horse battery staple"
SECRET_HEX = "5ec2e7" * 10 + "abcd"
CONTENTS: dict[str, Any] = {
    "identity": {"name": "Alice", "signing_seed": SECRET_HEX},
    "tenants": [{"name": "acme", "keys": ["0011"]}],
}


def make_keystore(tmp_path: Path, contents: dict[str, Any] | None = None) -> Keystore:
    return Keystore.create(
        tmp_path / "keys.mdks", PASSWORD, contents or CONTENTS, kdf=KdfProfile.TESTING
    )


def test_create_unlock_round_trip(tmp_path: Path) -> None:
    created = make_keystore(tmp_path)
    assert created.read() == CONTENTS
    unlocked = Keystore.unlock(tmp_path / "keys.mdks", PASSWORD)
    assert unlocked.read() == CONTENTS
    assert unlocked.path == tmp_path / "keys.mdks"
    assert "5ec2e7" not in repr(unlocked)


def test_interactive_profile_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "k"
    Keystore.create(path, PASSWORD, {"a": 1})  # default: INTERACTIVE
    start = time.perf_counter()
    assert Keystore.unlock(path, PASSWORD).read() == {"a": 1}
    assert time.perf_counter() - start < 5
    assert struct.unpack(">QQ", path.read_bytes()[6:22]) == (
        KdfProfile.INTERACTIVE.opslimit,
        KdfProfile.INTERACTIVE.memlimit,
    )


def test_wrong_password(tmp_path: Path) -> None:
    make_keystore(tmp_path)
    with pytest.raises(WrongPasswordError, match="wrong password for keystore"):
        Keystore.unlock(tmp_path / "keys.mdks", PASSWORD + "!")


def test_password_is_unicode_normalized(tmp_path: Path) -> None:
    path = tmp_path / "k"
    Keystore.create(path, "caf\u00e9", {"x": 1}, kdf=KdfProfile.TESTING)
    assert Keystore.unlock(path, "cafe\u0301").read() == {"x": 1}


def test_file_never_contains_plaintext_and_is_private(tmp_path: Path) -> None:
    keystore = make_keystore(tmp_path)
    keystore.update(lambda c: c.update(extra="marker-7f3b91"))
    raw = (tmp_path / "keys.mdks").read_bytes()
    for needle in (SECRET_HEX, "Alice", "marker-7f3b91", "signing_seed", "acme"):
        assert needle.encode() not in raw
    assert bytes.fromhex(SECRET_HEX) not in raw
    assert PASSWORD.encode() not in raw
    assert raw[:4] == b"MDKS"
    assert stat.S_IMODE(os.stat(tmp_path / "keys.mdks").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "keys.mdks.lock").st_mode) == 0o600
    # atomic writes leave no temporary file behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.mdks", "keys.mdks.lock"]


def test_each_write_uses_a_fresh_nonce(tmp_path: Path) -> None:
    keystore = make_keystore(tmp_path)
    path = tmp_path / "keys.mdks"
    first = path.read_bytes()
    keystore.update(lambda c: None)
    second = path.read_bytes()
    assert first[:38] == second[:38]  # magic, version, kdf, limits, salt
    assert first[38:62] != second[38:62]  # nonce
    assert first[62:] != second[62:]


def test_every_flipped_byte_is_detected(tmp_path: Path) -> None:
    make_keystore(tmp_path, {"k": "v" * 40})
    path = tmp_path / "keys.mdks"
    good = path.read_bytes()
    for index in range(len(good)):
        for mask in (0x01, 0x80):
            bad = bytearray(good)
            bad[index] ^= mask
            path.write_bytes(bytes(bad))
            with pytest.raises((WrongPasswordError, KeystoreError)):
                Keystore.unlock(path, PASSWORD)
    path.write_bytes(good)
    assert Keystore.unlock(path, PASSWORD).read() == {"k": "v" * 40}


def test_read_after_tampering_raises(tmp_path: Path) -> None:
    keystore = make_keystore(tmp_path)
    path = tmp_path / "keys.mdks"
    bad = bytearray(path.read_bytes())
    bad[-1] ^= 0x01
    path.write_bytes(bytes(bad))
    with pytest.raises(KeystoreDamagedError, match="damaged"):
        keystore.read()


def test_every_truncation_is_rejected(tmp_path: Path) -> None:
    make_keystore(tmp_path)
    path = tmp_path / "keys.mdks"
    good = path.read_bytes()
    for size in range(len(good)):
        path.write_bytes(good[:size])
        with pytest.raises((WrongPasswordError, KeystoreError)):
            Keystore.unlock(path, PASSWORD)


def test_damage_is_told_apart_from_a_wrong_password(tmp_path: Path) -> None:
    """Issue 10: a truncated or bit-flipped keystore reported "wrong password". Every flipped
    bit and every truncation is now reported as damage, with the way back, and a whole file
    with the wrong password as a wrong password; nothing is written either way."""
    make_keystore(tmp_path)
    path = tmp_path / "keys.mdks"
    good = path.read_bytes()
    with pytest.raises(WrongPasswordError):
        Keystore.unlock(path, "not the password")
    for position in range(len(MAGIC) + 1, len(good)):
        bad = bytearray(good)
        bad[position] ^= 0x10
        path.write_bytes(bytes(bad))
        with pytest.raises(KeystoreDamagedError, match="recovery kit"):
            Keystore.unlock(path, PASSWORD)
        assert path.read_bytes() == bytes(bad)  # nothing was changed
    for size in range(len(MAGIC) + 1, len(good)):
        path.write_bytes(good[:size])
        with pytest.raises(KeystoreDamagedError):
            Keystore.unlock(path, PASSWORD)


def _version_1_file(password: str, contents: dict[str, object]) -> bytes:
    """A keystore as version 1 wrote it (no checksum): kept here, frozen, to test reading."""
    salt, nonce = os.urandom(16), os.urandom(24)
    ops, mem = KdfProfile.TESTING.opslimit, KdfProfile.TESTING.memlimit
    key = bytes(argon2id.kdf(32, password.encode(), salt, opslimit=ops, memlimit=mem))
    header = b"MDKS" + struct.pack(">BBQQ", 1, 1, ops, mem) + salt + nonce
    plaintext = json.dumps(contents, sort_keys=True, separators=(",", ":")).encode()
    return header + aead.encrypt(key, nonce, plaintext, header)


def test_a_version_1_keystore_is_read_and_rewritten_as_version_2(tmp_path: Path) -> None:
    path = tmp_path / "old.mdks"
    path.write_bytes(_version_1_file(PASSWORD, {"secret": "kept"}))
    keystore = Keystore.unlock(path, PASSWORD)
    assert keystore.read() == {"secret": "kept"}
    keystore.update(lambda contents: contents.update(more=1))
    data = path.read_bytes()
    assert data[4] == 2 and hashlib.sha256(data[:-32]).digest() == data[-32:]
    assert Keystore.unlock(path, PASSWORD).read() == {"secret": "kept", "more": 1}
    with pytest.raises(WrongPasswordError):
        Keystore.unlock(path, "wrong")


def test_missing_unreadable_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match=r"no keystore at .*does not exist"):
        Keystore.unlock(tmp_path / "nope", PASSWORD)
    with pytest.raises(KeystoreError, match="no keystore at"):
        Keystore.unlock(tmp_path, PASSWORD)
    (tmp_path / "notes.txt").write_text("hello, this is not a keystore at all")
    with pytest.raises(KeystoreError, match=r"no keystore at .*not a mindoo keystore"):
        Keystore.unlock(tmp_path / "notes.txt", PASSWORD)
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(KeystoreError, match="no keystore at"):
        Keystore.unlock(tmp_path / "empty", PASSWORD)


def test_oversized_file_is_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge"
    with open(path, "wb") as f:
        f.write(b"MDKS")
        f.truncate(MAX_FILE_SIZE + 1)  # sparse: costs no disk
    with pytest.raises(KeystoreError, match="larger than"):
        Keystore.unlock(path, PASSWORD)


def crafted_header(version: int = 1, kdf: int = 1, ops: int = 1, mem: int = 8192) -> bytes:
    return b"MDKS" + struct.pack(">BBQQ", version, kdf, ops, mem) + bytes(16 + 24) + bytes(40)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mem": 100 * 1024**3}, "refusing argon2id limits"),
        ({"mem": 1024}, "refusing argon2id limits"),
        ({"ops": 10**9}, "refusing argon2id limits"),
        ({"ops": 0}, "refusing argon2id limits"),
        ({"version": 3}, "unsupported format version 3"),
        ({"kdf": 9}, "unknown key derivation function 9"),
    ],
)
def test_crafted_header_is_refused_before_derivation(
    tmp_path: Path, fields: dict[str, int], message: str
) -> None:
    path = tmp_path / "crafted"
    path.write_bytes(crafted_header(**fields))
    start = time.perf_counter()
    with pytest.raises(KeystoreError, match=message):
        Keystore.unlock(path, PASSWORD)
    assert time.perf_counter() - start < 0.5


def test_create_refuses_existing_file(tmp_path: Path) -> None:
    make_keystore(tmp_path)
    with pytest.raises(KeystoreError, match="already exists"):
        make_keystore(tmp_path, {"other": True})
    assert Keystore.unlock(tmp_path / "keys.mdks", PASSWORD).read() == CONTENTS
    with pytest.raises(KeystoreError, match="cannot"):
        Keystore.create(tmp_path / "no-such-dir" / "k", PASSWORD, {}, kdf=KdfProfile.TESTING)


def test_update_and_failed_mutation(tmp_path: Path) -> None:
    keystore = make_keystore(tmp_path)
    result = keystore.update(lambda c: c.__setitem__("count", 1))
    assert result["count"] == 1
    assert Keystore.unlock(tmp_path / "keys.mdks", PASSWORD).read()["count"] == 1
    before = (tmp_path / "keys.mdks").read_bytes()

    def explode(contents: dict[str, Any]) -> None:
        contents["count"] = 2
        raise RuntimeError("mutation failed")

    with pytest.raises(RuntimeError):
        keystore.update(explode)
    with pytest.raises(TypeError):
        keystore.update(lambda c: c.__setitem__("raw", b"bytes are not JSON"))
    assert (tmp_path / "keys.mdks").read_bytes() == before
    assert keystore.read()["count"] == 1


def test_change_password(tmp_path: Path) -> None:
    keystore = make_keystore(tmp_path)
    other = Keystore.unlock(tmp_path / "keys.mdks", PASSWORD)
    keystore.change_password("new password")
    with pytest.raises(WrongPasswordError):
        Keystore.unlock(tmp_path / "keys.mdks", PASSWORD)
    assert Keystore.unlock(tmp_path / "keys.mdks", "new password").read() == CONTENTS
    assert keystore.read() == CONTENTS
    keystore.update(lambda c: c.__setitem__("after", True))
    assert Keystore.unlock(tmp_path / "keys.mdks", "new password").read()["after"] is True
    with pytest.raises(KeystoreError, match="unlock it again"):
        other.read()
    with pytest.raises(KeystoreError, match="unlock it again"):
        other.update(lambda c: c.clear())
    assert keystore.read()["after"] is True


_WORKER = """
import sys, time
from pathlib import Path
from mindoo_p2p.crypto.keystore import Keystore
path, password, tag, count, start = sys.argv[1:6]
keystore = Keystore.unlock(Path(path), password)
deadline = time.monotonic() + 20
while not Path(start).exists():
    if time.monotonic() > deadline:
        sys.exit("start signal never came")
    time.sleep(0.001)
for i in range(int(count)):
    keystore.update(lambda c: c["log"].append(f"{tag}-{i}"))
"""


def test_concurrent_updates_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys.mdks"
    Keystore.create(path, PASSWORD, {"log": []}, kdf=KdfProfile.TESTING)
    start = tmp_path / "go"
    count = 40
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), PASSWORD, tag, str(count), str(start)],
            stderr=subprocess.PIPE,
        )
        for tag in ("a", "b")
    ]
    time.sleep(0.3)  # let both processes import and unlock before racing
    start.touch()
    for worker in workers:
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err.decode()
    log = Keystore.unlock(path, PASSWORD).read()["log"]
    expected = {f"{tag}-{i}" for tag in ("a", "b") for i in range(count)}
    assert len(log) == 2 * count
    assert set(log) == expected
    # each process's own updates stay in order
    for tag in ("a", "b"):
        mine = [item for item in log if item.startswith(tag)]
        assert mine == [f"{tag}-{i}" for i in range(count)]


def test_contents_must_be_a_json_object(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        Keystore.create(tmp_path / "k", PASSWORD, ["not", "a", "dict"], kdf=KdfProfile.TESTING)  # type: ignore[arg-type]
    assert not (tmp_path / "k").exists()
    keystore = Keystore.create(
        tmp_path / "k", PASSWORD, {"text": "caf\u00e9 \u2603"}, kdf=KdfProfile.TESTING
    )
    assert keystore.read() == {"text": "caf\u00e9 \u2603"}
    assert json.dumps(keystore.read())  # a plain JSON object
    assert HEADER_SIZE == 62
