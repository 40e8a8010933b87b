"""Crash safety: SIGKILL a writing process at random moments, then check the store.

After every kill: every id the worker acknowledged (printed after `append` returned) is stored,
every batch it started is there entirely or not at all, and `fsck` finds nothing wrong.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mindoo_p2p
from mindoo_p2p.store import EntryStore

WORKER = Path(__file__).with_name("store_crash_worker.py")
KILLS = 20
NEVER = b"\n\n"  # a marker the worker never prints: read for the whole timeout


def worker_env() -> dict[str, str]:
    """The environment for a worker that imports the same mindoo_p2p as this test."""
    root = str(Path(mindoo_p2p.__file__).parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def start_worker(store: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(store), *args],
        stdout=subprocess.PIPE,
        bufsize=0,
        env=worker_env(),
    )


def read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    """Read the worker's stdout until ``marker`` appears (or EOF, or ``timeout`` seconds)."""
    assert proc.stdout is not None
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if not ready:
            break
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        data += chunk
    return data


def parse(output: bytes) -> tuple[list[str], list[list[str]]]:
    """(acknowledged ids, attempted batches) from complete lines only."""
    lines = output.decode("ascii", errors="replace").split("\n")[:-1]
    acked = [line for line in lines if len(line) == 64]
    tries = [line[4:].split(",") for line in lines if line.startswith("try ")]
    return acked, tries


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_never_loses_an_acknowledged_entry_or_splits_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rng = random.Random()
    acked_total: set[str] = set()
    batches: list[list[str]] = []
    kills = 0
    acked_before_kill = 0
    while kills < KILLS:
        proc = start_worker(path, "--batch-size", "10")
        if rng.random() < 0.2:
            # Anywhere: start-up, opening the store, the first batches.
            output = read_until(proc, NEVER, timeout=rng.uniform(0.0, 0.15))
        else:
            output = read_until(proc, b"ready\n", timeout=20.0)
            assert b"ready\n" in output, "worker did not start"
            # Keep draining stdout meanwhile, so the worker never blocks on a full pipe.
            output += read_until(proc, NEVER, timeout=rng.uniform(0.0, 0.06))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        output += proc.stdout.read()
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, "the worker ended before it was killed"
        kills += 1

        acked, tries = parse(output)
        acked_before_kill += len(acked)
        acked_total.update(acked)
        batches.extend(tries)
        if not path.exists():
            continue  # killed before it created the store
        with EntryStore(path) as store:
            stored = {entry.id.hex() for entry in store.iter_entries()}
            assert acked_total <= stored, "an acknowledged entry was lost"
            for batch in batches:
                present = sum(1 for entry_id in batch if entry_id in stored)
                assert present in (0, len(batch)), "a batch was stored in part"
            landed = {entry_id for batch in batches for entry_id in batch if entry_id in stored}
            assert stored == landed, "the store holds ids no worker attempted"
            assert store.count() == len(stored)
            report = store.fsck()
            assert report.ok, report.problems[:5]
            assert report.entries_checked == len(stored)

    assert kills == KILLS
    assert acked_before_kill > 0, "no kill came after an acknowledged write"
