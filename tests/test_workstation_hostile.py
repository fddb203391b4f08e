"""A compromised or impersonated transfer server cannot drive the workstation's terminal: every
string of its answers and refusals is cleaned before anything prints it."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from nacl.signing import SigningKey

from workstation.client import TransferClient, TransferClientError

HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202eOK verified\u202c\r\nfake line"


@pytest.fixture
async def hostile_server() -> AsyncIterator[str]:
    async def status(request: web.Request) -> web.Response:
        return web.json_response({"waiting": {"submissions": HOSTILE, HOSTILE: [HOSTILE]},
                                  "acknowledged_by_me": 0,
                                  "replies_deleted_by_sources": [HOSTILE, 5, None]})

    async def pull(request: web.Request) -> web.Response:
        return web.json_response({"error": HOSTILE, "message": HOSTILE}, status=401)

    app = web.Application()
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/pull", pull)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _assert_inert(text: str) -> None:
    assert not any(ch in text for ch in "\x1b\x07\x9b\u202e\u202c\r"), repr(text)


async def test_an_answer_with_escapes_is_cleaned(hostile_server: str) -> None:
    async with TransferClient(hostile_server, SigningKey.generate()) as client:
        answer = await client.status()
    _assert_inert(json.dumps(answer, ensure_ascii=False))  # keys, values, nested lists
    flat = str(answer["waiting"]["submissions"])
    _assert_inert(flat)
    assert "OK verified" in flat  # the text stays readable, only the controls are gone
    assert all("\n" not in key for key in answer["waiting"])


async def test_a_refusal_with_escapes_is_cleaned(hostile_server: str) -> None:
    async with TransferClient(hostile_server, SigningKey.generate()) as client:
        with pytest.raises(TransferClientError) as refused:
            await client.pull(io.BytesIO())
    _assert_inert(str(refused.value))
    assert "401" in str(refused.value)


def test_deleted_reply_ids_are_only_strings_from_a_list() -> None:
    from workstation.cli import _id_list

    assert _id_list(["a", 5, None, {"x": 1}, "b"]) == ["a", "b"]
    for odd in (None, "abc", 5, {"a": "b"}):
        assert _id_list(odd) == []
