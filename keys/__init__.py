"""Amanat's cryptographic core: the age v1 format, the signed keyring and codenames.

Everything here is pure: bytes and streams in, bytes out. No filesystem or network I/O.
"""
