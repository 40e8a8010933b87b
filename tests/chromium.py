"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
fd 3 carries commands in, fd 4 replies out, NUL-terminated JSON), for tests that load a page as
a person would and look at the DOM its scripts built.

``--dump-dom`` is not enough for a page that keeps an event stream open (its virtual time
never runs out while a fetch is pending, and without a budget it dumps before the scripts
fetched anything), so `page_html` opens the page, waits until a JavaScript condition holds,
and returns ``document.documentElement.outerHTML``. Blocking: run it in a thread
(``trio.to_thread.run_sync``) next to a daemon on the same loop. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)
MAX_MESSAGE = 64 * 1024 * 1024


class ChromiumError(AssertionError):
    pass


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int, deadline: float) -> None:
        self._write, self._read, self._deadline = write_fd, read_fd, deadline
        self._buffer = bytearray()
        self._next_id = 0

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ChromiumError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def _receive(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise ChromiumError("Chromium did not answer in time")
            ready, _, _ = select.select([self._read], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise ChromiumError("Chromium closed the DevTools pipe")
            self._buffer += chunk
            if len(self._buffer) > MAX_MESSAGE:
                raise ChromiumError("DevTools message too large")
        end = self._buffer.index(b"\0")
        message = json.loads(bytes(self._buffer[:end]))
        del self._buffer[: end + 1]
        assert isinstance(message, dict)
        return message


def page_html(url: str, ready: str, *, timeout: float = 30.0) -> str:
    """Open ``url`` in a fresh headless Chromium profile, wait until the JavaScript expression
    ``ready`` is true (ChromiumError after ``timeout`` seconds), and return the page's HTML."""
    if CHROMIUM is None:
        raise ChromiumError("Chromium is not installed")
    deadline = time.monotonic() + timeout
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    assert min(to_chrome_r, from_chrome_w) > 4, "fds 3 and 4 must be free to move the pipes"

    def child_fds() -> None:
        os.dup2(to_chrome_r, 3)
        os.dup2(from_chrome_w, 4)

    with tempfile.TemporaryDirectory(prefix="mindoo-chromium-") as profile:
        proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_fds,
            pass_fds=(3, 4),  # kept after child_fds put the pipes there; the rest is closed
            start_new_session=True,  # its helper processes share its group: stopped together
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        try:
            pipe = _Pipe(to_chrome_w, from_chrome_r, deadline)
            target = pipe.call("Target.createTarget", url=url)["targetId"]
            session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            expression = f"({ready}) ? document.documentElement.outerHTML : null"
            while True:
                value = pipe.call(
                    "Runtime.evaluate", session, expression=expression, returnByValue=True
                )["result"].get("value")
                if isinstance(value, str):
                    with contextlib.suppress(ChromiumError):  # it may hang up before replying
                        pipe.call("Browser.close")  # a clean exit: its helpers stop with it
                    return value
                if time.monotonic() > deadline:
                    raise ChromiumError(f"the page never became ready ({ready})")
                time.sleep(0.05)
        finally:
            os.close(to_chrome_w)
            os.close(from_chrome_r)
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Wait for Chromium to exit (it was asked to close), else stop its whole process group
    (the browser and the helpers it started, nothing else), so its profile can be removed."""
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # helpers leave a moment after the browser
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
