"""The source flow end to end on a real server: codename, submission, logout, return, limits."""

from __future__ import annotations

import hashlib
import json
from html import unescape

from conftest import SourceClient

from dropbox.intake import intake_limits
from keys.age import X25519Identity, encrypt
from keys.codename import derive_source_keys
from keys.manifest import decode_intake_manifest


async def test_full_flow_joins_the_same_source(running_server):
    photo = bytes(range(256)) * 1000  # 256 KB: several age chunks
    async with running_server() as server, SourceClient(server.url) as source:
        status, landing = await source.get("/")
        assert status == 200
        assert 'id="start"' in landing
        assert server.state.keyring.fingerprint() in landing

        codename = await source.start()
        status, page = await source.get("/submit")
        assert 'id="limits"' in page
        assert 'id="submit-form"' in page

        status, page = await source.submit(
            "هغه ورځ they came at night", [("photo.jpg", photo, "image/jpeg"),
                                          ("notes.txt", b"second file", "text/plain")]
        )
        assert status == 200, page
        assert 'id="submitted"' in page

        await source.logout()
        status, page = await source.get("/submit")  # logged out: back to the login form
        assert 'id="login-form"' in page

        status, page = await source.login(codename)
        assert status == 200, page
        assert 'id="submit-form"' in page
        status, page = await source.submit("", [("later.pdf", b"%PDF-1.4 more", "application/pdf")])
        assert status == 200
        assert 'id="submitted"' in page

    rows = server.submissions()
    assert len(rows) == 2
    assert rows[0][1] == rows[1][1], "a returning source's submission joins the same source"
    assert len(server.query("SELECT id FROM sources")) == 1

    first = next(sub for sub, _ in rows if "message" in server.ciphertexts(sub))
    kinds = server.ciphertexts(first)
    assert len(kinds["file"]) == 2
    assert len(kinds["manifest"]) == 1
    assert server.decrypt(kinds["message"][0]).decode() == "هغه ورځ they came at night"
    assert server.decrypt(kinds["file"][0]) == photo
    raw_manifest = server.decrypt(kinds["manifest"][0])
    manifest = json.loads(raw_manifest)
    # what the review tool will read: the strict schema, within the limits the server signs
    typed = decode_intake_manifest(raw_manifest, intake_limits(server.config.limits))
    assert [f.filename for f in typed.files] == ["photo.jpg", "notes.txt"]
    assert [f["filename"] for f in manifest["files"]] == ["photo.jpg", "notes.txt"]
    assert manifest["files"][0]["sha256"] == hashlib.sha256(photo).hexdigest()
    assert manifest["files"][0]["size"] == len(photo)
    assert manifest["files"][0]["content_type"] == "image/jpeg"
    assert manifest["message"]["sha256"] == hashlib.sha256(
        "هغه ورځ they came at night".encode()).hexdigest()
    assert len(manifest["received_day"]) == 10


async def test_source_record_uses_the_derived_lookup_id(running_server):
    async with running_server() as server, SourceClient(server.url) as source:
        codename = await source.start()
    keys = derive_source_keys(codename, server.state.instance_salt,
                              server.config.keys.profile)
    rows = server.query("SELECT lookup_id, reply_recipient FROM sources")
    assert rows == [(keys.lookup_id, str(keys.reply_identity.recipient()))]


async def test_replies_are_decrypted_for_the_logged_in_source(running_server):
    async with running_server() as server, SourceClient(server.url) as source:
        codename = await source.start()
        await source.submit("hello")
        state = server.state
        keys = derive_source_keys(codename, state.instance_salt, server.config.keys.profile)
        assert isinstance(keys.reply_identity, X25519Identity)
        reply = encrypt(b"Thank you. We are reading it. <b>",
                        [keys.reply_identity.recipient()])
        from dropbox import db

        async with state.store.writer() as writer:
            await writer.write(reply)
            stored = await writer.commit()
        async with state.db.begin() as dbs:
            source_row = await db.get_source_by_lookup(dbs, keys.lookup_id)
            await db.add_reply(dbs, source_row.id, stored, "2026-01-02", "Demo investigator")

        foreign = encrypt(b"for someone else", [X25519Identity.generate().recipient()])
        async with state.store.writer() as writer:
            await writer.write(foreign)
            stored = await writer.commit()
        async with state.db.begin() as dbs:
            await db.add_reply(dbs, source_row.id, stored, "2026-01-03", "Demo investigator")

        _, page = await source.get("/submit")
        assert 'id="replies"' in page
        assert "This reply could not be opened." in page
        assert "Thank you. We are reading it. &lt;b&gt;" in page  # escaped, never raw HTML
        await source.logout()
        _status, page = await source.login(codename)
        assert "Thank you. We are reading it." in unescape(page)


