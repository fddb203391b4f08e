"""The one place Amanat's small files are read and written (keys, keyrings, credentials, state,
bundles), on every machine: review/ imports it as the server does.

- `write_new` creates a file that must not exist yet; `replace_atomic` replaces one. Both write
  under a random name beside the target (O_EXCL|O_NOFOLLOW: never into something an attacker put
  there first), with the mode set explicitly (0600 for secrets, 0644 otherwise, whatever the
  umask), fsync the file, then link or rename it into place and fsync the folder: a reader sees
  no file or the whole file, and once the call returns it survives a power cut.
- `read_file` reads with errors in words; `read_secret` also refuses a secret file others can
  read, as ssh does (it may already have leaked).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from keys.errors import ConfigError

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} file {path} is a folder, not a file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None


def require_private(path: Path) -> None:
    """Refuse a secret file that the group or others can read."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return  # read_file reports the missing file
    if mode & 0o077:
        raise ConfigError(
            f"{path} is readable by other users (mode {mode:04o}); run `chmod 600 {path}` "
            "and consider whether the key has leaked"
        )


def read_secret(path: Path, what: str) -> bytes:
    require_private(path)
    return read_file(path, what)


Writer = Callable[[BinaryIO], None]


def write_new(path: Path, data: bytes | Iterable[bytes] | Writer, *, secret: bool) -> None:
    """Create `path`, refusing an existing one, with `data` (bytes, chunks, or a function that
    writes to the open file): complete and durable when this returns, absent if it raises."""
    _commit(path, data, secret, replace=False)


def replace_atomic(path: Path, data: bytes | Iterable[bytes] | Writer, *, secret: bool) -> None:
    """Replace `path` (or create it) with `data` in one step, durable when this returns."""
    _commit(path, data, secret, replace=True)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(path: Path, data: bytes | Iterable[bytes] | Writer, secret: bool,
            replace: bool) -> None:
    """Write a new file under a random name beside `path` (O_EXCL, explicit mode), fsync it,
    then link it to `path` (which fails if `path` exists) or rename it over `path`."""
    if not replace and path.exists():
        raise ConfigError(f"{path} already exists: refusing to overwrite it")
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    mode = SECRET_MODE if secret else PUBLIC_MODE
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, mode)
    except OSError as exc:
        raise ConfigError(f"cannot create a file in {path.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # whatever the umask made of it
            _write(out, data)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)  # never overwrites: fails if `path` appeared meanwhile
    except FileExistsError:
        raise ConfigError(f"{path} already exists: refusing to overwrite it") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _write(out: BinaryIO, data: bytes | Iterable[bytes] | Writer) -> None:
    if isinstance(data, bytes):
        out.write(data)
    elif callable(data):
        data(out)
    else:
        for chunk in data:
            out.write(chunk)
