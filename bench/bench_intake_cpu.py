"""The intake's CPU per GiB against its floor (issue 15, section 3), and where the rest goes.

    .venv/bin/python bench/bench_intake_cpu.py [--mib 512] [--rounds 3]

The floor is what no intake can avoid: SHA-256 of the plaintext, age encryption
(keys.age.Encryptor) and SHA-256 of the ciphertext, in this process, no HTTP, in reads the size
the intake reads (dropbox.intake.READ_CHUNK). Beside it, in the same run and interleaved round
after round, three more figures split the intake's CPU into parts:

- "http": a bare aiohttp multipart sink (bench/bench_upload.py) receiving the same upload over
  loopback, the server process's CPU: what parsing the request costs any aiohttp service;
- "http+floor": the same sink hashing, encrypting and hashing each part on the event loop as
  it arrives (bench/bench_upload.py's "sink+crypto"), no disk: the two together, with what one
  costs the other (caches, more work per read);
- "disk": writing the ciphertext's size to a file in this process the way the store does
  (1 MiB writev, the writeback hint every 8 MiB, fsync at the end), CPU including the kernel's
  time in this process;
- "amanat": `amanat serve` receiving the same upload (one file of `--mib` MiB), the server
  process's CPU (all its threads).

Printed: each part in CPU seconds per GiB (the least of the rounds: the machine is shared and
noisy, and other work only ever adds), amanat / floor (issue 15 aims at 1.15), and amanat split
into floor, http, what the two cost together beyond their sum, disk, and the rest: the glue
(event loop hops, thread hand-offs, per-read Python work).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_upload import start_sink, timed_upload  # noqa: E402 - after the path set-up above
from server_process import (  # noqa: E402
    MIB,
    SourceSession,
    make_org,
    new_source,
    repeating,
    running,
    upload,
)

from dropbox.intake import READ_CHUNK  # noqa: E402
from dropbox.store import BUFFER_BYTES, WRITEBACK_BYTES  # noqa: E402
from keys.age import Encryptor, X25519Identity  # noqa: E402

GIB = 1024 * MIB


def floor_cpu(block: bytes, size: int) -> tuple[float, int]:
    """CPU seconds to hash, encrypt and hash `size` bytes; and the ciphertext's size."""
    recipients = [X25519Identity.generate().recipient()]
    started = time.process_time()
    plain, cipher, encryptor = hashlib.sha256(), hashlib.sha256(), Encryptor(recipients)
    sealed = len(encryptor.header)
    cipher.update(encryptor.header)
    for chunk in repeating(block[:READ_CHUNK], size):
        plain.update(chunk)
        for piece in encryptor.update(chunk):
            cipher.update(piece)
            sealed += len(piece)
    for piece in encryptor.finalize():
        cipher.update(piece)
        sealed += len(piece)
    return time.process_time() - started, sealed


def disk_cpu(block: bytes, size: int, folder: Path) -> float:
    """CPU seconds to write `size` bytes as the store does, then fsync and delete the file."""
    path = folder / "disk-part"
    buffer = [block[:BUFFER_BYTES]]
    started = time.process_time()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        written = advised = 0
        while written < size:
            written += os.writev(fd, buffer if size - written >= BUFFER_BYTES
                                 else [buffer[0][:size - written]])
            if written - advised >= WRITEBACK_BYTES:
                os.posix_fadvise(fd, advised, written - advised, os.POSIX_FADV_DONTNEED)
                advised = written
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink()
    return time.process_time() - started


async def main(args: argparse.Namespace) -> None:
    size = args.mib * MIB
    block = os.urandom(BUFFER_BYTES)
    best: dict[str, float] = {}

    def keep(name: str, seconds: float, round_no: int) -> None:
        best[name] = min(best.get(name, seconds), seconds)
        print(f"round {round_no} {name:7} {seconds * GIB / size:5.2f} s/GiB", flush=True)

    with tempfile.TemporaryDirectory(prefix="amanat-bench-cpu-") as tmp:
        root = Path(tmp)
        org = make_org(root / "org", limits={"max_file_bytes": size + MIB,
                                             "max_submission_bytes": size + 2 * MIB})
        sink, sink_url = start_sink("discard")
        crypto_sink, crypto_url = start_sink("crypto")
        try:
            with running(org, root / "server-tmp") as server:
                source = await new_source(server.url)
                await upload(source, b"warm", "warm.bin", [block[:MIB]], MIB)
                sink_source = SourceSession(sink_url, "", "bench-token")
                crypto_source = SourceSession(crypto_url, "", "bench-token")
                for round_no in range(1, args.rounds + 1):
                    floor, sealed = floor_cpu(block, size)
                    keep("floor", floor, round_no)
                    keep("disk", disk_cpu(block, sealed, root), round_no)
                    for name, target, pid in (("http", sink_source, sink.pid),
                                              ("http+floor", crypto_source, crypto_sink.pid),
                                              ("amanat", source, server.pid)):
                        _, cpu = await timed_upload(target, size, block, pid)
                        keep(name, cpu, round_no)
        finally:
            for proc in (sink, crypto_sink):
                proc.terminate()
                proc.wait(10)
    report(best, size)


def report(best: dict[str, float], size: int) -> None:
    per_gib = {name: seconds * GIB / size for name, seconds in best.items()}
    floor, http = per_gib["floor"], per_gib["http"]
    together = per_gib["http+floor"] - floor - http
    glue = per_gib["amanat"] - per_gib["http+floor"] - per_gib["disk"]
    print(f"\nintake of {size // MIB} MiB, CPU seconds per GiB (least of the rounds):")
    for name in ("floor", "http", "http+floor", "disk", "amanat"):
        print(f"  {name:10} {per_gib[name]:5.2f}")
    print(f"  amanat / floor: {per_gib['amanat'] / floor:.2f} (issue 15 aims at 1.15)")
    print("  amanat = floor " + " + ".join(
        f"{name} {value:.2f} ({value / floor:.0%})" for name, value in
        [("+ http", http), ("http and floor together", together),
         ("disk", per_gib["disk"]), ("glue", glue)]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
