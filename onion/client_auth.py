"""v3 onion client authorization: x25519 key pairs and the text formats tor reads.

Formats (tor's `doc/man` ClientOnionAuthDir and HiddenServiceDir sections):
  service side, `authorized_clients/NAME.auth`:  `descriptor:x25519:<base32 public key>`
  client side, `*.auth_private`:  `<56-char address>:descriptor:x25519:<base32 private key>`
  control port:  `ONION_CLIENT_AUTH_ADD <address> x25519:<base64 private key>`
Base32 is RFC 4648 upper case without padding (52 characters for 32 bytes).

The functions are pure; `ClientRegistry` is the one piece that touches files.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path

from nacl.bindings import crypto_scalarmult_base
from nacl.utils import random as random_bytes

from keys.files import write_new
from onion.errors import ClientAuthKeyError

_ADDRESS = re.compile(r"[a-z2-7]{56}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def b32encode_key(key: bytes) -> str:
    return base64.b32encode(key).decode().rstrip("=")


def b32decode_key(text: str) -> bytes:
    text = text.strip().upper()
    try:
        key = base64.b32decode(text + "=" * (-len(text) % 8))
    except binascii.Error as exc:
        raise ClientAuthKeyError("a client authorization key is not valid base32") from exc
    if len(key) != 32:
        raise ClientAuthKeyError("a client authorization key must be 32 bytes")
    return key


def normalize_address(address: str) -> str:
    """`abc...xyz.onion` or `abc...xyz` -> the 56-character v3 address without `.onion`."""
    bare = address.strip().lower().removesuffix(".onion")
    if not _ADDRESS.fullmatch(bare):
        raise ClientAuthKeyError(f"not a v3 onion address: {address!r}")
    return bare


def check_client_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name.endswith(".auth"):
        raise ClientAuthKeyError(
            "a client name is 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, repr=False)
class ClientKeyPair:
    """An x25519 key pair for one authorized client. `repr` hides the private half."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> ClientKeyPair:
        private = random_bytes(32)
        return cls(private, crypto_scalarmult_base(private))

    def __repr__(self) -> str:
        return f"ClientKeyPair(public={b32encode_key(self.public)})"


def auth_line(public: bytes) -> str:
    """The service side `NAME.auth` content."""
    return f"descriptor:x25519:{b32encode_key(public)}"


def parse_auth_line(text: str) -> bytes:
    parts = text.strip().split(":")
    if len(parts) != 3 or parts[0] != "descriptor" or parts[1] != "x25519":
        raise ClientAuthKeyError("an .auth line must read descriptor:x25519:<base32 key>")
    return b32decode_key(parts[2])


def auth_private_line(address: str, private: bytes) -> str:
    """The workstation side `*.auth_private` line for tor's ClientOnionAuthDir."""
    return f"{normalize_address(address)}:descriptor:x25519:{b32encode_key(private)}"


def parse_auth_private_line(text: str) -> tuple[str, bytes]:
    parts = text.strip().split(":")
    if len(parts) != 4 or parts[1] != "descriptor" or parts[2] != "x25519":
        raise ClientAuthKeyError(
            "an .auth_private line must read <address>:descriptor:x25519:<base32 key>"
        )
    return normalize_address(parts[0]), b32decode_key(parts[3])


def control_port_private_key(private: bytes) -> str:
    """`x25519:<base64>` as ONION_CLIENT_AUTH_ADD wants it (base64 there, not base32)."""
    return "x25519:" + base64.b64encode(private).decode()


class ClientRegistry:
    """A folder of `NAME.auth` files: tor's `authorized_clients/`, or ours for ephemeral onions."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name.removesuffix(".auth") for p in self.folder.glob("*.auth"))

    def public_keys(self) -> dict[str, bytes]:
        return {n: parse_auth_line((self.folder / f"{n}.auth").read_text()) for n in self.names()}

    def add(self, name: str, public: bytes) -> Path:
        """Write `NAME.auth` (mode 0600); an existing client of that name is an error."""
        path = self.folder / f"{check_client_name(name)}.auth"
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists():
            raise ClientAuthKeyError(f"a client named {name!r} already exists")
        write_new(path, (auth_line(public) + "\n").encode(), secret=True)
        _match_folder_owner(path)
        return path

    def remove(self, name: str) -> None:
        path = self.folder / f"{check_client_name(name)}.auth"
        try:
            path.unlink()
        except FileNotFoundError as exc:
            raise ClientAuthKeyError(f"no client named {name!r}") from exc


def _match_folder_owner(path: Path) -> None:
    """Run as root on a torrc service, hand the new file to the folder's owner (debian-tor)."""
    if os.geteuid() == 0:
        st = path.parent.stat()
        os.chown(path, st.st_uid, st.st_gid)
