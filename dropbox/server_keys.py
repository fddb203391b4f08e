"""The server's keys on disk: the organization-signed keyring (verified, never rolled back, and
re-read when it changes) and the per-instance codename salt. Shared by the public app, the
transfer API and the export command."""

from __future__ import annotations

import logging
from pathlib import Path

from dropbox.config import Config
from keys.codename import MIN_SALT_BYTES
from keys.errors import ConfigError, KeyringError
from keys.files import replace_atomic
from keys.keyring import Keyring, load_keyring, parse_org_public_key

logger = logging.getLogger(__name__)

KEYRING_SEEN_FILE = "keyring-version"


def load_verified_keyring(config: Config) -> Keyring:
    """The keyring, verified against the pinned organization key and never older than the last
    version this server accepted (a rollback could re-add a revoked investigator). A keyring with
    that same version but other content is refused too: the organization signs every change under
    a new version, so two documents under one number are a signing mistake or a swap."""
    org_key = parse_org_public_key(_read(config.keys.org_public_key, "organization public key"))
    seen_file = config.storage.data_dir / KEYRING_SEEN_FILE
    seen_version, seen_fingerprint = _read_seen(seen_file)
    document = _read(config.keys.keyring, "keyring")
    keyring = load_keyring(document, org_key, seen_version, seen_fingerprint)
    fingerprint = keyring.fingerprint()
    if (keyring.version, fingerprint) != (seen_version, seen_fingerprint):
        config.storage.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace_atomic(seen_file, f"{keyring.version}\n{fingerprint}\n".encode(), secret=False)
    return keyring


def _read_seen(path: Path) -> tuple[int, str]:
    """(version, fingerprint) of the keyring accepted last; (0, "") before the first. Files
    written before fingerprints were recorded hold the version alone."""
    if not path.is_file():
        return 0, ""
    version, _, fingerprint = _read(path, "accepted keyring version").decode().partition("\n")
    try:
        return int(version), fingerprint.strip()
    except ValueError:
        # Never read as 0: that would silently allow a rollback.
        raise ConfigError(f"{path} is damaged; restore it or remove it knowingly") from None


class KeyringFile:
    """The verified keyring, re-read when its file changes, so that a revocation signed by the
    organization takes effect on the next submission without a restart.

    A changed file that does not verify (bad signature, rollback, garbage) is logged and the
    last verified keyring stays in force: it is still the organization's word, and refusing
    intake would lose testimonies.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._stamp = self._file_stamp()
        self._keyring = load_verified_keyring(config)
        self._fingerprint = self._keyring.fingerprint()
        self._refusal: KeyringError | ConfigError | None = None

    def current(self) -> Keyring:
        """The keyring for intake: a changed file that does not verify leaves the last verified
        keyring in force."""
        stamp = self._file_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._keyring = load_verified_keyring(self._config)
                self._fingerprint = self._keyring.fingerprint()
                self._refusal = None
            except (KeyringError, ConfigError) as exc:
                logger.error("the changed keyring was refused, the previous one stays: %s", exc)
                self._refusal = exc
        return self._keyring

    def verified(self) -> Keyring:
        """The keyring for the transfer API, which must not act for an investigator on a keyring
        the organization may have changed: while the file on disk does not verify, this raises
        what refused it."""
        keyring = self.current()
        if self._refusal is not None:
            raise type(self._refusal)(str(self._refusal))
        return keyring

    def fingerprint(self) -> str:
        """The current keyring's fingerprint, computed once per keyring (the landing page shows
        it on every load, and hashing the canonical keyring each time was most of its cost)."""
        self.current()
        return self._fingerprint

    def _file_stamp(self) -> tuple[int, int, int, int] | None:
        try:
            st = self._config.keys.keyring.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

def read_instance_salt(config: Config) -> bytes:
    salt = _read(config.keys.instance_salt, "instance salt")
    if len(salt) < MIN_SALT_BYTES:
        raise ConfigError(f"the instance salt {config.keys.instance_salt} is shorter than "
                          f"{MIN_SALT_BYTES} bytes")
    return salt

def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"the {what} file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from None
