"""Throughput of keys.age encryption beside raw pynacl and the `age` CLI, on the same input.

    .venv/bin/python bench/bench_age.py [--mib 256] [--rounds 3]

Every method encrypts the same random input (256 MiB by default). The machine is shared and
noisy, so the methods run interleaved, round after round; the best round of each is reported
(wall clock and CPU seconds) with its ratio to raw pynacl ChaCha20-Poly1305 in 64 KiB chunks:

- raw pynacl: slice the input into 64 KiB `bytes` and seal each with a STREAM nonce; the floor
  any pynacl-based age implementation pays (pynacl only accepts `bytes`, so slicing is included).
- Encryptor, 64 KiB pieces: the same slices fed to `Encryptor.update`, then `finalize`.
- Encryptor, 8191 B / 1 MiB pieces: odd and large pieces, as network reads deliver them.
- raw pynacl, 1 MiB pieces: the baseline fed the same 1 MiB pieces, for comparison with the
  line above (that line varies most from run to run on a loaded machine).
- Decryptor, 64 KiB pieces: the ciphertext fed back in slices (authenticated plaintext out).
- age CLI: `age -r` reading the input from a file and writing to /dev/null (wall time,
  including process start).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
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
BASELINE = "raw pynacl, 64 KiB chunks"


def raw_pynacl(data: bytes) -> None:
    key = os.urandom(32)
    last = len(data) - 1
    for counter, start in enumerate(range(0, len(data), CHUNK_SIZE)):
        nonce = ((counter << 8) | (start + CHUNK_SIZE > last)).to_bytes(12, "big")
        crypto_aead_chacha20poly1305_ietf_encrypt(
            data[start : start + CHUNK_SIZE], None, nonce, key
        )


def raw_pynacl_pieces(piece: int) -> Callable[[bytes], None]:
    """Raw pynacl fed `piece`-sized slices, holding each piece's output as Encryptor does."""

    def run(data: bytes) -> None:
        key = os.urandom(32)
        counter = 0
        for start in range(0, len(data), piece):
            view = memoryview(data[start : start + piece])
            sealed = []
            for offset in range(0, len(view), CHUNK_SIZE):
                nonce = (counter << 8).to_bytes(12, "big")
                chunk = view[offset : offset + CHUNK_SIZE].tobytes()
                sealed.append(crypto_aead_chacha20poly1305_ietf_encrypt(chunk, None, nonce, key))
                counter += 1
            del sealed

    return run


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
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data = os.urandom(args.mib * MiB)
    methods: dict[str, Callable[[bytes], None]] = {
        BASELINE: raw_pynacl,
        "Encryptor, 64 KiB pieces": ours(CHUNK_SIZE),
        "Encryptor, 8191 B pieces": ours(8191),
        "Encryptor, 1 MiB pieces": ours(MiB),
        "raw pynacl, 1 MiB pieces": raw_pynacl_pieces(MiB),
        "Decryptor, 64 KiB pieces": ours_decrypt(data),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if shutil.which("age"):
            path = Path(tmp) / "input"
            path.write_bytes(data)
            methods["age CLI (age -r)"] = age_cli(path)
        else:
            print("age CLI not found: skipped")
        samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in methods}
        for _ in range(args.rounds):
            for name, method in methods.items():
                samples[name].append(measure(method, data))
    report(samples, len(data), args.rounds)


def usage() -> tuple[float, int]:
    """CPU seconds and minor page faults of this process and its finished children (age CLI)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    return cpu, own.ru_minflt + kids.ru_minflt


def measure(method: Callable[[bytes], None], data: bytes) -> tuple[float, float, int]:
    wall = time.perf_counter()
    cpu, faults = usage()
    method(data)
    cpu_after, faults_after = usage()
    return time.perf_counter() - wall, cpu_after - cpu, faults_after - faults


def report(samples: dict[str, list[tuple[float, float, int]]], size: int, rounds: int) -> None:
    # Other work on a shared machine only ever slows a run down, so the best round is the
    # closest to the true cost; CPU seconds are less disturbed by waiting for a core. Minor page
    # faults (fewest in any round) hint at C-heap churn.
    best_wall = {name: min(run[0] for run in runs) for name, runs in samples.items()}
    best_cpu = {name: min(run[1] for run in runs) for name, runs in samples.items()}
    faults = {name: min(run[2] for run in runs) for name, runs in samples.items()}
    base_wall, base_cpu = best_wall[BASELINE], best_cpu[BASELINE]
    print(f"age encryption of {size // MiB} MiB, best of {rounds} interleaved rounds")
    print(
        f"{'method':<28} {'MB/s wall':>10} {'ratio':>6} {'MB/s CPU':>10} {'ratio':>6} {'faults':>7}"
    )
    for name in samples:
        wall, cpu = best_wall[name], best_cpu[name]
        print(
            f"{name:<28} {size / wall / 1e6:>10.0f} {base_wall / wall:>6.2f}"
            f" {size / cpu / 1e6:>10.0f} {base_cpu / cpu:>6.2f} {faults[name]:>7}"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (2 cores, shared)")


if __name__ == "__main__":
    main()
