"""Run a parser on untrusted plaintext in a sandboxed subprocess.

Attachments are hostile input, and the parsers that read their metadata (exiftool, mat2, Pillow)
are large. Each run gets the plaintext on its standard input through a pipe (never a file on a
disk: the vault holds only ciphertext), and returns what it writes to standard output, bounded.

Where bubblewrap works, the parser runs with every namespace unshared (no network, no other
process, no IPC), all capabilities dropped, the system folders and the Python it needs bound
read-only, an empty private tmpfs as WORKDIR (the one place it may write: the copy of the file that
exiftool and mat2 seek in, kept in memory), and no environment. Everywhere, it runs in its own
session under rlimits: address space (memory), CPU seconds, file size, no core dumps; and a
wall-clock deadline kills its whole process group.
Where bubblewrap is missing or cannot create namespaces, the rlimits alone apply and `warning` says
so; WORKDIR is then a fresh folder on /dev/shm (memory), removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from keys.errors import StorageError

MIB = 1024 * 1024
WORKDIR = "/scratch"  # a private tmpfs inside bubblewrap; a /dev/shm folder without it
_READ = 64 * 1024


class SandboxError(StorageError):
    """The parser failed, was killed at a limit, or wrote more than allowed."""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 1024 * MIB
    cpu_seconds: int = 30
    wall_seconds: float = 60.0
    file_bytes: int = 512 * MIB  # what the parser may write (mat2's working copy)
    output_bytes: int = 4 * MIB  # what it may print


@dataclass(frozen=True)
class Sandbox:
    """`bubblewrap` or `rlimits` (see the module doc); `warning` is for the user when weaker."""

    mode: str
    warning: str | None = None

    def run(
        self,
        argv: Sequence[str],
        stdin: Iterable[bytes],
        limits: Limits = Limits(),
        output_bytes: int | None = None,
    ) -> bytes:
        """Run `argv`, feeding it `stdin`; its standard output, or SandboxError. `argv` may
        name the private folder as WORKDIR."""
        cap = output_bytes or limits.output_bytes
        with _workdir(self.mode) as work:
            args = [a.replace(WORKDIR, work) for a in argv] if work != WORKDIR else list(argv)
            command = _bwrap_prefix() + args if self.mode == "bubblewrap" else args
            env = None if self.mode == "bubblewrap" else _plain_env(work)
            return _run_limited(command, stdin, limits, cap, env)


def detect() -> Sandbox:
    """Bubblewrap if it is installed and can create its namespaces here, else rlimits only."""
    reason = _bwrap_unusable()
    if reason is None:
        return Sandbox("bubblewrap")
    return Sandbox(
        "rlimits",
        f"bubblewrap {reason}: attachment parsers run with memory and time limits only, "
        "without namespaces (install the Debian package bubblewrap)",
    )


@cache
def _bwrap_unusable() -> str | None:
    if shutil.which("bwrap") is None:
        return "is not installed"
    try:
        subprocess.run(
            [*_bwrap_prefix(), "/bin/true"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "cannot create namespaces on this machine"
    return None


def _bwrap_prefix() -> list[str]:
    """Read-only system and Python, nothing else of the machine; no network, no capabilities."""
    args = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr",
            "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", WORKDIR, "--chdir", WORKDIR, "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", WORKDIR,
            "--setenv", "LANG", "C.UTF-8", "--setenv", "OPENBLAS_NUM_THREADS", "1"]
    for name in ("bin", "sbin", "lib", "lib64", "lib32"):
        top = Path("/") / name
        if top.is_symlink():
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    for folder in sorted({sys.prefix, sys.base_prefix, sys.exec_prefix}):
        if not folder.startswith("/usr/"):
            args += ["--ro-bind", folder, folder]
    # exiftool and mat2 read their configuration from /etc (perl, fonts): read-only, no secrets
    # of ours are there.
    for name in ("/etc/perl", "/etc/fonts", "/etc/mime.types", "/etc/ld.so.cache"):
        args += ["--ro-bind-try", name, name]
    return [*args, "--"]


def _plain_env(work: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8",
            "OPENBLAS_NUM_THREADS": "1"}


@contextlib.contextmanager
def _workdir(mode: str) -> Iterator[str]:
    if mode == "bubblewrap":
        yield WORKDIR
        return
    shm = "/dev/shm"  # noqa: S108 - memory, not a disk; mkdtemp makes a private folder in it
    if not os.path.isdir(shm):
        raise SandboxError("no /dev/shm: refusing to write plaintext for a parser to a disk")
    with tempfile.TemporaryDirectory(prefix="amanat-", dir=shm) as work:
        yield work


def _prlimit(limits: Limits) -> list[str]:
    """util-linux's prlimit sets the rlimits and execs the command (bubblewrap and the parser
    inherit them): no Python code runs between fork and exec."""
    return [shutil.which("prlimit") or "prlimit", f"--as={limits.memory_bytes}",
            f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
            f"--fsize={limits.file_bytes}", "--core=0", "--"]


def _run_limited(
    command: list[str], stdin: Iterable[bytes], limits: Limits, cap: int,
    env: dict[str, str] | None,
) -> bytes:
    try:
        child = subprocess.Popen(
            _prlimit(limits) + command,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env if env is not None else {}, start_new_session=True,
        )
    except OSError as exc:
        raise SandboxError(f"cannot start {command[0]}: {exc.strerror}") from None
    feeder = threading.Thread(target=_feed, args=(child, stdin), daemon=True)
    feeder.start()
    late = threading.Event()

    def deadline() -> None:
        late.set()
        _kill(child)

    timer = threading.Timer(limits.wall_seconds, deadline)
    timer.start()
    try:
        output = _read_capped(child, cap)
        code = child.wait()
    finally:
        timer.cancel()
        _kill(child)
        child.wait()
        feeder.join()
        assert child.stdout is not None
        child.stdout.close()
    if late.is_set():
        raise SandboxError(f"the parser was stopped at the time limit ({limits.wall_seconds:g} s)")
    if code != 0:
        raise SandboxError(_failure(code, limits))
    return output


def _feed(child: subprocess.Popen[bytes], stdin: Iterable[bytes]) -> None:
    """Write the plaintext into the pipe; a parser may stop reading early (BrokenPipe)."""
    assert child.stdin is not None
    chunks = iter(stdin)
    with contextlib.suppress(OSError, ValueError):
        for chunk in chunks:
            child.stdin.write(chunk)
    with contextlib.suppress(OSError, ValueError):
        child.stdin.close()
    close = getattr(chunks, "close", None)  # a generator left half read: its files close now
    if close is not None:
        close()


def _read_capped(child: subprocess.Popen[bytes], cap: int) -> bytes:
    assert child.stdout is not None
    output = bytearray()
    while chunk := os.read(child.stdout.fileno(), _READ):
        output += chunk
        if len(output) > cap:
            _kill(child)
            raise SandboxError(f"the parser wrote more than {cap} bytes")
    return bytes(output)


def _kill(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)


def _failure(code: int, limits: Limits) -> str:
    """Words for an exit status; bubblewrap reports a signal that ended the parser as 128+N."""
    number = -code if code < 0 else code - 128 if code > 128 else 0
    if number == signal.SIGXCPU:
        return f"the parser was stopped at the CPU time limit ({limits.cpu_seconds} s)"
    if number == signal.SIGXFSZ:
        return "the parser was stopped at the file size limit"
    if number:
        return f"the parser was killed (signal {number})"
    return (f"the parser failed (exit status {code}; its memory limit is "
            f"{limits.memory_bytes // MIB} MiB)")
