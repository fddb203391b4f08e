"""Errors raised by onion/: every stem exception leaves this package as one of these."""

from __future__ import annotations

from keys.errors import InputError, TorError


class TorNotFoundError(TorError):
    """The tor binary is not installed (or not where the configuration says)."""


class TorLaunchError(TorError):
    """A tor process we started exited or never opened its control socket."""


class TorConnectError(TorError):
    """The control port or control socket could not be reached."""


class TorAuthError(TorError):
    """Tor refused our control authentication (cookie or password)."""


class TorCommandError(TorError):
    """Tor answered a control command with an error."""


class TorTimeoutError(TorError):
    """Tor did not reach the awaited state (bootstrap, descriptor upload) in time."""


class OnionKeyError(TorError):
    """A stored onion service key is unreadable, unsafe (mode) or malformed."""


class ClientAuthKeyError(InputError):
    """A client authorization key or `.auth`/`.auth_private` line is malformed."""
