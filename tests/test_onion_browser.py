"""A source's path for real: headless Debian Chromium with JavaScript switched off, proxied through
the private Tor network's client, opens the onion landing page and submits a testimony.

Chromium is driven over the DevTools protocol with a tiny client on aiohttp's websocket:
`Emulation.setScriptExecutionDisabled` turns scripts off (the `--blink-settings` switch with
`--dump-dom` prints nothing), and the form is filled and clicked with DOM and Input commands,
as a person would, never by script.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import serve_org
from tornet import PortPicker, TorNetwork, retry

from dropbox.demo import create_demo_org
from onion.publish import publish_onions

pytestmark = [pytest.mark.tor, pytest.mark.browser]

CHROMIUM = shutil.which("chromium")


class DevTools:
    """One DevTools websocket: commands by id, events into a queue per session."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = msg.json()
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.put_nowait(data)

    async def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send_json(message)
        reply = await asyncio.wait_for(future, 60)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def wait_event(self, method: str, timeout: float) -> None:
        async def wait() -> None:
            while (await self.events.get())["method"] != method:
                pass
        await asyncio.wait_for(wait(), timeout)

    def drain(self) -> None:
        while not self.events.empty():
            self.events.get_nowait()


class Page:
    def __init__(self, tools: DevTools, session: str) -> None:
        self.tools, self.session = tools, session

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.tools.send(method, self.session, **params)

    async def navigate(self, url: str) -> None:
        self.tools.drain()
        result = await self.send("Page.navigate", url=url)
        assert "errorText" not in result, result
        await self.tools.wait_event("Page.loadEventFired", 60)

    async def node(self, selector: str) -> int:
        root = (await self.send("DOM.getDocument", depth=0))["root"]["nodeId"]
        node_id: int = (await self.send("DOM.querySelector", nodeId=root, selector=selector))[
            "nodeId"]
        assert node_id, f"no element matches {selector!r}"
        return node_id

    async def html(self, selector: str = "html") -> str:
        html: str = (await self.send("DOM.getOuterHTML", nodeId=await self.node(selector)))[
            "outerHTML"]
        return html

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element, then wait for the next page."""
        node = await self.node(selector)
        await self.send("DOM.scrollIntoViewIfNeeded", nodeId=node)
        quad = (await self.send("DOM.getBoxModel", nodeId=node))["model"]["content"]
        x, y = sum(quad[0::2]) / 4, sum(quad[1::2]) / 4
        self.tools.drain()
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                            clickCount=1)
        await self.tools.wait_event("Page.loadEventFired", 90)

    async def type(self, selector: str, text: str) -> None:
        await self.send("DOM.focus", nodeId=await self.node(selector))
        await self.send("Input.insertText", text=text)


@contextlib.asynccontextmanager
async def chromium(socks_port: int, profile: Path) -> AsyncIterator[Page]:
    assert CHROMIUM is not None
    port = PortPicker().take()
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--proxy-server=socks5://127.0.0.1:{socks_port}",
         f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
         "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        async with aiohttp.ClientSession() as http:
            async def version() -> dict[str, Any]:
                async with http.get(f"http://127.0.0.1:{port}/json/version") as response:
                    data: dict[str, Any] = await response.json()
                    return data
            ws_url = (await retry(version, timeout=30, what="chromium's DevTools"))[
                "webSocketDebuggerUrl"]
            async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                tools = DevTools(ws)
                target = await tools.send("Target.createTarget", url="about:blank")
                session = (await tools.send("Target.attachToTarget",
                                            targetId=target["targetId"], flatten=True))["sessionId"]
                page = Page(tools, session)
                await page.send("Emulation.setScriptExecutionDisabled", value=True)
                await page.send("Page.enable")
                await page.send("DOM.enable")
                yield page
                tools.reader.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # chromium and its helpers: our session
        process.wait()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
async def test_chromium_without_javascript_submits_over_the_onion(
    tor_network: TorNetwork, tmp_path: Path
) -> None:
    assert tor_network.service is not None
    org = create_demo_org(tmp_path / "org", port=0, cheap_kdf=True)
    tor = {"mode": "attach", "control_socket": str(tor_network.service.control_socket)}
    testimony = "Taken from the camp at night; browser canary 51c2"
    async with (
        serve_org(org, tor=tor) as server,
        publish_onions(server.config.onion_settings(), server.url) as onions,
        chromium(tor_network.socks_port, tmp_path / "profile") as page,
    ):
        # Scripts really are off in this page (a data: URL never touches the network).
        await page.navigate("data:text/html,<p id=js>off</p>"
                            "<script>document.getElementById('js').textContent='on'</script>")
        assert ">off<" in await page.html("#js")
        await retry(lambda: page.navigate(onions[0]), timeout=60, what="the onion landing page")
        assert 'id="start"' in await page.html()
        await page.click("#start")
        shown = await page.html("#codename")  # the codename stays: prove it was written down
        last_group = re.sub(r"<[^>]*>", "", shown).split()[-1]
        await page.type("#codename-check", last_group)
        await page.click("#confirm-codename")
        await page.type("#submit-form textarea[name=message]", testimony)
        await page.click("#submit-form button[type=submit]")
        assert 'id="submitted"' in await page.html()
        rows = server.submissions()
        assert len(rows) == 1
        message = server.ciphertexts(rows[0][0])["message"][0]
        assert server.decrypt(message) == testimony.encode()
