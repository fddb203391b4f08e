"""The one exception tree of the whole project.

`AmanatError` is the root and is never raised directly: every error raised anywhere in Amanat is
one of its typed families, so callers can catch `AmanatError` at the edge (a CLI, an HTTP handler)
and everything narrower where they can do something about it. Errors caused by bad input (garbage
bytes, a wrong passphrase, a tampered file) also subclass `ValueError`.

Packages add their own subclasses next to their code (for example `onion.errors`), always below
one of the families here.
"""

from __future__ import annotations


class AmanatError(Exception):
    """Root of every Amanat error. Never raised directly."""


class InputError(AmanatError, ValueError):
    """The input (bytes, a file, a passphrase, a form field) is wrong. Never raised directly."""


# --- age format -------------------------------------------------------------------------------


class AgeError(InputError):
    """An age file could not be read or written. Never raised directly."""


class HeaderError(AgeError):
    """The age header is malformed, or a recipient stanza is invalid (CCTV: header failure)."""


class HmacError(AgeError):
    """The header MAC does not verify: the header was altered (CCTV: HMAC failure)."""


class PayloadError(AgeError):
    """The payload is truncated, altered or not canonical (CCTV: payload failure)."""


class NoIdentityMatchError(AgeError):
    """None of the given identities can open this file (CCTV: no match)."""


class KeyFormatError(AgeError):
    """A recipient or identity string (age1..., AGE-SECRET-KEY-1...) is malformed."""


# --- keyring and codenames --------------------------------------------------------------------


class KeyringError(InputError):
    """A keyring document is unsigned, badly signed, rolled back or of an unknown format."""


class KeyringForkError(KeyringError):
    """A keyring carries the version accepted before but other content: the organization signs
    every change under a new version, so this is a signing mistake or a swap."""


class CodenameError(InputError):
    """A codename is malformed (wrong length, unknown characters or words)."""


class WrongPassphraseError(InputError):
    """A passphrase did not open the file it was given for."""


# --- operational families (not input errors) --------------------------------------------------


class ConfigError(AmanatError):
    """The configuration is missing, malformed or asks for something unsafe."""


class StorageError(AmanatError):
    """The ciphertext store or the database could not do what was asked. Never raised directly."""


class TorError(AmanatError):
    """Tor could not be started, reached or asked to publish a service."""


class TransferError(AmanatError):
    """A transfer bundle or a signed transfer request was refused. Never raised directly."""


class BusyError(AmanatError):
    """The service is at capacity for this kind of work right now (the Argon2id queue is full,
    or too many uploads are being received); the client is told to try again in a minute.
    Nothing was done."""
