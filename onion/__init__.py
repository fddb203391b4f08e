"""Tor onion services for Amanat. The only package that imports stem.

`onion.publish.publish_onions(settings, address)` is the hook `amanat serve` and `amanat demo`
use; the server imports it only when `[tor] mode` asks for a tor, so the service runs without stem
in "none" mode. onion/ knows nothing of the server's configuration: it takes an
`onion.settings.OnionSettings`.
"""
