"""The intake service a source meets through Tor Browser (aiohttp, reachable only as an onion)."""
