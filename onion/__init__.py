"""Tor onion services for Amanat. The only package that imports stem.

`publish_onions(config, address)` is the hook `amanat serve` and `amanat demo` use; it is
imported lazily so the service runs without stem when `[tor] mode = "none"`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onion.publish import publish_onions as publish_onions


def __getattr__(name: str) -> Any:
    if name == "publish_onions":
        from onion.publish import publish_onions

        return publish_onions
    raise AttributeError(name)
