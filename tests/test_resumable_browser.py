"""Headless Chromium with JavaScript on sends a 50 MB file through the submit page's resumable
uploads while a proxy on 127.0.0.1 breaks the connection twice; the page ends on `submitted` and
the file arrives intact (issue 12 §3)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from browser_support import BROWSER_MARKS, CHROMIUM, run_node
from cutting_proxy import cutting_proxy

pytestmark = BROWSER_MARKS

SIZE = 50 * 1000 * 1000




async def test_a_50_mb_upload_survives_two_broken_connections(running_server: Any,
                                                              tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    upload = tmp_path / "recording.bin"
    upload.write_bytes(data)
    async with running_server() as server, \
            cutting_proxy(server.url, [15_000_000, 35_000_000]) as proxy:
        result = await run_node("resumable.js", {
            "base": proxy.url, "chromium": CHROMIUM, "file": str(upload),
            "message": "sent with the connection breaking twice"}, tmp_path / "job.json",
            timeout=300)
        assert result["errors"] == [], result
        assert result["submitted"]
        assert (result["resumeOn"], result["resumeOff"]) == (True, False)
        assert result["endpoint"] == "/uploads"
        assert proxy.cuts == 2
        assert proxy.requests.get("PATCH", 0) >= SIZE // (4 * 1024 * 1024)
        assert proxy.requests.get("HEAD", 0) >= 2  # asked where to resume, after each cut
        # POSTs: the codename, one creation (resumed, never started again), the form.
        assert proxy.requests["POST"] == 3
        assert len(server.state.resumable) == 0
        [(submission, _)] = server.submissions()
        names = server.ciphertexts(submission)
        stored = server.decrypt(names["file"][0])
        manifest = json.loads(server.decrypt(names["manifest"][0]))
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
    assert [f["filename"] for f in manifest["files"]] == ["recording.bin"]
    assert server.decrypt(names["message"][0]) == b"sent with the connection breaking twice"
    # What the source read: the progress in bytes and percent, and the retry after each cut.
    assert any("(100%)" in s for s in result["statuses"]), result["statuses"][-3:]
    assert any("Trying again" in s for s in result["statuses"])
