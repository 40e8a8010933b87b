"""The password-protected keystore file: every private key and tenant key of a node.

The contents are one JSON object (callers store bytes as hex), encrypted with
XChaCha20-Poly1305 under a key derived from the password by argon2id. File format, version 2
(integers big-endian)::

    magic       4 bytes  b"MDKS"
    version     u8       2
    kdf         u8       key derivation function: 1 = argon2id v1.3 (libsodium crypto_pwhash)
    opslimit    u64      argon2id passes
    memlimit    u64      argon2id memory in bytes
    salt        16 bytes random, chosen when the password is set
    nonce       24 bytes random, fresh for every write
    ciphertext  XChaCha20-Poly1305 of the UTF-8 JSON contents, with every byte before it
                (magic .. nonce) as associated data, so no header field can change without
                decryption failing
    checksum    32 bytes: SHA-256 of every byte before it

The checksum tells damage from a wrong password without the password: a truncated or
bit-flipped file is reported as damaged (with the way back: a backup or the recovery kit), a
file that is whole but does not decrypt as a wrong password. It protects against accidents,
not attackers (anyone can recompute it; the AEAD is what stops tampering). Version 1 had no
checksum (damage there reads as a wrong password); it is still read, and the next write
turns it into version 2.

Writes keep the salt and derived key (so a write needs no password) and use a fresh nonce; a
password change picks a new salt. Reading is bounded: a file over 64 MiB, or with KDF limits
outside [MIN, MAX_OPSLIMIT] x [MIN, MAX_MEMLIMIT], is refused before any key derivation, so a
crafted file cannot make us allocate gigabytes. The file and its ``PATH.lock`` companion are
created with mode 0600.

Concurrency: every write (create, update, password change) holds an exclusive ``fcntl.flock``
on ``PATH.lock`` across read-modify-write, and replaces the file atomically (temporary file in
the same directory, fsync, ``os.replace``, fsync of the directory). Readers need no lock: they
see either the old or the new file, never a mix. These calls block (key derivation, fsync,
lock waits): call them from a worker thread in async code.

Passwords are normalized to Unicode NFC before derivation, so the same password typed on
systems that compose characters differently unlocks the same file.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import json
import os
import stat
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id as argon2id

from ..codec import Reader, Writer
from ..errors import (
    DecodeError,
    KeystoreDamagedError,
    KeystoreError,
    VerificationError,
    WrongPasswordError,
)
from . import aead

MAGIC = b"MDKS"
FORMAT_VERSION = 2
READABLE_VERSIONS = frozenset({1, 2})
KDF_ARGON2ID = 1
SALT_SIZE = 16
CHECKSUM_SIZE = 32
HEADER_SIZE = len(MAGIC) + 1 + 1 + 8 + 8 + SALT_SIZE + aead.NONCE_SIZE
MAX_FILE_SIZE = 64 * 1024 * 1024
MAX_CONTENTS_SIZE = MAX_FILE_SIZE - HEADER_SIZE - aead.TAG_SIZE - CHECKSUM_SIZE

MIN_OPSLIMIT = int(argon2id.OPSLIMIT_MIN)
MIN_MEMLIMIT = int(argon2id.MEMLIMIT_MIN)
MAX_OPSLIMIT = 4
"""The most argon2id passes a file may ask for (MODERATE uses 3)."""
MAX_MEMLIMIT = 256 * 1024 * 1024
"""The most memory a file may make us spend on key derivation: MODERATE's 256 MiB."""

FILE_MODE = 0o600


class KdfProfile(enum.Enum):
    """How hard the password key derivation is (argon2id passes and memory)."""

    INTERACTIVE = (int(argon2id.OPSLIMIT_INTERACTIVE), int(argon2id.MEMLIMIT_INTERACTIVE))
    """The default: 2 passes over 64 MiB, about 70 ms."""
    MODERATE = (int(argon2id.OPSLIMIT_MODERATE), int(argon2id.MEMLIMIT_MODERATE))
    """3 passes over 256 MiB, about 0.6 s."""
    TESTING = (MIN_OPSLIMIT, MIN_MEMLIMIT)
    """1 pass over 8 KiB: offers no protection. Only for tests."""

    @property
    def opslimit(self) -> int:
        return self.value[0]

    @property
    def memlimit(self) -> int:
        return self.value[1]


@dataclass(frozen=True, slots=True)
class _KdfParams:
    opslimit: int
    memlimit: int
    salt: bytes

    @classmethod
    def fresh(cls, opslimit: int, memlimit: int) -> _KdfParams:
        return cls(opslimit, memlimit, os.urandom(SALT_SIZE))

    def derive(self, password: str) -> bytes:
        if not isinstance(password, str):
            raise TypeError("the keystore password must be a str")
        secret = unicodedata.normalize("NFC", password).encode("utf-8")
        return bytes(
            argon2id.kdf(
                aead.KEY_SIZE,
                secret,
                self.salt,
                opslimit=self.opslimit,
                memlimit=self.memlimit,
            )
        )


