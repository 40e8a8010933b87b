"""End-to-end tests of the `mindoo` command line.

The flows run in-process through `cli.main.run` (each call with its own ``--home``, working
directory and ``MINDOO_PASSWORD``, output captured: the console script's code path without an
interpreter start-up per call); what needs a real process runs the console script as a
subprocess: the error paths of a real process, a password prompt on a terminal, two processes
on one home. The small error paths and the ``--json`` sweep go through `cli.main.main`.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    HELPERS_FILE,
    PASSWORD,
    CliResult,
    assert_one_line_error,
    bundle_raw_entries,
    cli_env,
    find_all,
    flip_byte,
    init_home,
    mindoo,
    mindoo_command,
    run_mindoo,
)

from cli.main import main
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.entry import Entry
from mindoo_p2p.node import Node

DOC_ID = re.compile(r"[0-9a-f]{32}")
ENTRY_ID = re.compile(r"[0-9a-f]{64}")

pytestmark = pytest.mark.timeout(120)


# -- in-process runner ---------------------------------------------------------------------------
InProcess = Callable[..., CliResult]


@pytest.fixture
def mindoo_inproc(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> InProcess:
    """Run `cli.main.main` with argv ``["mindoo", *args]``; returns exit code, stdout, stderr."""
    monkeypatch.delenv("MINDOO_DEBUG", raising=False)
    monkeypatch.delenv("MINDOO_HOME", raising=False)

    def run(*args: str, password: str | None = PASSWORD) -> CliResult:
        if password is None:
            monkeypatch.delenv("MINDOO_PASSWORD", raising=False)
        else:
            monkeypatch.setenv("MINDOO_PASSWORD", password)
        monkeypatch.setattr(sys, "argv", ["mindoo", *args])
        capsys.readouterr()
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:  # pragma: no cover - main always exits
            code = 0
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A node home (fast test KDF) with tenant ``acme``, database ``contacts`` and one document
    ``{"name": "Ada", "tags": ["a", "b"]}``; yields (home, document id)."""
    home = tmp_path_factory.mktemp("shared") / "node"
    with Node.init(home, PASSWORD, name="shared", kdf=KdfProfile.TESTING) as node:
        tenant = node.create_tenant("acme")
        database = tenant.create_db("contacts")
        doc_id = database.create_document({"name": "Ada", "tags": ["a", "b"]})
    yield home, doc_id


