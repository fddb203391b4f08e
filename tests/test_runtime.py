"""One server runtime (issue 14): `amanat serve` opens one engine (the schema upgraded once), one
ciphertext store and one keyring holder, and both applications use them."""

from __future__ import annotations

import contextlib
from pathlib import Path

import aiohttp
import pytest

from dropbox import db, pages
from dropbox import transfer_api as transfer_api_module
from dropbox.app import create_app, start_site
from dropbox.config import Listen, load_config
from dropbox.demo import create_demo_org
from dropbox.runtime import Runtime
from dropbox.server_keys import KeyringFile
from dropbox.transfer_api import create_transfer_app
from keys.errors import KeyringError


async def test_both_apps_share_one_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(create_demo_org(tmp_path / "org", port=0, cheap_kdf=True).config_path)
    upgrades: list[str] = []
    real_init = db.init_db

    async def counting_init(url: str) -> None:
        upgrades.append(url)
        await real_init(url)

    monkeypatch.setattr(db, "init_db", counting_init)
    runtime = Runtime.load(config)
    app = create_app(config, runtime)
    transfer_app = create_transfer_app(config, runtime=runtime)
    source_state, transfer_state = app[pages.STATE], transfer_app[transfer_api_module.STATE]
    assert source_state.store is transfer_state.store is runtime.store
    assert source_state.keyring_file is transfer_state.keyring_file is runtime.keyring

    async with runtime.opened(), contextlib.AsyncExitStack() as stack:
        urls = []
        for each in (app, transfer_app):
            runner, url = await start_site(each, Listen("127.0.0.1", 0))
            stack.push_async_callback(runner.cleanup)
            urls.append(url)
        assert source_state.db is transfer_state.db is runtime.maker
        async with aiohttp.ClientSession() as http:
            async with http.get(urls[0] + "/") as landing:
                assert landing.status == 200
            async with http.get(urls[1] + "/v1/status") as unsigned:
                assert unsigned.status == 401
    assert upgrades == [config.storage.database_url]  # once, for both applications
    assert runtime.db is None


def test_a_refused_keyring_stops_transfers_but_not_intake(tmp_path: Path) -> None:
    config = load_config(create_demo_org(tmp_path / "org", port=0, cheap_kdf=True).config_path)
    holder = KeyringFile(config)
    good = holder.verified()
    config.keys.keyring.write_bytes(b'{"not": "a signed keyring"}')
    assert holder.current() is good  # intake keeps the organization's last word
    with pytest.raises(KeyringError):
        holder.verified()  # a transfer must not act on it
    with pytest.raises(KeyringError):
        holder.verified()  # and keeps refusing while the file stays bad
