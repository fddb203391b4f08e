"""keys/files.py: the one helper every machine's small files are written and read with."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from keys.errors import ConfigError
from keys.files import read_secret, replace_atomic, write_new


@pytest.fixture(params=[0o000, 0o077, 0o022])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize(("secret", "mode"), [(True, 0o600), (False, 0o644)])
def test_the_mode_is_explicit_whatever_the_umask(tmp_path: Path, secret: bool, mode: int) -> None:
    write_new(tmp_path / "new", b"x", secret=secret)
    replace_atomic(tmp_path / "replaced", b"y", secret=secret)
    assert (tmp_path / "new").stat().st_mode & 0o777 == mode
    assert (tmp_path / "replaced").stat().st_mode & 0o777 == mode


def test_write_new_refuses_an_existing_file_or_link(tmp_path: Path) -> None:
    (tmp_path / "kept").write_bytes(b"theirs")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    for name in ("kept", "link"):
        with pytest.raises(ConfigError, match="already exists"):
            write_new(tmp_path / name, b"ours", secret=True)
    assert (tmp_path / "kept").read_bytes() == b"theirs"
    assert not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "link"]


def test_a_failing_writer_leaves_nothing(tmp_path: Path) -> None:
    def half(out: BinaryIO) -> None:
        out.write(b"half of it")
        raise OSError(28, "No space left on device")

    with pytest.raises(ConfigError, match="No space left"):
        write_new(tmp_path / "bundle.tar", half, secret=True)
    (tmp_path / "state").write_bytes(b"old")
    with pytest.raises(ConfigError):
        replace_atomic(tmp_path / "state", half, secret=True)
    assert (tmp_path / "state").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]  # no temporary files left


def test_chunks_and_writers_are_written_whole(tmp_path: Path) -> None:
    write_new(tmp_path / "a", [b"one ", b"two"], secret=False)
    write_new(tmp_path / "b", lambda out: out.write(b"three"), secret=False)
    replace_atomic(tmp_path / "a", iter([b"four"]), secret=False)
    assert (tmp_path / "a").read_bytes() == b"four"
    assert (tmp_path / "b").read_bytes() == b"three"


def test_read_secret_refuses_what_others_can_read(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    write_new(secret, b"k", secret=True)
    assert read_secret(secret, "key") == b"k"
    secret.chmod(0o640)
    with pytest.raises(ConfigError, match="readable by other users"):
        read_secret(secret, "key")
    with pytest.raises(ConfigError, match="does not exist"):
        read_secret(tmp_path / "missing", "key")


def test_the_transfer_key_is_refused_when_others_can_read_it(tmp_path: Path) -> None:
    from dropbox.transfer import create_transfer_key, load_transfer_key
    from keys.keyring import Keyring

    path = tmp_path / "transfer.key"
    create_transfer_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        load_transfer_key(path, Keyring.__new__(Keyring))