# -- full flow -----------------------------------------------------------------------------------
def test_full_flow(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    init = mindoo(home, "init", "--name", "alice").ok()
    assert "alice" in init.stdout and (home / "keystore.bin").exists()

    who = mindoo(home, "whoami", json_output=True).ok().json()
    assert set(who) == {"name", "fingerprint", "signing_key", "encryption_key", "identity_file"}
    assert who["name"] == "alice"
    assert re.fullmatch(r"[0-9a-f]{64}", who["signing_key"])
    identity_file = json.loads(Path(who["identity_file"]).read_text())
    assert who["signing_key"] in json.dumps(identity_file)

    tenant_id = mindoo(home, "tenant", "create", "acme").ok().stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", tenant_id)
    tenants = mindoo(home, "tenant", "list", json_output=True).ok().json()
    assert tenants == [{"id": tenant_id, "name": "acme", "admin": True, "databases": []}]

    assert mindoo(home, "db", "create", "acme", "contacts").ok().stdout == "contacts\n"
    # A tenant can be named by a prefix of its id, too.
    assert mindoo(home, "db", "list", tenant_id[:10], json_output=True).ok().json() == ["contacts"]
    stats = mindoo(home, "db", "stats", "acme", "contacts", json_output=True).ok().json()
    assert stats["entries"] == 0 and stats["documents"] == 0

    content = {"name": "Ada", "tags": ["a", "b"], "age": 36, "vip": False, "note": None}
    created = mindoo(home, "doc", "create", "acme", "contacts", json.dumps(content)).ok()
    assert DOC_ID.fullmatch(created.stdout[:-1]) and created.stdout.endswith("\n")
    doc_id = created.stdout[:-1]
    empty = mindoo(home, "doc", "create", "acme", "contacts").ok()
    assert DOC_ID.fullmatch(empty.stdout[:-1]) and empty.stdout.endswith("\n")
    empty_id = empty.stdout[:-1]
    assert empty_id != doc_id

    assert mindoo(home, "doc", "get", "acme", "contacts", doc_id).ok().json() == content
    assert mindoo(home, "doc", "get", "acme", "contacts", empty_id).ok().json() == {}

    edits = [
        ("address.city", '"Paris"'),  # a missing map on the way is created
        ("tags.1", '"z"'),  # replace a list item
        ("tags.2", '{"x": 1}'),  # index == length appends
        ("tags.2.x", "5"),  # into a map inside a list
    ]
    for path, value in edits:
        assert mindoo(home, "doc", "set", "acme", "contacts", doc_id, path, value).ok().stdout
    expected = {**content, "address": {"city": "Paris"}, "tags": ["a", "z", {"x": 5}]}
    assert mindoo(home, "doc", "get", "acme", "contacts", doc_id).ok().json() == expected

    listed = mindoo(home, "doc", "list", "acme", "contacts", json_output=True).ok().json()
    assert listed == [doc_id, empty_id]

    history = mindoo(home, "doc", "history", "acme", "contacts", doc_id, json_output=True)
    items = history.ok().json()
    assert [i["kind"] for i in items] == ["change"] * 5
    assert {i["author_name"] for i in items} == {"alice"}
    assert all(ENTRY_ID.fullmatch(i["entry_id"]) for i in items)
    assert items[0]["deps"] == [] and all(i["deps"] for i in items[1:])
    times = [i["timestamp_ms"] for i in items]
    assert times == sorted(times) and times[0] < times[1] and times[2] < times[3]

    # Time travel: by milliseconds, and by ISO-8601 time.
    at_create = mindoo(home, "doc", "get", "acme", "contacts", doc_id, "--at", str(times[0]))
    assert at_create.ok().json() == content
    iso = datetime.fromtimestamp(times[2] / 1000, UTC).isoformat(timespec="milliseconds")
    at_second_edit = mindoo(home, "doc", "get", "acme", "contacts", doc_id, "--at", iso)
    assert at_second_edit.ok().json() == {
        **content,
        "address": {"city": "Paris"},
        "tags": ["a", "z"],
    }

    assert mindoo(home, "doc", "delete", "acme", "contacts", empty_id).ok().stdout
    gone = mindoo(home, "doc", "get", "acme", "contacts", empty_id)
    assert_one_line_error(gone, 1, "deleted", empty_id)
    assert gone.stdout == ""
    listed = mindoo(home, "doc", "list", "acme", "contacts", json_output=True).ok().json()
    assert listed == [doc_id]

    # The change feed, whole, then paged with the cursor the text output prints.
    feed = mindoo(home, "changes", "acme", "contacts", json_output=True).ok().json()
    changes = feed["changes"]
    assert [c["cursor"] for c in changes] == list(range(1, 8))  # 2 creates, 4 sets, 1 delete
    assert [c["kind"] for c in changes].count("delete") == 1
    assert feed["next_cursor"] == 7
    paged: list[tuple[int, str]] = []
    cursor = 0
    while True:
        page = mindoo(home, "changes", "acme", "contacts", "--since", str(cursor), "--limit", "3")
        lines = page.ok().stdout.splitlines()
        match = re.fullmatch(r"next cursor: (\d+)", lines[-1])
        assert match, lines
        rows = [line.split() for line in lines[:-1]]
        paged.extend((int(row[0]), row[2]) for row in rows)
        cursor = int(match.group(1))
        if len(rows) < 3:
            break
    assert paged == [(c["cursor"], c["document_id"]) for c in changes]
    assert cursor == 7

    status = mindoo(home, "status", json_output=True).ok().json()
    assert status["identity"]["name"] == "alice"
    assert status["entries"] == 10  # 7 document entries + the tenant log's first 3 records
    (tenant,) = status["tenants"]
    assert tenant["id"] == tenant_id and tenant["admin"] is True and tenant["members"] == 1
    (database,) = tenant["databases"]
    assert database["name"] == "contacts" and database["entries"] == 7
    text = mindoo(home, "status").ok().stdout
    assert "acme" in text and "contacts" in text and "alice" in text


# -- invite, join, export, import ----------------------------------------------------------------
def test_invite_join_export_import_between_two_homes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    init_home(a, "alice")
    init_home(b, "bob")
    mindoo(a, "tenant", "create", "acme").ok()
    mindoo(a, "db", "create", "acme", "notes").ok()
    doc_id = mindoo(a, "doc", "create", "acme", "notes", '{"title": "from A"}').ok().stdout
    doc_id = doc_id.strip()

    identity = tmp_path / "bob.identity.json"
    mindoo(b, "whoami", "--out", str(identity)).ok()
    invite = tmp_path / "bob.invite"
    mindoo(a, "tenant", "invite", "acme", "--to", str(identity), "--out", str(invite)).ok()
    joined = mindoo(b, "tenant", "join", str(invite), json_output=True).ok().json()
    assert joined["name"] == "acme"
    members = mindoo(b, "tenant", "members", "acme", json_output=True).ok().json()
    assert sorted((m["name"], m["role"]) for m in members) == [
        ("alice", "admin"),
        ("bob", "member"),
    ]
    # bob's key in acme is the one of the identity file (made for this invite), not his node's
    in_acme = mindoo(b, "whoami", "--tenant", "acme", json_output=True).ok().json()
    sent = json.loads(identity.read_text())
    assert in_acme["signing_key"] == sent["signing_key"]
    node_identity = mindoo(b, "whoami", json_output=True).ok().json()
    assert in_acme["signing_key"] != node_identity["signing_key"]

    bundle = tmp_path / "a.bundle"
    exported = mindoo(a, "export", "acme", "--out", str(bundle), json_output=True).ok().json()
    assert exported["entries"] == 5  # 2 members, 2 key announcements, 1 document change
    first = mindoo(b, "import", str(bundle), json_output=True).ok().json()
    assert first == {"added": 1, "duplicates": 4, "rejected": []}  # the invite carried the log
    assert mindoo(b, "doc", "get", "acme", "notes", doc_id).ok().json() == {"title": "from A"}
    again = mindoo(b, "import", str(bundle)).ok()
    assert again.stdout.strip() == "imported 0 entries, 5 already present"

    # B (a member) edits; A imports B's export and reads the edit.
    mindoo(b, "doc", "set", "acme", "notes", doc_id, "by", '"bob"').ok()
    back = tmp_path / "b.bundle"
    mindoo(b, "export", "acme", "notes", "--out", str(back)).ok()
    assert mindoo(a, "import", str(back), json_output=True).ok().json()["added"] == 1
    edited = mindoo(a, "doc", "get", "acme", "notes", doc_id).ok().json()
    assert edited == {"title": "from A", "by": "bob"}

    # A bundle with new content, damaged two ways: B refuses it whole and stays unchanged.
    new_id = mindoo(a, "doc", "create", "acme", "notes", '{"title": "second"}').ok().stdout
    new_id = new_id.strip()
    fresh = tmp_path / "fresh.bundle"
    mindoo(a, "export", "acme", "notes", "--out", str(fresh)).ok()
    before_list = mindoo(b, "doc", "list", "acme", "notes", json_output=True).ok().json()
    before_stats = mindoo(b, "db", "stats", "acme", "notes", json_output=True).ok().json()
    assert new_id not in before_list

    data = fresh.read_bytes()
    truncated = tmp_path / "truncated.bundle"
    truncated.write_bytes(data[: len(data) - 20])
    assert_one_line_error(mindoo(b, "import", str(truncated)), 1, "bundle", "trunc")

    flipped = tmp_path / "flipped.bundle"
    flipped.write_bytes(data)
    last = Entry.decode(bundle_raw_entries(fresh)[-1])  # the new document's entry
    (offset,) = find_all(data, last.ciphertext)
    flip_byte(flipped, offset + len(last.ciphertext) // 2)
    damaged = mindoo(b, "import", str(flipped))
    assert_one_line_error(damaged, 1, "damaged", "nothing was imported")

    assert mindoo(b, "doc", "list", "acme", "notes", json_output=True).ok().json() == (before_list)
    after_stats = mindoo(b, "db", "stats", "acme", "notes", json_output=True).ok().json()
    assert after_stats == before_stats

    # The intact bundle still imports, and B then reads the new document.
    assert mindoo(b, "import", str(fresh), json_output=True).ok().json()["added"] == 1
    assert mindoo(b, "doc", "get", "acme", "notes", new_id).ok().json() == {"title": "second"}


# -- fsck ----------------------------------------------------------------------------------------
def test_fsck_names_an_entry_with_a_flipped_byte_in_the_store(tmp_path: Path) -> None:
    home = tmp_path / "node"
    init_home(home)
    mindoo(home, "tenant", "create", "acme").ok()
    mindoo(home, "db", "create", "acme", "contacts").ok()
    mindoo(home, "doc", "create", "acme", "contacts", '{"secret": "x"}').ok()
    mindoo(home, "doc", "create", "acme", "contacts", '{"other": "y"}').ok()
    clean = mindoo(home, "fsck").ok()
    assert clean.stdout.strip() == "checked 5 entries: ok"

    bundle = tmp_path / "entries.bundle"
    mindoo(home, "export", "acme", "contacts", "--out", str(bundle)).ok()
    target = Entry.decode(bundle_raw_entries(bundle)[-1])
    store_file = home / "store" / "data.mdb"
    offsets = find_all(store_file.read_bytes(), target.ciphertext)
    assert offsets, "the entry's ciphertext should be stored verbatim in data.mdb"
    for offset in offsets:  # LMDB may keep stale copies in free pages: damage every copy
        flip_byte(store_file, offset + len(target.ciphertext) // 2)

    bad = mindoo(home, "fsck")
    assert_one_line_error(bad, 1, "fsck found 1 problem")
    assert f"BAD {target.id.hex()}" in bad.stdout
    report = mindoo(home, "fsck", json_output=True)
    assert report.code == 1
    data = report.json()
    assert data["ok"] is False
    assert [p["entry_id"] for p in data["problems"]] == [target.id.hex()]


# -- two processes on one home -------------------------------------------------------------------
@pytest.mark.slow
def test_a_reader_sees_what_another_process_writes(tmp_path: Path) -> None:
    home = tmp_path / "node"
    init_home(home)  # set-up in-process; the writer and the readers are processes
    mindoo(home, "tenant", "create", "acme").ok()
    mindoo(home, "db", "create", "acme", "contacts").ok()

    writer = subprocess.Popen(
        [sys.executable, str(HELPERS_FILE), "write", str(home), "acme", "contacts", "5"],
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdin is not None and writer.stdout is not None
    try:
        first = [writer.stdout.readline().strip() for _ in range(5)]
        assert writer.stdout.readline() == "paused\n", writer.stderr
        assert all(DOC_ID.fullmatch(i) for i in first)

        # The writer holds the store open and is idle: the reader sees exactly its documents,
        # and a third process can write to the same home meanwhile.
        visible = run_mindoo(home, "doc", "list", "acme", "contacts", json_output=True)
        assert visible.ok().json() == first
        own = run_mindoo(home, "doc", "create", "acme", "contacts", '{"by": "cli"}').ok().stdout
        feed = run_mindoo(home, "changes", "acme", "contacts", json_output=True).ok().json()
        assert [c["document_id"] for c in feed["changes"]] == [*first, own.strip()]

        # While the writer writes continuously, every read is a growing prefix of the final list.
        writer.stdin.write("go\n")
        writer.stdin.flush()
        seen: list[list[str]] = []
        for _ in range(3):
            seen.append(
                run_mindoo(home, "doc", "list", "acme", "contacts", json_output=True).ok().json()
            )
        changes = run_mindoo(home, "changes", "acme", "contacts", "--since", "5", json_output=True)
        tail = [c["document_id"] for c in changes.ok().json()["changes"]]
        writer.stdin.write("stop\n")
        writer.stdin.flush()
        out, err = writer.communicate(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[-1] == "done"
    second = lines[:-1]
    assert len(second) >= 2
    final = run_mindoo(home, "doc", "list", "acme", "contacts", json_output=True).ok().json()
    assert sorted(final) == sorted([*first, own.strip(), *second])
    for earlier, later in zip([first, *seen], [*seen, final], strict=True):
        assert later[: len(earlier)] == earlier
    assert len(seen[-1]) > len(first) + 1, "reads during the writes saw none of them"
    assert tail[0] == own.strip() and set(tail) <= set(final)


# -- password sources ----------------------------------------------------------------------------
def test_password_prompt_on_a_terminal(tmp_path: Path) -> None:
    """Without MINDOO_PASSWORD or --password-file, init asks twice on the terminal, hidden."""
    home = tmp_path / "tty"
    controller, terminal = pty.openpty()

    # A new session whose controlling terminal is the pty (getpass reads /dev/tty), set up by a
    # tiny exec wrapper rather than preexec_fn (not safe once the test process has threads).
    command = [*mindoo_command(), "--home", str(home), "init", "--name", "tty"]
    wrapper = (
        "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0);"
        " os.execv(sys.argv[1], sys.argv[1:])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", wrapper, *command],
        env=cli_env(password=None),
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    shown = b""

    def read_until(token: bytes) -> None:
        nonlocal shown
        deadline = time.monotonic() + 20
        while token not in shown and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    shown += os.read(controller, 1024)
                except OSError:
                    break
        assert token in shown, shown

    try:
        read_until(b"Node password")
        os.write(controller, b"typed secret\n")
        read_until(b"Repeat")
        os.write(controller, b"typed secret\n")
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    assert proc.returncode == 0, shown
    assert b"initialised node" in out
    assert b"typed secret" not in shown  # not echoed
    assert run_mindoo(home, "whoami", password="typed secret").ok().stdout.startswith("name:")


def test_password_file(tmp_path: Path, mindoo_inproc: InProcess) -> None:
    home = tmp_path / "node"
    secret = tmp_path / "password.txt"
    secret.write_text("file secret\n")
    assert mindoo_inproc("--home", str(home), "--password-file", str(secret), "init").code == 0
    who = mindoo_inproc(
        "--home", str(home), "--password-file", str(secret), "whoami", password=None
    )
    assert who.code == 0 and who.stdout.startswith("name:")
    wrong = mindoo_inproc("--home", str(home), "whoami", password="file secret\n")
    assert_one_line_error(wrong, 1, "wrong password")


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["status"], 1, ["no node", "mindoo init"]),
        (["frobnicate"], 2, ["no such command"]),
        (["doc", "create", "acme", "contacts", "{not json"], 2, ["not valid JSON", "JSON"]),
    ],
)
def test_errors_in_a_real_process(
    tmp_path: Path, shared_home: tuple[Path, str], args: list[str], code: int, fragments: list[str]
) -> None:
    home = shared_home[0] if args[0] != "status" else tmp_path / "empty"
    result = run_mindoo(home, *args)
    assert_one_line_error(result, code, *fragments)
    assert result.stdout == ""


def test_wrong_password_in_a_real_process(shared_home: tuple[Path, str]) -> None:
    result = run_mindoo(shared_home[0], "status", password="not the password")
    assert_one_line_error(result, 1, "wrong password")
    assert result.stdout == ""


ERROR_CASES: list[tuple[list[str], int, list[str]]] = [
    # (arguments after --home HOME; DOC stands for the shared document's id)
    (["tenant", "members", "nosuch"], 1, ["no tenant 'nosuch'"]),
    (["db", "list", "nosuch"], 1, ["no tenant"]),
    (["db", "create", "acme", "Bad Name"], 1, ["invalid database name"]),
    (["doc", "list", "acme", "../etc"], 1, ["invalid database name"]),
    (["db", "stats", "acme", "nodb"], 1, ["no database 'nodb'"]),
    (["doc", "get", "acme", "contacts", "xyz"], 1, ["invalid document id"]),
    (["doc", "get", "acme", "contacts", "0" * 32], 1, ["no document"]),
    (["doc", "history", "acme", "contacts", "g" * 32], 1, ["invalid document id"]),
    (["doc", "create", "acme", "contacts", "[1, 2]"], 2, ["must be a JSON object"]),
    (["doc", "create", "acme", "contacts", '{"a": NaN}'], 2, ["NaN"]),
    (["doc", "create", "acme", "contacts", '{"": 1}'], 2, ["keys must not be empty"]),
    (["doc", "create", "acme", "contacts", "--key", "nokey"], 1, ["no key"]),
    (["doc", "set", "acme", "contacts", "DOC", "a", "{bad"], 2, ["JSON_VALUE"]),
    (["doc", "set", "acme", "contacts", "DOC", "a", "1e400"], 2, ["too large"]),
    (["doc", "set", "acme", "contacts", "DOC", "a", str(2**64)], 2, ["64-bit"]),
    (["doc", "set", "acme", "contacts", "DOC", "a", "[" * 5000 + "]" * 5000], 2, ["nested"]),
    (["doc", "set", "acme", "contacts", "DOC", "a..b", "1"], 2, ["PATH", "empty part"]),
    (["doc", "set", "acme", "contacts", "DOC", "tags.9", "1"], 2, ["PATH", "out of range"]),
    (["doc", "set", "acme", "contacts", "DOC", "name.x", "1"], 2, ["PATH", "cannot descend"]),
    (["doc", "set", "acme", "contacts", "DOC", "tags.x", "1"], 2, ["PATH", "must be a number"]),
    (["doc", "get", "acme", "contacts", "DOC", "--at", "yesterday"], 2, ["--at"]),
    (["doc", "get", "acme", "contacts", "DOC", "--at", "²"], 2, ["--at"]),
    (["doc", "get", "acme", "contacts", "DOC", "--at", "1"], 1, ["did not exist yet"]),
    (["changes", "acme", "contacts", "--since", "-1"], 2, ["--since"]),
    (["tenant", "invite", "acme", "--out", "x"], 2, ["missing option", "--to"]),
    (["export", "acme", "--since", "3", "--out", "x"], 2, ["--since needs DB"]),
    (["import", "/nonexistent/bundle"], 2, ["does not exist"]),
    (["import", "/etc/hostname"], 1, ["not a mindoo bundle"]),
    (["tenant", "join", "/etc/hostname"], 1, ["invite"]),
    (["tenant", "create", "acme"], 1, ["exists already"]),
    (["init"], 1, ["already exists"]),
    (["doc", "frobnicate"], 2, ["no such command"]),
    (["status", "--verbose"], 2, ["no such option"]),
    ([], 2, ["missing command"]),
]


@pytest.mark.parametrize(("args", "code", "fragments"), ERROR_CASES)
def test_error_is_one_line_with_exit_code(
    shared_home: tuple[Path, str],
    mindoo_inproc: InProcess,
    args: list[str],
    code: int,
    fragments: list[str],
) -> None:
    home, doc_id = shared_home
    argv = [doc_id if a == "DOC" else a for a in args]
    result = mindoo_inproc("--home", str(home), *argv)
    assert_one_line_error(result, code, *fragments)
    assert result.stdout == ""


def test_errors_change_nothing(shared_home: tuple[Path, str], mindoo_inproc: InProcess) -> None:
    home, doc_id = shared_home
    got = mindoo_inproc("--home", str(home), "doc", "get", "acme", "contacts", doc_id)
    assert got.code == 0 and json.loads(got.stdout) == {"name": "Ada", "tags": ["a", "b"]}
    assert mindoo_inproc("--home", str(home), "fsck").code == 0


def test_missing_password_and_bad_identity_file(
    tmp_path: Path, shared_home: tuple[Path, str], mindoo_inproc: InProcess
) -> None:
    home = str(shared_home[0])
    no_password = subprocess.run(
        [*mindoo_command(), "--home", home, "status"],
        env=cli_env(password=None),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    result = CliResult(no_password.returncode, no_password.stdout, no_password.stderr)
    assert_one_line_error(result, 1, "MINDOO_PASSWORD", "--password-file")
    missing = mindoo_inproc("--home", home, "--password-file", str(tmp_path / "nope"), "status")
    assert_one_line_error(missing, 1, "cannot read password file")
    bogus = tmp_path / "identity.json"
    bogus.write_text('{"name": "x"}')
    invite = mindoo_inproc(
        "--home", home, "tenant", "invite", "acme", "--to", str(bogus), "--out", "x"
    )
    assert_one_line_error(invite, 1, "identity")
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (64 * 1024))
    too_big = mindoo_inproc(
        "--home", home, "tenant", "invite", "acme", "--to", str(huge), "--out", "x"
    )
    assert_one_line_error(too_big, 1, "over the limit")


# -- --json everywhere ---------------------------------------------------------------------------
def test_json_output_parses_for_every_command(tmp_path: Path, mindoo_inproc: InProcess) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")

    def j(home: str, *args: str, code: int = 0) -> Any:
        result = mindoo_inproc("--home", home, "--json", *args)
        assert result.code == code, result
        return json.loads(result.stdout)

    assert j(a, "init", "--name", "alice")["name"] == "alice"
    assert j(b, "init", "--name", "bob")["name"] == "bob"
    assert j(a, "whoami")["name"] == "alice"
    tenant = j(a, "tenant", "create", "acme")
    assert tenant["name"] == "acme" and re.fullmatch(r"[0-9a-f]{32}", tenant["id"])
    assert j(a, "tenant", "list")[0]["id"] == tenant["id"]
    assert j(a, "db", "create", "acme", "contacts") == {"tenant": tenant["id"], "name": "contacts"}
    assert j(a, "db", "list", "acme") == ["contacts"]
    doc_id = j(a, "doc", "create", "acme", "contacts", '{"n": 1}')["id"]
    assert j(a, "doc", "set", "acme", "contacts", doc_id, "n", "2") == {"id": doc_id, "path": "n"}
    assert j(a, "doc", "get", "acme", "contacts", doc_id) == {"n": 2}
    assert j(a, "doc", "list", "acme", "contacts") == [doc_id]
    assert len(j(a, "doc", "history", "acme", "contacts", doc_id)) == 2
    assert j(a, "changes", "acme", "contacts", "--since", "1")["next_cursor"] == 2
    assert j(a, "db", "stats", "acme", "contacts")["entries"] == 2
    assert j(a, "status")["tenants"][0]["databases"][0]["documents"] == 1
    fsck = j(a, "fsck")
    assert fsck["index"]["present"] is False  # no query yet: no query index
    assert fsck == {
        "entries_checked": 5,  # 3 tenant-log records at creation, 2 document entries
        "ok": True,
        "problems": [],
        "notices": [],
        "index": fsck["index"],
    }

    identity = str(tmp_path / "b.id")
    assert j(b, "whoami", "--out", identity)["identity_file"] == identity
    invite = str(tmp_path / "b.invite")
    assert j(a, "tenant", "invite", "acme", "--to", identity, "--out", invite)["invite"] == invite
    assert j(b, "tenant", "join", invite)["id"] == tenant["id"]
    assert len(j(a, "tenant", "members", "acme")) == 2
    bundle = str(tmp_path / "a.bundle")
    assert j(a, "export", "acme", "contacts", "--out", bundle, "--since", "1")["entries"] == 5
    assert j(b, "import", bundle) == {"added": 1, "duplicates": 4, "rejected": []}
    assert j(a, "doc", "delete", "acme", "contacts", doc_id) == {"id": doc_id, "deleted": True}


def test_import_of_entries_the_membership_refuses(
    tmp_path: Path, shared_home: tuple[Path, str], mindoo_inproc: InProcess
) -> None:
    """A sound bundle of a tenant this node is not part of: every entry is rejected, the report
    names them on stdout, stderr has one error line, exit 1, and nothing is stored."""
    with Node.init(tmp_path / "other", PASSWORD, kdf=KdfProfile.TESTING) as other:
        other.create_tenant("elsewhere").create_db("notes").create_document({"x": 1})
    bundle = tmp_path / "other.bundle"
    exported = mindoo_inproc(
        "--home", str(tmp_path / "other"), "export", "elsewhere", "--out", str(bundle)
    )
    assert exported.code == 0 and "exported 4 entries" in exported.stdout
    home = str(shared_home[0])
    before = mindoo_inproc("--home", home, "--json", "status")
    result = mindoo_inproc("--home", home, "--json", "import", str(bundle))
    assert_one_line_error(result, 1, "4 entries of the bundle were rejected")
    report = json.loads(result.stdout)
    assert report["added"] == 0 and len(report["rejected"]) == 4
    assert all("unknown tenant" in r["reason"] for r in report["rejected"])
    assert mindoo_inproc("--home", home, "--json", "status").stdout == before.stdout
