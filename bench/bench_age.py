"""Throughput of keys.age encryption beside raw pynacl and the `age` CLI, on the same input.

    .venv/bin/python bench/bench_age.py [--mib 256] [--rounds 3]

Every method encrypts the same random input (256 MiB by default). The machine is shared and
noisy, so the methods run interleaved, round after round, and the median of each is reported
together with its ratio to raw pynacl ChaCha20-Poly1305 in 64 KiB chunks:

- raw pynacl: slice the input into 64 KiB `bytes` and seal each with a STREAM nonce; the floor
  any pynacl-based age implementation pays (pynacl only accepts `bytes`, so slicing is included).
- Encryptor, 64 KiB pieces: the same slices fed to `Encryptor.update`, then `finalize`.
- Encryptor, 8191 B / 1 MiB pieces: odd and large pieces, as network reads deliver them.
- Decryptor, 64 KiB pieces: the ciphertext fed back in slices (authenticated plaintext out).
- age CLI: `age -r` reading the input from a file and writing to /dev/null (wall time,
  including process start).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nacl.bindings import crypto_aead_chacha20poly1305_ietf_encrypt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keys.age import Decryptor, Encryptor, X25519Identity
from keys.stream import CHUNK_SIZE

MiB = 1024 * 1024


def raw_pynacl(data: bytes) -> None:
    key = os.urandom(32)
    last = len(data) - 1
    for counter, start in enumerate(range(0, len(data), CHUNK_SIZE)):
        nonce = ((counter << 8) | (start + CHUNK_SIZE > last)).to_bytes(12, "big")
        crypto_aead_chacha20poly1305_ietf_encrypt(
            data[start : start + CHUNK_SIZE], None, nonce, key
        )


def ours(piece: int) -> Callable[[bytes], None]:
    recipient = X25519Identity.generate().recipient()

    def run(data: bytes) -> None:
        encryptor = Encryptor([recipient])
        for start in range(0, len(data), piece):
            encryptor.update(data[start : start + piece])
        encryptor.finalize()

    return run


def ours_decrypt(data: bytes) -> Callable[[bytes], None]:
    identity = X25519Identity.generate()
    encryptor = Encryptor([identity.recipient()])
    ciphertext = b"".join([encryptor.header, *encryptor.update(data), *encryptor.finalize()])

    def run(_: bytes) -> None:
        decryptor = Decryptor([identity])
        for start in range(0, len(ciphertext), CHUNK_SIZE):
            decryptor.update(ciphertext[start : start + CHUNK_SIZE])
        decryptor.finalize()

    return run


def age_cli(path: Path) -> Callable[[bytes], None]:
    recipient = str(X25519Identity.generate().recipient())

    def run(_: bytes) -> None:
        with path.open("rb") as source:
            subprocess.run(
                ["age", "-r", recipient], stdin=source, stdout=subprocess.DEVNULL, check=True
            )

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = os.urandom(args.mib * MiB)
    methods: dict[str, Callable[[bytes], None]] = {
        "raw pynacl, 64 KiB chunks": raw_pynacl,
        "Encryptor, 64 KiB pieces": ours(CHUNK_SIZE),
        "Encryptor, 8191 B pieces": ours(8191),
        "Encryptor, 1 MiB pieces": ours(MiB),
        "Decryptor, 64 KiB pieces": ours_decrypt(data),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if shutil.which("age"):
            path = Path(tmp) / "input"
            path.write_bytes(data)
            methods["age CLI (age -r)"] = age_cli(path)
        else:
            print("age CLI not found: skipped")
        times: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.rounds):
            for name, method in methods.items():
                start = time.perf_counter()
                method(data)
                times[name].append(time.perf_counter() - start)
    report(times, len(data), args.rounds)


def report(times: dict[str, list[float]], size: int, rounds: int) -> None:
    baseline = statistics.median(times["raw pynacl, 64 KiB chunks"])
    print(f"age encryption of {size // MiB} MiB, median of {rounds} interleaved rounds")
    print(f"{'method':<28} {'MB/s':>8} {'ratio to raw pynacl':>20}")
    for name, samples in times.items():
        seconds = statistics.median(samples)
        print(f"{name:<28} {size / seconds / 1e6:>8.0f} {baseline / seconds:>20.2f}")


if __name__ == "__main__":
    main()
