"""`mindoo tenant revoke` (rotation by default) and `mindoo device enroll|list|revoke`."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import init_home, mindoo


def test_revoke_rotates_by_default_and_devices_enroll_and_revoke(tmp_path: Path) -> None:
    admin, mallory, laptop, phone = (tmp_path / n for n in ("admin", "mallory", "laptop", "phone"))
    for home in (admin, mallory, laptop, phone):
        init_home(home, home.name)
    mindoo(admin, "tenant", "create", "acme").ok()
    for home in (mallory, laptop):
        identity = tmp_path / f"{home.name}.json"
        mindoo(home, "whoami", "--out", str(identity)).ok()
        invite = tmp_path / f"{home.name}.invite"
        mindoo(admin, "tenant", "invite", "acme", "--to", str(identity), "--out", str(invite))
        mindoo(home, "tenant", "join", str(invite)).ok()

    # Alice's laptop enrolls her phone, which asked for it (signed with the phone's key).
    request = tmp_path / "phone.request"
    asked = mindoo(
        phone, "device", "request", "--user", str(tmp_path / "laptop.json"), "--out", str(request)
    ).ok()
    assert "mindoo device enroll" in asked.stdout
    enrolment = tmp_path / "phone.enrolment"
    out = mindoo(
        laptop, "device", "enroll", "acme", "--to", str(request), "--out", str(enrolment)
    ).ok()
    assert "mindoo tenant join" in out.stdout
    mindoo(phone, "tenant", "join", str(enrolment)).ok()
    devices = mindoo(laptop, "device", "list", "acme", json_output=True).ok().json()
    assert [(d["name"], d["user"], d["revoked"]) for d in devices] == [("phone", "laptop", False)]

    # The phone is lost: the laptop revokes it, and only it.
    revoked = mindoo(laptop, "device", "revoke", "acme", "phone").ok()
    assert "other devices are unaffected" in revoked.stdout
    devices = mindoo(laptop, "device", "list", "acme", json_output=True).ok().json()
    assert devices[0]["revoked"] is True
    wrong = mindoo(laptop, "device", "revoke", "acme", "laptop")
    assert wrong.code == 1 and "is a member, not a device" in wrong.stderr
    missing = mindoo(laptop, "device", "revoke", "acme", "nobody")
    assert missing.code == 1 and "no member or device 'nobody'" in missing.stderr

    # The admin revokes Mallory: keys rotate by default, and the output says what that means.
    result = mindoo(admin, "tenant", "revoke", "acme", "mallory").ok()
    assert "stays readable to it" in result.stdout
    assert "Rotated default to version 2" in result.stdout
    members = mindoo(admin, "tenant", "members", "acme", json_output=True).ok().json()
    assert {m["name"]: m["revoked"] for m in members}["mallory"] is True
    keys = mindoo(admin, "key", "list", "acme", json_output=True).ok().json()
    assert any(k["name"] == "default" and k["version"] == 2 for k in keys)
    # --no-rotate says plainly that nothing was rotated.
    mindoo(admin, "tenant", "revoke", "acme", "laptop", "--no-rotate").ok()
    again = mindoo(admin, "key", "list", "acme", json_output=True).ok().json()
    assert max(k["version"] for k in again if k["name"] == "default") == 2
    # Not an admin: a clear error, nothing changed.
    refused = mindoo(laptop, "tenant", "revoke", "acme", "mallory")
    assert refused.code == 1 and "admin" in refused.stderr
