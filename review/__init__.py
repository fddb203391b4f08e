"""The air-gapped review tool. Never imports aiohttp, stem or SQL libraries."""