async def test_a_confirmed_codename_is_no_longer_pending_and_not_stored(running_server):
    async with running_server() as server, SourceClient(server.url) as source:
        codename = await source.start()
        _status, page = await source.get("/start")  # confirmed: the start page has a new one
        assert codename not in page
    digits = codename.replace(" ", "")
    for path in [server.database_path, *server.data_dir.rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert digits.encode() not in data
            assert codename.encode() not in data


async def test_a_sixteen_digit_codename_issued_before_still_logs_in(running_server):
    """Issue 10, section 6: new codenames have 20 digits; the 16-digit ones sources already hold
    keep working, typed in any of the usual ways."""
    from dropbox import db

    old = "4821 0937 5566 1204"
    async with running_server() as server:
        keys = derive_source_keys(old, server.state.instance_salt, server.config.keys.profile)
        assert server.state.db is not None
        async with server.state.db.begin() as dbs:
            await db.create_source(dbs, keys.lookup_id, str(keys.reply_identity.recipient()),
                                   db.today())
        for typed in (old, old.replace(" ", ""), "۴۸۲۱-۰۹۳۷-۵۵۶۶-۱۲۰۴"):
            async with SourceClient(server.url) as source:
                status, page = await source.login(typed)
                assert status == 200, page
                assert 'id="submit-form"' in page
        async with SourceClient(server.url) as source:
            new = await source.start()
        assert len(new.replace(" ", "")) == 20


async def test_wrong_codename_is_refused_with_a_message(running_server):
    async with running_server() as server, SourceClient(server.url) as source:
        status, page = await source.login("1111 2222 3333 4444")
        assert status == 400
        assert "No testimony was found" in page
        status, page = await source.login("not a codename at all !!")
        assert status == 400
        assert 'id="login-form"' in page


async def test_over_limit_file_is_refused_and_leaves_nothing(running_server):
    limits = {"max_file_bytes": 10_000, "max_submission_bytes": 100_000}
    async with running_server(limits=limits) as server, SourceClient(server.url) as source:
        await source.start()
        before = server.stored_files()
        status, page = await source.submit(
            "a message", [("ok.txt", b"x" * 100, "text/plain"),
                          ("big.bin", b"y" * 20_000, "application/octet-stream")]
        )
        assert status == 413, page
        assert "Nothing was kept" in page
        assert server.stored_files() == before == []
        assert server.submissions() == []
        status, page = await source.submit("fine now", [("ok.txt", b"x" * 100, "text/plain")])
        assert status == 200
        assert len(server.submissions()) == 1


async def test_limits_are_shown_before_upload(running_server):
    limits = {"max_file_bytes": 5 * 1024**2, "max_files": 7}
    async with running_server(limits=limits) as server, SourceClient(server.url) as source:
        await source.start()
        _status, page = await source.get("/submit")
    limits = page.split('id="limits"', 1)[1].split("</div>", 1)[0]
    assert "5 MiB" in limits
    assert "7" in limits


async def test_too_many_files_and_empty_submission(running_server):
    async with running_server(limits={"max_files": 2}) as server, SourceClient(server.url) as s:
        await s.start()
        status, _ = await s.submit("", [(f"{i}.txt", b"x", "text/plain") for i in range(3)])
        assert status == 413
        status, page = await s.submit("", [])
        assert status == 400
        assert "Nothing to send" in page
        assert server.submissions() == []
        assert server.stored_files() == []


async def test_form_answers_go_into_the_encrypted_manifest(running_server):
    async with running_server() as server, SourceClient(server.url) as source:
        await source.start()
        status, _ = await source.submit("m", fields=[("province", "Kabul"), ("risk", "self"),
                                                      ("risk", "family")])
        assert status == 200
    (sub, _), = server.submissions()
    manifest = json.loads(server.decrypt(server.ciphertexts(sub)["manifest"][0]))
    assert manifest["answers"] == {"province": ["Kabul"], "risk": ["self", "family"]}
    assert b"Kabul" not in server.database_path.read_bytes()


async def test_oversized_field_and_too_many_fields(running_server):
    async with running_server(limits={"max_field_bytes": 100, "max_fields": 3}) as server:
        async with SourceClient(server.url) as source:
            await source.start()
            status, _ = await source.submit("m", fields=[("a", "z" * 101)])
            assert status == 413
            status, _ = await source.submit("m", fields=[(f"f{i}", "v") for i in range(4)])
            assert status == 413
        assert server.submissions() == []
        assert server.stored_files() == []


async def test_disk_reserve_refuses_before_reading(running_server):
    async with running_server(storage={"reserve_bytes": 2**62}) as server:
        async with SourceClient(server.url) as source:
            await source.start()
            status, page = await source.submit("m", [("a.txt", b"abc", "text/plain")])
            assert status == 507
            assert "Nothing you sent was kept" in page
        assert server.submissions() == []
        assert server.stored_files() == []


async def test_a_second_confirm_click_keeps_the_first_codename(running_server):
    async with running_server() as server, SourceClient(server.url) as source:
        await source.get("/start")
        token = source.csrf
        await source.confirm()
        status, page = await source.post_form("/start", {"csrf_token": token,
                                                          "codename_check": "0000"})
        assert status == 200  # the old page's token after login: on to the logged-in page
        assert 'id="submit-form"' in page
        status, page = await source.confirm()  # the new token, after login
        assert status == 200
        assert 'id="submit-form"' in page
        assert 'id="codename"' not in page
    assert len(server.query("SELECT id FROM sources")) == 1