@dataclass(frozen=True, slots=True)
class _ParsedFile:
    params: _KdfParams
    nonce: bytes
    header: bytes
    ciphertext: bytes


class Keystore:
    """An unlocked keystore: holds the derived key in memory, never the password.

    Get one from :meth:`create` or :meth:`unlock`. Every :meth:`read` re-reads the file, so
    changes made by other processes are seen.
    """

    __slots__ = ("_key", "_params", "path")

    def __init__(self, path: Path, params: _KdfParams, key: bytes) -> None:
        """Internal: use :meth:`create` or :meth:`unlock`."""
        self.path: Path = path
        self._params = params
        self._key = key

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: Path,
        password: str,
        contents: dict[str, Any],
        kdf: KdfProfile = KdfProfile.INTERACTIVE,
    ) -> Keystore:
        """Write a new keystore holding ``contents``.

        Raises :class:`KeystoreError` if a file already exists at ``path`` or cannot be
        written, and ``TypeError``/``ValueError`` if ``contents`` is not a dict that JSON can
        represent exactly (no bytes, no NaN).
        """
        path = Path(path)
        params = _KdfParams.fresh(kdf.opslimit, kdf.memlimit)
        keystore = cls(path, params, params.derive(password))
        data = keystore._seal(contents)
        with _exclusive_lock(path):
            if os.path.lexists(path):
                raise KeystoreError(f"a keystore already exists at {path}")
            _atomic_write(path, data)
        return keystore

    @classmethod
    def unlock(cls, path: Path, password: str) -> Keystore:
        """Open the keystore at ``path`` with ``password``.

        Raises :class:`KeystoreError` ("no keystore at PATH ...") when the file is missing,
        unreadable or not a keystore, :class:`KeystoreDamagedError` when it is truncated or
        altered (its checksum does not match), and :class:`WrongPasswordError` when a whole
        file does not decrypt (a wrong password; for a version-1 file, also damage).
        """
        path = Path(path)
        parsed = _parse(path, _read_file(path))
        keystore = cls(path, parsed.params, parsed.params.derive(password))
        try:
            keystore._decrypt(parsed)
        except VerificationError:
            raise WrongPasswordError(f"wrong password for keystore {path}") from None
        return keystore

    # -- reading and writing ---------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        """Re-read and decrypt the file; the current contents.

        Raises :class:`KeystoreError` when the file vanished, was re-keyed by a password change
        in another process (unlock it again), or no longer decrypts (altered or damaged).
        """
        parsed = _parse(self.path, _read_file(self.path))
        if parsed.params != self._params:
            raise KeystoreError(
                f"keystore {self.path} was re-encrypted with another password since it was"
                " unlocked: unlock it again"
            )
        try:
            return self._decrypt(parsed)
        except VerificationError:
            raise KeystoreError(
                f"keystore {self.path} cannot be decrypted: the file was altered or damaged"
            ) from None

    def update(self, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read, let ``mutate`` change the contents in place, write them back; the new contents.

        The whole read-modify-write holds an exclusive lock on ``PATH.lock``, so concurrent
        updates from several processes are serialized and none is lost. If ``mutate`` raises,
        nothing is written and the exception propagates.
        """
        with _exclusive_lock(self.path):
            contents = self.read()
            mutate(contents)
            _atomic_write(self.path, self._seal(contents))
            return contents

    def change_password(self, new_password: str, kdf: KdfProfile | None = None) -> None:
        """Re-encrypt under ``new_password`` with a new salt (and ``kdf``, if given).

        ``kdf=None`` keeps the file's current argon2id limits. Other unlocked instances of this
        keystore (in this or another process) must unlock again afterwards.
        """
        if kdf is None:
            params = _KdfParams.fresh(self._params.opslimit, self._params.memlimit)
        else:
            params = _KdfParams.fresh(kdf.opslimit, kdf.memlimit)
        new_key = params.derive(new_password)
        with _exclusive_lock(self.path):
            contents = self.read()
            rekeyed = Keystore(self.path, params, new_key)
            _atomic_write(self.path, rekeyed._seal(contents))
            self._params = params
            self._key = new_key

    # -- internals -------------------------------------------------------------------------
    def _seal(self, contents: dict[str, Any]) -> bytes:
        if not isinstance(contents, dict):
            raise TypeError("keystore contents must be a dict")
        plaintext = json.dumps(
            contents, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
        if len(plaintext) > MAX_CONTENTS_SIZE:
            raise KeystoreError(
                f"keystore {self.path}: contents of {len(plaintext)} bytes exceed the limit"
                f" of {MAX_CONTENTS_SIZE}"
            )
        nonce = aead.random_nonce()
        header = (
            Writer()
            .raw(MAGIC)
            .u8(FORMAT_VERSION)
            .u8(KDF_ARGON2ID)
            .u64(self._params.opslimit)
            .u64(self._params.memlimit)
            .fixed(self._params.salt, SALT_SIZE)
            .fixed(nonce, aead.NONCE_SIZE)
            .getvalue()
        )
        body = header + aead.encrypt(self._key, nonce, plaintext, header)
        return body + hashlib.sha256(body).digest()

    def _decrypt(self, parsed: _ParsedFile) -> dict[str, Any]:
        """The contents; VerificationError when the key does not open the file."""
        plaintext = aead.decrypt(self._key, parsed.nonce, parsed.ciphertext, parsed.header)
        try:
            contents = json.loads(plaintext.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            contents = None
        if not isinstance(contents, dict):
            raise KeystoreError(f"keystore {self.path}: the contents are not a JSON object")
        return contents

    def __repr__(self) -> str:  # never show the key
        return f"Keystore({str(self.path)!r})"


def _read_file(path: Path) -> bytes:
    """The file's bytes, at most MAX_FILE_SIZE; KeystoreError when there is no readable file."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise KeystoreError(f"no keystore at {path}: not a regular file")
            if info.st_size > MAX_FILE_SIZE:
                raise KeystoreError(
                    f"no keystore at {path}: the file is larger than {MAX_FILE_SIZE} bytes"
                )
            data = f.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        raise KeystoreError(f"no keystore at {path}: the file does not exist") from None
    except OSError as exc:
        raise KeystoreError(f"no keystore at {path}: cannot read it ({exc.strerror})") from None
    if len(data) > MAX_FILE_SIZE:
        raise KeystoreError(f"no keystore at {path}: the file is larger than {MAX_FILE_SIZE} bytes")
    return data


def _damaged(path: Path, what: str) -> KeystoreDamagedError:
    return KeystoreDamagedError(
        f"keystore {path} is damaged ({what}): nothing was changed; put back a copy from a"
        " backup, or restore this node from its recovery kit into a new home ('mindoo recovery"
        " restore')"
    )


def _parse(path: Path, data: bytes) -> _ParsedFile:
    """Split and check the clear header (and the checksum); KeystoreError for anything but a
    sane keystore, KeystoreDamagedError for a damaged one."""
    if len(data) < len(MAGIC) + 1:
        raise KeystoreError(f"no keystore at {path}: the file is empty or cut short")
    r = Reader(data, f"keystore {path}")
    try:
        if r.fixed(len(MAGIC), "magic") != MAGIC:
            raise KeystoreError(f"no keystore at {path}: not a mindoo keystore file")
        version = r.u8("version")
        if version not in READABLE_VERSIONS:
            raise KeystoreError(f"keystore {path}: unsupported format version {version}")
        if version >= 2:
            if len(data) < CHECKSUM_SIZE or (
                hashlib.sha256(data[:-CHECKSUM_SIZE]).digest() != data[-CHECKSUM_SIZE:]
            ):
                raise _damaged(path, "truncated or altered: its checksum does not match")
            data = data[:-CHECKSUM_SIZE]
            r = Reader(data, f"keystore {path}")
            r.fixed(len(MAGIC) + 1, "magic and version")
        kdf = r.u8("kdf")
        if kdf != KDF_ARGON2ID:
            raise KeystoreError(f"keystore {path}: unknown key derivation function {kdf}")
        opslimit = r.u64("opslimit")
        memlimit = r.u64("memlimit")
        salt = r.fixed(SALT_SIZE, "salt")
        nonce = r.fixed(aead.NONCE_SIZE, "nonce")
    except DecodeError:
        raise _damaged(path, "truncated") from None
    if not MIN_OPSLIMIT <= opslimit <= MAX_OPSLIMIT or not MIN_MEMLIMIT <= memlimit <= MAX_MEMLIMIT:
        raise KeystoreError(
            f"keystore {path}: refusing argon2id limits opslimit={opslimit} memlimit={memlimit}"
            f" (allowed {MIN_OPSLIMIT}-{MAX_OPSLIMIT} passes, {MIN_MEMLIMIT}-{MAX_MEMLIMIT} bytes)"
        )
    if r.remaining < aead.TAG_SIZE:
        raise _damaged(path, "truncated")
    header_end = r.pos
    return _ParsedFile(
        params=_KdfParams(opslimit, memlimit, salt),
        nonce=nonce,
        header=data[:header_end],
        ciphertext=data[header_end:],
    )


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``PATH.lock`` (created 0600, never deleted) for the block."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise KeystoreError(f"cannot lock keystore {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` durably: temp file, fsync, rename, fsync directory."""
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise KeystoreError(f"cannot write keystore {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise KeystoreError(f"cannot write keystore {path}: {exc.strerror}") from None
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
