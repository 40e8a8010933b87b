"""Our Negentropy engine against an independent implementation: nostr-tools' (node.js).

nostr-tools only plays the initiator (it answers an IdList with a Skip), so it drives sessions
against our ReconResponder over a pipe: tests/interop/negentropy_client.mjs writes its messages
as hex lines, we answer each with one hex line. Its have/need must equal a brute-force set
difference. Our own initiator runs against our responder on the same shapes. The test installs
the pinned nostr-tools (tests/interop/package.json and package-lock.json) when
tests/interop/node_modules is missing, and skips only when node or npm is not installed.
"""

from __future__ import annotations

import fcntl
import json
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from mindoo_p2p.recon import (
    ReconInitiator,
    ReconItem,
    ReconResponder,
    VectorStorage,
)

INTEROP_DIR = Path(__file__).parent / "interop"
HARNESS = INTEROP_DIR / "negentropy_client.mjs"
MAX_LINE = 8 * 1024 * 1024
SESSION_SECONDS = 60
MAX_ROUNDS = 2000
NOSTR_TIMESTAMP_LIMIT = 2**31 - 1
"""Exclusive: nostr-tools keeps varints in 32-bit signed integers and a bound's timestamp travels
as timestamp + 1, so 2**31 - 1 itself already breaks it."""


@dataclass(frozen=True)
class Shape:
    """Two sets: ours (the responder's) and theirs (the initiator's)."""

    name: str
    responder: list[ReconItem]
    initiator: list[ReconItem]


def _items(rnd: random.Random, count: int, start: int, span: int) -> list[ReconItem]:
    return [ReconItem(start + rnd.randrange(span), rnd.randbytes(32)) for _ in range(count)]


def _shapes() -> list[Shape]:
    rnd = random.Random(20240601)
    base = 1_700_000_000
    common = _items(rnd, 3000, base, 10_000_000)
    newest = base + 10_000_000
    recent_a = _items(rnd, 40, newest, 1000)
    recent_b = _items(rnd, 60, newest, 1000)
    scattered_a = _items(rnd, 150, base, 10_000_000)
    scattered_b = _items(rnd, 120, base, 10_000_000)
    same_time = [ReconItem(base + 5, rnd.randbytes(32)) for _ in range(400)]
    return [
        Shape("both empty", [], []),
        Shape("initiator empty", common[:500], []),
        Shape("responder empty", [], common[:500]),
        Shape("identical", common, list(common)),
        Shape("recent gaps", common + recent_b, common + recent_a),
        Shape("scattered gaps", common + scattered_b, common + scattered_a),
        Shape("disjoint", common[:1500], common[1500:]),
        Shape("equal timestamps", same_time[:300] + common[:200], same_time[100:] + common[:200]),
        Shape("initiator far behind", common, common[:100]),
    ]


SHAPES = _shapes()


def _brute_force(shape: Shape) -> tuple[set[bytes], set[bytes]]:
    ours = {item.id for item in shape.initiator}
    theirs = {item.id for item in shape.responder}
    return ours - theirs, theirs - ours


