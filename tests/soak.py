"""A Tor-speed soak against one `amanat serve` process (issue 15, section 3): many sources
upload at once at 20 KB/s, one file after another, while visitors load pages and other sources
log in; then every stored ciphertext is decrypted with the stock `age` binary.

Shared by tests/test_soak.py (100 sources, 60 s, in the slow tests) and bench/bench_soak.py
(1,000 sources, 10 minutes). Traffic goes only to the server on 127.0.0.1, and the soak stops by
itself: no source starts an upload once `seconds` have passed, and every upload under way is
finished (a source on a slow line is not cut off because the clock ran out).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from server_process import (
    AMANAT,
    MIB,
    ServerProcess,
    SourceSession,
    log_in,
    make_org,
    new_source,
    new_sources,
    polling,
    running,
    upload,
)

from dropbox.demo import DemoOrg
from dropbox.store import CiphertextStore

KIB = 1024
PIECE = 4000  # bytes a slow source sends at a time (what a Tor cell stream delivers smoothly)
MESSAGE = b"a soak source"


@dataclass(frozen=True)
class SoakPlan:
    sources: int  # uploading at once, each with its own session
    seconds: float  # new uploads start until then
    rate: float = 20_000  # bytes a second, each source
    file_bytes: int = 200_000  # one submission's file: 10 s at 20 KB/s
    visitors: int = 2  # load the landing and start pages in a loop, a new connection each time
    logins: int = 2  # returning sources logging in, in a loop, beside new codenames


@dataclass
class Tally:
    """What happened, filled in while the soak runs."""

    sent: Counter[str] = field(default_factory=Counter)  # SHA-256 of each acknowledged file
    failures: list[str] = field(default_factory=list)  # one line per failed submission
    open_uploads: int = 0
    samples: list[tuple[int, int]] = field(default_factory=list)  # (server RSS, uploads open)
    landing: list[float] = field(default_factory=list)
    page_failures: list[str] = field(default_factory=list)
    logins: list[float] = field(default_factory=list)
    login_failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SoakResult:
    plan: SoakPlan
    tally: Tally
    baseline_rss: int  # after the warm-up, every source logged in
    hwm: int  # the server's peak RSS ever (VmHWM)
    seconds: float
    stored: int  # submissions in the database after the soak (the warm-up not counted)
    decrypted: int  # ciphertexts the `age` binary decrypted
    undecryptable: list[str]  # ciphertexts it did not, or whose plaintext nobody sent
    server_errors: list[str]  # what the server logged at ERROR (a type and a route, no more)

    @property
    def peak_rss(self) -> int:
        return max((rss for rss, _ in self.tally.samples), default=self.baseline_rss)

    @property
    def rss_per_open_upload(self) -> float:
        """The most the RSS grew per open upload, over the samples with at least half of the
        sources sending (fewer would divide the heap's noise by too few)."""
        busy = [(rss - self.baseline_rss) / n for rss, n in self.tally.samples
                if n >= self.plan.sources / 2]
        return max(busy, default=float("nan"))

    @property
    def most_open(self) -> int:
        return max((n for _, n in self.tally.samples), default=0)

    def landing_p(self, q: float) -> float:
        ordered = sorted(self.tally.landing) or [float("nan")]
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    def describe(self) -> str:
        t, p = self.tally, self.plan
        login_p50 = statistics.median(t.logins) if t.logins else float("nan")
        return (
            f"{p.sources} sources at {p.rate / 1000:.0f} KB/s, files of {p.file_bytes // 1000} KB, "
            f"new uploads for {p.seconds:.0f} s (ran {self.seconds:.0f} s):\n"
            f"  submissions: {sum(t.sent.values())} acknowledged, {len(t.failures)} failed, "
            f"{self.stored} stored; {self.decrypted} ciphertexts decrypted by age, "
            f"{len(self.undecryptable)} not\n"
            f"  server RSS {self.baseline_rss / MIB:.0f} MiB before, peak {self.peak_rss / MIB:.0f}"
            f" MiB, up to {self.most_open} uploads open: at most "
            f"{self.rss_per_open_upload / KIB:.0f} KiB per open upload (peak ever "
            f"{self.hwm / MIB:.0f} MiB)\n"
            f"  pages: {len(t.landing)} landing loads, p50 "
            f"{self.landing_p(0.5) * 1000:.0f} ms, p99 {self.landing_p(0.99) * 1000:.0f} ms; "
            f"{len(t.page_failures)} page loads failed\n"
            f"  logins: {len(t.logins)} (p50 {login_p50 * 1000:.0f} ms), "
            f"{len(t.login_failures)} failed")


def soak_org(root: Path, plan: SoakPlan) -> tuple[DemoOrg, Path]:
    """A demo organization sized for the plan, and its investigator's identity file for age."""
    org = make_org(root / "org", limits={
        "max_concurrent_uploads": plan.sources + 8,
        "max_concurrent_uploads_per_session": 2,
        "max_files": 2,
    })
    identity = root / "investigator.txt"
    identity.write_text(f"{org.investigator.identity}\n")
    identity.chmod(0o600)
    return org, identity


def raise_open_file_limit(needed: int) -> None:
    """One socket per source and visitor: lift the soft limit of descriptors to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard or (hard == resource.RLIM_INFINITY and soft < needed):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def run_soak(plan: SoakPlan, root: Path, entry: tuple[str, ...] = AMANAT) -> SoakResult:
    """Run `plan` against a fresh server in `root` (started with `entry`: bench/ may run
    another launcher); nothing is asserted here."""
    raise_open_file_limit(2 * plan.sources + 256)
    org, identity = soak_org(root, plan)
    with running(org, root / "tmp", entry=entry) as server:
        people = await new_sources(server.url, plan.sources + 1)
        warm = await upload(people[-1], b"warm", "warm.bin", [b"w" * KIB], KIB)
        if warm.status != 200:
            raise RuntimeError(f"the warm-up upload failed: {warm.status}")
        await asyncio.sleep(1)
        baseline = server.memory()["VmRSS"]
        tally = Tally()
        started = time.monotonic()
        await _load(server, plan, people[:plan.sources], tally)
        took = time.monotonic() - started
        hwm = server.memory()["VmHWM"]
        stored = len(server.submission_ids()) - 1
        decrypted, bad = await asyncio.to_thread(_decrypt_all, server, identity, tally.sent)
        errors = [line for line in server.log.read_text("utf-8", "replace").splitlines()
                  if "ERROR" in line]
    return SoakResult(plan, tally, baseline, hwm, took, stored, decrypted, bad, errors)


async def _load(server: ServerProcess, plan: SoakPlan, people: list[SourceSession],
                tally: Tally) -> None:
    """The uploads, with visitors and logins beside them until the last upload is done."""
    deadline = time.monotonic() + plan.seconds
    stop = asyncio.Event()
    codenames = [p.codename for p in people]

    def sample() -> None:
        tally.samples.append((server.memory()["VmRSS"], tally.open_uploads))

    beside = [asyncio.create_task(_visitor(server.url, tally, stop)) for _ in range(plan.visitors)]
    beside += [asyncio.create_task(_returning(server.url, codenames, tally, stop))
               for _ in range(plan.logins)]
    stagger = plan.file_bytes / plan.rate / max(1, len(people))
    try:
        async with polling(0.25, sample):
            await asyncio.gather(*(
                _source(person, n * stagger, deadline, plan, tally)
                for n, person in enumerate(people)))
    finally:
        stop.set()
        await asyncio.gather(*beside)


async def _source(person: SourceSession, delay: float, deadline: float, plan: SoakPlan,
                  tally: Tally) -> None:
    """One source: upload after upload at `plan.rate` until the deadline has passed."""
    await asyncio.sleep(delay)  # sources arrive one after another, not in one instant
    number = 0
    while time.monotonic() < deadline:
        number += 1
        digest = hashlib.sha256()
        chunks = _content(f"{person.codename}/{number}".encode(), plan.file_bytes, digest)
        tally.open_uploads += 1
        try:
            result = await upload(person, MESSAGE, f"file-{number}.bin", chunks,
                                  plan.file_bytes, rate=plan.rate)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            tally.failures.append(f"upload {number}: {exc!r}")
            continue
        finally:
            tally.open_uploads -= 1
        if result.status == 200 and result.finished_sending:
            tally.sent[digest.hexdigest()] += 1
        else:
            tally.failures.append(f"upload {number}: {result.status} {result.body[-200:]!r}")


def _content(label: bytes, size: int, digest: hashlib._Hash) -> Iterator[bytes]:
    """A file of `size` bytes that no other upload has (it starts with `label`), produced as
    it is sent and hashed on the way."""
    block = (label + b"\n" + os.urandom(64)) * (PIECE // 64)
    left = size
    while left > 0:
        piece = block[:min(PIECE, left)]
        left -= len(piece)
        digest.update(piece)
        yield piece


async def _visitor(url: str, tally: Tally, stop: asyncio.Event) -> None:
    """The landing and the start page, over and over, each over a new connection (as Tor)."""
    timeout = aiohttp.ClientTimeout(total=20)
    while not stop.is_set():
        for path in ("/", "/start"):
            started = time.monotonic()
            try:
                async with aiohttp.ClientSession(timeout=timeout) as http, \
                        http.get(url + path) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.page_failures.append(f"{path}: {exc!r}")
                continue
            if status != 200:
                tally.page_failures.append(f"{path}: {status}")
            elif path == "/":
                tally.landing.append(time.monotonic() - started)
        await asyncio.sleep(0.1)


async def _returning(url: str, codenames: list[str], tally: Tally, stop: asyncio.Event) -> None:
    """Sources coming back: a log-in with a known codename, then a new codename, in turn."""
    turn = 0
    while not stop.is_set():
        turn += 1
        attempt: Awaitable[SourceSession] = (
            log_in(url, codenames[turn % len(codenames)]) if turn % 2 else new_source(url))
        started = time.monotonic()
        try:
            await asyncio.wait_for(attempt, 30)
        except (AssertionError, aiohttp.ClientError, TimeoutError) as exc:
            tally.login_failures.append(f"{'log-in' if turn % 2 else 'new codename'}: {exc!r}"
                                        [:300])
        else:
            tally.logins.append(time.monotonic() - started)
        await asyncio.sleep(0.5)


def _decrypt_all(server: ServerProcess, identity: Path,
                 sent: Counter[str]) -> tuple[int, list[str]]:
    """Decrypt every ciphertext of every submission with `age -d -i`; each file must be one
    that a source sent and was told had arrived, each message the soak's message."""
    store = CiphertextStore(server.store_dir, reserve_bytes=0)
    jobs = [(kind, store.path(name)) for sid in server.submission_ids()
            for kind, name in server.ciphertexts(sid)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        plaintexts = list(pool.map(lambda job: _age_digest(identity, job[1]), jobs))
    expected = Counter(sent)
    expected[hashlib.sha256(b"w" * KIB).hexdigest()] += 1  # the warm-up
    messages = {hashlib.sha256(MESSAGE).hexdigest(), hashlib.sha256(b"warm").hexdigest()}
    bad = []
    for (kind, path), digest in zip(jobs, plaintexts, strict=True):
        if digest is None:
            bad.append(f"{path.name}: age could not decrypt it")
        elif kind == "message" and digest not in messages:
            bad.append(f"{path.name}: a message nobody sent")
        elif kind == "file":
            if expected[digest] <= 0:
                bad.append(f"{path.name}: a file nobody sent (or stored twice)")
            expected[digest] -= 1
    bad += [f"acknowledged but not stored: {d[:16]}" for d, n in expected.items() if n > 0]
    return sum(d is not None for d in plaintexts), bad


def _age_digest(identity: Path, path: Path) -> str | None:
    done = subprocess.run(["age", "-d", "-i", str(identity), str(path)],
                          capture_output=True, check=False, timeout=120)
    return hashlib.sha256(done.stdout).hexdigest() if done.returncode == 0 else None