def _install_nostr_tools() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the interop test")
    installed = INTEROP_DIR / "node_modules" / "nostr-tools" / "lib" / "esm" / "nip77.js"
    # One install at a time: pytest-xdist workers reach this fixture at once on a fresh clone,
    # and a worker must not see the module while another is still extracting it.
    with (INTEROP_DIR / ".npm-install.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed.exists():
            return
        subprocess.run(
            ["npm", "install", "--prefix", str(INTEROP_DIR), "--no-audit", "--no-fund"],
            check=True,
            timeout=240,
            capture_output=True,
        )


class _LineReader:
    """Newline-terminated lines from a trio receive stream, each at most MAX_LINE bytes."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def readline(self) -> str:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise AssertionError("line too long from the node harness")
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise AssertionError("the node harness ended without a result")
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line.decode("ascii")


@dataclass
class _NodeResult:
    have: list[bytes]
    need: list[bytes]
    rounds: int
    largest_message: int


async def _run_nostr_initiator(
    shape: Shape, responder: ReconResponder, tmp_path: Path, frame_size_limit: int
) -> _NodeResult:
    items_file = tmp_path / "items.txt"
    items_file.write_text(
        "".join(f"{item.timestamp} {item.id.hex()}\n" for item in shape.initiator)
    )
    command = ["node", str(HARNESS), str(items_file), str(frame_size_limit)]
    rounds = 0
    largest = 0
    with trio.fail_after(SESSION_SECONDS):
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert process.stdin is not None and process.stdout is not None
            lines = _LineReader(process.stdout)
            while True:
                kind, _, payload = (await lines.readline()).partition(" ")
                if kind == "DONE":
                    result = json.loads(payload)
                    break
                assert kind == "MSG", kind
                message = bytes.fromhex(payload)
                largest = max(largest, len(message))
                reply = responder.reconcile(message)
                assert len(reply) <= frame_size_limit
                largest = max(largest, len(reply))
                rounds += 1
                assert rounds <= MAX_ROUNDS
                await process.stdin.send_all(reply.hex().encode("ascii") + b"\n")
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    return _NodeResult(
        [bytes.fromhex(each) for each in result["have"]],
        [bytes.fromhex(each) for each in result["need"]],
        rounds,
        largest,
    )


def _run_python_initiator(
    shape: Shape, responder: ReconResponder, frame_size_limit: int
) -> tuple[list[bytes], list[bytes], int]:
    initiator = ReconInitiator(VectorStorage(shape.initiator), frame_size_limit)
    have: list[bytes] = []
    need: list[bytes] = []
    message: bytes | None = initiator.initiate()
    while message is not None:
        assert len(message) <= frame_size_limit
        reply = responder.reconcile(message)
        assert len(reply) <= frame_size_limit
        message, new_have, new_need = initiator.reconcile(reply)
        have += new_have
        need += new_need
        assert initiator.rounds <= MAX_ROUNDS
    return have, need, initiator.rounds


def _check(
    have: list[bytes],
    need: list[bytes],
    expected: tuple[set[bytes], set[bytes]],
    *,
    unique: bool = True,
) -> None:
    if unique:
        assert len(have) == len(set(have)) and len(need) == len(set(need))
    assert (set(have), set(need)) == expected


@pytest.fixture(scope="module")
def nostr_tools() -> None:
    _install_nostr_tools()


@pytest.mark.parametrize("frame_size_limit", [60_000, 4096])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.name)
async def test_nostr_tools_initiator_against_our_responder(
    nostr_tools: None, shape: Shape, frame_size_limit: int, tmp_path: Path
) -> None:
    assert all(item.timestamp < NOSTR_TIMESTAMP_LIMIT for item in shape.initiator)
    responder = ReconResponder(VectorStorage(shape.responder), frame_size_limit)
    expected = _brute_force(shape)
    result = await _run_nostr_initiator(shape, responder, tmp_path, frame_size_limit)
    # When its frame is full, nostr-tools (like the C++ reference) closes its message with a
    # fingerprint that reopens ranges it had already settled, so it may report an id twice.
    _check(result.have, result.need, expected, unique=False)
    assert result.largest_message <= frame_size_limit
    have, need, rounds = _run_python_initiator(shape, responder, frame_size_limit)
    _check(have, need, expected)
    if frame_size_limit == 60_000 and shape.name != "initiator far behind":
        assert result.rounds <= 4 and rounds <= 4


async def test_nostr_tools_in_sync_is_one_round_trip(nostr_tools: None, tmp_path: Path) -> None:
    shape = next(shape for shape in SHAPES if shape.name == "identical")
    responder = ReconResponder(VectorStorage(shape.responder))
    result = await _run_nostr_initiator(shape, responder, tmp_path, 60_000)
    assert (result.rounds, result.have, result.need) == (1, [], [])
